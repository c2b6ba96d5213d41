// Qwen3ForCausalLM: Llama-style decoder with per-head RMSNorm on q and k (before RoPE), no biases
// unless attention_bias is set.
#include "model/weights.h"

namespace vortex {

ArchitectureTensors qwen3_tensors(const ModelConfig& config) {
  return {.q_k_norm = true, .qkv_bias = config.qkv_bias, .o_bias = config.o_bias, .mlp_bias = false};
}

}  // namespace vortex
