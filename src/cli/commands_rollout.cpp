// vortex rollout — RL rollouts: K samples of every prompt through one continuous batch, each
// generated token with the sampling policy's log-prob, the dense model's log-prob of the same
// token (dense passes over the sequence's own pages: GenerateRequest::rollout) and the agreement
// α_t; per sample and per run the 5th percentile of α in every 2048-position bin (Sparrow's
// stability criterion). Prefix caching makes the K samples of a prompt prefill it once.
//
// Input lines as `vortex batch` takes them ({"prompt"} | {"messages"} | {"prompt_tokens"}); every
// other setting comes from the flags. Output: one line per prompt, in order (docs/rollouts.md has
// the schema); the run's throughput and α table on stderr (and as JSON on stdout with --json).
#include <chrono>
#include <fstream>
#include <iostream>
#include <memory>

#include "cli/cli.h"
#include "core/error.h"
#include "eval/agreement.h"
#include "runtime/batch_engine.h"
#include "runtime/engine_access.h"
#include "runtime/run_info.h"
#include "runtime/step_profile.h"
#include "vortex/engine.h"

namespace vortex::cli {
namespace {

struct RolloutArgs {
  std::string model, prompts, out, device = "cpu", precision = "bf16", kv_dtype = "auto", attention = "dense";
  int64_t samples = 1, max_tokens = 256, max_batch = 64, page_size = 16, prefill_chunk = 0, refresh = 0, tensor_parallel = 1;
  float temperature = 1.0f, top_p = 1.0f;
  int32_t top_k = 0, alpha_top = 256;
  uint64_t seed = 0;
  double kv_memory = 0.0, obrs_lambda = 0.0;
  bool no_prefix_cache = false, ignore_eos = false, json = false;
};

nlohmann::json bins_json(const std::vector<AlphaBin>& bins) {
  nlohmann::json out = nlohmann::json::array();
  for (const AlphaBin& b : bins)
    out.push_back({{"bin", b.bin}, {"positions", {b.bin * kAlphaBinTokens, (b.bin + 1) * kAlphaBinTokens}}, {"tokens", b.tokens},
                   {"mean", b.mean}, {"p5", b.p5}});
  return out;
}

nlohmann::json sample_json(const GenerateResult& r, int64_t prompt_length, uint64_t seed, AlphaStats& run_alpha) {
  const RolloutTrace& t = r.rollout;
  AlphaStats alpha;
  for (size_t i = 0; i < t.alpha.size(); ++i) {
    // α_t belongs to the query position whose row chose token i.
    const int64_t position = prompt_length + static_cast<int64_t>(i) - 1;
    alpha.add(position, t.alpha[i]);
    run_alpha.add(position, t.alpha[i]);
  }
  nlohmann::json s = {{"seed", seed},
                      {"tokens", r.tokens},
                      {"logprobs", t.logprobs},
                      {"dense_logprobs", t.dense_logprobs},
                      {"alpha", t.alpha},
                      {"dense_sampled", t.dense_sampled},
                      {"finish_reason", finish_reason_name(r.finish_reason)},
                      {"text", r.text},
                      {"cached_tokens", r.timing.cached_tokens},
                      {"dense_passes", t.dense_passes},
                      {"alpha_error", t.alpha_error},
                      {"alpha_bins", bins_json(alpha.bins())}};
  if (!t.obrs_accept.empty()) s["obrs_accept"] = t.obrs_accept, s["obrs_weight"] = t.obrs_weight;
  return s;
}

void run_rollout(const RolloutArgs& a) {
  check(a.samples >= 1 && a.samples <= 4096, "--n-samples must be in 1..4096, got {}", a.samples);
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
  const std::vector<std::vector<int32_t>> prompts = read_prompt_file(a.prompts, *engine);

  // Every (prompt, sample) joins one batch; sample k of prompt i draws with seed + i·K + k.
  std::vector<std::vector<GenerateResult>> results(prompts.size(), std::vector<GenerateResult>(static_cast<size_t>(a.samples)));
  std::vector<std::string> errors;
  const auto start = std::chrono::steady_clock::now();
  for (size_t i = 0; i < prompts.size(); ++i) {
    for (int64_t k = 0; k < a.samples; ++k) {
      GenerateRequest r;
      r.prompt = prompts[i];
      r.max_tokens = a.max_tokens;
      r.ignore_eos = a.ignore_eos;
      r.sampling = {.temperature = a.temperature, .top_k = a.top_k, .top_p = a.top_p,
                    .seed = a.seed + static_cast<uint64_t>(i) * static_cast<uint64_t>(a.samples) + static_cast<uint64_t>(k)};
      r.attention = a.attention;
      r.rollout = {.enabled = true, .refresh = a.refresh, .alpha_top = a.alpha_top, .obrs_lambda = a.obrs_lambda};
      try {
        batch.submit(r, {.on_token = nullptr, .on_finish = [&results, &errors, i, k](const SequenceFinish& f) {
                           if (!f.error.empty()) errors.push_back(f.error);
                           results[i][static_cast<size_t>(k)] = f.result;
                         }});
      } catch (const Error& e) {
        fail("{} line {}: {}", a.prompts, i + 1, e.what());
      }
    }
  }
  int64_t dense_passes = 0;
  StepProfile profile;
  while (batch.has_work()) {
    const auto t0 = std::chrono::steady_clock::now();
    const StepStats step = batch.step();
    profile.add(step, std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    dense_passes += step.dense_passes;
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  check(errors.empty(), "{} samples failed; the first: {}", errors.size(), errors.empty() ? "" : errors.front());

  std::ofstream out(a.out);
  check(static_cast<bool>(out), "cannot write {}", a.out);
  AlphaStats run_alpha;
  int64_t generated = 0, prompt_tokens = 0;
  double alpha_error = 0.0, accept_sum = 0.0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    nlohmann::json line = {{"index", i}, {"prompt_tokens", prompts[i]}, {"samples", nlohmann::json::array()}};
    for (int64_t k = 0; k < a.samples; ++k) {
      const GenerateResult& r = results[i][static_cast<size_t>(k)];
      generated += static_cast<int64_t>(r.tokens.size());
      prompt_tokens += static_cast<int64_t>(prompts[i].size());
      alpha_error = std::max(alpha_error, r.rollout.alpha_error);
      for (float accept : r.rollout.obrs_accept) accept_sum += accept;
      const uint64_t seed = a.seed + static_cast<uint64_t>(i) * static_cast<uint64_t>(a.samples) + static_cast<uint64_t>(k);
      line["samples"].push_back(sample_json(r, static_cast<int64_t>(prompts[i].size()), seed, run_alpha));
    }
    out << line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << '\n';
  }
  const PrefixCacheStats cache = batch.prefix_cache_stats();
  const std::vector<AlphaBin> bins = run_alpha.bins();
  std::cerr << fmt::format("vortex rollout: {} prompts x {} samples, {} tokens generated in {:.2f} s ({:.1f} tokens/s, "
                           "dense passes included: {}), results in {}\n",
                           prompts.size(), a.samples, generated, seconds, static_cast<double>(generated) / seconds, dense_passes, a.out);
  std::cerr << fmt::format("prefix cache: {} of {} prompt tokens reused\n", cache.hit_tokens, cache.lookup_tokens);
  std::cerr << fmt::format("alpha (attention {}, refresh {}): mean {:.4f}, largest shortfall bound {:.2e}\n", a.attention,
                           a.refresh, run_alpha.mean().value_or(1.0), alpha_error);
  std::cerr << "  positions        tokens   mean     p5\n";
  for (const AlphaBin& b : bins)
    std::cerr << fmt::format("  {:>6}-{:<6}  {:>8}  {:.4f}  {:.4f}\n", b.bin * kAlphaBinTokens, (b.bin + 1) * kAlphaBinTokens, b.tokens,
                             b.mean, b.p5);
  std::cerr << profile.text(batch.forward_counters());
  const double obrs_acceptance = generated > 0 ? accept_sum / static_cast<double>(generated) : 0.0;
  if (a.obrs_lambda > 0.0)
    std::cerr << fmt::format("OBRS (lambda {}): mean acceptance {:.4f}\n", a.obrs_lambda, obrs_acceptance);
  if (a.json) {
    double worst = 1.0;
    for (const AlphaBin& b : bins) worst = std::min(worst, b.p5);
    print_json({{"prompts", prompts.size()},
                {"samples", a.samples},
                {"attention", a.attention},
                {"refresh", a.refresh},
                {"prompt_tokens", prompt_tokens},
                {"generated_tokens", generated},
                {"seconds", seconds},
                {"tokens_per_s", static_cast<double>(generated) / seconds},
                {"dense_passes", dense_passes},
                {"prefix_cache_hit_tokens", cache.hit_tokens},
                {"prefix_cache_lookup_tokens", cache.lookup_tokens},
                {"alpha_mean", run_alpha.mean().value_or(1.0)},
                {"alpha_p5_worst", worst},
                {"alpha_error", alpha_error},
                {"alpha_bins", bins_json(bins)},
                {"profile", profile.json(batch.forward_counters())},
                {"obrs_lambda", a.obrs_lambda},
                {"obrs_acceptance", a.obrs_lambda > 0.0 ? nlohmann::json(obrs_acceptance) : nlohmann::json(nullptr)},
                {"run", run_info_json(current_run_info(a.device))}});
  }
}

}  // namespace

void add_rollout_commands(CLI::App& app) {
  auto a = std::make_shared<RolloutArgs>();
  auto* r = app.add_subcommand("rollout", "RL rollouts: K samples per prompt with the policy's and the dense log-probs and agreement alpha");
  r->add_option("--model", a->model, "Hugging Face model directory")->required();
  r->add_option("--prompts", a->prompts, "JSONL: {\"prompt\"|\"messages\"|\"prompt_tokens\"} per line")->required();
  r->add_option("--out", a->out, "JSONL: one line per prompt with its samples (docs/rollouts.md)")->required();
  r->add_option("--n-samples", a->samples, "Samples per prompt")->capture_default_str();
  r->add_option("--max-tokens", a->max_tokens, "Tokens generated per sample at most")->capture_default_str();
  r->add_option("--temperature", a->temperature, "Sampling temperature (log-probs and alpha use it too)")->capture_default_str();
  r->add_option("--top-p", a->top_p, "Nucleus sampling")->capture_default_str();
  r->add_option("--top-k", a->top_k, "Top-k sampling (0: off)")->capture_default_str();
  r->add_option("--seed", a->seed, "Sample k of prompt i uses seed + i*K + k")->capture_default_str();
  r->add_flag("--ignore-eos", a->ignore_eos, "Generate max-tokens tokens regardless of eos");
  r->add_option("--attention", a->attention, "The rollout policy's attention spec (docs/flows.md)")->capture_default_str();
  r->add_option("--refresh", a->refresh, "Every M sparse tokens a dense pass rewrites their K/V (0: one dense pass at the end)")
      ->capture_default_str();
  r->add_option("--alpha-top", a->alpha_top, "Alpha over each policy distribution's N most likely tokens (0: all, exact)")
      ->capture_default_str();
  r->add_option("--obrs-lambda", a->obrs_lambda, "Jackpot OBRS: per-token acceptance and weight with this lambda (0: off)")
      ->capture_default_str();
  r->add_option("--max-batch", a->max_batch, "Sequences running together")->capture_default_str();
  r->add_option("--kv-memory", a->kv_memory, "GiB for the KV cache (0 = automatic)")->capture_default_str();
  r->add_flag("--no-prefix-cache", a->no_prefix_cache, "Prefill every sample's prompt in full");
  r->add_option("--device", a->device, "cpu or cuda")->capture_default_str();
  r->add_option("--precision", a->precision, "cuda: bf16 or f32")->capture_default_str();
  r->add_option("--kv-dtype", a->kv_dtype, kKvDtypeHelp)->capture_default_str();
  r->add_option("--page-size", a->page_size, "KV page size: 16, 32 or 64 (8 on the CPU)")->capture_default_str();
  add_tensor_parallel_option(r, a->tensor_parallel);
  add_step_tokens_option(r, a->prefill_chunk);
  r->add_flag("--json", a->json, "Also print the run's summary as one JSON line on stdout");
  r->callback([a] { run_rollout(*a); });
}

}  // namespace vortex::cli
