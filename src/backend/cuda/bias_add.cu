#include <algorithm>

#include "backend/cuda/bias_add.cuh"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/pdl.cuh"

namespace vortex::cuda {

__global__ void bias_add_kernel(BiasAddParams p) {
  pdl_wait(), pdl_release();  // (pdl.cuh)
  const int64_t total = p.rows * p.cols;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total; i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    p.y[i] += p.bias[i % p.cols];
}

void launch_bias_add(const BiasAddParams& p, cudaStream_t stream) {
  const int64_t total = p.rows * p.cols;
  if (total == 0 || p.bias == nullptr) return;
  const int64_t blocks = std::min<int64_t>((total + 255) / 256, 132 * 16);
  launch_pdl(bias_add_kernel, dim3(static_cast<unsigned>(blocks)), dim3(256), 0, stream, p);
  VX_CUDA_LAUNCH();
}

}  // namespace vortex::cuda
