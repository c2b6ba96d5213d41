#include "model/weights.h"

#include <random>
#include <set>

#include "core/error.h"
#include "io/safetensors.h"

namespace vortex {
namespace {

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string text = "[";
  for (size_t i = 0; i < shape.size(); ++i) text += (i ? ", " : "") + std::to_string(shape[i]);
  return text + "]";
}

// Looks tensors up by name and checks them against the shapes the config implies.
class Binder {
 public:
  Binder(const WeightStore& store, std::string dir) : store_(store), dir_(std::move(dir)) {}

  const TensorView& tensor(const std::string& name, std::vector<int64_t> shape) {
    const TensorView& view = store_.get(name);
    check(view.dtype == DType::kF32 || view.dtype == DType::kBF16 || view.dtype == DType::kF16,
          "{}: tensor '{}' has dtype {}; Vortex loads F32, BF16 and F16", dir_, name, dtype_name(view.dtype));
    check(view.shape == shape, "{}: tensor '{}' has shape {}, but config.json implies {}", dir_, name,
          shape_string(view.shape), shape_string(shape));
    dtypes_.insert(std::string(dtype_name(view.dtype)));
    return view;
  }
  Matrix matrix(const std::string& name, int64_t rows, int64_t cols) {
    const TensorView& view = tensor(name, {rows, cols});
    return Matrix{.dtype = view.dtype, .data = view.data, .rows = rows, .cols = cols};
  }
  std::vector<float> vector(const std::string& name, int64_t size) {
    const TensorView& view = tensor(name, {size});
    std::vector<float> values(static_cast<size_t>(size));
    convert_to_f32(view.dtype, view.data, values.data(), values.size());
    return values;
  }
  std::string dtype_summary() const {
    std::string summary;
    for (const auto& name : dtypes_) summary += (summary.empty() ? "" : "+") + name;
    return summary;
  }

 private:
  const WeightStore& store_;
  std::string dir_;
  std::set<std::string> dtypes_;
};

LayerWeights bind_layer(Binder& bind, const ModelConfig& c, const ArchitectureTensors& arch, int64_t layer) {
  const std::string p = "model.layers." + std::to_string(layer) + ".";
  const int64_t C = c.hidden_size, F = c.intermediate_size, QD = c.q_dim(), KD = c.kv_dim();
  LayerWeights w;
  w.input_norm = bind.vector(p + "input_layernorm.weight", C);
  w.post_attention_norm = bind.vector(p + "post_attention_layernorm.weight", C);
  w.q_proj = bind.matrix(p + "self_attn.q_proj.weight", QD, C);
  w.k_proj = bind.matrix(p + "self_attn.k_proj.weight", KD, C);
  w.v_proj = bind.matrix(p + "self_attn.v_proj.weight", KD, C);
  w.o_proj = bind.matrix(p + "self_attn.o_proj.weight", C, QD);
  if (arch.q_k_norm) {
    w.q_norm = bind.vector(p + "self_attn.q_norm.weight", c.head_dim);
    w.k_norm = bind.vector(p + "self_attn.k_norm.weight", c.head_dim);
  }
  if (arch.qkv_bias) {
    w.q_bias = bind.vector(p + "self_attn.q_proj.bias", QD);
    w.k_bias = bind.vector(p + "self_attn.k_proj.bias", KD);
    w.v_bias = bind.vector(p + "self_attn.v_proj.bias", KD);
  }
  if (arch.o_bias) w.o_bias = bind.vector(p + "self_attn.o_proj.bias", C);
  w.gate_proj = bind.matrix(p + "mlp.gate_proj.weight", F, C);
  w.up_proj = bind.matrix(p + "mlp.up_proj.weight", F, C);
  w.down_proj = bind.matrix(p + "mlp.down_proj.weight", C, F);
  if (arch.mlp_bias) {
    w.gate_bias = bind.vector(p + "mlp.gate_proj.bias", F);
    w.up_bias = bind.vector(p + "mlp.up_proj.bias", F);
    w.down_bias = bind.vector(p + "mlp.down_proj.bias", C);
  }
  return w;
}

}  // namespace

size_t ModelWeights::matrix_bytes() const {
  size_t bytes = lm_head.nbytes();
  for (const auto& l : layers)
    bytes += l.q_proj.nbytes() + l.k_proj.nbytes() + l.v_proj.nbytes() + l.o_proj.nbytes() +
             l.gate_proj.nbytes() + l.up_proj.nbytes() + l.down_proj.nbytes();
  return bytes;
}

int64_t ModelWeights::parameter_count() const {
  auto count = [](const Matrix& m) { return m.rows * m.cols; };
  int64_t total = count(embed_tokens) + static_cast<int64_t>(final_norm.size());
  if (!config.tie_word_embeddings) total += count(lm_head);
  for (const auto& l : layers) {
    total += count(l.q_proj) + count(l.k_proj) + count(l.v_proj) + count(l.o_proj) + count(l.gate_proj) +
             count(l.up_proj) + count(l.down_proj);
    total += static_cast<int64_t>(l.input_norm.size() + l.post_attention_norm.size() + l.q_norm.size() +
                                  l.k_norm.size() + l.q_bias.size() + l.k_bias.size() + l.v_bias.size() +
                                  l.o_bias.size() + l.gate_bias.size() + l.up_bias.size() + l.down_bias.size());
  }
  return total;
}

ModelWeights load_model_weights(const std::filesystem::path& dir, const ModelConfig& config) {
  auto store = std::make_shared<WeightStore>(WeightStore::open(dir));
  Binder bind(*store, dir.string());
  ArchitectureTensors arch = architecture_tensors(config);
  ModelWeights w;
  w.config = config;
  w.embed_tokens = bind.matrix("model.embed_tokens.weight", config.vocab_size, config.hidden_size);
  for (int64_t layer = 0; layer < config.num_layers; ++layer) w.layers.push_back(bind_layer(bind, config, arch, layer));
  w.final_norm = bind.vector("model.norm.weight", config.hidden_size);
  if (config.tie_word_embeddings && !store->contains("lm_head.weight")) {
    w.lm_head = w.embed_tokens;
  } else {
    w.lm_head = bind.matrix("lm_head.weight", config.vocab_size, config.hidden_size);
  }
  w.dtype_summary = bind.dtype_summary();
  w.storage = store;
  return w;
}

namespace {

// Owned random matrices for benchmarks: normal(0, scale) in bf16/f16/f32.
struct RandomStorage {
  std::vector<std::vector<uint8_t>> buffers;
  std::mt19937_64 rng;

  Matrix matrix(DType dtype, int64_t rows, int64_t cols, float scale) {
    auto& buffer = buffers.emplace_back(static_cast<size_t>(rows * cols) * dtype_size(dtype));
    std::normal_distribution<float> dist(0.0f, scale);
    size_t count = static_cast<size_t>(rows * cols);
    // A short random table repeated keeps generation of billions of values fast; values still vary.
    std::vector<float> table(4099);
    for (auto& v : table) v = dist(rng);
    for (size_t i = 0; i < count; ++i) {
      float value = table[(i * 2654435761u + i / 4099) % table.size()];
      if (dtype == DType::kBF16) reinterpret_cast<uint16_t*>(buffer.data())[i] = f32_to_bf16(value);
      else if (dtype == DType::kF16) reinterpret_cast<uint16_t*>(buffer.data())[i] = f32_to_f16(value);
      else reinterpret_cast<float*>(buffer.data())[i] = value;
    }
    return Matrix{.dtype = dtype, .data = buffer.data(), .rows = rows, .cols = cols};
  }
};

}  // namespace

ModelWeights random_model_weights(const ModelConfig& config, DType dtype, uint64_t seed) {
  auto storage = std::make_shared<RandomStorage>();
  storage->rng.seed(seed);
  const int64_t C = config.hidden_size, F = config.intermediate_size;
  const float scale = 0.02f;
  ModelWeights w;
  w.config = config;
  w.embed_tokens = storage->matrix(dtype, config.vocab_size, C, 1.0f);
  ArchitectureTensors arch = architecture_tensors(config);
  for (int64_t layer = 0; layer < config.num_layers; ++layer) {
    LayerWeights l;
    l.input_norm.assign(C, 1.0f);
    l.post_attention_norm.assign(C, 1.0f);
    if (arch.q_k_norm) l.q_norm.assign(config.head_dim, 1.0f), l.k_norm.assign(config.head_dim, 1.0f);
    if (arch.qkv_bias) l.q_bias.assign(config.q_dim(), 0.01f), l.k_bias.assign(config.kv_dim(), 0.01f), l.v_bias.assign(config.kv_dim(), 0.01f);
    if (arch.o_bias) l.o_bias.assign(C, 0.01f);
    l.q_proj = storage->matrix(dtype, config.q_dim(), C, scale);
    l.k_proj = storage->matrix(dtype, config.kv_dim(), C, scale);
    l.v_proj = storage->matrix(dtype, config.kv_dim(), C, scale);
    l.o_proj = storage->matrix(dtype, C, config.q_dim(), scale);
    l.gate_proj = storage->matrix(dtype, F, C, scale);
    l.up_proj = storage->matrix(dtype, F, C, scale);
    l.down_proj = storage->matrix(dtype, C, F, scale);
    if (arch.mlp_bias) l.gate_bias.assign(F, 0.0f), l.up_bias.assign(F, 0.0f), l.down_bias.assign(C, 0.0f);
    w.layers.push_back(std::move(l));
  }
  w.final_norm.assign(C, 1.0f);
  w.lm_head = config.tie_word_embeddings ? w.embed_tokens : storage->matrix(dtype, config.vocab_size, C, scale);
  w.dtype_summary = std::string(dtype_name(dtype));
  w.storage = storage;
  return w;
}

}  // namespace vortex
