// SIGTERM: the server stops accepting connections, finishes the requests in flight, exits 0.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { MODEL, client, sleep, startServer, timeLimit } from './lib.mjs';

describe('SIGTERM drain', () => {
  test('running requests finish, new connections are refused, exit code 0', { timeout: 120_000 }, async () => {
    const server = await startServer(['--max-batch', '4']);
    const openai = await client(server);
    const MAX_TOKENS = 200;
    let firstChunks = 0, accepted = 0;
    let onReady;
    const ready = new Promise((r) => { onReady = r; });
    const check = () => { if (accepted === 6 && firstChunks >= 4) onReady(); };
    // Six streams on a batch of four: two of them are still waiting when SIGTERM arrives. SIGTERM
    // waits until the server has answered all six with response headers (it answers after it has
    // queued the request): a connection it has not yet accepted is refused by the drain, by design,
    // which is what a loaded CI machine once showed (CI of 444c495).
    const runs = Array.from({ length: 6 }, async (_, i) => {
      const stream = await openai.completions.create({
        model: MODEL, prompt: `drain ${i}`, max_tokens: MAX_TOKENS, temperature: 0, stream: true,
        stream_options: { include_usage: true }, vortex: { ignore_eos: true },
      });
      ++accepted;
      check();
      let finish = null, usage = null, seen = false;
      for await (const chunk of stream) {
        if (!seen && chunk.choices[0]?.text) { seen = true; ++firstChunks; check(); }
        if (chunk.usage) usage = chunk.usage;
        for (const c of chunk.choices) finish = c.finish_reason ?? finish;
      }
      return { finish, usage };
    });
    // A failed request fails the test here, not as an unhandled rejection (which ends the test at
    // once without saying which assertion it was).
    const settled = Promise.allSettled(runs);
    await Promise.race([ready, timeLimit(30_000), settled]);
    assert.equal(accepted, 6, 'the server answered all six requests');
    assert.equal(firstChunks >= 4, true, 'four streams were running');
    server.child.kill('SIGTERM');
    await sleep(300);
    const refused = await fetch(`${server.url}/health`, { signal: AbortSignal.timeout(5_000) }).then(
      (r) => r.status === 503, () => true);
    assert.ok(refused, 'a new connection after SIGTERM is refused (or told 503)');
    const results = await Promise.all(runs);
    for (const r of results) {
      assert.equal(r.finish, 'length');
      assert.equal(r.usage.completion_tokens, MAX_TOKENS);
    }
    const status = await Promise.race([server.exited, timeLimit(30_000).then(() => ({ code: 'timeout' }))]);
    if (status.code === 'timeout') server.child.kill('SIGKILL');
    assert.equal(status.code, 0, server.log());
    assert.match(server.log(), /SIGTERM/);
  });
});
