#include <algorithm>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/pdl.cuh"
#include "backend/cuda/silu_mul.cuh"
#include "backend/cuda/types.cuh"

namespace vortex::cuda {

template <typename To>
__global__ void silu_mul_kernel(SiluMulParams<To> p) {
  pdl_wait(), pdl_release();  // (pdl.cuh)
  const int64_t total = p.rows * p.dim;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total; i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t row = i / p.dim, col = i % p.dim;
    float gate = p.gate_up[row * 2 * p.dim + col];
    float up = p.gate_up[row * 2 * p.dim + p.dim + col];
    if (p.bias) gate += p.bias[col], up += p.bias[p.dim + col];
    p.out[i] = from_float<To>(gate / (1.0f + expf(-gate)) * up);
  }
}

template <typename To>
void launch_silu_mul(const SiluMulParams<To>& p, cudaStream_t stream) {
  const int64_t total = p.rows * p.dim;
  if (total == 0) return;
  const int threads = 256;
  const int64_t blocks = std::min<int64_t>((total + threads - 1) / threads, 132 * 16);
  launch_pdl(silu_mul_kernel<To>, dim3(static_cast<unsigned>(blocks)), dim3(threads), 0, stream, p);
  VX_CUDA_LAUNCH();
}

template void launch_silu_mul<float>(const SiluMulParams<float>&, cudaStream_t);
template void launch_silu_mul<__nv_bfloat16>(const SiluMulParams<__nv_bfloat16>&, cudaStream_t);

}  // namespace vortex::cuda
