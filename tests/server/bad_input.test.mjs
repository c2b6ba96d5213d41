// Every bad input the issue lists gets an OpenAI-style JSON error with the right 4xx status, and
// the server keeps serving: after each one, a good request still succeeds.
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';

import { MODEL, postJson, sleep, startServer, stopServer } from './lib.mjs';

const CHAT = '/v1/chat/completions';
const COMPLETIONS = '/v1/completions';
const user = [{ role: 'user', content: 'hi' }];

// [name, path, body (object or raw string/bytes), status, text the message or param must contain]
const CASES = [
  ['malformed JSON', CHAT, `{"model": "${MODEL}", "messages": [`, 400, 'not valid JSON'],
  ['not an object', CHAT, '[1, 2, 3]', 400, 'JSON object'],
  ['empty body', CHAT, '', 400, 'JSON'],
  ['invalid UTF-8', COMPLETIONS, Buffer.concat([Buffer.from(`{"model":"${MODEL}","prompt":"`), Buffer.from([0xc3, 0x28, 0xff]), Buffer.from('"}')]), 400, 'UTF-8'],
  ['lone surrogate escape', COMPLETIONS, `{"model":"${MODEL}","prompt":"\\udc00"}`, 400, 'UTF-8'],
  ['messages of the wrong type', CHAT, { model: MODEL, messages: 'hello' }, 400, 'messages'],
  ['max_tokens as a string', CHAT, { model: MODEL, messages: user, max_tokens: '10' }, 400, 'max_tokens'],
  ['temperature as a string', CHAT, { model: MODEL, messages: user, temperature: 'warm' }, 400, 'temperature'],
  ['stream as a number', CHAT, { model: MODEL, messages: user, stream: 1 }, 400, 'stream'],
  ['negative max_tokens', CHAT, { model: MODEL, messages: user, max_tokens: -5 }, 400, 'max_tokens'],
  ['zero max_tokens', COMPLETIONS, { model: MODEL, prompt: 'a', max_tokens: 0 }, 400, 'max_tokens'],
  ['oversized max_tokens', CHAT, { model: MODEL, messages: user, max_tokens: 100000 }, 400, 'max_tokens'],
  ['huge max_tokens', COMPLETIONS, { model: MODEL, prompt: 'a', max_tokens: 1e30 }, 400, 'max_tokens'],
  ['prompt longer than the context', COMPLETIONS, { model: MODEL, prompt: Array(5000).fill(7) }, 400, 'context'],
  ['text prompt longer than the context', COMPLETIONS, { model: MODEL, prompt: 'word '.repeat(6000) }, 400, 'context'],
  ['empty messages', CHAT, { model: MODEL, messages: [] }, 400, 'messages'],
  ['unknown role', CHAT, { model: MODEL, messages: [{ role: 'wizard', content: 'x' }] }, 400, 'wizard'],
  ['message without content', CHAT, { model: MODEL, messages: [{ role: 'user' }] }, 400, 'content'],
  ['unknown model', CHAT, { model: 'gpt-17', messages: user }, 404, 'gpt-17'],
  ['missing model', CHAT, { messages: user }, 400, 'model'],
  ['malformed attention spec', CHAT, { model: MODEL, messages: user, vortex: { attention: 'quest:budget=lots' } }, 400, 'budget'],
  ['unknown attention method', CHAT, { model: MODEL, messages: user, vortex: { attention: 'magic' } }, 400, 'magic'],
  ['attention reading a file', CHAT, { model: MODEL, messages: user, vortex: { attention: 'flow:/etc/passwd,budget=16' } }, 400, 'accepted only as the server'],
  ['token id out of range', COMPLETIONS, { model: MODEL, prompt: [1, 2, 100000] }, 400, '100000'],
  ['empty prompt', COMPLETIONS, { model: MODEL, prompt: '' }, 400, 'prompt'],
  ['n too large', CHAT, { model: MODEL, messages: user, n: 1000 }, 400, 'n'],
  ['empty stop string', CHAT, { model: MODEL, messages: user, stop: [''] }, 400, 'stop'],
  ['top_p out of range', CHAT, { model: MODEL, messages: user, top_p: 7 }, 400, 'top_p'],
  ['body over the limit', CHAT, { model: MODEL, messages: [{ role: 'user', content: 'x'.repeat(70_000) }] }, 413, 'limit'],
];

describe('bad input', () => {
  let server;
  before(async () => { server = await startServer(['--max-body-bytes', '65536']); });
  after(async () => { assert.equal((await stopServer(server)).code, 0); });

  async function stillServes() {
    const r = await postJson(server, CHAT, { model: MODEL, messages: user, max_tokens: 2 });
    assert.equal(r.status, 200, r.text);
  }

  for (const [name, path, body, status, needle] of CASES) {
    test(`${name} → ${status}`, async () => {
      const r = await postJson(server, path, body);
      assert.equal(r.status, status, r.text);
      assert.ok(r.json && r.json.error, `not an OpenAI error body: ${r.text}`);
      assert.equal(typeof r.json.error.message, 'string');
      assert.equal(typeof r.json.error.type, 'string');
      assert.ok('param' in r.json.error && 'code' in r.json.error);
      assert.ok(`${r.json.error.message} ${r.json.error.param}`.includes(needle), `${needle} not in ${r.text}`);
      await stillServes();
    });
  }

  test('unknown extra fields are ignored', async () => {
    const r = await postJson(server, CHAT, { model: MODEL, messages: user, max_tokens: 2, user: 'u1', metadata: { a: 1 }, whatever: [1, 2] });
    assert.equal(r.status, 200, r.text);
  });

  test('unknown path → 404 JSON, GET on a POST endpoint → 405 JSON', async () => {
    const missing = await fetch(`${server.url}/v1/nothing`);
    assert.equal(missing.status, 404);
    assert.ok((await missing.json()).error);
    const get = await fetch(`${server.url}${CHAT}`);
    assert.equal(get.status, 405);
    assert.ok((await get.json()).error);
  });

  test('garbage bytes, a truncated body and an abandoned connection do not take the server down', async () => {
    const { port } = new URL(server.url);
    const send = (bytes, closeAfterMs) => new Promise((resolve) => {
      const socket = net.connect(Number(port), '127.0.0.1', () => {
        socket.write(bytes);
        setTimeout(() => { socket.destroy(); resolve(); }, closeAfterMs);
      });
      socket.on('error', resolve);
      socket.on('data', () => {});
    });
    await send(Buffer.from([0, 1, 2, 255, 254, 13, 10, 13, 10]), 200);
    await send('POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{"model":', 200);
    await send('GET /health HTTP/1.1\r\nHost: x\r\n', 100);
    await send(`POST ${CHAT} HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n`, 200);
    await sleep(100);
    await stillServes();
    const health = await fetch(`${server.url}/health`);
    assert.equal(health.status, 200);
  });

  test('bad requests are counted by endpoint and status in /metrics', async () => {
    const text = await (await fetch(`${server.url}/metrics`)).text();
    assert.match(text, /vortex_requests_total\{endpoint="\/v1\/chat\/completions",status="400"\} \d+/);
    assert.match(text, /vortex_requests_total\{endpoint="\/v1\/chat\/completions",status="404"\} \d+/);
    assert.match(text, /vortex_requests_total\{endpoint="\/v1\/chat\/completions",status="200"\} \d+/);
  });
});
