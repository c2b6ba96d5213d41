// Qwen2ForCausalLM: Llama-style decoder with biases on q, k and v (not on o).
#include "model/weights.h"

namespace vortex {

ArchitectureTensors qwen2_tensors(const ModelConfig&) {
  return {.q_k_norm = false, .qkv_bias = true, .o_bias = false, .mlp_bias = false};
}

}  // namespace vortex
