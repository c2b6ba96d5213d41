// Bias add: y (M, N) += bias (N). Used after GEMMs whose bias cannot be folded elsewhere.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace vortex::cuda {

struct BiasAddParams {
  float* y = nullptr;           // (M, N)
  const float* bias = nullptr;  // (N)
  int64_t rows = 0;             // M
  int64_t cols = 0;             // N
};

void launch_bias_add(const BiasAddParams& p, cudaStream_t stream);

}  // namespace vortex::cuda
