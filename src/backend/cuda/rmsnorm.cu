#include <algorithm>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/pdl.cuh"
#include "backend/cuda/rmsnorm.cuh"
#include "backend/cuda/types.cuh"

namespace vortex::cuda {
namespace {

constexpr int kVectorsPerThread = 4;  // float4s a thread keeps in registers: rows of ≤ 16,384 with 1024 threads

// Generic: any C; x read twice (statistics, then output).
template <typename To>
__global__ void rmsnorm_kernel(RmsNormParams<To> p) {
  __shared__ float scratch[32];
  pdl_wait(), pdl_release();  // (pdl.cuh)
  const int64_t row = blockIdx.x;
  const int64_t src_row = p.row_index ? p.row_index[row] : row;
  const float* x = p.x + src_row * p.dim;
  float sum_sq = 0.0f;
  for (int64_t i = threadIdx.x; i < p.dim; i += blockDim.x) sum_sq += x[i] * x[i];
  sum_sq = block_sum(sum_sq, scratch);
  const float inv = rsqrtf(sum_sq / static_cast<float>(p.dim) + p.eps);
  for (int64_t i = threadIdx.x; i < p.dim; i += blockDim.x) p.out[row * p.dim + i] = from_float<To>(p.weight[i] * (x[i] * inv));
}

// C % 4 == 0 and C ≤ 4 · kVectorsPerThread · blockDim: every load issued at once as float4 and kept
// in registers, so a row costs one round trip to memory, not one per loop iteration (this kernel
// runs twice per layer, mostly on a handful of rows, where latency is all it costs).
template <typename To>
__global__ void __launch_bounds__(1024) rmsnorm_vector_kernel(RmsNormParams<To> p) {
  __shared__ float scratch[32];
  pdl_wait(), pdl_release();  // (pdl.cuh)
  const int64_t row = blockIdx.x;
  const int64_t src_row = p.row_index ? p.row_index[row] : row;
  const float4* x = reinterpret_cast<const float4*>(p.x + src_row * p.dim);
  const float4* w = reinterpret_cast<const float4*>(p.weight);
  const int vectors = static_cast<int>(p.dim / 4);
  float4 v[kVectorsPerThread];
  float sum_sq = 0.0f;
#pragma unroll
  for (int k = 0; k < kVectorsPerThread; ++k) {
    const int i = threadIdx.x + k * blockDim.x;
    v[k] = i < vectors ? x[i] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    sum_sq += v[k].x * v[k].x + v[k].y * v[k].y + v[k].z * v[k].z + v[k].w * v[k].w;
  }
  sum_sq = block_sum(sum_sq, scratch);
  const float inv = rsqrtf(sum_sq / static_cast<float>(p.dim) + p.eps);
  To* out = p.out + row * p.dim;
#pragma unroll
  for (int k = 0; k < kVectorsPerThread; ++k) {
    const int i = threadIdx.x + k * blockDim.x;
    if (i >= vectors) break;
    const float4 g = w[i];
    out[4 * i] = from_float<To>(g.x * (v[k].x * inv)), out[4 * i + 1] = from_float<To>(g.y * (v[k].y * inv));
    out[4 * i + 2] = from_float<To>(g.z * (v[k].z * inv)), out[4 * i + 3] = from_float<To>(g.w * (v[k].w * inv));
  }
}

}  // namespace

template <typename To>
void launch_rmsnorm(const RmsNormParams<To>& p, cudaStream_t stream) {
  if (p.rows == 0) return;
  const int64_t vectors = p.dim / 4;
  if (p.dim % 4 == 0 && vectors <= 1024 * kVectorsPerThread) {
    // The fewest threads (a multiple of 32, ≤ 1024) that hold the row in kVectorsPerThread float4s each.
    const int64_t per_pass = (vectors + kVectorsPerThread - 1) / kVectorsPerThread;
    const unsigned threads = static_cast<unsigned>(std::min<int64_t>(1024, (per_pass + 31) / 32 * 32));
    launch_pdl(rmsnorm_vector_kernel<To>, dim3(static_cast<unsigned>(p.rows)), dim3(threads), 0, stream, p);
  } else {
    launch_pdl(rmsnorm_kernel<To>, dim3(static_cast<unsigned>(p.rows)), dim3(256), 0, stream, p);
  }
  VX_CUDA_LAUNCH();
}

template void launch_rmsnorm<float>(const RmsNormParams<float>&, cudaStream_t);
template void launch_rmsnorm<__nv_bfloat16>(const RmsNormParams<__nv_bfloat16>&, cudaStream_t);

}  // namespace vortex::cuda
