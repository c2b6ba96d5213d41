// Rotary position embeddings (rotate-half form, as transformers applies them), with the
// default, linear, llama3 and yarn frequency schedules.
#pragma once

#include <cstdint>
#include <vector>

#include "io/hf_config.h"

namespace vortex {

// Inverse frequencies (D/2) and the cos/sin scale for a config, computed as transformers does
// (float32 results of the same formulas).
struct RopeFrequencies {
  std::vector<float> inv_freq;     // (D/2)
  float attention_scaling = 1.0f;  // multiplies cos and sin (yarn), 1 otherwise
};
RopeFrequencies rope_frequencies(const ModelConfig& config);

namespace cpu {

// Rotates x (T, heads, D) in place; token t is at position positions[t].
void apply_rope(const RopeFrequencies& freqs, float* x, int64_t tokens, int64_t heads, int64_t head_dim,
                const int32_t* positions);

}  // namespace cpu
}  // namespace vortex
