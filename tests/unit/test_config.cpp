#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>

#include "backend/cpu/rope.h"
#include "common/test_util.h"
#include "core/error.h"
#include "io/hf_config.h"

namespace vortex {
namespace {

using ::testing::HasSubstr;
using nlohmann::json;

json qwen3_config() {
  return json::parse(R"({"architectures": ["Qwen3ForCausalLM"], "vocab_size": 512, "hidden_size": 96,
    "intermediate_size": 160, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
    "head_dim": 32, "max_position_embeddings": 4096, "rms_norm_eps": 1e-6, "tie_word_embeddings": true,
    "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0}, "eos_token_id": 7})");
}

std::string error_of(const json& config) {
  try {
    parse_model_config(config, "config.json");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(Config, ParsesTransformers5RopeParameters) {
  ModelConfig c = parse_model_config(qwen3_config(), "config.json");
  EXPECT_EQ(c.architecture, Architecture::kQwen3);
  EXPECT_EQ(c.head_dim, 32);
  EXPECT_EQ(c.group_size(), 2);
  EXPECT_TRUE(c.qk_norm);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_DOUBLE_EQ(c.rope.theta, 1e6);
  EXPECT_EQ(c.rope.type, RopeType::kDefault);
  EXPECT_EQ(c.eos_token_ids, std::vector<int32_t>{7});
}

TEST(Config, ParsesTopLevelRopeThetaAndScaling) {
  json config = json::parse(R"({"architectures": ["LlamaForCausalLM"], "vocab_size": 128, "hidden_size": 64,
    "intermediate_size": 128, "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 1,
    "rope_theta": 500000.0, "max_position_embeddings": 131072,
    "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192}, "eos_token_id": [1, 2]})");
  ModelConfig c = parse_model_config(config, "config.json");
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_EQ(c.rope.type, RopeType::kLlama3);
  EXPECT_EQ(c.rope.original_max_position, 8192);
  EXPECT_DOUBLE_EQ(c.rope.theta, 500000.0);
  EXPECT_EQ(c.eos_token_ids, (std::vector<int32_t>{1, 2}));
  EXPECT_FALSE(c.tie_word_embeddings);
}

TEST(Config, RejectsUnsupportedThingsByName) {
  json config = qwen3_config();
  config["architectures"] = {"Qwen3MoeForCausalLM"};
  EXPECT_THAT(error_of(config), HasSubstr("unsupported architecture 'Qwen3MoeForCausalLM'"));
  config = qwen3_config();
  config["rope_parameters"] = {{"rope_type", "longrope"}, {"rope_theta", 10000.0}};
  EXPECT_THAT(error_of(config), HasSubstr("unsupported rope scaling type 'longrope'"));
  config = qwen3_config();
  config["use_sliding_window"] = true;
  EXPECT_THAT(error_of(config), HasSubstr("use_sliding_window"));
  config = qwen3_config();
  config["hidden_act"] = "gelu";
  EXPECT_THAT(error_of(config), HasSubstr("hidden_act 'gelu'"));
  config = qwen3_config();
  config.erase("hidden_size");
  EXPECT_THAT(error_of(config), HasSubstr("missing field 'hidden_size'"));
  config = qwen3_config();
  config["num_key_value_heads"] = 3;
  EXPECT_THAT(error_of(config), HasSubstr("multiple of num_key_value_heads"));
  config = qwen3_config();
  config["vocab_size"] = "many";
  EXPECT_THAT(error_of(config), HasSubstr("'vocab_size' must be an integer"));
}

TEST(Config, GenerationConfigEosIdsComeFirst) {
  auto dir = test::scratch_dir("config-eos");
  std::ofstream(dir / "config.json") << qwen3_config().dump();
  std::ofstream(dir / "generation_config.json") << R"({"eos_token_id": [5, 7]})";
  ModelConfig c = load_model_config(dir);
  EXPECT_EQ(c.eos_token_ids, (std::vector<int32_t>{5, 7}));
}

TEST(Config, MissingAndInvalidFilesAreClearErrors) {
  auto dir = test::scratch_dir("config-missing");
  try {
    load_model_config(dir);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("config.json is missing"));
  }
  std::ofstream(dir / "config.json") << "{not json";
  try {
    load_model_config(dir);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("invalid JSON"));
  }
}

TEST(Config, ShippedConfigsParse) {
  for (const char* name : {"qwen3-0.6b", "qwen3-1.7b", "qwen3-4b", "qwen3-8b", "qwen3-14b", "qwen3-32b", "llama-3.1-8b"}) {
    ModelConfig c = load_model_config_file(test::source_dir() / "configs" / (std::string(name) + ".json"));
    EXPECT_GT(c.num_layers, 0) << name;
  }
  ModelConfig q8 = load_model_config_file(test::source_dir() / "configs" / "qwen3-8b.json");
  EXPECT_EQ(q8.hidden_size, 4096);
  EXPECT_EQ(q8.num_kv_heads, 8);
  EXPECT_EQ(q8.kv_bytes_per_token(2), 2 * 36 * 8 * 128 * 2);
  ModelConfig q32 = load_model_config_file(test::source_dir() / "configs" / "qwen3-32b.json");
  EXPECT_EQ(q32.num_layers, 64);
  EXPECT_EQ(q32.num_heads, 64);
  EXPECT_EQ(q32.intermediate_size, 25600);
}

// The llama3 schedule, computed independently from the published formula.
TEST(Rope, Llama3FrequenciesFollowThePublishedSchedule) {
  ModelConfig c;
  c.head_dim = 128;
  c.rope = {.type = RopeType::kLlama3, .theta = 500000.0, .factor = 8.0, .low_freq_factor = 1.0, .high_freq_factor = 4.0,
            .original_max_position = 8192};
  RopeFrequencies f = rope_frequencies(c);
  ASSERT_EQ(f.inv_freq.size(), 64u);
  for (int i = 0; i < 64; ++i) {
    double base = 1.0 / std::pow(500000.0, 2.0 * i / 128.0);
    double wavelen = 2 * M_PI / base, expected;
    if (wavelen < 8192.0 / 4.0) expected = base;
    else if (wavelen > 8192.0) expected = base / 8.0;
    else {
      double smooth = (8192.0 / wavelen - 1.0) / 3.0;
      expected = (1 - smooth) * base / 8.0 + smooth * base;
    }
    EXPECT_NEAR(f.inv_freq[static_cast<size_t>(i)], expected, expected * 1e-6) << i;
  }
  EXPECT_EQ(f.attention_scaling, 1.0f);
}

TEST(Rope, YarnScalesAttentionAndBlendsFrequencies) {
  ModelConfig c;
  c.head_dim = 64;
  c.rope = {.type = RopeType::kYarn, .theta = 10000.0, .factor = 4.0, .original_max_position = 64};
  RopeFrequencies f = rope_frequencies(c);
  EXPECT_NEAR(f.attention_scaling, 0.1 * std::log(4.0) + 1.0, 1e-6);
  EXPECT_NEAR(f.inv_freq[0], 1.0, 1e-6);                                   // fastest: extrapolated
  EXPECT_NEAR(f.inv_freq[31], 1.0 / std::pow(10000.0, 62.0 / 64) / 4.0, 1e-9);  // slowest: interpolated
}

}  // namespace
}  // namespace vortex
