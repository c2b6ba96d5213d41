// LlamaForCausalLM: the base decoder; attention_bias biases q, k, v and o; mlp_bias the MLP.
// llama3 RoPE scaling is handled by the RoPE tables (backend), not here.
#include "model/weights.h"

namespace vortex {

ArchitectureTensors llama_tensors(const ModelConfig& config) {
  return {.q_k_norm = false, .qkv_bias = config.qkv_bias, .o_bias = config.o_bias, .mlp_bias = config.mlp_bias};
}

}  // namespace vortex
