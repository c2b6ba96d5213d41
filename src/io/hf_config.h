// Hugging Face model configuration (config.json + generation_config.json), parsed and validated
// once into typed structs. Both RoPE forms are accepted: the top-level `rope_theta`/`rope_scaling`
// keys of transformers 4, and the `rope_parameters` dict that transformers 5 writes.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace vortex {

enum class Architecture { kQwen3, kQwen2, kLlama };

enum class RopeType { kDefault, kLinear, kLlama3, kYarn };

struct RopeConfig {
  RopeType type = RopeType::kDefault;
  double theta = 10000.0;
  double factor = 1.0;                    // linear, llama3, yarn
  double low_freq_factor = 1.0;           // llama3
  double high_freq_factor = 4.0;          // llama3
  int64_t original_max_position = 0;      // llama3, yarn (0 = max_position_embeddings)
  double beta_fast = 32.0;                // yarn
  double beta_slow = 1.0;                 // yarn
  double attention_factor = 0.0;          // yarn; 0 = derive from factor / mscale
  double mscale = 0.0;                    // yarn (DeepSeek-style), 0 = unset
  double mscale_all_dim = 0.0;            // yarn, 0 = unset
  bool truncate = true;                   // yarn: floor/ceil the correction range
};

struct ModelConfig {
  Architecture architecture = Architecture::kQwen3;
  std::string architecture_name;  // as written in config.json, e.g. "Qwen3ForCausalLM"
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  bool tie_word_embeddings = false;
  bool qk_norm = false;         // Qwen3: RMSNorm on q and k per head before RoPE
  bool qkv_bias = false;        // Qwen2 (always), Llama (attention_bias)
  bool o_bias = false;          // Llama attention_bias also biases o_proj
  bool mlp_bias = false;        // Llama mlp_bias
  RopeConfig rope;
  std::string torch_dtype;      // "bfloat16", "float32", ... (informational)
  int32_t bos_token_id = -1;
  std::vector<int32_t> eos_token_ids;  // config.json ∪ generation_config.json

  int64_t q_dim() const { return num_heads * head_dim; }
  int64_t kv_dim() const { return num_kv_heads * head_dim; }
  int64_t group_size() const { return num_heads / num_kv_heads; }
  // Bytes of K and V one token occupies in the KV cache, for `bytes_per_element` (2 for bf16).
  int64_t kv_bytes_per_token(int64_t bytes_per_element) const {
    return 2 * num_layers * kv_dim() * bytes_per_element;
  }
};

// Parses a config.json object; `source` names the file in error messages.
ModelConfig parse_model_config(const nlohmann::json& config, const std::string& source);
// Reads dir/config.json and, when present, dir/generation_config.json (eos ids).
ModelConfig load_model_config(const std::filesystem::path& dir);
// Reads a config file directly (configs/*.json for benchmarks with random weights).
ModelConfig load_model_config_file(const std::filesystem::path& file);

std::string architecture_name(Architecture architecture);

// Reads and parses a JSON file; a missing file or invalid JSON is a vortex::Error naming it.
nlohmann::json read_json_file(const std::filesystem::path& path);

}  // namespace vortex
