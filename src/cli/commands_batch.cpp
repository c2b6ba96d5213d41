// vortex batch — offline mode: many requests from a JSONL file through one continuous-batching
// scheduler, one JSON result line per request, in input order (what users of vLLM's offline
// LLM.generate expect).
//
// Input lines: {"prompt": TEXT} | {"messages": [...]} (chat template) | {"prompt_tokens": [ids]},
// with optional max_tokens, temperature, top_p, top_k, min_p, seed, stop (string or list),
// ignore_eos, attention (a spec; default --attention), speculate and gamma (self-speculation;
// defaults --speculate and --gamma). A bad line becomes {"index": i, "error": "..."} and the others still run; the exit
// code is then 1. A result: index, tokens, text, finish_reason, prompt_tokens, cached_tokens (of the
// prompt, from the prefix cache: requests sharing a prompt prefix compute it once), speculation.
// --stats FILE writes one JSON object about the run: its steps by kind (runtime/step_profile.h:
// prefill, decode, self-speculation's draft and verify steps; wall ms, tokens generated, ms per
// step), the decode-only total (every step without prompt tokens: the decode rate without
// prefill) and the backend's forward counters (graph replays, host and launch time).
#include <chrono>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>

#include "cli/cli.h"
#include "core/error.h"
#include "io/chat_template.h"
#include "io/tokenizer.h"
#include "runtime/batch_engine.h"
#include "runtime/engine_access.h"
#include "runtime/step_profile.h"
#include "vortex/engine.h"

namespace vortex::cli {
namespace {

struct BatchArgs {
  std::string model, prompts, out, stats, device = "cpu", precision = "bf16", kv_dtype = "auto", attention = "dense";
  int64_t max_batch = 32, page_size = 16, prefill_chunk = 0, tensor_parallel = 1;
  double kv_memory = 0.0;
  bool no_prefix_cache = false, prefill_first = false;
  SpeculateArgs speculate;
};

template <typename T>
T field_or(const nlohmann::json& line, const char* key, T fallback) {
  auto it = line.find(key);
  if (it == line.end() || it->is_null()) return fallback;
  try {
    return it->get<T>();
  } catch (const nlohmann::json::exception&) {
    fail("field '{}' has the wrong type: {}", key, it->dump());
  }
}

}  // namespace

std::vector<int32_t> line_prompt(const nlohmann::json& line, const Engine& engine) {
  if (line.contains("prompt_tokens")) return field_or<std::vector<int32_t>>(line, "prompt_tokens", {});
  if (line.contains("messages")) {
    const ChatTemplate& chat = EngineAccess::require_chat_template(engine);
    const nlohmann::json& messages = line["messages"];
    check(messages.is_array() && !messages.empty(), "'messages' must be a non-empty list");
    return EngineAccess::require_tokenizer(engine).encode(chat.apply(messages, ChatTemplateOptions{}));
  }
  check(line.contains("prompt") && line["prompt"].is_string(), "a line needs \"prompt\" (text), \"messages\" or \"prompt_tokens\"");
  return EngineAccess::require_tokenizer(engine).encode(line["prompt"].get<std::string>());
}

std::vector<std::vector<int32_t>> read_prompt_file(const std::string& path, const Engine& engine) {
  std::ifstream in(path);
  check(static_cast<bool>(in), "cannot open {}", path);
  std::vector<std::vector<int32_t>> prompts;
  std::string text;
  for (size_t index = 0; std::getline(in, text); ++index) {
    if (text.find_first_not_of(" \t\r") == std::string::npos) continue;
    try {
      prompts.push_back(line_prompt(nlohmann::json::parse(text), engine));
    } catch (const nlohmann::json::exception& e) {
      fail("{} line {}: invalid JSON: {}", path, index + 1, e.what());
    } catch (const Error& e) {
      fail("{} line {}: {}", path, index + 1, e.what());
    }
  }
  check(!prompts.empty(), "{} has no prompts (it is empty)", path);
  return prompts;
}

namespace {

GenerateRequest line_request(const nlohmann::json& line, const Engine& engine, const BatchArgs& a) {
  check(line.is_object(), "a line must be a JSON object");
  GenerateRequest request;
  request.prompt = line_prompt(line, engine);
  request.max_tokens = field_or<int64_t>(line, "max_tokens", 256);
  request.sampling = {.temperature = field_or<float>(line, "temperature", 1.0f), .top_k = field_or<int32_t>(line, "top_k", 0),
                      .top_p = field_or<float>(line, "top_p", 1.0f), .min_p = field_or<float>(line, "min_p", 0.0f),
                      .seed = field_or<uint64_t>(line, "seed", 0)};
  if (line.contains("stop") && line["stop"].is_string()) request.stop_strings = {line["stop"].get<std::string>()};
  else request.stop_strings = field_or<std::vector<std::string>>(line, "stop", {});
  request.ignore_eos = field_or<bool>(line, "ignore_eos", false);
  request.attention = field_or<std::string>(line, "attention", a.attention);
  apply_speculate(a.speculate, request);
  request.speculate = field_or<std::string>(line, "speculate", request.speculate);
  if (line.contains("gamma")) {
    const nlohmann::json& gamma = line["gamma"];
    request.gamma = gamma.is_string() ? parse_gamma(gamma.get<std::string>(), "field 'gamma'") : field_or<int32_t>(line, "gamma", 0);
  }
  if (request.speculate.empty() && !line.contains("gamma")) request.gamma = 0;  // a line that turns speculation off
  return request;
}

void run_batch(const BatchArgs& a) {
  std::ifstream in(a.prompts);
  check(static_cast<bool>(in), "cannot open {}", a.prompts);
  EngineOptions options;
  options.device = parse_device(a.device);
  options.precision = parse_precision(a.precision);
  options.kv_dtype = parse_kv_dtype(a.kv_dtype);
  options.max_batch = a.max_batch;
  options.page_size = a.page_size;
  options.tensor_parallel = a.tensor_parallel;
  options.prefill_chunk = step_tokens(a.prefill_chunk, options.device);
  options.kv_memory_gib = a.kv_memory;
  options.prefix_caching = !a.no_prefix_cache;
  auto engine = Engine::open(a.model, options);
  BatchEngine& batch = batch_engine(*engine);
  batch.set_prefill_first(a.prefill_first);
  std::vector<nlohmann::json> results;
  std::string text;
  for (size_t index = 0; std::getline(in, text); ++index) {
    results.push_back({{"index", index}});
    try {
      nlohmann::json line = nlohmann::json::parse(text);
      GenerateRequest request = line_request(line, *engine, a);
      batch.submit(request, {.on_token = nullptr, .on_finish = [&results, index](const SequenceFinish& finish) {
        nlohmann::json& r = results[index];
        if (!finish.error.empty()) { r["error"] = finish.error; return; }
        r["tokens"] = finish.result.tokens;
        r["text"] = finish.result.text;
        r["finish_reason"] = finish_reason_name(finish.result.finish_reason);
        r["prompt_tokens"] = finish.result.timing.prompt_tokens;
        r["cached_tokens"] = finish.result.timing.cached_tokens;
        if (finish.result.speculation.verifies > 0) r["speculation"] = speculation_json(finish.result.speculation);
      }});
    } catch (const nlohmann::json::parse_error& e) {
      results.back()["error"] = fmt::format("{} line {}: invalid JSON: {}", a.prompts, index + 1, e.what());
    } catch (const Error& e) {
      results.back()["error"] = fmt::format("{} line {}: {}", a.prompts, index + 1, e.what());
    }
  }
  check(!results.empty(), "{} has no requests (it is empty)", a.prompts);
  StepProfile profile;
  while (batch.has_work()) {
    const auto t0 = std::chrono::steady_clock::now();
    const StepStats step = batch.step();
    profile.add(step, std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  if (!a.stats.empty()) {
    std::ofstream stats(a.stats);
    check(static_cast<bool>(stats), "cannot write {}", a.stats);
    nlohmann::json j = {{"requests", results.size()}, {"profile", profile.json(batch.forward_counters())}};
    if (const SpeculationStats& s = batch.speculation_totals(); s.verifies > 0) j["speculation"] = speculation_json(s);
    stats << j.dump() << '\n';
  }
  std::ofstream out(a.out);
  check(static_cast<bool>(out), "cannot write {}", a.out);
  int64_t failed = 0;
  for (const auto& r : results) {
    failed += r.contains("error");
    out << r.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << '\n';
  }
  check(failed == 0, "{} of {} requests failed (their lines in {} say why)", failed, results.size(), a.out);
  std::cerr << fmt::format("vortex batch: {} requests, results in {}\n", results.size(), a.out);
  if (const PrefixCacheStats p = batch.prefix_cache_stats(); p.lookup_tokens > 0)
    std::cerr << fmt::format("prefix cache: {} of {} prompt tokens reused ({:.1f}%)\n", p.hit_tokens, p.lookup_tokens,
                             100.0 * static_cast<double>(p.hit_tokens) / static_cast<double>(p.lookup_tokens));
  if (const SpeculationStats& s = batch.speculation_totals(); s.verifies > 0)
    std::cerr << fmt::format("speculation: {} of {} drafts accepted ({:.1f}%), {:.2f} tokens per verify step\n", s.accepted,
                             s.drafted, 100.0 * s.acceptance_rate(), s.tokens_per_verify());
}

}  // namespace

void add_batch_commands(CLI::App& app) {
  auto args = std::make_shared<BatchArgs>();
  auto* b = app.add_subcommand("batch", "Offline batch: JSONL requests through one continuous-batching scheduler");
  b->add_option("--model", args->model, "Hugging Face model directory")->required();
  b->add_option("--prompts", args->prompts, "JSONL: {\"prompt\"|\"messages\"|\"prompt_tokens\", sampling fields...}")->required();
  b->add_option("--out", args->out, "JSONL results, one per input line, in order")->required();
  b->add_option("--max-batch", args->max_batch, "Sequences running together")->capture_default_str();
  b->add_option("--kv-memory", args->kv_memory, "GiB for the KV cache (0 = automatic)")->capture_default_str();
  b->add_option("--stats", args->stats, "Also write a JSON summary of the steps by kind (prefill, decode, draft, verify) and decode-only");
  b->add_flag("--prefill-first", args->prefill_first,
              "Compute waiting prompts before decode tokens, so decode runs at the fullest batch (decodes pause meanwhile)");
  b->add_flag("--no-prefix-cache", args->no_prefix_cache, "Compute every prompt in full (no KV pages shared between requests)");
  b->add_option("--attention", args->attention, "Attention spec for lines without \"attention\" (docs/flows.md)")
      ->capture_default_str();
  add_speculate_options(b, args->speculate);
  b->add_option("--device", args->device, "cpu or cuda")->capture_default_str();
  b->add_option("--page-size", args->page_size, "KV page size: 16, 32 or 64 (8 on the CPU)")->capture_default_str();
  add_tensor_parallel_option(b, args->tensor_parallel);
  add_step_tokens_option(b, args->prefill_chunk);
  b->add_option("--precision", args->precision, "cuda: bf16 or f32")->capture_default_str();
  b->add_option("--kv-dtype", args->kv_dtype, kKvDtypeHelp)->capture_default_str();
  b->callback([args] { run_batch(*args); });
}

}  // namespace vortex::cli
