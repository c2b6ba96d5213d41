// SIGTERM: the server stops accepting connections, finishes the requests in flight, exits 0.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { MODEL, client, sleep, startServer } from './lib.mjs';

describe('SIGTERM drain', () => {
  test('running requests finish, new connections are refused, exit code 0', { timeout: 120_000 }, async () => {
    const server = await startServer(['--max-batch', '4']);
    const openai = await client(server);
    const MAX_TOKENS = 200;
    let firstChunks = 0;
    let onFirst;
    const allStarted = new Promise((r) => { onFirst = r; });
    // Six streams on a batch of four: two of them are still waiting when SIGTERM arrives.
    const runs = Array.from({ length: 6 }, async (_, i) => {
      const stream = await openai.completions.create({
        model: MODEL, prompt: `drain ${i}`, max_tokens: MAX_TOKENS, temperature: 0, stream: true,
        stream_options: { include_usage: true }, vortex: { ignore_eos: true },
      });
      let finish = null, usage = null, seen = false;
      for await (const chunk of stream) {
        if (!seen && chunk.choices[0]?.text) { seen = true; if (++firstChunks === 4) onFirst(); }
        if (chunk.usage) usage = chunk.usage;
        for (const c of chunk.choices) finish = c.finish_reason ?? finish;
      }
      return { finish, usage };
    });
    await Promise.race([allStarted, sleep(30_000)]);
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
    const status = await Promise.race([server.exited, sleep(30_000).then(() => ({ code: 'timeout' }))]);
    if (status.code === 'timeout') server.child.kill('SIGKILL');
    assert.equal(status.code, 0, server.log());
    assert.match(server.log(), /SIGTERM/);
  });
});
