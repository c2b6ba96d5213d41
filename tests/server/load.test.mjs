// 200 concurrent streaming requests on loopback: every one completes, and every greedy streamed
// text equals the non-streamed text of the same prompt — nothing lost, duplicated or interleaved.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { MODEL, client, startServer, stopServer, waitForMetrics } from './lib.mjs';

const STREAMS = 200;
const PROMPTS = 40;
const MAX_TOKENS = 8;

const messages = (i) => [{ role: 'user', content: `Question ${i}: what does page ${i * 7} of the cache hold?` }];

describe('load: 200 concurrent streams', () => {
  let server, openai;
  before(async () => {
    server = await startServer(['--max-batch', '64']);
    openai = await client(server);
  });
  after(async () => { assert.equal((await stopServer(server)).code, 0); });

  test('every stream completes and equals the non-streamed text', { timeout: 240_000 }, async () => {
    const params = (i) => ({ model: MODEL, messages: messages(i), max_tokens: MAX_TOKENS, temperature: 0, vortex: { ignore_eos: true } });
    const expected = await Promise.all(
      Array.from({ length: PROMPTS }, async (_, i) => (await openai.chat.completions.create(params(i))).choices[0].message.content));
    const started = Date.now();
    const results = await Promise.all(Array.from({ length: STREAMS }, async (_, k) => {
      const i = k % PROMPTS;
      const stream = await openai.chat.completions.create({ ...params(i), stream: true, stream_options: { include_usage: true } });
      let text = '', finish = null, usage = null, roleChunks = 0;
      const ids = new Set();
      for await (const chunk of stream) {
        ids.add(chunk.id);
        if (chunk.usage) usage = chunk.usage;
        for (const c of chunk.choices) {
          assert.equal(c.index, 0);
          if (c.delta.role) roleChunks++;
          text += c.delta.content ?? '';
          if (c.finish_reason) { assert.equal(finish, null, 'two finish chunks'); finish = c.finish_reason; }
        }
      }
      return { i, text, finish, usage, ids, roleChunks };
    }));
    const seconds = (Date.now() - started) / 1000;
    console.log(`load: ${STREAMS} streams of ${MAX_TOKENS} tokens in ${seconds.toFixed(1)} s`);
    const ids = new Set();
    for (const r of results) {
      assert.equal(r.finish, 'length');
      assert.equal(r.text, expected[r.i], `stream for prompt ${r.i}`);
      assert.equal(r.usage.completion_tokens, MAX_TOKENS);
      assert.equal(r.roleChunks, 1);
      assert.equal(r.ids.size, 1, 'chunks of one stream carry one id');
      for (const id of r.ids) { assert.ok(!ids.has(id), 'two streams share an id'); ids.add(id); }
    }
    await waitForMetrics(server, (m) => m.vortex_running_sequences === 0 && m.vortex_kv_pages_used === 0, 10_000);
  });
});
