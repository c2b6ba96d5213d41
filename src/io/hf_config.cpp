#include "io/hf_config.h"

#include <algorithm>
#include <fstream>
#include <set>
#include <sstream>

#include "core/error.h"

namespace vortex {
namespace {

using nlohmann::json;

int64_t get_int(const json& object, const char* key, const std::string& source) {
  auto it = object.find(key);
  check(it != object.end() && !it->is_null(), "{}: missing field '{}'", source, key);
  check(it->is_number_integer(), "{}: field '{}' must be an integer, got {}", source, key, it->dump());
  return it->get<int64_t>();
}

int64_t get_int_or(const json& object, const char* key, int64_t fallback, const std::string& source) {
  auto it = object.find(key);
  if (it == object.end() || it->is_null()) return fallback;
  check(it->is_number_integer(), "{}: field '{}' must be an integer, got {}", source, key, it->dump());
  return it->get<int64_t>();
}

double get_double_or(const json& object, const char* key, double fallback, const std::string& source) {
  auto it = object.find(key);
  if (it == object.end() || it->is_null()) return fallback;
  check(it->is_number(), "{}: field '{}' must be a number, got {}", source, key, it->dump());
  return it->get<double>();
}

bool get_bool_or(const json& object, const char* key, bool fallback, const std::string& source) {
  auto it = object.find(key);
  if (it == object.end() || it->is_null()) return fallback;
  check(it->is_boolean(), "{}: field '{}' must be true or false, got {}", source, key, it->dump());
  return it->get<bool>();
}

// Adds an int or a list of ints (eos_token_id may be either) to `ids`, without duplicates.
void add_token_ids(const json& value, std::vector<int32_t>& ids, const std::string& source) {
  auto add = [&](const json& item) {
    check(item.is_number_integer(), "{}: eos_token_id must be an integer or a list of integers, got {}",
          source, value.dump());
    auto id = item.get<int32_t>();
    if (std::find(ids.begin(), ids.end(), id) == ids.end()) ids.push_back(id);
  };
  if (value.is_null()) return;
  if (value.is_array()) {
    for (const auto& item : value) add(item);
  } else {
    add(value);
  }
}

Architecture parse_architecture(const json& config, const std::string& source, std::string* name) {
  auto it = config.find("architectures");
  check(it != config.end() && it->is_array() && !it->empty() && (*it)[0].is_string(),
        "{}: missing 'architectures' (a list naming the model class)", source);
  *name = (*it)[0].get<std::string>();
  if (*name == "Qwen3ForCausalLM") return Architecture::kQwen3;
  if (*name == "Qwen2ForCausalLM") return Architecture::kQwen2;
  if (*name == "LlamaForCausalLM") return Architecture::kLlama;
  fail("{}: unsupported architecture '{}' (supported: Qwen3ForCausalLM, Qwen2ForCausalLM, LlamaForCausalLM)",
       source, *name);
}

// The RoPE parameters: transformers 5's `rope_parameters`, else 4's `rope_theta` + `rope_scaling`.
RopeConfig parse_rope(const json& config, const std::string& source) {
  RopeConfig rope;
  json scaling = json::object();
  if (auto it = config.find("rope_parameters"); it != config.end() && !it->is_null()) {
    check(it->is_object(), "{}: 'rope_parameters' must be an object", source);
    scaling = *it;
    rope.theta = get_double_or(scaling, "rope_theta", get_double_or(config, "rope_theta", 10000.0, source), source);
  } else {
    rope.theta = get_double_or(config, "rope_theta", 10000.0, source);
    if (auto sc = config.find("rope_scaling"); sc != config.end() && !sc->is_null()) {
      check(sc->is_object(), "{}: 'rope_scaling' must be an object or null", source);
      scaling = *sc;
    }
  }
  std::string type = "default";
  if (auto t = scaling.find("rope_type"); t != scaling.end() && t->is_string()) type = t->get<std::string>();
  else if (auto t2 = scaling.find("type"); t2 != scaling.end() && t2->is_string()) type = t2->get<std::string>();
  check(rope.theta > 0, "{}: rope_theta must be positive, got {}", source, rope.theta);

  rope.factor = get_double_or(scaling, "factor", 1.0, source);
  rope.original_max_position = get_int_or(scaling, "original_max_position_embeddings", 0, source);
  if (type == "default") {
    rope.type = RopeType::kDefault;
  } else if (type == "linear") {
    rope.type = RopeType::kLinear;
  } else if (type == "llama3") {
    rope.type = RopeType::kLlama3;
    rope.low_freq_factor = get_double_or(scaling, "low_freq_factor", 1.0, source);
    rope.high_freq_factor = get_double_or(scaling, "high_freq_factor", 4.0, source);
    check(rope.original_max_position > 0, "{}: llama3 rope scaling needs original_max_position_embeddings", source);
    check(rope.high_freq_factor != rope.low_freq_factor, "{}: llama3 rope scaling needs high_freq_factor != low_freq_factor", source);
  } else if (type == "yarn") {
    rope.type = RopeType::kYarn;
    rope.beta_fast = get_double_or(scaling, "beta_fast", 32.0, source);
    rope.beta_slow = get_double_or(scaling, "beta_slow", 1.0, source);
    rope.attention_factor = get_double_or(scaling, "attention_factor", 0.0, source);
    rope.mscale = get_double_or(scaling, "mscale", 0.0, source);
    rope.mscale_all_dim = get_double_or(scaling, "mscale_all_dim", 0.0, source);
    rope.truncate = get_bool_or(scaling, "truncate", true, source);
  } else {
    fail("{}: unsupported rope scaling type '{}' (supported: default, linear, llama3, yarn)", source, type);
  }
  if (rope.type != RopeType::kDefault) check(rope.factor > 0, "{}: rope scaling factor must be positive", source);
  return rope;
}

// Features of these model families that Vortex does not implement: refuse rather than be wrong.
void reject_unsupported(const json& config, const std::string& source) {
  if (get_bool_or(config, "use_sliding_window", false, source))
    fail("{}: unsupported config feature 'use_sliding_window: true'", source);
  if (auto it = config.find("hidden_act"); it != config.end() && it->is_string() && it->get<std::string>() != "silu")
    fail("{}: unsupported hidden_act '{}' (only silu)", source, it->get<std::string>());
  if (get_double_or(config, "partial_rotary_factor", 1.0, source) != 1.0)
    fail("{}: unsupported config feature 'partial_rotary_factor'", source);
  if (get_int_or(config, "pretraining_tp", 1, source) != 1) {
    // pretraining_tp only changes how transformers splits matmuls, not the math: accepted.
  }
}

}  // namespace

nlohmann::json read_json_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  check(static_cast<bool>(in), "cannot open {}", path.string());
  std::ostringstream buffer;
  buffer << in.rdbuf();
  try {
    return nlohmann::json::parse(buffer.str());
  } catch (const nlohmann::json::parse_error& e) {
    fail("{}: invalid JSON: {}", path.string(), e.what());
  }
}

std::string architecture_name(Architecture architecture) {
  switch (architecture) {
    case Architecture::kQwen3: return "Qwen3ForCausalLM";
    case Architecture::kQwen2: return "Qwen2ForCausalLM";
    case Architecture::kLlama: return "LlamaForCausalLM";
  }
  return "?";
}

ModelConfig parse_model_config(const json& config, const std::string& source) {
  check(config.is_object(), "{}: must be a JSON object", source);
  ModelConfig c;
  c.architecture = parse_architecture(config, source, &c.architecture_name);
  reject_unsupported(config, source);
  c.vocab_size = get_int(config, "vocab_size", source);
  c.hidden_size = get_int(config, "hidden_size", source);
  c.intermediate_size = get_int(config, "intermediate_size", source);
  c.num_layers = get_int(config, "num_hidden_layers", source);
  c.num_heads = get_int(config, "num_attention_heads", source);
  c.num_kv_heads = get_int_or(config, "num_key_value_heads", c.num_heads, source);
  check(c.vocab_size > 0 && c.hidden_size > 0 && c.intermediate_size > 0 && c.num_layers > 0 && c.num_heads > 0,
        "{}: vocab_size, hidden_size, intermediate_size, num_hidden_layers, num_attention_heads must be positive", source);
  check(c.num_kv_heads > 0 && c.num_heads % c.num_kv_heads == 0,
        "{}: num_attention_heads ({}) must be a multiple of num_key_value_heads ({})", source, c.num_heads, c.num_kv_heads);
  c.head_dim = get_int_or(config, "head_dim", 0, source);
  if (c.head_dim == 0) {
    check(c.hidden_size % c.num_heads == 0, "{}: hidden_size {} is not divisible by num_attention_heads {}", source,
          c.hidden_size, c.num_heads);
    c.head_dim = c.hidden_size / c.num_heads;
  }
  check(c.head_dim > 0 && c.head_dim % 2 == 0, "{}: head_dim must be positive and even, got {}", source, c.head_dim);
  c.max_position_embeddings = get_int_or(config, "max_position_embeddings", 2048, source);
  check(c.max_position_embeddings > 0, "{}: max_position_embeddings must be positive", source);
  c.rms_norm_eps = get_double_or(config, "rms_norm_eps", 1e-6, source);
  // The default of Qwen3Config, Qwen2Config and LlamaConfig alike.
  c.tie_word_embeddings = get_bool_or(config, "tie_word_embeddings", false, source);
  c.rope = parse_rope(config, source);
  if (c.rope.original_max_position == 0) c.rope.original_max_position = c.max_position_embeddings;
  switch (c.architecture) {
    case Architecture::kQwen3:
      c.qk_norm = true;
      c.qkv_bias = c.o_bias = get_bool_or(config, "attention_bias", false, source);
      break;
    case Architecture::kQwen2:
      c.qkv_bias = true;
      break;
    case Architecture::kLlama:
      c.qkv_bias = c.o_bias = get_bool_or(config, "attention_bias", false, source);
      c.mlp_bias = get_bool_or(config, "mlp_bias", false, source);
      break;
  }
  if (auto it = config.find("torch_dtype"); it != config.end() && it->is_string()) c.torch_dtype = *it;
  if (auto it = config.find("dtype"); it != config.end() && it->is_string()) c.torch_dtype = *it;
  c.bos_token_id = static_cast<int32_t>(get_int_or(config, "bos_token_id", -1, source));
  if (auto it = config.find("eos_token_id"); it != config.end()) add_token_ids(*it, c.eos_token_ids, source);
  return c;
}

ModelConfig load_model_config_file(const std::filesystem::path& file) {
  return parse_model_config(read_json_file(file), file.string());
}

ModelConfig load_model_config(const std::filesystem::path& dir) {
  check(std::filesystem::is_directory(dir), "model directory {} does not exist", dir.string());
  auto config_path = dir / "config.json";
  check(std::filesystem::exists(config_path), "{} is missing: a model directory needs config.json", config_path.string());
  ModelConfig config = load_model_config_file(config_path);
  auto generation_path = dir / "generation_config.json";
  if (std::filesystem::exists(generation_path)) {
    auto generation = read_json_file(generation_path);
    check(generation.is_object(), "{}: must be a JSON object", generation_path.string());
    // generation_config's eos ids are what generate() stops on; config.json's come after.
    std::vector<int32_t> eos;
    if (auto it = generation.find("eos_token_id"); it != generation.end())
      add_token_ids(*it, eos, generation_path.string());
    for (int32_t id : config.eos_token_ids)
      if (std::find(eos.begin(), eos.end(), id) == eos.end()) eos.push_back(id);
    config.eos_token_ids = eos;
  }
  return config;
}

}  // namespace vortex
