// Tensor parallelism (issue #20) on the CPU: the shard plan of real shapes and its refusals, the
// shards' weights, and N ranks as threads (backend/cpu/tensor_parallel.h) against one rank — the
// same logits to fp32 rounding (sums over ranks add in another order) and the same greedy tokens,
// dense and sparse, with biases (Qwen2) and with KV heads replicated (more ranks than KV heads).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <vector>

#include "backend/cpu/forward.h"
#include "backend/cpu/tensor_parallel.h"
#include "common/test_util.h"
#include "core/error.h"
#include "io/hf_config.h"
#include "model/tensor_parallel.h"
#include "model/weights.h"
#include "sparse/sparse_attention.h"

namespace vortex {
namespace {

using ::testing::HasSubstr;

ModelConfig shipped(const char* name) { return load_model_config_file(test::source_dir() / "configs" / (std::string(name) + ".json")); }

TEST(ShardPlan, SplitsHeadsFeaturesAndVocabulary) {
  const ModelConfig c = shipped("qwen3-32b");  // H 64, G 8, F 25600, V 151936
  const ShardPlan p = shard_plan(c, 4, 3);
  EXPECT_EQ(p.q_heads, 16);
  EXPECT_EQ(p.q_begin, 48);
  EXPECT_EQ(p.kv_heads, 2);
  EXPECT_EQ(p.kv_begin, 6);
  EXPECT_EQ(p.ff, 6400);
  EXPECT_EQ(p.ff_begin, 19200);
  EXPECT_EQ(p.vocab, 37984);
  EXPECT_EQ(p.vocab_begin, 113952);
  EXPECT_EQ(p.full_vocab, 151936);
  // 16 ranks, 8 KV heads: each KV head on two ranks, each with 4 of its 8 query heads.
  for (int64_t r = 0; r < 16; ++r) {
    const ShardPlan q = shard_plan(c, 16, r);
    EXPECT_EQ(q.kv_heads, 1);
    EXPECT_EQ(q.kv_begin, r / 2) << r;
    EXPECT_EQ(q.q_begin, 4 * r);
  }
  // A vocabulary that does not divide: V / N rows each, the first V mod N ranks one more.
  ModelConfig odd = c;
  odd.vocab_size = 10;
  EXPECT_EQ(shard_plan(odd, 4, 1).vocab, 3);
  EXPECT_EQ(shard_plan(odd, 4, 3).vocab, 2);
  EXPECT_EQ(shard_plan(odd, 4, 3).vocab_begin, 8);
  odd.vocab_size = 9;  // 3, 2, 2, 2: every rank some
  EXPECT_EQ(shard_plan(odd, 4, 3).vocab_begin, 7);
  EXPECT_EQ(shard_plan(odd, 4, 3).full_kv_heads, 8);
}

TEST(ShardPlan, RefusesSplitsTheModelDoesNotAllowNamingTheOption) {
  const ModelConfig c = shipped("qwen3-14b");  // H 40, G 8, F 17408
  auto message = [](const ModelConfig& config, int64_t ranks) {
    try {
      shard_plan(config, ranks, 0);
    } catch (const OptionError& e) {
      EXPECT_EQ(e.option(), "tensor_parallel");
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_THAT(message(c, 3), HasSubstr("3 ranks do not divide the model's 40 query heads"));
  EXPECT_THAT(message(c, 16), HasSubstr("16 ranks do not divide the model's 40 query heads"));
  EXPECT_THAT(message(c, 0), HasSubstr("at least 1"));
  EXPECT_EQ(message(c, 8), "no error");
  ModelConfig six = c;  // 24 query heads over 6 KV heads, 4 ranks: neither KV count divides the other
  six.num_kv_heads = 6, six.num_heads = 24;
  EXPECT_THAT(message(six, 4), HasSubstr("neither divide the model's 6 KV heads nor are a multiple of them"));
  ModelConfig wide = c;  // 12 ranks over 4 KV heads of 3 query heads each: a rank gets 1, fine; 8 ranks would split 3 unevenly
  wide.num_heads = 12, wide.num_kv_heads = 4, wide.intermediate_size = 96;
  EXPECT_EQ(message(wide, 12), "no error");
  EXPECT_THAT(message(wide, 8), HasSubstr("do not divide the model's 12 query heads"));
}

TEST(ShardWeights, RowsAreViewsAndColumnsCopies) {
  ModelConfig c = shipped("qwen3-0.6b");
  c.num_layers = 1, c.vocab_size = 64, c.hidden_size = 32, c.intermediate_size = 48, c.num_heads = 4, c.num_kv_heads = 2, c.head_dim = 8;
  c.tie_word_embeddings = true;
  const ModelWeights full = random_model_weights(c, DType::kF32, 3);
  const ShardPlan p = shard_plan(c, 2, 1);
  const ModelWeights s = shard_weights(full, p);
  EXPECT_EQ(s.config.num_heads, 2);
  EXPECT_EQ(s.config.num_kv_heads, 1);
  EXPECT_EQ(s.config.intermediate_size, 24);
  EXPECT_EQ(s.config.vocab_size, 32);
  const LayerWeights &fl = full.layers[0], &sl = s.layers[0];
  auto at = [](const Matrix& m, int64_t r, int64_t col) { return static_cast<const float*>(m.data)[r * m.cols + col]; };
  EXPECT_EQ(sl.q_proj.rows, 16);
  EXPECT_EQ(sl.q_proj.data, static_cast<const float*>(fl.q_proj.data) + 16 * 32);  // rows 16..31: a view
  EXPECT_EQ(sl.k_proj.data, static_cast<const float*>(fl.k_proj.data) + 8 * 32);
  ASSERT_EQ(sl.o_proj.rows, 32);
  ASSERT_EQ(sl.o_proj.cols, 16);
  ASSERT_EQ(sl.down_proj.cols, 24);
  for (int64_t r = 0; r < 32; ++r) {
    for (int64_t k = 0; k < 16; ++k) ASSERT_EQ(at(sl.o_proj, r, k), at(fl.o_proj, r, 16 + k));
    for (int64_t k = 0; k < 24; ++k) ASSERT_EQ(at(sl.down_proj, r, k), at(fl.down_proj, r, 24 + k));
  }
  EXPECT_EQ(sl.gate_proj.data, static_cast<const float*>(fl.gate_proj.data) + 24 * 32);
  EXPECT_EQ(s.embed_tokens.data, static_cast<const float*>(full.embed_tokens.data) + 32 * 32);
  EXPECT_EQ(s.lm_head.data, s.embed_tokens.data);  // tied: the same rows
  // Row-parallel projections' biases go to rank 0 alone (the all-reduce adds them once); the
  // column-parallel ones are sliced.
  ModelWeights biased = full;
  biased.layers[0].o_bias.assign(32, 1.0f), biased.layers[0].down_bias.assign(32, 2.0f);
  biased.layers[0].q_bias.resize(32), biased.layers[0].up_bias.resize(48);
  for (size_t i = 0; i < 32; ++i) biased.layers[0].q_bias[i] = static_cast<float>(i);
  for (size_t i = 0; i < 48; ++i) biased.layers[0].up_bias[i] = static_cast<float>(i);
  const ModelWeights first = shard_weights(biased, shard_plan(c, 2, 0)), second = shard_weights(biased, p);
  EXPECT_EQ(first.layers[0].o_bias, biased.layers[0].o_bias);
  EXPECT_EQ(first.layers[0].down_bias, biased.layers[0].down_bias);
  EXPECT_TRUE(second.layers[0].o_bias.empty());
  EXPECT_TRUE(second.layers[0].down_bias.empty());
  EXPECT_EQ(second.layers[0].q_bias, std::vector<float>(biased.layers[0].q_bias.begin() + 16, biased.layers[0].q_bias.end()));
  EXPECT_EQ(second.layers[0].up_bias, std::vector<float>(biased.layers[0].up_bias.begin() + 24, biased.layers[0].up_bias.end()));
}

// A prompt's logits (every row) and then `steps` greedy tokens, through `model`.
struct Run {
  std::vector<float> prompt_logits;
  std::vector<int32_t> greedy;
};
Run run(ModelBackend& model, const std::vector<int32_t>& prompt, int64_t steps, const SparseAttention* attention, int64_t vocab) {
  std::vector<int32_t> pages;
  EXPECT_TRUE(model.reserve(pages, static_cast<int64_t>(prompt.size()) + steps));
  Run out;
  SequenceChunk chunk{.tokens = prompt.data(), .count = static_cast<int64_t>(prompt.size()), .start = 0, .page_table = &pages,
                      .all_logits = true, .attention = attention, .sparse_from = static_cast<int64_t>(prompt.size())};
  model.forward({&chunk, 1}, out.prompt_logits);
  std::vector<float> logits(out.prompt_logits.end() - vocab, out.prompt_logits.end());
  int64_t position = static_cast<int64_t>(prompt.size());
  for (int64_t s = 0; s < steps; ++s) {
    const int32_t next = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    out.greedy.push_back(next);
    SequenceChunk step{.tokens = &out.greedy.back(), .count = 1, .start = position++, .page_table = &pages, .all_logits = false,
                       .attention = attention, .sparse_from = static_cast<int64_t>(prompt.size())};
    model.forward({&step, 1}, logits);
  }
  return out;
}

struct Case {
  const char* model;
  int64_t ranks;
  const char* attention;  // or null: dense
};

void check_against_one_rank(const Case& k) {
  const auto dir = test::source_dir() / "tests" / "data" / "models" / k.model;
  const ModelConfig config = load_model_config(dir);
  auto weights = std::make_shared<ModelWeights>(load_model_weights(dir, config));
  const KvCacheShape shape{.num_layers = config.num_layers, .num_pages = 64, .num_kv_heads = config.num_kv_heads, .page_size = 16,
                           .head_dim = config.head_dim};
  std::vector<int32_t> prompt;
  for (int i = 0; i < 150; ++i) prompt.push_back(static_cast<int32_t>((i * 37 + 11) % (config.vocab_size - 3)) + 3);
  const std::shared_ptr<const SparseAttention> attention = k.attention ? resolve_attention(k.attention, 16) : nullptr;
  cpu::CpuModel one(weights, shape, 256);
  cpu::TensorParallelModel many(*weights, k.ranks, shape, 256);
  const Run want = run(one, prompt, 24, attention.get(), config.vocab_size);
  const Run got = run(many, prompt, 24, attention.get(), config.vocab_size);
  ASSERT_EQ(want.prompt_logits.size(), got.prompt_logits.size());
  double worst = 0.0;
  for (size_t i = 0; i < want.prompt_logits.size(); ++i) worst = std::max(worst, std::fabs(double{want.prompt_logits[i]} - got.prompt_logits[i]));
  EXPECT_LT(worst, 1e-4) << k.model << " at " << k.ranks << " ranks";  // fp32: only the order of the sums differs
  EXPECT_EQ(want.greedy, got.greedy) << k.model << " at " << k.ranks << " ranks";
}

TEST(CpuTensorParallel, TwoRanksGiveOneRanksLogitsAndTokens) { check_against_one_rank({"qwen3-f32", 2, nullptr}); }
TEST(CpuTensorParallel, FourRanksReplicateTheKvHeads) { check_against_one_rank({"qwen3-f32", 4, nullptr}); }
TEST(CpuTensorParallel, QwenTwosQkvBiasesAreSliced) { check_against_one_rank({"qwen2-f32-sharded", 2, nullptr}); }
TEST(CpuTensorParallel, EachRankSelectsForItsKvHeadsAsOneRankDoes) {
  check_against_one_rank({"qwen3-f32", 2, "quest:budget=32,page=16,sink=16,window=16"});
}
TEST(CpuTensorParallel, EachRankSamplesItsKvHeadsAsOneRankDoes) {  // lsh's hyperplanes by model-wide KV head
  check_against_one_rank({"qwen3-f32", 2, "lsh:k=4,l=20,sink=4,window=16"});
}

// The f32 test model (V 512) over `ranks`, 8 pages of 16 tokens, 64 tokens per forward.
std::unique_ptr<cpu::TensorParallelModel> small_model(int64_t ranks) {
  const auto dir = test::source_dir() / "tests" / "data" / "models" / "qwen3-f32";
  const ModelConfig config = load_model_config(dir);
  return std::make_unique<cpu::TensorParallelModel>(load_model_weights(dir, config), ranks,
                                                    KvCacheShape{.num_layers = config.num_layers, .num_pages = 8, .num_kv_heads = config.num_kv_heads,
                                                                 .page_size = 16, .head_dim = config.head_dim},
                                                    64);
}

TEST(CpuTensorParallel, SparseAttentionWithReplicatedKvHeadsIsRefused) {
  const auto model = small_model(4);
  cpu::TensorParallelModel& many = *model;
  const auto quest = resolve_attention("quest:budget=32,page=16,sink=16,window=16", 16);
  std::vector<int32_t> pages, tokens(40, 5);
  ASSERT_TRUE(many.reserve(pages, 40));
  SequenceChunk chunk{.tokens = tokens.data(), .count = 40, .start = 0, .page_table = &pages, .attention = quest.get(), .sparse_from = 0};
  std::vector<float> logits;
  try {
    many.forward({&chunk, 1}, logits);
    FAIL() << "expected an error";
  } catch (const OptionError& e) {
    EXPECT_EQ(e.option(), "tensor_parallel");
    EXPECT_THAT(e.what(), HasSubstr("at most as many ranks as KV heads"));
  }
}

TEST(CpuTensorParallel, AFailedStepNeitherHangsNorBreaksTheModel) {
  const auto model = small_model(2);
  cpu::TensorParallelModel& many = *model;
  std::vector<int32_t> pages, tokens(40, 5);
  ASSERT_TRUE(many.reserve(pages, 16));  // one page for 40 tokens: refused before any rank starts
  SequenceChunk chunk{.tokens = tokens.data(), .count = 40, .start = 0, .page_table = &pages};
  std::vector<float> logits;
  EXPECT_THROW(many.forward({&chunk, 1}, logits), Error);
  ASSERT_TRUE(many.reserve(pages, 40));
  many.forward({&chunk, 1}, logits);  // the model goes on
  EXPECT_EQ(logits.size(), size_t{512});
}

}  // namespace
}  // namespace vortex
