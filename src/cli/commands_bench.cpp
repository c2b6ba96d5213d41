// vortex bench decode — speed of the decode step against the machine's memory roofline.
#include <iostream>
#include <memory>

#include "cli/cli.h"
#include "core/error.h"
#include "bench/model_bench.h"

namespace vortex::cli {
namespace {

struct DecodeArgs {
  std::string config, device = "cpu", dtype = "bf16", attention = "dense", kv_dtype = "bf16";
  bool random_weights = false, json = false;
  int64_t batch = 1, context = 1024, steps = 16, tensor_parallel = 1;
  uint64_t seed = 0;
  std::string speculate, acceptance_from;  // self-speculation: the draft, and the measured acceptance rate
  int64_t gamma_max = 8;
};

void run_bench_speculation(const DecodeArgs& a, const DecodeBenchOptions& decode) {
  check(!a.acceptance_from.empty(), "bench decode --speculate needs --acceptance-from: the acceptance rate measured on a real "
        "model (a number, or the JSON of `vortex generate/eval --speculate ... --json`); random weights cannot measure it");
  nlohmann::json r = run_speculation_bench({.decode = decode, .draft = a.speculate, .gamma_max = a.gamma_max,
                                            .acceptance = read_acceptance(a.acceptance_from), .acceptance_source = a.acceptance_from});
  if (a.json) { print_json(r); return; }
  std::cout << fmt::format("self-speculation {} on {} batch {} context {}: dense {:.3f} ms/step, draft {:.3f} ms/step, acceptance {:.3f}\n",
                           r["config"].get<std::string>(), a.device, a.batch, a.context, r["dense_ms"].get<double>(),
                           r["draft_ms"].get<double>(), r["acceptance"].get<double>());
  for (size_t i = 0; i < r["speedup"].size(); ++i)
    std::cout << fmt::format("  gamma {}: verify {:.3f} ms, {:.2f} tokens per round, {:.2f}x dense\n", i + 1,
                             r["verify_ms"][i].get<double>(), r["expected_tokens"][i].get<double>(), r["speedup"][i].get<double>());
}

void run_bench_decode(const DecodeArgs& a) {
  check(a.random_weights, "bench decode: only --random-weights is supported (weights shaped by --config)");
  DecodeBenchOptions options{.config_path = a.config, .device = a.device, .batch = a.batch, .context = a.context, .steps = a.steps,
                             .attention = a.attention};
  if (a.dtype == "bf16") options.weight_dtype = DType::kBF16;
  else if (a.dtype == "f16") options.weight_dtype = DType::kF16;
  else if (a.dtype == "f32") options.weight_dtype = DType::kF32;
  else fail("--dtype takes bf16, f16 or f32, got '{}'", a.dtype);
  check(a.kv_dtype == "bf16" || a.kv_dtype == "fp8", "--kv-dtype takes bf16 or fp8, got '{}'", a.kv_dtype);
  options.fp8_kv = a.kv_dtype == "fp8";
  options.tensor_parallel = a.tensor_parallel;
  options.seed = a.seed;
  if (!a.speculate.empty()) return run_bench_speculation(a, options);
  check(a.acceptance_from.empty(), "--acceptance-from needs --speculate (the draft's attention spec)");
  nlohmann::json result = run_decode_bench(options);
  if (a.json) { print_json(result); return; }
  double measured = result.contains("copy_GBps") ? result["copy_GBps"].get<double>() : result["measured_read_GBps"].get<double>();
  std::cout << fmt::format(
      "decode {} on {} batch {} context {}: {:.3f} ms/step, {:.1f} tokens/s, {:.3f} GB/step, {:.1f} GB/s achieved of {:.1f} GB/s "
      "measured ({:.0f}% of the roofline)\n",
      result["config"].get<std::string>(), a.device, a.batch, a.context, result["ms_per_step"].get<double>(),
      result["tokens_per_s"].get<double>(), result["bytes_per_step"].get<double>() / 1e9, result["achieved_GBps"].get<double>(),
      measured, 100.0 * result["roofline_fraction"].get<double>());
}

struct PrefillArgs {
  std::string config, device = "cuda";
  bool random_weights = false, json = false;
  int64_t prompt_len = 8192, chunk = 8192, repeats = 3;
};

void run_bench_prefill(const PrefillArgs& a) {
  check(a.random_weights, "bench prefill: only --random-weights is supported (weights shaped by --config)");
  nlohmann::json result = run_prefill_bench({.config_path = a.config, .device = a.device, .prompt_len = a.prompt_len,
                                             .chunk = a.chunk, .repeats = a.repeats});
  if (a.json) { print_json(result); return; }
  std::cout << fmt::format("prefill {} of {} tokens: {:.2f} ms, {:.1f} TFLOP/s of {:.1f} measured ({:.0f}% of the GEMM rate)\n",
                           result["config"].get<std::string>(), a.prompt_len, result["ms_per_step"].get<double>(),
                           result["achieved_TFLOPs"].get<double>(), result["gemm_TFLOPs"].get<double>(),
                           100.0 * result["roofline_fraction"].get<double>());
}

}  // namespace

void add_bench_commands(CLI::App& app) {
  auto* bench = app.add_subcommand("bench", "Benchmarks (print one JSON object per configuration with --json)");
  bench->require_subcommand(1);
  auto dec = std::make_shared<DecodeArgs>();
  auto* d = bench->add_subcommand("decode", "Decode-step speed against the memory roofline");
  d->add_option("--config", dec->config, "Model config.json (configs/*.json)")->required();
  d->add_flag("--random-weights", dec->random_weights, "Random weights of the config's shapes");
  d->add_option("--batch", dec->batch, "Sequences decoding together")->capture_default_str();
  d->add_option("--context", dec->context, "Tokens already in each sequence's KV cache")->capture_default_str();
  d->add_option("--steps", dec->steps, "Timed decode steps")->capture_default_str();
  d->add_option("--dtype", dec->dtype, "Weight dtype: bf16, f16, f32")->capture_default_str();
  d->add_option("--device", dec->device, "cpu")->capture_default_str();
  d->add_option("--kv-dtype", dec->kv_dtype, "cuda: the KV cache's type, bf16 or fp8 (values e4m3, keys int8, a scale per row)")->capture_default_str();
  add_tensor_parallel_option(d, dec->tensor_parallel);
  d->add_option("--attention", dec->attention, "Attention spec, e.g. quest:budget=2048,sink=16,window=64,skip_layers=0-1")
      ->capture_default_str();
  d->add_option("--seed", dec->seed, "Seed of the random weights")->capture_default_str();
  d->add_option("--speculate", dec->speculate, "Self-speculation: time dense steps, this sparse draft's steps and verify "
                "steps for gamma = 1..--gamma-max, and project the speed-up at the --acceptance-from rate");
  d->add_option("--gamma-max", dec->gamma_max, "Largest gamma timed with --speculate")->capture_default_str();
  d->add_option("--acceptance-from", dec->acceptance_from, "Acceptance rate measured on a real model: a number, or the "
                "JSON that `vortex generate|eval ... --speculate ... --json` printed");
  d->add_flag("--json", dec->json, "Print one JSON object");
  d->callback([dec] { run_bench_decode(*dec); });

  auto pre = std::make_shared<PrefillArgs>();
  auto* p = bench->add_subcommand("prefill", "Prefill speed of one prompt against the measured bf16 GEMM rate (CUDA)");
  p->add_option("--config", pre->config, "Model config.json (configs/*.json)")->required();
  p->add_flag("--random-weights", pre->random_weights, "Random weights of the config's shapes");
  p->add_option("--prompt-len", pre->prompt_len, "Prompt tokens")->capture_default_str();
  p->add_option("--chunk", pre->chunk, "Prompt tokens per forward")->capture_default_str();
  p->add_option("--repeats", pre->repeats, "Timed repeats (median)")->capture_default_str();
  p->add_option("--device", pre->device, "cuda")->capture_default_str();
  p->add_flag("--json", pre->json, "Print one JSON object");
  p->callback([pre] { run_bench_prefill(*pre); });
}

}  // namespace vortex::cli
