// A client that disconnects has its sequence cancelled and its pages freed, seen through /metrics.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { MODEL, client, metrics, postJson, sleep, startServer, stopServer, waitForMetrics } from './lib.mjs';

const idle = (m) => m.vortex_running_sequences === 0 && m.vortex_waiting_sequences === 0 && m.vortex_kv_pages_used === 0;

describe('disconnect', () => {
  let server, openai;
  before(async () => {
    server = await startServer(['--max-batch', '8']);
    openai = await client(server);
  });
  after(async () => { assert.equal((await stopServer(server)).code, 0); });

  test('an aborted stream frees its pages', { timeout: 60_000 }, async () => {
    const long = 'a long prompt that fills several pages '.repeat(20);
    const stream = await openai.chat.completions.create({
      model: MODEL, messages: [{ role: 'user', content: long }], max_tokens: 3500, temperature: 0, stream: true, vortex: { ignore_eos: true },
    });
    let chunks = 0, during = null;
    for await (const chunk of stream) {
      if (chunk.choices[0]?.delta?.content) chunks++;
      // Read the pages while the stream is still open: once the client leaves, the server may
      // free them before any later request reaches it.
      if (chunks === 2 && during === null) during = await metrics(server);
      if (chunks === 5) break;  // leaves the loop: the client aborts the response
    }
    assert.ok(during.vortex_kv_pages_used > 0, 'the sequence held pages while streaming');
    const done = await waitForMetrics(server, idle, 20_000);
    assert.ok(done.vortex_generation_tokens_total < 3000, 'generation stopped long before max_tokens');
  });

  // Each test checks the tokens generated, not only that pages came back: a sequence that ran to
  // max_tokens would also free its pages in the end.
  test('a non-streaming client that goes away is noticed too', { timeout: 60_000 }, async () => {
    const before = (await metrics(server)).vortex_generation_tokens_total;
    const controller = new AbortController();
    const pending = fetch(`${server.url}/v1/completions`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, signal: controller.signal,
      // n = 8 choices of 3,000 tokens: ~24,000 tokens, over a second even for the fast test model.
      body: JSON.stringify({ model: MODEL, prompt: 'tokens '.repeat(50), n: 8, max_tokens: 3000, temperature: 0, vortex: { ignore_eos: true } }),
    }).catch(() => null);
    // Abort as soon as the sequence runs: the test model decodes ~8,000 tokens/s on one core, so
    // the whole request would take under half a second.
    await waitForMetrics(server, (m) => m.vortex_kv_pages_used > 0, 10_000);
    controller.abort();
    await pending;
    const done = await waitForMetrics(server, idle, 20_000);
    assert.ok(done.vortex_generation_tokens_total - before < 12000, 'generation stopped long before max_tokens');
  });

  test('many streams aborted at once all come back', { timeout: 60_000 }, async () => {
    const before = (await metrics(server)).vortex_generation_tokens_total;
    const controllers = [];
    const runs = Array.from({ length: 12 }, async (_, i) => {
      const controller = new AbortController();
      controllers.push(controller);
      const res = await fetch(`${server.url}/v1/chat/completions`, {
        method: 'POST', headers: { 'content-type': 'application/json' }, signal: controller.signal,
        body: JSON.stringify({ model: MODEL, messages: [{ role: 'user', content: `stream ${i}` }], max_tokens: 3000, stream: true, vortex: { ignore_eos: true } }),
      });
      const reader = res.body.getReader();
      await reader.read().catch(() => null);
    });
    await Promise.all(runs);
    await sleep(300);
    for (const c of controllers) c.abort();
    const done = await waitForMetrics(server, idle, 30_000);
    assert.ok(done.vortex_generation_tokens_total - before < 12 * 3000 / 2, 'generation stopped long before max_tokens');
    const r = await postJson(server, '/v1/completions', { model: MODEL, prompt: 'still here', max_tokens: 2 });
    assert.equal(r.status, 200);
  });
});
