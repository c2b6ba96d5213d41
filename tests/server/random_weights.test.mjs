// `vortex serve --config FILE --random-weights`: a model's shapes with random weights and no
// tokenizer (load tests of real shapes without the checkpoint). Prompts go to /v1/completions as
// token ids; every generated token still makes a (textless) stream chunk, so clients and
// `vortex bench serve` see the stream advance; text prompts and chat are refused by name.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, test } from 'node:test';

import { MODEL_DIR, VORTEX, client, postJson, startServer, stopServer } from './lib.mjs';

const CONFIG = join(MODEL_DIR, 'config.json');
const NAME = 'random-shapes';

describe('serve --config --random-weights', () => {
  let server, openai;
  before(async () => {
    server = await startServer(['--config', CONFIG, '--random-weights', '--seed', '3', '--served-model-name', NAME], { model: false });
    openai = await client(server);
  });
  after(async () => { assert.equal((await stopServer(server)).code, 0); });

  test('token-id prompts stream one chunk per generated token', async () => {
    const stream = await openai.completions.create({
      model: NAME, prompt: [5, 6, 7, 8, 9], max_tokens: 6, temperature: 0, stream: true,
      stream_options: { include_usage: true }, vortex: { ignore_eos: true },
    });
    let tokens = 0, finish = null, usage = null;
    for await (const chunk of stream) {
      if (chunk.usage) usage = chunk.usage;
      for (const c of chunk.choices) {
        assert.equal(c.text, '');
        if (c.finish_reason) finish = c.finish_reason; else tokens++;
      }
    }
    assert.equal(tokens, 6);
    assert.equal(finish, 'length');
    assert.equal(usage.completion_tokens, 6);
    assert.equal(usage.prompt_tokens, 5);
  });

  test('a sparse attention spec per request runs on random weights', async () => {
    const r = await postJson(server, '/v1/completions', {
      model: NAME, prompt: Array.from({ length: 300 }, (_, i) => (i * 37) % 500 + 3), max_tokens: 4,
      temperature: 0, vortex: { ignore_eos: true, attention: 'quest:budget=64,sink=16,window=16' },
    });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.usage.completion_tokens, 4);
  });

  test('text prompts and chat are refused by name (no tokenizer)', async () => {
    const text = await postJson(server, '/v1/completions', { model: NAME, prompt: 'hello', max_tokens: 2 });
    assert.equal(text.status, 400);
    assert.equal(text.json.error.param, 'prompt');
    assert.match(text.json.error.message, /no tokenizer/);
    const chat = await postJson(server, '/v1/chat/completions', { model: NAME, messages: [{ role: 'user', content: 'hi' }] });
    assert.equal(chat.status, 400);
  });

  test('vortex bench serve drives it with token-id prompts', { timeout: 120_000 }, async () => {
    const { stdout } = await promisify(execFile)(VORTEX, ['bench', 'serve', '--url', server.url, '--concurrency', '1,4',
      '--requests', '8', '--max-tokens', '5', '--prompt-tokens', '40', '--json'], { timeout: 110_000 });
    const levels = stdout.trim().split('\n').map((line) => JSON.parse(line));
    assert.equal(levels.length, 2);
    for (const level of levels) {
      assert.equal(level.completed, 8, stdout);
      assert.equal(level.failed, 0);
      assert.equal(level.prompt_tokens, 40);
      assert.ok(level.output_tokens_per_s > 0);
      assert.ok(level.ttft_ms.p50 > 0);
    }
  });
});

test('serve refuses a config without --random-weights, and both --model and --config', async () => {
  const run = (args) => promisify(execFile)(VORTEX, ['serve', ...args, '--port', '0'], { timeout: 60_000 }).then(
    () => assert.fail('serve started'), (e) => e.stderr);
  assert.match(await run(['--config', CONFIG]), /--config .* needs --random-weights/);
  assert.match(await run(['--model', MODEL_DIR, '--config', CONFIG, '--random-weights']), /not both/);
  assert.match(await run([]), /give --model DIR, or --config FILE/);
});
