// The CUDA backend end to end: against transformers' goldens (f32 reference mode: the same
// tolerance as the CPU, 2e-3, and identical greedy continuations), against the CPU backend, and
// the bf16 fast path within a bf16 tolerance. Batched forwards equal separate ones.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "backend/cpu/forward.h"
#include "backend/cuda/cuda_model.h"
#include "common/test_util.h"
#include "io/hf_config.h"
#include "model/weights.h"
#include "runtime/engine_access.h"
#include "vortex/engine.h"

namespace vortex {
namespace {

std::vector<std::string> model_names() {
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(test::data_dir() / "models"))
    if (std::filesystem::exists(entry.path() / "golden.json")) names.push_back(entry.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

std::unique_ptr<Engine> cuda_engine(const std::filesystem::path& dir, const std::string& precision) {
  EngineOptions options;
  options.device = Device::kCuda;
  options.precision = parse_precision(precision);
  return Engine::open(dir, options);
}

double max_diff(const std::vector<float>& a, const std::vector<double>& b) {
  double worst = 0.0;
  for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::abs(a[i] - b[i]));
  return worst;
}

class CudaGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(CudaGolden, F32MatchesTransformersAndGreedyIsIdentical) {
  auto dir = test::data_dir() / "models" / GetParam();
  auto g = read_json_file(dir / "golden.json");
  auto engine = cuda_engine(dir, "f32");
  std::vector<int32_t> prompt = g["prompt_tokens"];
  double worst = max_diff(engine->score(prompt, 0).logprobs, g["logprobs"].get<std::vector<double>>());
  EXPECT_LE(worst, 2e-3);
  GenerateRequest request;
  request.prompt = prompt;
  request.sampling.temperature = 0.0f;
  request.max_tokens = static_cast<int64_t>(g["greedy"].size());
  request.ignore_eos = true;
  EXPECT_EQ(engine->generate(request).tokens, g["greedy"].get<std::vector<int32_t>>());
  std::cout << GetParam() << " cuda f32: max |delta logprob| vs transformers = " << worst << std::endl;
}

// Seeded sampling on the GPU (the engine's device path: no log-probabilities asked) gives the
// tokens the CPU backend's sampler gives, and the tokens the GPU gives when the request's logits
// come back to the host sampler (log-probabilities asked): same seed, same stream, same choice.
TEST_P(CudaGolden, F32SeededSamplingEqualsTheCpuSampler) {
  auto dir = test::data_dir() / "models" / GetParam();
  auto g = read_json_file(dir / "golden.json");
  auto gpu = cuda_engine(dir, "f32");
  auto cpu = Engine::open(dir, EngineOptions{});
  for (const SamplingParams& sampling : {SamplingParams{.temperature = 1.0f, .seed = 5},
                                         SamplingParams{.temperature = 0.8f, .top_k = 40, .top_p = 0.9f, .min_p = 0.02f, .seed = 6}}) {
    GenerateRequest request;
    request.prompt = g["prompt_tokens"].get<std::vector<int32_t>>();
    request.sampling = sampling;
    request.max_tokens = 24;
    request.ignore_eos = true;
    const auto on_device = gpu->generate(request).tokens;
    request.logprobs = 0;  // logits to the host: the CPU sampler on the GPU's logits
    const auto on_host = gpu->generate(request).tokens;
    request.logprobs = -1;
    EXPECT_EQ(on_device, cpu->generate(request).tokens) << "seed " << sampling.seed;
    EXPECT_EQ(on_device, on_host) << "seed " << sampling.seed;
    request.sampling.seed += 100;
    EXPECT_NE(on_device, gpu->generate(request).tokens) << "another seed, other tokens";
  }
}

// A sparse rollout (GenerateRequest::rollout) on the GPU, whose rows are reduced on the device,
// gives the tokens and trace the GPU gives when the logits come back to the host (log-probabilities
// asked), and the CPU backend's tokens and dense log-probs: sampled, with refresh and OBRS.
TEST_P(CudaGolden, F32RolloutsReduceOnTheDeviceAsOnTheHost) {
  auto dir = test::data_dir() / "models" / GetParam();
  auto gpu = cuda_engine(dir, "f32");
  auto cpu = Engine::open(dir, EngineOptions{});
  for (int64_t refresh : {0, 8}) {
    GenerateRequest request;
    for (int i = 0; i < 150; ++i) request.prompt.push_back((i * 37 + 5) % 400 + 3);  // within every test vocabulary
    request.max_tokens = 32;
    request.ignore_eos = true;
    request.sampling = {.temperature = 0.9f, .seed = 9};
    request.attention = "quest:budget=32,sink=16,window=16";
    request.rollout = {.enabled = true, .refresh = refresh, .alpha_top = 64, .obrs_lambda = 0.8};
    const GenerateResult device = gpu->generate(request);
    request.logprobs = 0;  // every row's logits to the host
    const GenerateResult host = gpu->generate(request);
    request.logprobs = -1;
    const GenerateResult reference = cpu->generate(request);
    ASSERT_EQ(device.tokens, host.tokens) << "refresh " << refresh;
    EXPECT_EQ(device.tokens, reference.tokens) << "refresh " << refresh;
    const RolloutTrace &a = device.rollout, &b = host.rollout;
    ASSERT_EQ(a.alpha.size(), b.alpha.size());
    double worst = 0.0, worst_cpu = 0.0;
    for (size_t i = 0; i < a.alpha.size(); ++i) {
      worst = std::max({worst, std::abs(static_cast<double>(a.logprobs[i] - b.logprobs[i])),
                        std::abs(static_cast<double>(a.dense_logprobs[i] - b.dense_logprobs[i])),
                        std::abs(static_cast<double>(a.alpha[i] - b.alpha[i])),
                        std::abs(static_cast<double>(a.obrs_accept[i] - b.obrs_accept[i]))});
      worst_cpu = std::max(worst_cpu, std::abs(static_cast<double>(a.dense_logprobs[i] - reference.rollout.dense_logprobs[i])));
    }
    EXPECT_LE(worst, 1e-5) << "refresh " << refresh;
    EXPECT_LE(worst_cpu, 2e-3) << "refresh " << refresh;
    EXPECT_EQ(a.dense_passes, b.dense_passes);
  }
}

TEST_P(CudaGolden, Bf16IsCloseToTransformers) {
  auto dir = test::data_dir() / "models" / GetParam();
  auto g = read_json_file(dir / "golden.json");
  auto engine = cuda_engine(dir, "bf16");
  double worst = max_diff(engine->score(g["prompt_tokens"].get<std::vector<int32_t>>(), 0).logprobs, g["logprobs"].get<std::vector<double>>());
  // bf16 activations and KV: 8 mantissa bits per rounding, several roundings per layer; these
  // tiny random models have sharp attention (entropy ~0.4 of uniform), which amplifies them.
  EXPECT_LE(worst, 0.5);
  std::cout << GetParam() << " cuda bf16: max |delta logprob| vs transformers = " << worst << std::endl;
}

INSTANTIATE_TEST_SUITE_P(Transformers, CudaGolden, ::testing::ValuesIn(model_names()), [](const auto& info) {
  std::string name = info.param;
  for (char& c : name) if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  return name;
});

// Three sequences in one forward (two decode tokens and a prefill chunk) give the logits each
// gets alone: continuous batching does not change results.
TEST(CudaModel, BatchedForwardEqualsSeparateForwards) {
  auto dir = test::data_dir() / "models" / "llama3-f32";
  ModelConfig config = load_model_config(dir);
  auto weights = std::make_shared<ModelWeights>(load_model_weights(dir, config));
  cuda::CudaModel model(weights, {.precision = DType::kF32, .page_size = 16, .num_pages = 64, .max_tokens = 64});
  std::vector<int32_t> a = {5, 9, 13, 2, 7}, b = {100, 3}, c = {11, 12, 13, 14, 15, 16, 17, 18, 19};
  auto prefill = [&](std::vector<int32_t>& tokens, std::vector<int32_t>& pages) {
    ASSERT_TRUE(model.reserve(pages, static_cast<int64_t>(tokens.size()) + 1));
    SequenceChunk chunk{.tokens = tokens.data(), .count = static_cast<int64_t>(tokens.size()) - 1, .page_table = &pages};
    std::vector<float> ignored;
    model.forward({&chunk, 1}, ignored);
  };
  std::vector<int32_t> pa, pb, pc;
  prefill(a, pa);
  prefill(b, pb);
  ASSERT_TRUE(model.reserve(pc, static_cast<int64_t>(c.size())));
  std::vector<SequenceChunk> batch = {{.tokens = &a.back(), .count = 1, .start = 4, .page_table = &pa},
                                      {.tokens = c.data(), .count = 9, .start = 0, .page_table = &pc, .all_logits = true},
                                      {.tokens = &b.back(), .count = 1, .start = 1, .page_table = &pb}};
  std::vector<float> together, alone, row;
  model.forward(batch, together);
  const size_t V = static_cast<size_t>(config.vocab_size);
  ASSERT_EQ(together.size(), 11 * V);
  for (size_t i : {size_t{0}, size_t{1}, size_t{2}}) {
    model.forward({&batch[i], 1}, alone);
    size_t offset = i == 0 ? 0 : (i == 1 ? V : 10 * V);
    for (size_t j = 0; j < alone.size(); ++j) ASSERT_NEAR(alone[j], together[offset + j], 1e-4) << "chunk " << i << " element " << j;
  }
}

}  // namespace
}  // namespace vortex

namespace vortex {
namespace {

// Real model shapes the small goldens lack (head_dim 128, GQA 4, hidden 1024, 600-token prompts
// across several chunks and attention splits): the CUDA backend against the CPU backend on the
// same random weights. f32 precision must agree to fp32 rounding; bf16 within bf16 noise.
// These random weights give huge logits: log-probs average −940 (logit spreads up to ~1,150;
// measured with the CPU backend), so fp32 rounding alone moves them by ~1e-3. The f32 check is
// therefore relative to each log-prob's magnitude; bf16 stays absolute.
// tolerance bounds the worst |Δ log-prob| (relative: over max(1, |log-prob|)); mean_tolerance, when
// positive, the mean |Δ|, which catches a systematic error that stays under the worst case.
void check_against_cpu(const std::string& precision, double tolerance, bool relative, double mean_tolerance = 0.0) {
  ModelConfig config = load_model_config_file(test::source_dir() / "configs" / "qwen3-0.6b.json");
  config.num_layers = 3;
  auto weights = std::make_shared<ModelWeights>(random_model_weights(config, DType::kBF16, 7));
  std::vector<int32_t> prompt(600);
  for (size_t i = 0; i < prompt.size(); ++i) prompt[i] = static_cast<int32_t>((i * 7919 + 13) % 150000);
  EngineOptions cpu_options;
  cpu_options.max_context = 1024;
  EngineOptions cuda_options = cpu_options;
  cuda_options.device = Device::kCuda;
  cuda_options.precision = parse_precision(precision);
  auto cpu = EngineAccess::from_weights(weights, cpu_options)->score(prompt, 0);
  auto gpu = EngineAccess::from_weights(weights, cuda_options)->score(prompt, 0);
  ASSERT_EQ(cpu.logprobs.size(), gpu.logprobs.size());
  double worst = 0.0, worst_relative = 0.0, total = 0.0;
  for (size_t i = 0; i < cpu.logprobs.size(); ++i) {
    double d = std::abs(cpu.logprobs[i] - gpu.logprobs[i]);
    worst = std::max(worst, d), total += d;
    worst_relative = std::max(worst_relative, d / std::max(1.0, std::abs(static_cast<double>(cpu.logprobs[i]))));
  }
  std::cout << "qwen3-0.6b shape, 3 layers, 600 tokens, cuda " << precision << " vs cpu: max |delta logprob| " << worst
            << " (relative " << worst_relative << "), mean " << total / static_cast<double>(cpu.logprobs.size()) << std::endl;
  EXPECT_LE(relative ? worst_relative : worst, tolerance);
  if (mean_tolerance > 0.0) {
    EXPECT_LE(total / static_cast<double>(cpu.logprobs.size()), mean_tolerance);
  }
}

TEST(CudaModel, MatchesCpuAtRealShapesF32) { check_against_cpu("f32", 1e-5, true); }
// bf16 against the CPU's f32: measured on an H100 at 3355ced (bench/results/2026-12-07-gpu-tests-
// 3355ced-h100.txt) worst 0.375, mean 0.0957; the bounds are those plus 20% (0.5 before, when the
// worst measured was 0.31).
TEST(CudaModel, MatchesCpuAtRealShapesBf16) { check_against_cpu("bf16", 0.45, false, 0.115); }

}  // namespace
}  // namespace vortex
