#include <cuda_bf16.h>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/paged_attention.cuh"
#include "backend/cuda/types.cuh"

namespace vortex::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kMaxGroup = 16;
constexpr int kMaxHeadDim = 256;

// Block (split, g, row). Phase 1: threads over keys, each key's K row dotted with every q of the
// group. Phase 2: softmax per head over the split. Phase 3: threads over D, each V element
// loaded once and accumulated for every head of the group.
template <typename Tq, typename Tkv>
__global__ void paged_attention_kernel(PagedAttentionParams<Tq, Tkv> p) {
  extern __shared__ float smem[];
  const int split = blockIdx.x, g = blockIdx.y;
  const int64_t row = blockIdx.z;
  const int group = p.num_heads / p.num_kv_heads, D = p.head_dim, P = p.page_size;
  float* q = smem;                                   // (group, D)
  float* scores = q + group * D;                     // (group, kAttentionSplitTokens)
  float* reduce = scores + group * kAttentionSplitTokens;  // (32)
  const int len = p.kv_len[row];
  const int begin = split * kAttentionSplitTokens;
  const int end = min(len, begin + kAttentionSplitTokens);
  float* lse_out = p.partial_lse + (row * p.num_heads + g * group) * p.num_splits + split;
  if (begin >= end) {  // an empty part: -inf lse, zero o
    if (threadIdx.x < group) lse_out[threadIdx.x * p.num_splits] = -INFINITY;
    for (int i = threadIdx.x; i < group * D; i += blockDim.x) {
      int h = i / D, d = i % D;
      p.partial_o[((row * p.num_heads + g * group + h) * p.num_splits + split) * D + d] = 0.0f;
    }
    return;
  }
  for (int i = threadIdx.x; i < group * D; i += blockDim.x)
    q[i] = to_float(p.q[(row * p.num_heads + g * group) * D + i]);
  __syncthreads();
  const int32_t* pages = p.page_table + p.page_offset[row];
  const int count = end - begin;
  for (int j = threadIdx.x; j < count; j += blockDim.x) {
    const int key = begin + j;
    const Tkv* k = p.k_cache + ((static_cast<int64_t>(pages[key / P]) * p.num_kv_heads + g) * P + key % P) * D;
    float dots[kMaxGroup];
    for (int h = 0; h < group; ++h) dots[h] = 0.0f;
    for (int d = 0; d < D; ++d) {
      float kd = to_float(k[d]);
      for (int h = 0; h < group; ++h) dots[h] += q[h * D + d] * kd;
    }
    for (int h = 0; h < group; ++h) scores[h * kAttentionSplitTokens + j] = dots[h] * p.scale;
  }
  __syncthreads();
  for (int h = 0; h < group; ++h) {  // softmax statistics of this part, per head
    float m = -INFINITY;
    for (int j = threadIdx.x; j < count; j += blockDim.x) m = fmaxf(m, scores[h * kAttentionSplitTokens + j]);
    m = block_max(m, reduce);
    float l = 0.0f;
    for (int j = threadIdx.x; j < count; j += blockDim.x) {
      float e = expf(scores[h * kAttentionSplitTokens + j] - m);
      scores[h * kAttentionSplitTokens + j] = e;
      l += e;
    }
    l = block_sum(l, reduce);
    if (threadIdx.x == 0) lse_out[h * p.num_splits] = m + logf(l);
    const float inv_l = 1.0f / l;
    for (int j = threadIdx.x; j < count; j += blockDim.x) scores[h * kAttentionSplitTokens + j] *= inv_l;
    __syncthreads();
  }
  __syncthreads();
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    float acc[kMaxGroup];
    for (int h = 0; h < group; ++h) acc[h] = 0.0f;
    for (int j = 0; j < count; ++j) {
      const int key = begin + j;
      float vd = to_float(p.v_cache[((static_cast<int64_t>(pages[key / P]) * p.num_kv_heads + g) * P + key % P) * D + d]);
      for (int h = 0; h < group; ++h) acc[h] += scores[h * kAttentionSplitTokens + j] * vd;
    }
    for (int h = 0; h < group; ++h)
      p.partial_o[((row * p.num_heads + g * group + h) * p.num_splits + split) * D + d] = acc[h];
  }
}

}  // namespace

template <typename Tq, typename Tkv>
void launch_paged_attention(const PagedAttentionParams<Tq, Tkv>& p, cudaStream_t stream) {
  const int group = p.num_heads / p.num_kv_heads;
  check(group <= kMaxGroup && p.head_dim <= kMaxHeadDim, "paged_attention: group {} / head_dim {} unsupported", group, p.head_dim);
  check(kAttentionSplitTokens % p.page_size == 0, "paged_attention: page size {} must divide {}", p.page_size, kAttentionSplitTokens);
  if (p.rows == 0) return;
  const size_t smem = (static_cast<size_t>(group) * (p.head_dim + kAttentionSplitTokens) + 32) * sizeof(float);
  dim3 grid(static_cast<unsigned>(p.num_splits), static_cast<unsigned>(p.num_kv_heads), static_cast<unsigned>(p.rows));
  paged_attention_kernel<<<grid, kThreads, smem, stream>>>(p);
  VX_CUDA_LAUNCH();
}

template void launch_paged_attention<float, float>(const PagedAttentionParams<float, float>&, cudaStream_t);
template void launch_paged_attention<__nv_bfloat16, __nv_bfloat16>(const PagedAttentionParams<__nv_bfloat16, __nv_bfloat16>&, cudaStream_t);

}  // namespace vortex::cuda
