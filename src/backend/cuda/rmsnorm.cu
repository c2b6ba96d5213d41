#include "backend/cuda/cuda_check.h"
#include "backend/cuda/rmsnorm.cuh"
#include "backend/cuda/types.cuh"

namespace vortex::cuda {

template <typename To>
__global__ void rmsnorm_kernel(RmsNormParams<To> p) {
  __shared__ float scratch[32];
  const int64_t row = blockIdx.x;
  const int64_t src_row = p.row_index ? p.row_index[row] : row;
  const float* x = p.x + src_row * p.dim;
  float sum_sq = 0.0f;
  for (int64_t i = threadIdx.x; i < p.dim; i += blockDim.x) sum_sq += x[i] * x[i];
  sum_sq = block_sum(sum_sq, scratch);
  const float inv = rsqrtf(sum_sq / static_cast<float>(p.dim) + p.eps);
  for (int64_t i = threadIdx.x; i < p.dim; i += blockDim.x) p.out[row * p.dim + i] = from_float<To>(p.weight[i] * (x[i] * inv));
}

template <typename To>
void launch_rmsnorm(const RmsNormParams<To>& p, cudaStream_t stream) {
  if (p.rows == 0) return;
  rmsnorm_kernel<<<static_cast<unsigned>(p.rows), 256, 0, stream>>>(p);
  VX_CUDA_LAUNCH();
}

template void launch_rmsnorm<float>(const RmsNormParams<float>&, cudaStream_t);
template void launch_rmsnorm<__nv_bfloat16>(const RmsNormParams<__nv_bfloat16>&, cudaStream_t);

}  // namespace vortex::cuda
