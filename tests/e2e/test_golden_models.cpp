// End to end against Hugging Face transformers: the golden files under tests/data/models were
// made by tools/golden/make_goldens.py (command recorded in each file) from small random
// checkpoints. f32 and bf16/f16 checkpoints (computed in fp32 here and there): max |Δlogprob| ≤ 2e-3,
// identical greedy continuations.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <map>

#include "common/test_util.h"
#include "io/hf_config.h"
#include "io/tokenizer.h"
#include "runtime/engine_access.h"
#include "vortex/engine.h"

namespace vortex {
namespace {

constexpr double kLogprobTolerance = 2e-3;

std::vector<std::filesystem::path> golden_model_dirs() {
  std::vector<std::filesystem::path> dirs;
  auto root = test::data_dir() / "models";
  if (!std::filesystem::exists(root)) return dirs;
  for (const auto& entry : std::filesystem::directory_iterator(root))
    if (std::filesystem::exists(entry.path() / "golden.json")) dirs.push_back(entry.path());
  std::sort(dirs.begin(), dirs.end());
  return dirs;
}

TEST(GoldenModels, AllSixCheckpointsArePresent) {
  // Qwen3 f32/bf16/f16-yarn, Qwen2 f32 sharded, Llama-3 f32/bf16: a missing one is a failure.
  EXPECT_GE(golden_model_dirs().size(), 6u) << "run tools/golden/make_goldens.py (see tools/golden/README.md)";
}

class GoldenModelTest : public ::testing::TestWithParam<std::string> {
 protected:
  std::filesystem::path dir() const { return test::data_dir() / "models" / GetParam(); }
  nlohmann::json golden() const { return read_json_file(dir() / "golden.json"); }
};

TEST_P(GoldenModelTest, LogprobsMatchTransformers) {
  auto g = golden();
  auto engine = Engine::open(dir());
  std::vector<int32_t> prompt = g["prompt_tokens"];
  ScoreResult result = engine->score(prompt, static_cast<int32_t>(EngineAccess::config(*engine).vocab_size));
  std::vector<double> expected = g["logprobs"];
  ASSERT_EQ(result.logprobs.size(), expected.size());
  double worst = 0.0;
  for (size_t i = 0; i < expected.size(); ++i) worst = std::max(worst, std::abs(result.logprobs[i] - expected[i]));
  EXPECT_LE(worst, kLogprobTolerance) << "max |delta logprob| over " << expected.size() << " positions";
  // top5[i] is the next-token distribution after prompt[0..i]; score's row i is the same one
  // (it scores prompt[i+1]), for i < n-1.
  for (size_t i = 0; i + 1 < prompt.size(); ++i) {
    std::map<int32_t, float> ours(result.top[i].begin(), result.top[i].end());
    for (const auto& pair : g["top5"][i]) {
      int32_t id = pair[0];
      double lp = pair[1];
      ASSERT_TRUE(ours.count(id)) << "position " << i;
      EXPECT_NEAR(ours[id], lp, kLogprobTolerance) << "position " << i << " token " << id;
    }
    EXPECT_EQ(result.top[i][0].first, g["top5"][i][0][0].get<int32_t>()) << "argmax differs at position " << i;
  }
  std::cout << GetParam() << ": max |delta logprob| = " << worst << std::endl;
}

TEST_P(GoldenModelTest, GreedyContinuationIsIdentical) {
  auto g = golden();
  auto engine = Engine::open(dir());
  GenerateRequest request;
  request.prompt = g["prompt_tokens"].get<std::vector<int32_t>>();
  request.sampling.temperature = 0.0f;
  request.max_tokens = static_cast<int64_t>(g["greedy"].size());
  request.ignore_eos = true;
  GenerateResult result = engine->generate(request);
  EXPECT_EQ(result.tokens, g["greedy"].get<std::vector<int32_t>>());
}

TEST_P(GoldenModelTest, ChunkedPrefillGivesTheSameLogprobs) {
  auto g = golden();
  std::vector<int32_t> prompt = g["prompt_tokens"];
  auto whole = Engine::open(dir())->score(prompt, 0);
  EngineOptions options;
  options.prefill_chunk = 7;
  options.page_size = 32;
  auto chunked = Engine::open(dir(), options)->score(prompt, 0);
  ASSERT_EQ(whole.logprobs.size(), chunked.logprobs.size());
  for (size_t i = 0; i < whole.logprobs.size(); ++i) EXPECT_NEAR(whole.logprobs[i], chunked.logprobs[i], 1e-4) << i;
}

std::vector<std::string> model_names() {
  std::vector<std::string> names;
  for (const auto& dir : golden_model_dirs()) names.push_back(dir.filename().string());
  if (names.empty()) names.push_back("missing-golden-models");  // fails loudly instead of running nothing
  return names;
}

INSTANTIATE_TEST_SUITE_P(Transformers, GoldenModelTest, ::testing::ValuesIn(model_names()),
                         [](const auto& info) {
                           std::string name = info.param;
                           for (char& c : name) if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                           return name;
                         });

// The model with a tokenizer: text in, the same ids and the same greedy text as transformers.
TEST(GoldenModels, TextPromptThroughTheTokenizer) {
  auto dir = test::data_dir() / "models" / "qwen3-f32";
  auto g = read_json_file(dir / "golden.json");
  auto engine = Engine::open(dir);
  ASSERT_NE(EngineAccess::tokenizer(*engine), nullptr);
  std::vector<int32_t> ids = EngineAccess::tokenizer(*engine)->encode(g["text_prompt"].get<std::string>());
  EXPECT_EQ(ids, g["text_prompt_ids"].get<std::vector<int32_t>>());
  GenerateRequest request;
  request.prompt = ids;
  request.sampling.temperature = 0.0f;
  request.max_tokens = static_cast<int64_t>(g["text_greedy"].size());
  request.ignore_eos = true;
  EXPECT_EQ(engine->generate(request).tokens, g["text_greedy"].get<std::vector<int32_t>>());
}

}  // namespace
}  // namespace vortex
