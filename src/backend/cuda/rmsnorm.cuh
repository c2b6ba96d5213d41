// RMSNorm: out (R, C) = x[row_index[r]] / rms · weight, statistics in fp32. With row_index null,
// R = M and row r reads x row r (the final norm gathers only the rows that need logits).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace vortex::cuda {

template <typename To>
struct RmsNormParams {
  const float* x = nullptr;            // (M, C)
  const float* weight = nullptr;       // (C)
  const int32_t* row_index = nullptr;  // (R) or null
  To* out = nullptr;                   // (R, C)
  int64_t rows = 0;                    // R
  int64_t dim = 0;                     // C
  float eps = 1e-6f;
};

template <typename To>
void launch_rmsnorm(const RmsNormParams<To>& p, cudaStream_t stream);

}  // namespace vortex::cuda
