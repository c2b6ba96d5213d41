// Soak: many concurrent clients for a while — streamed, non-streamed, and cancelled at random
// points — against one server. Nothing may be lost or duplicated (every request that is not
// cancelled completes with exactly its max_tokens tokens, counted in the usage and in the tokens
// its chunks carry, and one finish chunk; where outputs do not depend on the batch, its text
// equals the greedy text of the same prompt run alone), or leaked (every page comes back at the end).
//
// CI runs it with the test model (run_all.mjs) for 10 s twice: with room for every sequence, and
// with a KV cache so small (--soak-pressure-tokens) that sequences are preempted and recomputed all
// the time. Issue #18's GPU soak is this suite alone:
//   node tests/server/soak.test.mjs --vortex build-gpu/vortex --source . --model models/gsm-qwen3-15m \
//     --serve-args "--device cuda" --soak-seconds 600 --soak-streams 64 --soak-max-tokens 64 --soak-pressure-tokens 0
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { BATCH_INVARIANT, MODEL, client, kvGiB, metrics, option, postJson, sleep, startServer, stopServer, waitForMetrics } from './lib.mjs';

const SECONDS = Number(option('soak-seconds', '10'));
const STREAMS = Number(option('soak-streams', '64'));
const MAX_TOKENS = Number(option('soak-max-tokens', '16'));
const PROMPTS = 48;
// Extra server flags for the soak's servers alone.
const SOAK_SERVE_ARGS = option('soak-serve-args', '').split(' ').filter((a) => a.length > 0);
// The KV cache of the second run, in tokens: 1,536 hold about four of the longest sequences (for
// 64 clients); 0 leaves the second run out.
const PRESSURE_TOKENS = Number(option('soak-pressure-tokens', '1536'));
// Attention specs separated by ';' (specs hold commas): prompt i asks for the (i mod n)-th, so
// dense and sparse sequences share the batch. Empty: the server's default for every prompt.
const ATTENTION = option('soak-attention', '').split(';').filter((a) => a.length > 0);

// Prompts of different lengths (a few words to ~200 tokens), so sequences hold different numbers
// of pages and finish prefill at different steps.
const promptText = (i) => `Soak ${i}: ` + 'the cache pages come and go '.repeat(1 + (i * 5) % 37);

// A small deterministic generator per client (seed 1000 + client): a failure names the client, so
// its sequence of choices can be replayed.
function rng(seed) {
  let s = seed >>> 0;
  return () => { s = (s * 1664525 + 1013904223) >>> 0; return s / 2 ** 32; };
}

function soak(name, serveArgs, { preempts = false } = {}) {
  describe(`soak: ${STREAMS} clients for ${SECONDS} s, ${name}`, () => {
    let server, openai;
    before(async () => {
      server = await startServer(['--max-batch', '64', ...SOAK_SERVE_ARGS, ...serveArgs]);
      openai = await client(server);
    });
    after(async () => { assert.equal((await stopServer(server)).code, 0); });

    test('nothing lost, duplicated or leaked under random cancellations', { timeout: (SECONDS + 300) * 1000 }, async () => {
      const params = (i) => ({
        model: MODEL, prompt: promptText(i), max_tokens: MAX_TOKENS, temperature: 0, logprobs: 0,
        vortex: { ignore_eos: true, ...(ATTENTION.length ? { attention: ATTENTION[i % ATTENTION.length] } : {}) },
      });
      const expected = [];
      for (let i = 0; i < PROMPTS; i++) expected.push((await openai.completions.create(params(i))).choices[0].text);

      const counts = { streamed: 0, whole: 0, cancelledStreams: 0, cancelledWhole: 0, tokens: 0, diverged: 0 };
      const failures = [], divergences = [];
      const fail = (what) => { if (failures.length < 20) failures.push(what); };
      // A text unlike the prompt's greedy text alone: a failure where outputs do not depend on the
      // batch, else counted (and the first few shown).
      const compare = (tag, what, text, i) => {
        if (text === expected[i]) return;
        const line = `${tag}: ${what} ${JSON.stringify(text)}, alone ${JSON.stringify(expected[i])}`;
        if (BATCH_INVARIANT) return fail(line);
        if (counts.diverged++ < 3) divergences.push(line);
      };
      const deadline = Date.now() + SECONDS * 1000;

      // One client: requests back to back until the deadline, each of a kind drawn at random.
      const worker = async (w) => {
        const random = rng(1000 + w);
        while (Date.now() < deadline) {
          const i = Math.floor(random() * PROMPTS);
          const kind = random();
          const tag = `client ${w}, prompt ${i}`;
          try {
            if (kind < 0.55) {  // a stream read to its end
              const stream = await openai.completions.create({ ...params(i), stream: true, stream_options: { include_usage: true } });
              let text = '', finish = null, usage = null, tokens = 0;
              for await (const chunk of stream) {
                if (chunk.usage) usage = chunk.usage;
                for (const c of chunk.choices) {
                  text += c.text ?? '';
                  tokens += c.logprobs?.tokens?.length ?? 0;
                  if (c.finish_reason) {
                    if (finish !== null) fail(`${tag}: two finish chunks`);
                    finish = c.finish_reason;
                  }
                }
              }
              if (finish !== 'length') fail(`${tag}: stream finished with ${finish}`);
              if (usage?.completion_tokens !== MAX_TOKENS) fail(`${tag}: stream usage ${JSON.stringify(usage)}`);
              if (tokens !== MAX_TOKENS) fail(`${tag}: the stream's chunks carried ${tokens} tokens`);
              compare(tag, 'streamed', text, i);
              counts.streamed++;
              counts.tokens += MAX_TOKENS;
            } else if (kind < 0.7) {  // a whole response
              const r = await openai.completions.create(params(i));
              // A failure after the heartbeat committed status 200 arrives as an error body.
              if (!r.choices?.length) { fail(`${tag}: no choices: ${JSON.stringify(r).slice(0, 300)}`); continue; }
              if (r.choices[0].finish_reason !== 'length') fail(`${tag}: finished with ${r.choices[0].finish_reason}`);
              if (r.usage.completion_tokens !== MAX_TOKENS) fail(`${tag}: usage ${JSON.stringify(r.usage)}`);
              if (r.choices[0].logprobs?.tokens?.length !== MAX_TOKENS) fail(`${tag}: ${r.choices[0].logprobs?.tokens?.length} tokens`);
              compare(tag, 'text', r.choices[0].text, i);
              counts.whole++;
              counts.tokens += MAX_TOKENS;
            } else if (kind < 0.9) {  // a stream the client leaves after a random number of chunks
              const leaveAfter = Math.floor(random() * MAX_TOKENS);
              const stream = await openai.completions.create({ ...params(i), stream: true });
              let chunks = 0;
              for await (const chunk of stream) {
                if (chunk.choices[0]?.finish_reason) break;
                if (++chunks > leaveAfter) break;  // leaving the loop aborts the response
              }
              counts.cancelledStreams++;
            } else {  // a whole response the client gives up on after a random delay
              const controller = new AbortController();
              const pending = fetch(`${server.url}/v1/completions`, {
                method: 'POST', headers: { 'content-type': 'application/json' }, signal: controller.signal,
                body: JSON.stringify(params(i)),
              }).then((res) => res.text()).catch(() => null);
              await sleep(random() * 50);
              controller.abort();
              await pending;
              counts.cancelledWhole++;
            }
          } catch (error) {
            fail(`${tag}: ${error}`);
          }
        }
      };
      const started = Date.now();
      await Promise.all(Array.from({ length: STREAMS }, (_, w) => worker(w)));
      const seconds = (Date.now() - started) / 1000;
      const done = await waitForMetrics(server,
        (m) => m.vortex_running_sequences === 0 && m.vortex_waiting_sequences === 0 && m.vortex_kv_pages_used === 0, 60_000);
      console.log(`soak: ${seconds.toFixed(0)} s, ${STREAMS} clients: ${counts.streamed} streams and ${counts.whole} whole responses `
        + `complete (${counts.tokens} tokens), ${counts.cancelledStreams} streams and ${counts.cancelledWhole} responses cancelled; `
        + `${done.vortex_preemptions_total} preemptions; ${failures.length} failures; `
        + `${BATCH_INVARIANT ? 'texts compared with each prompt alone' : `${counts.diverged} texts unlike the prompt's alone`}`);
      for (const line of divergences) console.log(`  e.g. ${line}`);
      assert.deepEqual(failures, []);
      assert.ok(counts.streamed > 0 && counts.whole > 0 && counts.cancelledStreams > 0, 'every kind of request ran');
      if (preempts) assert.ok(done.vortex_preemptions_total > 0, 'the small KV cache preempted sequences');
      // The server still answers after it all.
      const r = await postJson(server, '/v1/completions', { model: MODEL, prompt: 'still here', max_tokens: 2 });
      assert.equal(r.status, 200);
      assert.equal((await metrics(server)).vortex_kv_pages_used, 0);
    });
  });
}

soak('room for every sequence', []);
if (PRESSURE_TOKENS > 0) {
  soak(`a KV cache of ${PRESSURE_TOKENS} tokens (preemption)`, ['--kv-memory', kvGiB(PRESSURE_TOKENS).toPrecision(6)], { preempts: true });
}
