// Sampling parameters of one request. Order of application (as transformers and vLLM do):
// temperature → top-k → top-p → min-p, then a draw from the renormalised distribution.
#pragma once

#include <cstdint>

namespace vortex {

struct SamplingParams {
  float temperature = 1.0f;  // 0 = greedy (argmax)
  int32_t top_k = 0;         // 0 = off
  float top_p = 1.0f;        // 1 = off
  float min_p = 0.0f;        // 0 = off
  uint64_t seed = 0;         // same seed, same prompt, same parameters → same output
};

}  // namespace vortex
