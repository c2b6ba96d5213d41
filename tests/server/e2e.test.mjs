// The official openai client against `vortex serve`: chat and completions, streaming and not,
// logprobs, stop sequences, n > 1, usage, seeds, and the per-request attention field.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { BATCH_INVARIANT, MODEL, chatMessages, client, metrics, startServer, stopServer } from './lib.mjs';

describe('openai client end to end', () => {
  let server, openai;
  before(async () => {
    server = await startServer(['--max-batch', '16']);
    openai = await client(server);
  });
  after(async () => { assert.equal((await stopServer(server)).code, 0); });

  async function streamChat(params) {
    const stream = await openai.chat.completions.create({ ...params, stream: true });
    const texts = {}, finish = {}, ids = new Set();
    let usage = null, roleChunks = 0;
    for await (const chunk of stream) {
      ids.add(chunk.id);
      if (chunk.usage) usage = chunk.usage;
      for (const c of chunk.choices) {
        if (c.delta.role === 'assistant') roleChunks++;
        texts[c.index] = (texts[c.index] ?? '') + (c.delta.content ?? '');
        if (c.finish_reason) finish[c.index] = c.finish_reason;
      }
    }
    return { texts, finish, ids, usage, roleChunks };
  }

  async function streamCompletion(params) {
    const stream = await openai.completions.create({ ...params, stream: true });
    let text = '', finish = null;
    for await (const chunk of stream) for (const c of chunk.choices) { text += c.text; finish = c.finish_reason ?? finish; }
    return { text, finish };
  }

  test('lists the model', async () => {
    const models = await openai.models.list();
    assert.deepEqual(models.data.map((m) => m.id), [MODEL]);
  });

  test('chat: non-streaming response has OpenAI shape and usage', async () => {
    const r = await openai.chat.completions.create({ model: MODEL, messages: chatMessages('Hello there'), max_tokens: 12, temperature: 0 });
    assert.equal(r.object, 'chat.completion');
    assert.match(r.id, /^chatcmpl-/);
    assert.equal(r.choices.length, 1);
    assert.equal(r.choices[0].message.role, 'assistant');
    assert.equal(typeof r.choices[0].message.content, 'string');
    assert.ok(['stop', 'length'].includes(r.choices[0].finish_reason));
    assert.ok(r.usage.prompt_tokens > 5);
    assert.ok(r.usage.completion_tokens >= 1 && r.usage.completion_tokens <= 12);
    assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens);
  });

  test('chat: streamed text equals the non-streamed text (greedy), usage chunk last', async () => {
    const params = { model: MODEL, messages: chatMessages('Tell me about pages'), max_completion_tokens: 24, temperature: 0 };
    const full = await openai.chat.completions.create(params);
    const s = await streamChat({ ...params, stream_options: { include_usage: true } });
    assert.equal(s.texts[0], full.choices[0].message.content);
    assert.equal(s.finish[0], full.choices[0].finish_reason);
    assert.equal(s.roleChunks, 1);
    assert.equal(s.ids.size, 1);
    // the same counts; the second request found the first one's prompt pages in the prefix cache
    const { prompt_tokens_details: cachedLater, ...counts } = s.usage;
    const { prompt_tokens_details: cachedFirst, ...expected } = full.usage;
    assert.deepEqual(counts, expected);
    assert.ok(cachedLater.cached_tokens >= cachedFirst.cached_tokens);
  });

  test('completions: streamed equals non-streamed, default max_tokens is 16', async () => {
    const params = { model: MODEL, prompt: 'The engine reads the KV cache', temperature: 0 };
    const full = await openai.completions.create({ ...params, vortex: { ignore_eos: true } });
    assert.equal(full.object, 'text_completion');
    assert.equal(full.usage.completion_tokens, 16);
    assert.equal(full.choices[0].finish_reason, 'length');
    const s = await streamCompletion({ ...params, vortex: { ignore_eos: true } });
    assert.equal(s.text, full.choices[0].text);
    assert.equal(s.finish, 'length');
  });

  test('completions: token-id prompts', async () => {
    const r = await openai.completions.create({ model: MODEL, prompt: [10, 20, 30, 40], max_tokens: 4, temperature: 0 });
    assert.equal(r.usage.prompt_tokens, 4);
  });

  test('chat logprobs: top_logprobs per token, greedy picks the best', async () => {
    const r = await openai.chat.completions.create({
      model: MODEL, messages: chatMessages('logprobs please'), max_tokens: 6, temperature: 0, logprobs: true, top_logprobs: 3,
      vortex: { ignore_eos: true },  // a model may answer this prompt with its end token at once
    });
    const content = r.choices[0].logprobs.content;
    assert.ok(content.length >= 1);
    for (const entry of content) {
      assert.equal(typeof entry.token, 'string');
      assert.ok(entry.logprob <= 0);
      assert.equal(entry.top_logprobs.length, 3);
      assert.ok(Math.abs(entry.top_logprobs[0].logprob - entry.logprob) < 1e-6);
      assert.deepEqual(entry.bytes, [...Buffer.from(entry.token, 'utf8')]);
    }
    const streamed = await openai.chat.completions.create({
      model: MODEL, messages: chatMessages('logprobs please'), max_tokens: 6, temperature: 0, logprobs: true, top_logprobs: 3, stream: true,
      vortex: { ignore_eos: true },
    });
    const got = [];
    for await (const chunk of streamed) for (const c of chunk.choices) if (c.logprobs) got.push(...c.logprobs.content);
    assert.deepEqual(got.map((e) => e.token), content.map((e) => e.token));
    // The second request finds the prompt's full pages cached: on a GPU the shapes it computes, so
    // the roundings, differ (lib.mjs, BATCH_INVARIANT); bf16's are well under 0.05 nats here.
    if (BATCH_INVARIANT) assert.deepEqual(got.map((e) => e.logprob), content.map((e) => e.logprob));
    else got.forEach((e, i) => assert.ok(Math.abs(e.logprob - content[i].logprob) < 0.05, `token ${i}: ${e.logprob} vs ${content[i].logprob}`));
  });

  test('completions logprobs: tokens, token_logprobs, top_logprobs, text_offset', async () => {
    const r = await openai.completions.create({ model: MODEL, prompt: 'abc', max_tokens: 5, temperature: 0, logprobs: 2, vortex: { ignore_eos: true } });
    const lp = r.choices[0].logprobs;
    assert.equal(lp.tokens.length, 5);
    assert.equal(lp.token_logprobs.length, 5);
    assert.equal(lp.top_logprobs.length, 5);
    assert.equal(Object.keys(lp.top_logprobs[0]).length <= 2, true);
    assert.equal(lp.text_offset[0], 0);
    assert.equal(lp.tokens.join(''), r.choices[0].text);
  });

  test('stop sequences cut the text, streaming and not', async () => {
    const base = { model: MODEL, prompt: 'Once upon a time', max_tokens: 40, temperature: 0, vortex: { ignore_eos: true } };
    const full = (await openai.completions.create(base)).choices[0].text;
    assert.ok(full.length >= 12, `need a longer text to cut: ${JSON.stringify(full)}`);
    const stop = full.slice(6, 9);
    const expected = full.slice(0, full.indexOf(stop));
    const cut = (await openai.completions.create({ ...base, stop: [stop, 'zzzz-never'] })).choices[0];
    assert.equal(cut.text, expected);
    assert.equal(cut.finish_reason, 'stop');
    const streamed = await streamCompletion({ ...base, stop });
    assert.equal(streamed.text, expected);
    assert.equal(streamed.finish, 'stop');
  });

  test('n > 1: every choice, indexed, streaming and not; seeds reproduce', async () => {
    const params = { model: MODEL, messages: chatMessages('many answers'), max_tokens: 10, temperature: 1.0, seed: 1234, n: 3 };
    const a = await openai.chat.completions.create(params);
    assert.deepEqual(a.choices.map((c) => c.index), [0, 1, 2]);
    // b and c find a's full prompt pages in the prefix cache, so they compute the same shapes; a
    // computed the whole prompt, which changes roundings where the output depends on the batch.
    const b = await openai.chat.completions.create(params);
    const c = await openai.chat.completions.create(params);
    const texts = (r) => r.choices.map((choice) => choice.message.content);
    assert.deepEqual(texts(c), texts(b));
    if (BATCH_INVARIANT) assert.deepEqual(texts(b), texts(a));
    const s = await streamChat(params);
    assert.deepEqual(Object.keys(s.texts).sort(), ['0', '1', '2']);
    assert.deepEqual([0, 1, 2].map((i) => s.texts[i]), texts(b));
    assert.equal(Object.keys(s.finish).length, 3);
    assert.equal(s.roleChunks, 3);
  });

  test('prefix caching: a repeated long prompt is served from cached pages, in usage and /metrics', async () => {
    const long = 'The quick brown fox jumps over the lazy dog. '.repeat(12);
    const params = { model: MODEL, messages: chatMessages(long), max_tokens: 8, temperature: 0 };
    const first = await openai.chat.completions.create(params);
    const before = await metrics(server);
    const again = await openai.chat.completions.create(params);
    const after = await metrics(server);
    assert.equal(again.choices[0].message.content, first.choices[0].message.content);
    const cached = again.usage.prompt_tokens_details.cached_tokens;
    assert.ok(cached > 0 && cached < again.usage.prompt_tokens, `cached ${cached} of ${again.usage.prompt_tokens}`);
    assert.equal(after.vortex_prefix_cache_hits_total - before.vortex_prefix_cache_hits_total, cached);
    assert.ok(after.vortex_kv_pages_cached > 0);
  });

  test('sampling parameters are accepted', async () => {
    const r = await openai.chat.completions.create({
      model: MODEL, messages: chatMessages('sample'), max_tokens: 8, temperature: 0.7, top_p: 0.9, top_k: 20, min_p: 0.05, seed: 3,
    });
    assert.equal(r.choices.length, 1);
  });

  test('per-request attention: dense and sparse specs run; a budget covering every page equals dense', async () => {
    const ask = (attention) => openai.chat.completions.create({
      model: MODEL, messages: chatMessages('attention'), max_tokens: 24, temperature: 0, vortex: { attention } });
    const dense = await ask('dense');
    const all = await ask('quest:budget=100000');
    assert.equal(all.choices[0].message.content, dense.choices[0].message.content);
    const streaming = await ask('streaming:sink=16,window=16');
    assert.equal(streaming.choices.length, 1);
    await assert.rejects(ask('quest:sink=4'), (e) => e.status === 400 && /needs a budget/.test(e.message));
  });

  test('per-request self-speculation: the dense greedy text, counted in /metrics; bad fields are 400s', async () => {
    const ask = (vortex) => openai.chat.completions.create({
      model: MODEL, messages: chatMessages('speculate'), max_tokens: 24, temperature: 0, vortex });
    const dense = await ask({});
    const before = await metrics(server);
    for (const gamma of [1, 4, 'auto']) {
      const spec = await ask({ speculate: 'quest:budget=16,sink=16,window=16', gamma });
      assert.equal(spec.choices[0].message.content, dense.choices[0].message.content, `gamma ${gamma}`);
    }
    const after = await metrics(server);
    assert.ok(after.vortex_speculative_verify_steps_total > before.vortex_speculative_verify_steps_total);
    assert.ok(after.vortex_speculative_accepted_tokens_total <= after.vortex_speculative_verified_tokens_total);
    await assert.rejects(ask({ speculate: 'quest:budget=16', gamma: 99 }), (e) => e.status === 400 && /1\.\.16/.test(e.message));
    await assert.rejects(ask({ speculate: 'h2o:budget=32,window=16' }), (e) => e.status === 400 && /keeps state/.test(e.message));
  });

  test('errors reach the client as OpenAI errors', async () => {
    await assert.rejects(openai.chat.completions.create({ model: 'no-such-model', messages: chatMessages('x') }),
      (e) => e.status === 404 && e.code === 'model_not_found');
    await assert.rejects(openai.chat.completions.create({ model: MODEL, messages: [] }),
      (e) => e.status === 400 && e.param === 'messages');
  });
});
