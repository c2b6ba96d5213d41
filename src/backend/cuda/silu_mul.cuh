// SiLU·mul: out (M, F) = silu(gate_up[:, :F] + gate_bias) · (gate_up[:, F:] + up_bias).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace vortex::cuda {

template <typename To>
struct SiluMulParams {
  const float* gate_up = nullptr;  // (M, 2F): gate columns first, then up
  const float* bias = nullptr;     // (2F) or null
  To* out = nullptr;               // (M, F)
  int64_t rows = 0;                // M
  int64_t dim = 0;                 // F
};

template <typename To>
void launch_silu_mul(const SiluMulParams<To>& p, cudaStream_t stream);

}  // namespace vortex::cuda
