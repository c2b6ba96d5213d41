#include <cuda_bf16.h>

#include <type_traits>

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
  const int len = p.kv_len[list_index(p, row, g)];
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
  const int32_t* pages = p.page_table + p.page_offset[list_index(p, row, g)];
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

// ---- the bf16 fast path ------------------------------------------------------------------------
// Block (split, g, row), 128 threads. Each key is read by D/8 consecutive threads, one 16-byte
// vector of 8 bf16 each (coalesced), so a block works on 128/(D/8) keys at once; each thread keeps
// the online-softmax state (m, l) and 8 output dims for every head of the group in registers. The
// key groups' states are merged through shared memory at the end. K and V are loaded once for
// the whole group of query heads.
template <int D, int GROUP>
__global__ void __launch_bounds__(kThreads) paged_attention_bf16_kernel(PagedAttentionParams<__nv_bfloat16, __nv_bfloat16> p) {
  static_assert(D % 8 == 0 && kThreads % (D / 8) == 0, "a key is split into 16-byte vectors across threads");
  // Keys in flight per thread: more for small groups, whose registers allow it.
  constexpr int kLanesPerKey = D / 8, kKeyGroups = kThreads / kLanesPerKey, kUnroll = GROUP <= 4 ? 8 : 4;
  __shared__ float s_m[kKeyGroups][GROUP], s_l[kKeyGroups][GROUP];
  __shared__ float s_o[kKeyGroups][GROUP][D];
  const int split = blockIdx.x, g = blockIdx.y;
  const int64_t row = blockIdx.z;
  const int lane = threadIdx.x % kLanesPerKey, key_group = threadIdx.x / kLanesPerKey;
  const int len = p.kv_len[list_index(p, row, g)], P = p.page_size, G = p.num_kv_heads;
  const int begin = split * kAttentionSplitTokens, end = min(len, begin + kAttentionSplitTokens);
  const int head0 = g * GROUP;
  float* lse_out = p.partial_lse + (row * p.num_heads + head0) * p.num_splits + split;
  if (begin >= end) {
    if (threadIdx.x < GROUP) lse_out[threadIdx.x * p.num_splits] = -INFINITY;
    for (int i = threadIdx.x; i < GROUP * D; i += kThreads)
      p.partial_o[((row * p.num_heads + head0 + i / D) * p.num_splits + split) * D + i % D] = 0.0f;
    return;
  }
  float q[GROUP][8], acc[GROUP][8], m[GROUP], l[GROUP];
#pragma unroll
  for (int h = 0; h < GROUP; ++h) {
    const uint4 raw = *reinterpret_cast<const uint4*>(p.q + (row * p.num_heads + head0 + h) * D + lane * 8);
    const __nv_bfloat16* v = reinterpret_cast<const __nv_bfloat16*>(&raw);
#pragma unroll
    for (int i = 0; i < 8; ++i) q[h][i] = __bfloat162float(v[i]) * p.scale, acc[h][i] = 0.0f;
    m[h] = -INFINITY, l[h] = 0.0f;
  }
  const int32_t* pages = p.page_table + p.page_offset[list_index(p, row, g)];
  // The loop bounds are the same for every thread (shuffles below need whole warps); keys past
  // `end` are loaded as nothing and skipped in the update, never by leaving the loop early.
  for (int base = begin; base < end; base += kKeyGroups * kUnroll) {
    uint4 k_raw[kUnroll], v_raw[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {  // issue every load before the first use
      const int key = base + u * kKeyGroups + key_group;
      k_raw[u] = v_raw[u] = make_uint4(0, 0, 0, 0);
      if (key < end) {
        const int64_t offset = ((static_cast<int64_t>(pages[key / P]) * G + g) * P + key % P) * D + lane * 8;
        k_raw[u] = *reinterpret_cast<const uint4*>(p.k_cache + offset);
        v_raw[u] = *reinterpret_cast<const uint4*>(p.v_cache + offset);
      }
    }
    // Scores of the kUnroll keys for every head (shuffles reduce over the key's D/8 lanes), then
    // one online-softmax step per head for the whole tile of keys: one rescale per tile, not per key.
    float scores[kUnroll][GROUP];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const bool valid = base + u * kKeyGroups + key_group < end;
      const __nv_bfloat16* k = reinterpret_cast<const __nv_bfloat16*>(&k_raw[u]);
      float kf[8];
#pragma unroll
      for (int i = 0; i < 8; ++i) kf[i] = __bfloat162float(k[i]);
#pragma unroll
      for (int h = 0; h < GROUP; ++h) {
        float dot = 0.0f;
#pragma unroll
        for (int i = 0; i < 8; ++i) dot += q[h][i] * kf[i];
#pragma unroll
        for (int offset = kLanesPerKey / 2; offset > 0; offset >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, offset);
        scores[u][h] = valid ? dot : -INFINITY;
      }
    }
#pragma unroll
    for (int h = 0; h < GROUP; ++h) {
      float m_tile = m[h];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) m_tile = fmaxf(m_tile, scores[u][h]);
      if (m_tile == -INFINITY) continue;  // no valid key yet for this key group
      const float correction = expf(m[h] - m_tile);
      l[h] *= correction;
#pragma unroll
      for (int i = 0; i < 8; ++i) acc[h][i] *= correction;
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const float weight = expf(scores[u][h] - m_tile);  // 0 for an invalid key
        const __nv_bfloat16* v = reinterpret_cast<const __nv_bfloat16*>(&v_raw[u]);
        l[h] += weight;
#pragma unroll
        for (int i = 0; i < 8; ++i) acc[h][i] += weight * __bfloat162float(v[i]);
      }
      m[h] = m_tile;
    }
  }
#pragma unroll
  for (int h = 0; h < GROUP; ++h) {
    if (lane == 0) s_m[key_group][h] = m[h], s_l[key_group][h] = l[h];
#pragma unroll
    for (int i = 0; i < 8; ++i) s_o[key_group][h][lane * 8 + i] = acc[h][i];
  }
  __syncthreads();
  for (int i = threadIdx.x; i < GROUP * D; i += kThreads) {  // merge the key groups' states
    const int h = i / D, d = i % D;
    float m_all = -INFINITY;
    for (int kg = 0; kg < kKeyGroups; ++kg) m_all = fmaxf(m_all, s_m[kg][h]);
    float l_all = 0.0f, o = 0.0f;
    for (int kg = 0; kg < kKeyGroups; ++kg) {
      if (s_m[kg][h] == -INFINITY) continue;
      const float w = expf(s_m[kg][h] - m_all);
      l_all += w * s_l[kg][h];
      o += w * s_o[kg][h][d];
    }
    p.partial_o[((row * p.num_heads + head0 + h) * p.num_splits + split) * D + d] = o / l_all;
    if (d == 0) lse_out[h * p.num_splits] = m_all + logf(l_all);
  }
}

template <int D, int GROUP>
void launch_bf16(const PagedAttentionParams<__nv_bfloat16, __nv_bfloat16>& p, cudaStream_t stream) {
  dim3 grid(static_cast<unsigned>(p.num_splits), static_cast<unsigned>(p.num_kv_heads), static_cast<unsigned>(p.rows));
  paged_attention_bf16_kernel<D, GROUP><<<grid, kThreads, 0, stream>>>(p);
}

// The fast path when the shapes allow it (bf16, D 64 or 128, group 1/2/4/8); false otherwise.
bool try_launch_fast(const PagedAttentionParams<__nv_bfloat16, __nv_bfloat16>& p, cudaStream_t stream) {
  const int group = p.num_heads / p.num_kv_heads;
  auto by_group = [&](auto d_tag) {
    constexpr int kD = decltype(d_tag)::value;
    switch (group) {
      case 1: launch_bf16<kD, 1>(p, stream); return true;
      case 2: launch_bf16<kD, 2>(p, stream); return true;
      case 4: launch_bf16<kD, 4>(p, stream); return true;
      case 8: launch_bf16<kD, 8>(p, stream); return true;
      default: return false;
    }
  };
  if (p.head_dim == 128) return by_group(std::integral_constant<int, 128>{});
  if (p.head_dim == 64) return by_group(std::integral_constant<int, 64>{});
  return false;
}

template <typename Tq, typename Tkv>
bool try_launch_fast(const PagedAttentionParams<Tq, Tkv>&, cudaStream_t) { return false; }

}  // namespace

template <typename Tq, typename Tkv>
void launch_paged_attention(const PagedAttentionParams<Tq, Tkv>& p, cudaStream_t stream) {
  const int group = p.num_heads / p.num_kv_heads;
  check(group <= kMaxGroup && p.head_dim <= kMaxHeadDim, "paged_attention: group {} / head_dim {} unsupported", group, p.head_dim);
  check(kAttentionSplitTokens % p.page_size == 0, "paged_attention: page size {} must divide {}", p.page_size, kAttentionSplitTokens);
  if (p.rows == 0) return;
  if (try_launch_fast(p, stream)) {
    VX_CUDA_LAUNCH();
    return;
  }
  const size_t smem = (static_cast<size_t>(group) * (p.head_dim + kAttentionSplitTokens) + 32) * sizeof(float);
  dim3 grid(static_cast<unsigned>(p.num_splits), static_cast<unsigned>(p.num_kv_heads), static_cast<unsigned>(p.rows));
  paged_attention_kernel<<<grid, kThreads, smem, stream>>>(p);
  VX_CUDA_LAUNCH();
}

template void launch_paged_attention<float, float>(const PagedAttentionParams<float, float>&, cudaStream_t);
template void launch_paged_attention<__nv_bfloat16, __nv_bfloat16>(const PagedAttentionParams<__nv_bfloat16, __nv_bfloat16>&, cudaStream_t);

}  // namespace vortex::cuda
