#include <cuda_bf16.h>

#include <type_traits>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/fill_random.cuh"
#include "backend/cuda/types.cuh"

namespace vortex::cuda {

__device__ __forceinline__ uint64_t mix(uint64_t x) {  // splitmix64 finaliser
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

template <typename T>
__global__ void fill_random_kernel(T* data, int64_t count, float scale, uint64_t seed) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count; i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float unit = static_cast<float>(mix(seed ^ static_cast<uint64_t>(i)) >> 40) * (1.0f / 16777216.0f);  // [0, 1)
    const float x = (2.0f * unit - 1.0f) * scale;
    if constexpr (std::is_same_v<T, int8_t>) data[i] = static_cast<int8_t>(__float2int_rn(x));  // scale <= 127
    else data[i] = from_float<T>(x);
  }
}

template <typename T>
void launch_fill_random(T* data, int64_t count, float scale, uint64_t seed, cudaStream_t stream) {
  if (count == 0) return;
  fill_random_kernel<<<132 * 8, 256, 0, stream>>>(data, count, scale, seed);
  VX_CUDA_LAUNCH();
}

__global__ void fill_value_kernel(float* data, int64_t count, float value) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count; i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    data[i] = value;
}

void launch_fill_value(float* data, int64_t count, float value, cudaStream_t stream) {
  if (count == 0) return;
  fill_value_kernel<<<132 * 8, 256, 0, stream>>>(data, count, value);
  VX_CUDA_LAUNCH();
}

template void launch_fill_random<float>(float*, int64_t, float, uint64_t, cudaStream_t);
template void launch_fill_random<__nv_bfloat16>(__nv_bfloat16*, int64_t, float, uint64_t, cudaStream_t);
template void launch_fill_random<int8_t>(int8_t*, int64_t, float, uint64_t, cudaStream_t);
template void launch_fill_random<__nv_fp8_e4m3>(__nv_fp8_e4m3*, int64_t, float, uint64_t, cudaStream_t);

}  // namespace vortex::cuda
