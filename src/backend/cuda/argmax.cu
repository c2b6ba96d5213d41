#include "backend/cuda/argmax.cuh"
#include "backend/cuda/cuda_check.h"

namespace vortex::cuda {

__device__ __forceinline__ void better(float& value, int& index, float other_value, int other_index) {
  if (other_value > value || (other_value == value && other_index < index)) value = other_value, index = other_index;
}

__global__ void argmax_kernel(ArgmaxParams p) {
  __shared__ float values[32];
  __shared__ int indices[32];
  const float* row = p.logits + blockIdx.x * p.vocab;
  float value = -INFINITY;
  int index = 0x7fffffff;
  for (int64_t i = threadIdx.x; i < p.vocab; i += blockDim.x) better(value, index, row[i], static_cast<int>(i));
  for (int offset = 16; offset > 0; offset >>= 1)
    better(value, index, __shfl_xor_sync(0xffffffffu, value, offset), __shfl_xor_sync(0xffffffffu, index, offset));
  if (threadIdx.x % 32 == 0) values[threadIdx.x / 32] = value, indices[threadIdx.x / 32] = index;
  __syncthreads();
  if (threadIdx.x < 32) {
    value = threadIdx.x < blockDim.x / 32 ? values[threadIdx.x] : -INFINITY;
    index = threadIdx.x < blockDim.x / 32 ? indices[threadIdx.x] : 0x7fffffff;
    for (int offset = 16; offset > 0; offset >>= 1)
      better(value, index, __shfl_xor_sync(0xffffffffu, value, offset), __shfl_xor_sync(0xffffffffu, index, offset));
    if (threadIdx.x == 0) p.ids[blockIdx.x] = index;
  }
}

void launch_argmax(const ArgmaxParams& p, cudaStream_t stream) {
  if (p.rows == 0) return;
  argmax_kernel<<<static_cast<unsigned>(p.rows), 1024, 0, stream>>>(p);
  VX_CUDA_LAUNCH();
}

}  // namespace vortex::cuda
