// vortex serve — the OpenAI-compatible HTTP server; vortex bench serve — its load generator.
#include <pthread.h>

#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <memory>
#include <thread>

#include "cli/cli.h"
#include "core/error.h"
#include "io/hf_config.h"
#include "model/weights.h"
#include "runtime/engine_access.h"
#include "runtime/serving_engine.h"
#include "sparse/attention_spec.h"
#include "vortex/engine.h"
#ifdef VORTEX_HAVE_HTTP
#include "server/http_server.h"
#include "server/serve_bench.h"
#endif

namespace vortex::cli {
namespace {

struct ServeArgs {
  std::string model, config, host = "127.0.0.1", device = "cpu", precision = "bf16", kv_dtype = "auto", attention = "dense", served_model_name;
  bool random_weights = false;
  uint64_t seed = 0;
  int port = 8000;
  int64_t max_batch = 64, max_body_bytes = 8 << 20, max_context = 0, prefill_chunk = 0, page_size = 16, tensor_parallel = 1;
  double kv_memory_gib = 0.0;
  bool no_prefix_cache = false;
  SpeculateArgs speculate;
  int threads = 0;
};

struct BenchServeArgs {
  std::string url = "http://127.0.0.1:8000", concurrency = "1,8,64", model, attention;
  int64_t requests = 64, max_tokens = 32, prompt_words = 32, prompt_tokens = 0;
  bool json = false;
};

#ifdef VORTEX_HAVE_HTTP
// The name a model is served under by default: its directory's ("models/qwen3/" → qwen3), or for
// a random-weight config file its stem (configs/qwen3-8b.json → qwen3-8b; a config.json → its
// directory's name).
std::string default_model_name(const ServeArgs& a) {
  if (!a.model.empty()) {
    std::filesystem::path path(a.model);
    if (path.filename().empty()) path = path.parent_path();
    return path.filename().string();
  }
  const std::filesystem::path file(a.config);
  return file.filename() == "config.json" ? std::filesystem::absolute(file).parent_path().filename().string() : file.stem().string();
}

// A model directory, or random weights of a config's shapes (load tests of real shapes without the
// checkpoint; no tokenizer: prompts go to /v1/completions as token ids).
std::unique_ptr<Engine> open_engine(const ServeArgs& a, const EngineOptions& options) {
  check(a.model.empty() != a.config.empty(), "give --model DIR, or --config FILE with --random-weights (not both)");
  check(a.config.empty() || a.random_weights, "--config {} needs --random-weights (a config has shapes, not weights)", a.config);
  check(!a.random_weights || !a.config.empty(), "--random-weights needs --config FILE (the shapes)");
  if (!a.model.empty()) return Engine::open(a.model, options);
  const ModelConfig config = load_model_config_file(a.config);
  auto weights = std::make_shared<ModelWeights>(random_model_weights(config, DType::kBF16, a.seed));
  return EngineAccess::from_weights(std::move(weights), options);
}

// SIGTERM/SIGINT are blocked in every thread (this runs before any thread starts) and taken by
// one sigwait() thread: the first starts the drain, a second one quits at once.
sigset_t block_stop_signals() {
  std::signal(SIGPIPE, SIG_IGN);  // a client that vanishes mid-write is a failed write, not a signal
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  return set;
}

void watch_signals(sigset_t set, server::HttpServer* http) {
  int signal = 0;
  sigwait(&set, &signal);
  std::cerr << "vortex serve: " << (signal == SIGTERM ? "SIGTERM" : "SIGINT")
            << ": no new connections; finishing the requests in flight" << std::endl;
  http->drain();
  sigwait(&set, &signal);
  std::cerr << "vortex serve: second signal: exiting now" << std::endl;
  std::_Exit(1);
}

void run_serve(const ServeArgs& a) {
  sigset_t signals = block_stop_signals();
  parse_attention_spec(a.attention);  // the grammar before loading the model; the rest once it is loaded
  check(a.max_body_bytes > 0, "--max-body-bytes must be positive, got {}", a.max_body_bytes);
  check(a.port >= 0 && a.port <= 65535, "--port must be in 0..65535, got {}", a.port);
  EngineOptions options;
  options.device = parse_device(a.device);
  options.precision = parse_precision(a.precision);
  options.kv_dtype = parse_kv_dtype(a.kv_dtype);
  options.max_context = a.max_context;
  // By default a step holds a decode token of every running sequence and 256 prompt tokens more,
  // so a full batch still admits new requests (a budget of 256 in all shrinks a batch of 256
  // until its decodes leave room to prefill). Against the old 256 on the same requests (H100, the
  // Qwen3-8B shape, docs/serving.md): +23% / +26% output tokens/s at 64 / 256 streams, TTFT p50
  // 6× / 1.5× lower, inter-token latency 1.6× higher (steps carry more prompt tokens).
  options.prefill_chunk = a.prefill_chunk > 0 ? a.prefill_chunk : a.max_batch + 256;
  options.max_batch = a.max_batch;
  options.page_size = a.page_size;
  options.tensor_parallel = a.tensor_parallel;
  options.kv_memory_gib = a.kv_memory_gib;
  options.prefix_caching = !a.no_prefix_cache;
  auto engine = open_engine(a, options);
  GenerateRequest probe;
  probe.prompt = {0};
  probe.attention = a.attention;
  batch_engine(*engine).validate(probe);  // loads flow files and tables, checks the device runs the spec
  apply_speculate(a.speculate, probe);
  if (!probe.speculate.empty()) {
    check(a.attention == "dense", "--speculate drafts for dense attention; the server's --attention is '{}'", a.attention);
    batch_engine(*engine).validate(probe);
  }
  server::ServedModel served{.names = {a.served_model_name.empty() ? default_model_name(a) : a.served_model_name,
                                       a.model.empty() ? a.config : a.model},
                             .max_context = engine->max_context(), .vocab_size = EngineAccess::config(*engine).vocab_size,
                             .default_attention = a.attention, .default_speculate = probe.speculate,
                             .default_gamma = probe.gamma};
  server::Metrics metrics;
  ServingEngine serving(batch_engine(*engine), &metrics);
  server::HttpOptions http_options{.host = a.host, .port = a.port, .max_body_bytes = a.max_body_bytes,
                                   .threads = a.threads > 0 ? a.threads : static_cast<int>(std::max<int64_t>(256, 4 * a.max_batch))};
  server::HttpServer http(*engine, serving, metrics, served, http_options);
  const int port = http.bind();
  std::thread(watch_signals, signals, &http).detach();
  BatchLoad load = serving.load();
  std::cerr << fmt::format("vortex serve: model '{}', context {} tokens, max batch {}, {} KV pages\n", served.names[0],
                           served.max_context, a.max_batch, load.pages_free)
            << fmt::format("vortex serve: listening on http://{}:{}", a.host, port) << std::endl;
  http.run();
  serving.shutdown();
  std::cerr << "vortex serve: stopped" << std::endl;
}

void run_bench_serve(const BenchServeArgs& a) {
  for (int32_t concurrency : parse_id_list(a.concurrency, "--concurrency")) {
    check(concurrency > 0, "--concurrency levels must be positive, got {}", concurrency);
    server::ServeBenchOptions o{.url = a.url, .concurrency = concurrency, .requests = a.requests, .max_tokens = a.max_tokens,
                                .prompt_words = a.prompt_words, .prompt_tokens = a.prompt_tokens, .model = a.model,
                                .attention = a.attention};
    nlohmann::json r = server::run_serve_bench(o);
    if (a.json) { print_json(r); continue; }
    std::cout << fmt::format("concurrency {:3d}: {}/{} requests in {:.1f} s, {:.2f} requests/s, {:.1f} output tokens/s, "
                             "TTFT p50 {:.1f} ms p99 {:.1f} ms, ITL p50 {:.1f} ms p99 {:.1f} ms\n",
                             concurrency, r["completed"].get<int64_t>(), a.requests, r["duration_s"].get<double>(),
                             r["requests_per_s"].get<double>(), r["output_tokens_per_s"].get<double>(),
                             r["ttft_ms"]["p50"].get<double>(), r["ttft_ms"]["p99"].get<double>(),
                             r["itl_ms"]["p50"].get<double>(), r["itl_ms"]["p99"].get<double>())
              << std::flush;
  }
}
#else
[[noreturn]] void no_http() {
  fail("this build has no HTTP server: configure with -DVORTEX_SERVER=ON (needs Debian's libcpp-httplib-dev)");
}
void run_serve(const ServeArgs&) { no_http(); }
void run_bench_serve(const BenchServeArgs&) { no_http(); }
#endif

void add_bench_serve(CLI::App& app) {
  CLI::App* bench = nullptr;
  try {
    bench = app.get_subcommand("bench");
  } catch (const CLI::OptionNotFound&) {
    bench = app.add_subcommand("bench", "Benchmarks (print one JSON object per configuration with --json)");
    bench->require_subcommand(1);
  }
  auto b = std::make_shared<BenchServeArgs>();
  auto* s = bench->add_subcommand("serve", "Load a running server: requests/s, tokens/s, TTFT and inter-token latency");
  s->add_option("--url", b->url, "Server address (http://HOST:PORT)")->capture_default_str();
  s->add_option("--concurrency", b->concurrency, "Comma-separated levels of requests in flight")->capture_default_str();
  s->add_option("--requests", b->requests, "Requests per level")->capture_default_str();
  s->add_option("--max-tokens", b->max_tokens, "Generated tokens per request (eos ignored)")->capture_default_str();
  s->add_option("--prompt-words", b->prompt_words, "Words per prompt")->capture_default_str();
  s->add_option("--prompt-tokens", b->prompt_tokens,
                "Send each prompt as this many token ids (below 503, distinct per request) instead of words: for a server "
                "without tokenizer (serve --random-weights) or a fixed prompt length")
      ->capture_default_str();
  s->add_option("--attention", b->attention, "Attention spec every request asks for (\"vortex\": {\"attention\": ...}); default: the server's");
  s->add_option("--model", b->model, "Model name (default: the first one /v1/models lists)");
  s->add_flag("--json", b->json, "Print one JSON object per level");
  s->callback([b] { run_bench_serve(*b); });
}

}  // namespace

void add_serve_commands(CLI::App& app) {
  auto a = std::make_shared<ServeArgs>();
  auto* s = app.add_subcommand("serve", "OpenAI-compatible HTTP server with continuous batching");
  s->add_option("--model", a->model, "Hugging Face model directory");
  s->add_option("--config", a->config, "With --random-weights: a model config.json (configs/*.json) whose shapes get random weights");
  s->add_flag("--random-weights", a->random_weights, "Serve random bf16 weights of --config's shapes (load tests; no tokenizer)");
  s->add_option("--seed", a->seed, "Seed of the random weights")->capture_default_str();
  s->add_option("--host", a->host, "Address to listen on")->capture_default_str();
  s->add_option("--port", a->port, "Port (0: any free port, printed at start)")->capture_default_str();
  s->add_option("--device", a->device, "cpu | cuda")->capture_default_str();
  s->add_option("--precision", a->precision, "cuda: bf16 or f32")->capture_default_str();
  s->add_option("--kv-dtype", a->kv_dtype, kKvDtypeHelp)->capture_default_str();
  s->add_option("--page-size", a->page_size, "KV page size: 16, 32 or 64 (8 on the CPU)")->capture_default_str();
  add_tensor_parallel_option(s, a->tensor_parallel);
  s->add_option("--attention", a->attention, "Default attention spec (per request: \"vortex\": {\"attention\": ...})")->capture_default_str();
  add_speculate_options(s, a->speculate);
  s->add_option("--max-batch", a->max_batch, "Sequences in the running batch at most")->capture_default_str();
  s->add_option("--kv-memory", a->kv_memory_gib, "KV cache GiB (0: max-batch full contexts, at most 4 GiB)")->capture_default_str();
  s->add_flag("--no-prefix-cache", a->no_prefix_cache, "Compute every prompt in full (no KV pages shared between requests)");
  s->add_option("--max-body-bytes", a->max_body_bytes, "Largest request body; larger gets 413")->capture_default_str();
  s->add_option("--max-context", a->max_context, "Tokens per sequence (0: the model's context)")->capture_default_str();
  s->add_option("--prefill-chunk", a->prefill_chunk, "Tokens per forward step, prefill chunks + decode tokens (0: --max-batch + 256)")->capture_default_str();
  s->add_option("--served-model-name", a->served_model_name, "Name in /v1/models and requests (default: the directory name)");
  s->add_option("--http-threads", a->threads, "Connection threads (0: max(256, 4 x max-batch)); each open stream holds one");
  s->callback([a] { run_serve(*a); });
  add_bench_serve(app);
}

}  // namespace vortex::cli
