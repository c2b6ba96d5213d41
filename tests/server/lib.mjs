// Shared helpers of the server test suites: command-line options, starting and stopping a
// `vortex serve` on a free loopback port, the official openai client, raw HTTP and /metrics.
// Every wait is bounded in time; every server this starts listens on 127.0.0.1 only.
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

// A command-line option's value (`--name value`), or `fallback`.
export function option(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

const HERE = fileURLToPath(new URL('.', import.meta.url));
export const SOURCE = resolve(option('source', join(HERE, '..', '..')));
export const VORTEX = resolve(option('vortex', join(SOURCE, 'build', 'vortex')));
export const MODEL_DIR = resolve(option('model', join(SOURCE, 'tests', 'data', 'models', 'qwen3-f32')));
export const MODEL = basename(MODEL_DIR);  // the name the server gives it (its directory's)
// Arguments every server this starts gets besides the suite's own, e.g. --serve-args "--device cuda".
const SERVE_ARGS = option('serve-args', '').split(' ').filter((a) => a.length > 0);
// Whether a request's output is independent of what else the server runs. The CPU backend's
// kernels compute each row alone, so it is; on the GPU, GEMM kernels and attention splits are
// chosen by batch size (and a prefix-cache hit changes the shape of the prefill), so roundings
// differ and greedy texts may part where two tokens nearly tie. Suites that compare texts across
// requests do so only when this holds; --batch-invariant false|true overrides the guess.
export const BATCH_INVARIANT = option('batch-invariant', SERVE_ARGS.includes('cuda') ? 'false' : 'true') === 'true';

// GiB of KV cache that hold `tokens` tokens of the suite's model: f32 on the CPU and with
// --precision f32, bf16 on the GPU otherwise.
export function kvGiB(tokens) {
  const c = JSON.parse(readFileSync(join(MODEL_DIR, 'config.json'), 'utf8'));
  const headDim = c.head_dim ?? c.hidden_size / c.num_attention_heads;
  const f32 = !SERVE_ARGS.includes('cuda') || SERVE_ARGS.join(' ').includes('--precision f32');
  return (tokens * c.num_hidden_layers * (c.num_key_value_heads ?? c.num_attention_heads) * headDim * 2 * (f32 ? 4 : 2)) / 2 ** 30;
}
const OPENAI_ENTRY = join(SOURCE, '.deps', 'node', 'node_modules', 'openai', 'index.mjs');

// The official client, installed by scripts/setup; its absence is a failure, not a skip.
export async function loadOpenAI() {
  if (!existsSync(OPENAI_ENTRY)) throw new Error(`${OPENAI_ENTRY} is missing: run scripts/setup`);
  return (await import(pathToFileURL(OPENAI_ENTRY).href)).default;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
// A time limit for Promise.race: unlike sleep, it does not keep node running once the rest is done.
export const timeLimit = (ms) => new Promise((r) => setTimeout(r, ms).unref());

// Starts `vortex serve` on port 0 and resolves once it prints its address; `model: false` leaves
// out --model (for --config ... --random-weights).
export async function startServer(extraArgs = [], { model = true } = {}) {
  const args = ['serve', ...(model ? ['--model', MODEL_DIR] : []), '--host', '127.0.0.1', '--port', '0', ...SERVE_ARGS, ...extraArgs];
  const child = spawn(VORTEX, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  const exited = new Promise((r) => child.on('exit', (code, signal) => r({ code, signal })));
  const url = await new Promise((resolveUrl, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not start in 60 s:\n${log}`)), 60_000);
    child.stderr.on('data', (d) => {
      log += d;
      const m = log.match(/listening on (http:\/\/127\.0\.0\.1:\d+)/);
      if (m) { clearTimeout(timer); resolveUrl(m[1]); }
    });
    child.on('exit', (code) => { clearTimeout(timer); reject(new Error(`server exited (${code}) at start:\n${log}`)); });
  });
  child.stdout.resume();
  return { url, child, exited, log: () => log };
}

// SIGTERM, then SIGKILL if it has not exited within `ms`; resolves to its exit status.
export async function stopServer(server, ms = 30_000) {
  if (server.child.exitCode !== null || server.child.signalCode !== null) return server.exited;
  server.child.kill('SIGTERM');
  const timer = setTimeout(() => server.child.kill('SIGKILL'), ms);
  const status = await server.exited;
  clearTimeout(timer);
  return status;
}

export async function client(server) {
  const OpenAI = await loadOpenAI();
  return new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'not-needed', maxRetries: 0, timeout: 240_000 });
}

export async function postJson(server, path, body, headers = {}) {
  const res = await fetch(`${server.url}${path}`, {
    method: 'POST', headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' || body instanceof Uint8Array ? body : JSON.stringify(body),
    signal: AbortSignal.timeout(120_000),
  });
  const text = await res.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON: the caller checks */ }
  return { status: res.status, text, json, headers: res.headers };
}

// /metrics as {name{labels}: value}.
export async function metrics(server) {
  const text = await (await fetch(`${server.url}/metrics`, { signal: AbortSignal.timeout(10_000) })).text();
  const out = {};
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const i = line.lastIndexOf(' ');
    out[line.slice(0, i)] = Number(line.slice(i + 1));
  }
  return out;
}

// Polls /metrics until `predicate(metrics)` holds; throws with the last values after `ms`.
export async function waitForMetrics(server, predicate, ms = 30_000) {
  const deadline = Date.now() + ms;
  let last = {};
  while (Date.now() < deadline) {
    last = await metrics(server);
    if (predicate(last)) return last;
    await sleep(20);
  }
  throw new Error(`metrics did not reach the expected state in ${ms} ms: ${JSON.stringify(last)}`);
}

export const chatMessages = (text) => [{ role: 'user', content: text }];
