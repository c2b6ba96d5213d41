// Model weights bound to a configuration: every tensor checked for shape and dtype once, at load.
//
// Linear weights stay in their checkpoint dtype (f32/bf16/f16), memory-mapped, and are converted
// on the fly by the backend; norm weights and biases, which are small, are converted to fp32.
// Letters used in shape comments:
//   V vocab, C hidden size, F intermediate size, H query heads, G kv heads, D head dim.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "io/hf_config.h"

namespace vortex {

class WeightStore;

// A dense matrix W of shape [rows, cols] (torch's nn.Linear layout: out × in), row-major.
struct Matrix {
  DType dtype = DType::kF32;
  const void* data = nullptr;
  int64_t rows = 0;
  int64_t cols = 0;
  size_t nbytes() const { return static_cast<size_t>(rows * cols) * dtype_size(dtype); }
};

struct LayerWeights {
  std::vector<float> input_norm;          // (C)
  std::vector<float> post_attention_norm;  // (C)
  std::vector<float> q_norm, k_norm;      // (D) Qwen3 only, else empty
  Matrix q_proj;                          // (H*D, C)
  Matrix k_proj;                          // (G*D, C)
  Matrix v_proj;                          // (G*D, C)
  Matrix o_proj;                          // (C, H*D)
  std::vector<float> q_bias, k_bias, v_bias, o_bias;  // (H*D), (G*D), (G*D), (C) or empty
  Matrix gate_proj;                       // (F, C)
  Matrix up_proj;                         // (F, C)
  Matrix down_proj;                       // (C, F)
  std::vector<float> gate_bias, up_bias, down_bias;   // Llama mlp_bias only
};

struct ModelWeights {
  ModelConfig config;
  Matrix embed_tokens;             // (V, C)
  std::vector<LayerWeights> layers;
  std::vector<float> final_norm;   // (C)
  Matrix lm_head;                  // (V, C); the embedding matrix when tied
  std::string dtype_summary;       // e.g. "BF16" or "F32+BF16"

  // Bytes a decode step must read: every matrix once (the embedding row is negligible).
  size_t matrix_bytes() const;
  int64_t parameter_count() const;

  // Keeps the backing storage (a mapped checkpoint, or owned random buffers) alive.
  std::shared_ptr<const void> storage;
};

// Binds the tensors of a checkpoint directory to its config; every missing tensor, shape or dtype
// disagreement is a vortex::Error naming the tensor.
ModelWeights load_model_weights(const std::filesystem::path& dir, const ModelConfig& config);
// Random weights of the config's shapes in `dtype` (bf16 for benchmarks), seeded.
ModelWeights random_model_weights(const ModelConfig& config, DType dtype, uint64_t seed);

// Per-architecture names of the optional tensors (one file per architecture: qwen3.cpp, ...).
struct ArchitectureTensors {
  bool q_k_norm = false;   // self_attn.q_norm.weight / k_norm.weight
  bool qkv_bias = false;   // q/k/v_proj.bias
  bool o_bias = false;     // o_proj.bias
  bool mlp_bias = false;   // gate/up/down_proj.bias
};
ArchitectureTensors qwen3_tensors(const ModelConfig& config);
ArchitectureTensors qwen2_tensors(const ModelConfig& config);
ArchitectureTensors llama_tensors(const ModelConfig& config);
ArchitectureTensors architecture_tensors(const ModelConfig& config);

}  // namespace vortex
