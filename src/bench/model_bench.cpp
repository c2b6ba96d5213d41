#include "bench/model_bench.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <memory>
#include <random>
#include <vector>

#include "backend/cpu/forward.h"
#include "backend/cpu/memory_bandwidth.h"
#include "backend/cpu/tensor_parallel.h"
#include "core/error.h"
#include "io/hf_config.h"
#include "model/weights.h"
#include "runtime/cost.h"
#include "runtime/speculation.h"
#include "sparse/page_selection.h"
#include "sparse/sparse_attention.h"
#ifdef VORTEX_HAVE_CUDA
#include "backend/cuda/cuda_bench.h"
#include "backend/cuda/cuda_model.h"
#endif

#include "vortex_commit.h"  // generated at build time: VORTEX_COMMIT

namespace vortex {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

std::string config_name(const std::string& path) { return std::filesystem::path(path).stem().string(); }

#ifdef VORTEX_HAVE_CUDA
nlohmann::json run_decode_bench_cuda(const DecodeBenchOptions& o, const ModelConfig& config) {
  const int64_t page_size = 16, tokens = o.context + o.steps + 8;
  cuda::CudaModelOptions options{.precision = DType::kBF16, .fp8_kv = o.fp8_kv, .page_size = page_size,
                                 .num_pages = o.batch * ((tokens + page_size - 1) / page_size), .max_tokens = std::max<int64_t>(o.batch, 16)};
  cuda::DeviceCeilings ceilings = cuda::measure_device_ceilings();
  cuda::CudaModel model(config, options, o.seed);
  const std::shared_ptr<const SparseAttention> attention = resolve_attention(o.attention, page_size);
  if (attention) check_attention_fits(*attention, config.num_layers);
  std::map<std::string, double> breakdown;
  double ms = cuda::time_decode_step(model, o.batch, o.context, o.steps, attention.get(), &breakdown);
  // Bytes a step must move: every weight matrix once, plus the K and V (bf16, or fp8 rows with their
  // scales) each sequence reads — every cached token when dense — and, when sparse, the fields each
  // pass reads in their storage types.
  const int64_t mean_length = o.context + 1 + o.steps / 2;
  const double kv_element = o.fp8_kv ? static_cast<double>(kv_row_bytes(KvStorage::kFp8, config.head_dim)) / static_cast<double>(config.head_dim) : 2.0;
  const double attention_bytes = static_cast<double>(o.batch) * kv_bytes_read(config, attention.get(), mean_length, kv_element, true);
  double bytes = static_cast<double>(model.weight_bytes()) + attention_bytes;
  double seconds = ms / 1e3;
  return {{"kind", "decode"}, {"config", config_name(o.config_path)}, {"device", "cuda"}, {"gpu", ceilings.gpu},
          {"batch", o.batch}, {"context", o.context}, {"attention", o.attention}, {"weight_dtype", "BF16"}, {"kv_dtype", o.fp8_kv ? "FP8" : "BF16"},
          {"tensor_parallel", 1},
          {"steps", o.steps}, {"ms_per_step", ms}, {"tokens_per_s", static_cast<double>(o.batch) / seconds},
          {"bytes_per_step", bytes}, {"attention_bytes_per_step", attention_bytes}, {"achieved_GBps", bytes / seconds / 1e9},
          {"copy_GBps", ceilings.copy_GBps}, {"gemm_TFLOPs", ceilings.gemm_TFLOPs},
          {"roofline_fraction", bytes / (ceilings.copy_GBps * 1e9) / seconds}, {"breakdown_ms", breakdown}, {"commit", VORTEX_COMMIT}};
}
#endif

}  // namespace

nlohmann::json run_prefill_bench(const PrefillBenchOptions& o) {
  check(o.prompt_len > 0 && o.chunk > 0 && o.repeats > 0, "bench prefill: --prompt-len, --chunk and --repeats must be positive");
  ModelConfig config = load_model_config_file(o.config_path);
  check(o.prompt_len <= config.max_position_embeddings, "bench prefill: prompt of {} tokens exceeds the model's {} positions", o.prompt_len,
        config.max_position_embeddings);
#ifdef VORTEX_HAVE_CUDA
  check(o.device == "cuda", "bench prefill runs on --device cuda");
  const int64_t page_size = 16;
  cuda::CudaModelOptions options{.precision = DType::kBF16, .page_size = page_size,
                                 .num_pages = (o.prompt_len + page_size - 1) / page_size + 1, .max_tokens = std::min(o.chunk, o.prompt_len)};
  cuda::DeviceCeilings ceilings = cuda::measure_device_ceilings();
  cuda::CudaModel model(config, options, o.seed);
  double ms = cuda::time_prefill(model, o.prompt_len, o.repeats);
  // Useful FLOPs: 2 per weight per token (lm_head only for the last token), plus causal attention
  // (q·k and p·v over the causal half: 2 · L² · H · D per layer).
  const double L = static_cast<double>(o.prompt_len);
  const double lm_head = 2.0 * static_cast<double>(config.vocab_size * config.hidden_size);
  const double parameters = static_cast<double>(model.weight_bytes()) / 2.0;  // bf16 matrices
  const double matrices = 2.0 * parameters - lm_head;                            // FLOPs per token
  const double attention = 2.0 * L * L * static_cast<double>(config.num_heads * config.head_dim * config.num_layers);
  const double flops = matrices * L + lm_head + attention;
  const double seconds = ms / 1e3;
  return {{"kind", "prefill"}, {"config", config_name(o.config_path)}, {"device", "cuda"}, {"gpu", ceilings.gpu}, {"batch", 1},
          {"prompt_len", o.prompt_len}, {"chunk", options.max_tokens}, {"attention", "dense"}, {"ms_per_step", ms},
          {"tokens_per_s", L / seconds}, {"flops", flops}, {"achieved_TFLOPs", flops / seconds / 1e12},
          {"bytes_per_step", static_cast<double>(model.weight_bytes())}, {"copy_GBps", ceilings.copy_GBps},
          {"gemm_TFLOPs", ceilings.gemm_TFLOPs}, {"roofline_fraction", flops / (ceilings.gemm_TFLOPs * 1e12) / seconds},
          {"commit", VORTEX_COMMIT}};
#else
  fail("bench prefill needs --device cuda, and this build has no CUDA");
#endif
}

nlohmann::json run_decode_bench(const DecodeBenchOptions& o) {
  check(o.batch > 0 && o.context >= 0 && o.steps > 0, "bench decode: --batch and --steps must be positive, --context >= 0");
  ModelConfig config = load_model_config_file(o.config_path);
  check_option(o.tensor_parallel >= 1, "tensor_parallel", "must be at least 1, got {}", o.tensor_parallel);
  if (o.device == "cuda") {
    check_option(o.tensor_parallel == 1, "tensor_parallel", "{} ranks on cuda: tensor parallelism over GPUs is not built yet (issue #20)",
                 o.tensor_parallel);
#ifdef VORTEX_HAVE_CUDA
    // Random weights, timing only: a context past the config's positions (Qwen3-8B: 40960; 128K needs
    // YaRN, whose RoPE costs the same) is allowed and flagged in the result.
    const bool extended = o.context + o.steps + 8 > config.max_position_embeddings;
    if (extended) config.max_position_embeddings = o.context + o.steps + 8;
    nlohmann::json result = run_decode_bench_cuda(o, config);
    if (extended) result["positions_beyond_config"] = true;
    return result;
#else
    fail("device 'cuda' is not available in this build (built without CUDA)");
#endif
  }
  check(o.device == "cpu", "unknown device '{}' (cpu or cuda)", o.device);
  check(!o.fp8_kv, "bench decode: --kv-dtype fp8 runs on --device cuda (the CPU keeps its cache in f32)");
  check(o.context + o.steps + 2 <= config.max_position_embeddings, "bench decode: context {} + steps exceeds the model's {} positions",
        o.context, config.max_position_embeddings);
  auto weights = std::make_shared<ModelWeights>(random_model_weights(config, o.weight_dtype, o.seed));
  const int64_t page_size = 16, tokens = o.context + o.steps + 2;
  KvCacheShape shape{.num_layers = config.num_layers, .num_pages = o.batch * ((tokens + page_size - 1) / page_size),
                     .num_kv_heads = config.num_kv_heads, .page_size = page_size, .head_dim = config.head_dim};
  std::unique_ptr<ModelBackend> backend;
  cpu::TensorParallelModel* ranks = nullptr;  // tensor parallel: for the collectives' time
  if (o.tensor_parallel > 1) {
    auto split = std::make_unique<cpu::TensorParallelModel>(*weights, o.tensor_parallel, shape, o.batch);
    ranks = split.get();
    backend = std::move(split);
  } else {
    backend = std::make_unique<cpu::CpuModel>(weights, shape, o.batch);
  }
  ModelBackend& model = *backend;  // from here on, only the backend interface
  const std::shared_ptr<const SparseAttention> attention = resolve_attention(o.attention, page_size);
  std::vector<std::vector<int32_t>> pages(static_cast<size_t>(o.batch));
  for (auto& table : pages) check(model.reserve(table, tokens), "internal: bench KV reservation failed");
  model.fill_kv_random(o.seed);
  std::mt19937 rng(static_cast<uint32_t>(o.seed));
  std::vector<int32_t> next(static_cast<size_t>(o.batch));
  for (auto& id : next) id = static_cast<int32_t>(rng() % static_cast<uint32_t>(config.vocab_size));
  std::vector<float> logits;
  std::vector<SequenceChunk> chunks(static_cast<size_t>(o.batch));
  auto step = [&](int64_t position) {
    for (size_t b = 0; b < chunks.size(); ++b)
      chunks[b] = {.tokens = &next[b], .count = 1, .start = position, .page_table = &pages[b], .all_logits = false,
                   .attention = attention.get(), .sparse_from = 0};
    model.forward(chunks, logits);
  };
  step(o.context);
  step(o.context + 1);  // warm-up
  const std::vector<double> communication_before = ranks ? ranks->communication_seconds() : std::vector<double>{};
  auto t0 = Clock::now();
  for (int64_t s = 0; s < o.steps; ++s) step(o.context + 2 + s);
  double ms_per_step = seconds_since(t0) * 1e3 / static_cast<double>(o.steps);
  nlohmann::json communication_ms = nlohmann::json::array();  // per rank and step, waiting for the others included
  if (ranks) {
    const std::vector<double> communication_after = ranks->communication_seconds();
    for (size_t r = 0; r < communication_before.size(); ++r)
      communication_ms.push_back((communication_after[r] - communication_before[r]) * 1e3 / static_cast<double>(o.steps));
  }

  // Bytes a step must move: every weight matrix once, plus the K and V each sequence reads (fp32 on
  // the CPU) at the middle step's length.
  const int64_t mean_length = o.context + 3 + o.steps / 2;
  double kv_bytes = static_cast<double>(o.batch) * kv_bytes_read(config, attention.get(), mean_length, 4, false);
  double bytes = static_cast<double>(weights->matrix_bytes()) + kv_bytes;
  double measured = cpu::measure_read_bandwidth_gbps();
  double achieved = bytes / (ms_per_step / 1e3) / 1e9;
  return {{"kind", "decode"},
          {"config", config_name(o.config_path)},
          {"device", "cpu"},
          {"threads", omp_get_max_threads()},
          {"tensor_parallel", o.tensor_parallel},
          {"communication_ms_per_step", communication_ms},
          {"batch", o.batch},
          {"context", o.context},
          {"attention", o.attention},
          {"weight_dtype", std::string(dtype_name(o.weight_dtype))},
          {"kv_dtype", "F32"},
          {"steps", o.steps},
          {"ms_per_step", ms_per_step},
          {"tokens_per_s", static_cast<double>(o.batch) * 1e3 / ms_per_step},
          {"bytes_per_step", bytes},
          {"achieved_GBps", achieved},
          {"measured_read_GBps", measured},
          {"roofline_fraction", achieved / measured},
          {"commit", VORTEX_COMMIT}};
}

double read_acceptance(const std::string& text) {
  size_t used = 0;
  double rate = -1.0;
  try {
    rate = std::stod(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != text.size()) {  // a JSON file of a speculative run
    const nlohmann::json doc = read_json_file(text);
    const nlohmann::json* spec = nullptr;
    if (doc.contains("speculation")) spec = &doc["speculation"];
    else if (doc.contains("results"))
      for (const auto& r : doc["results"])
        if (r.contains("speculation")) spec = &r["speculation"];
    check(spec != nullptr && spec->contains("acceptance_rate") && (*spec)["acceptance_rate"].is_number(),
          "--acceptance-from {}: no speculation.acceptance_rate in it (give the JSON of a run with --speculate, or a rate)", text);
    rate = (*spec)["acceptance_rate"].get<double>();
  }
  check(rate >= 0.0 && rate <= 1.0, "--acceptance-from: the acceptance rate must be in [0, 1], got {}", rate);
  return rate;
}

nlohmann::json run_speculation_bench(const SpeculationBenchOptions& o) {
  const DecodeBenchOptions& d = o.decode;
  check(d.batch > 0 && d.context > 0 && d.steps > 0, "bench decode: --batch, --context and --steps must be positive");
  check(o.gamma_max >= 1 && o.gamma_max <= 16, "--gamma-max must be in 1..16, got {}", o.gamma_max);
  check_option(d.tensor_parallel == 1, "tensor_parallel", "bench decode --speculate times one rank");
  check(o.acceptance >= 0.0 && o.acceptance <= 1.0, "the acceptance rate must be in [0, 1], got {}", o.acceptance);
  ModelConfig config = load_model_config_file(d.config_path);
  const int64_t page_size = 16;
  const std::shared_ptr<const SparseAttention> draft = resolve_attention(o.draft, page_size);
  check(draft != nullptr, "--speculate '{}': the draft must attend sparsely", o.draft);
  check_attention_fits(*draft, config.num_layers);
  double dense_ms = 0.0, draft_ms = 0.0;
  std::vector<double> verify_ms;
  std::string gpu;
  if (d.device == "cuda") {
#ifdef VORTEX_HAVE_CUDA
    config.max_position_embeddings = std::max(config.max_position_embeddings, d.context + d.steps + o.gamma_max + 8);
    const int64_t tokens = d.context + d.steps + o.gamma_max + 8;
    cuda::CudaModelOptions options{.precision = DType::kBF16, .fp8_kv = d.fp8_kv, .page_size = page_size,
                                   .num_pages = d.batch * ((tokens + page_size - 1) / page_size),
                                   .max_tokens = std::max<int64_t>(d.batch * (o.gamma_max + 1), 16)};
    cuda::CudaModel model(config, options, d.seed);
    gpu = cuda::device_name();
    dense_ms = cuda::time_decode_step(model, d.batch, d.context, d.steps);
    draft_ms = cuda::time_decode_step(model, d.batch, d.context, d.steps, draft.get());
    for (int64_t gamma = 1; gamma <= o.gamma_max; ++gamma)
      verify_ms.push_back(cuda::time_verify_step(model, d.batch, d.context, gamma, d.steps));
#else
    fail("device 'cuda' is not available in this build (built without CUDA)");
#endif
  } else {
    check(d.device == "cpu", "unknown device '{}' (cpu or cuda)", d.device);
    check(!d.fp8_kv, "bench decode: --kv-dtype fp8 runs on --device cuda (the CPU keeps its cache in f32)");
    const int64_t tokens = d.context + o.gamma_max + 2;
    check(tokens <= config.max_position_embeddings, "bench decode: context {} exceeds the model's {} positions", d.context,
          config.max_position_embeddings);
    auto weights = std::make_shared<ModelWeights>(random_model_weights(config, d.weight_dtype, d.seed));
    KvCacheShape shape{.num_layers = config.num_layers, .num_pages = d.batch * ((tokens + page_size - 1) / page_size),
                       .num_kv_heads = config.num_kv_heads, .page_size = page_size, .head_dim = config.head_dim};
    const std::unique_ptr<ModelBackend> backend = std::make_unique<cpu::CpuModel>(weights, shape, d.batch * (o.gamma_max + 1));
    ModelBackend& model = *backend;
    std::vector<std::vector<int32_t>> pages(static_cast<size_t>(d.batch));
    for (auto& table : pages) check(model.reserve(table, tokens), "internal: bench KV reservation failed");
    model.fill_kv_random(d.seed);
    std::vector<int32_t> ids(static_cast<size_t>(o.gamma_max + 1), 1);
    std::vector<float> logits;
    std::vector<SequenceChunk> chunks(static_cast<size_t>(d.batch));
    // Every sequence runs `count` tokens from the context's end (the same slots again each time).
    auto time_steps = [&](int64_t count, const SparseAttention* attention) {
      for (size_t b = 0; b < chunks.size(); ++b)
        chunks[b] = {.tokens = ids.data(), .count = count, .start = d.context, .page_table = &pages[b], .all_logits = count > 1,
                     .attention = attention, .sparse_from = 0};
      model.forward(chunks, logits);  // warm-up
      auto t0 = Clock::now();
      for (int64_t s = 0; s < d.steps; ++s) model.forward(chunks, logits);
      return seconds_since(t0) * 1e3 / static_cast<double>(d.steps);
    };
    dense_ms = time_steps(1, nullptr);
    draft_ms = time_steps(1, draft.get());
    for (int64_t gamma = 1; gamma <= o.gamma_max; ++gamma) verify_ms.push_back(time_steps(gamma + 1, nullptr));
  }
  nlohmann::json speedup = nlohmann::json::array(), expected = nlohmann::json::array();
  int64_t best = 1;
  double best_speedup = 0.0;
  for (int64_t gamma = 1; gamma <= o.gamma_max; ++gamma) {
    const double tokens = expected_tokens(o.acceptance, static_cast<int32_t>(gamma));
    const double x = tokens * dense_ms / (static_cast<double>(gamma) * draft_ms + verify_ms[static_cast<size_t>(gamma - 1)]);
    expected.push_back(tokens);
    speedup.push_back(x);
    if (x > best_speedup) best = gamma, best_speedup = x;
  }
  nlohmann::json out = {{"kind", "speculation"}, {"config", config_name(d.config_path)}, {"device", d.device},
                        {"kv_dtype", d.fp8_kv ? "FP8" : (d.device == "cuda" ? "BF16" : "F32")}, {"batch", d.batch}, {"context", d.context}, {"draft", o.draft}, {"acceptance", o.acceptance},
                        {"acceptance_from", o.acceptance_source}, {"dense_ms", dense_ms}, {"draft_ms", draft_ms},
                        {"verify_ms", verify_ms}, {"expected_tokens", expected}, {"speedup", speedup},
                        {"best_gamma", best}, {"best_speedup", best_speedup},
                        {"dense_tokens_per_s", static_cast<double>(d.batch) * 1e3 / dense_ms},
                        {"effective_tokens_per_s", static_cast<double>(d.batch) * 1e3 / dense_ms * best_speedup},
                        {"commit", VORTEX_COMMIT}};
  if (!gpu.empty()) out["gpu"] = gpu;
  return out;
}

}  // namespace vortex
