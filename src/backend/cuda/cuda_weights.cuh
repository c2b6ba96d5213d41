// Device copies of the model weights in the compute precision, with the fused layouts the CUDA
// forward pass uses: q/k/v stacked into one (H·D + 2·G·D, C) matrix, gate/up into (2F, C).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "backend/cuda/device_buffer.h"
#include "core/dtype.h"
#include "io/hf_config.h"

namespace vortex {
struct ModelWeights;
}

namespace vortex::cuda {

struct DeviceLayer {
  const float* input_norm = nullptr;     // (C)
  const float* post_norm = nullptr;      // (C)
  const float* q_norm = nullptr;         // (D) or null
  const float* k_norm = nullptr;         // (D) or null
  const void* qkv = nullptr;             // (H·D + 2·G·D, C)
  const float* qkv_bias = nullptr;       // (H·D + 2·G·D) or null
  const void* o = nullptr;               // (C, H·D)
  const float* o_bias = nullptr;         // (C) or null
  const void* gate_up = nullptr;         // (2F, C)
  const float* gate_up_bias = nullptr;   // (2F) or null
  const void* down = nullptr;            // (C, F)
  const float* down_bias = nullptr;      // (C) or null
};

struct DeviceWeights {
  DType dtype = DType::kBF16;            // of every matrix
  const void* embed = nullptr;           // (V, C)
  const void* lm_head = nullptr;         // (V, C); == embed when tied
  const float* final_norm = nullptr;     // (C)
  const float* inv_freq = nullptr;       // (D/2)
  float attention_scaling = 1.0f;
  std::vector<DeviceLayer> layers;
  size_t matrix_bytes = 0;               // every matrix a decode step reads (embed excluded unless tied)
  std::vector<DeviceBuffer<uint8_t>> storage;
};

DeviceWeights upload_weights(const ModelWeights& weights, DType dtype);
DeviceWeights random_device_weights(const ModelConfig& config, DType dtype, uint64_t seed);

}  // namespace vortex::cuda
