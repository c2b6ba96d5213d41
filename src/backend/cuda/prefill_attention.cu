#include <mma.h>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/prefill_attention.cuh"

namespace vortex::cuda {
namespace {

using namespace nvcuda;
constexpr int kTile = 64;     // query rows per block and keys per tile
constexpr int kWarps = 4;     // each warp owns 16 query rows
constexpr int kThreads = kWarps * 32;

// Rows are padded by 16 bytes so that consecutive rows start in different shared-memory banks
// (a row of 64 or 128 bf16 is a multiple of 128 bytes: unpadded, the tensor-core fragment loads
// of one column hit one bank).
constexpr int kPadHalf = 8, kPadFloat = 4;

template <int D>
struct Smem {
  static constexpr int kLd = D + kPadHalf, kSLd = kTile + kPadFloat, kPLd = kTile + kPadHalf;
  __nv_bfloat16 q[kTile][kLd];
  __nv_bfloat16 k[kTile][kLd];
  __nv_bfloat16 v[kTile][kLd];
  float s[kTile][kSLd];            // scores, then reused for P·V of the tile
  __nv_bfloat16 p[kTile][kPLd];    // probabilities of the tile
  float o[kTile][D + kPadFloat];   // running output, unnormalised
  float m[kTile], l[kTile], alpha[kTile];
};

// Copies rows of 64 keys (or queries) of D bf16 into shared memory with 16-byte vectors; rows
// past `valid` are zero.
template <int D, typename RowPointer>
__device__ void load_tile(__nv_bfloat16 (*dst)[D + kPadHalf], int valid, RowPointer row_pointer) {
  constexpr int kVectors = D / 8;
  for (int i = threadIdx.x; i < kTile * kVectors; i += kThreads) {
    const int r = i / kVectors, c = (i % kVectors) * 8;
    uint4 value = make_uint4(0, 0, 0, 0);
    if (r < valid) value = *reinterpret_cast<const uint4*>(row_pointer(r) + c);
    *reinterpret_cast<uint4*>(&dst[r][c]) = value;
  }
}

template <int D>
__global__ void __launch_bounds__(kThreads) prefill_attention_kernel(PrefillAttentionParams p) {
  extern __shared__ __align__(128) unsigned char raw[];
  Smem<D>& sm = *reinterpret_cast<Smem<D>*>(raw);
  const int h = blockIdx.y, g = h / (p.num_heads / p.num_kv_heads);
  const int t0 = blockIdx.x * kTile;
  const int rows = min(kTile, static_cast<int>(p.tokens) - t0);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  load_tile<D>(sm.q, rows, [&](int r) { return p.q + ((t0 + r) * static_cast<int64_t>(p.num_heads) + h) * D; });
  for (int i = threadIdx.x; i < kTile * D; i += kThreads) sm.o[i / D][i % D] = 0.0f;
  for (int i = threadIdx.x; i < kTile; i += kThreads) sm.m[i] = -INFINITY, sm.l[i] = 0.0f;
  const int64_t last_position = p.start + t0 + rows - 1;  // the last query's position
  auto key_row = [&](const __nv_bfloat16* cache, int64_t key) {
    return cache + ((static_cast<int64_t>(p.pages[key / p.page_size]) * p.num_kv_heads + g) * p.page_size + key % p.page_size) * D;
  };
  for (int64_t k0 = 0; k0 <= last_position; k0 += kTile) {
    const int keys = static_cast<int>(last_position + 1 - k0 < kTile ? last_position + 1 - k0 : kTile);
    __syncthreads();  // the previous tile's K, V, P are no longer read
    load_tile<D>(sm.k, keys, [&](int r) { return key_row(p.k_cache, k0 + r); });
    load_tile<D>(sm.v, keys, [&](int r) { return key_row(p.v_cache, k0 + r); });
    __syncthreads();
    // S (16 rows of this warp × 64 keys) = Q · Kᵀ on tensor cores.
    for (int n = 0; n < kTile / 16; ++n) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      wmma::fill_fragment(acc, 0.0f);
      for (int kk = 0; kk < D / 16; ++kk) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> a;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> b;
        wmma::load_matrix_sync(a, &sm.q[warp * 16][kk * 16], Smem<D>::kLd);
        wmma::load_matrix_sync(b, &sm.k[n * 16][kk * 16], Smem<D>::kLd);
        wmma::mma_sync(acc, a, b, acc);
      }
      wmma::store_matrix_sync(&sm.s[warp * 16][n * 16], acc, Smem<D>::kSLd, wmma::mem_row_major);
    }
    __syncwarp();
    // Online softmax of this warp's 16 rows: two lanes per row, 32 keys each.
    {
      const int r = warp * 16 + lane / 2, half = lane % 2;
      const int64_t position = p.start + t0 + r;
      float mx = -INFINITY;
      for (int c = half * 32; c < half * 32 + 32; ++c) {
        const bool visible = c < keys && k0 + c <= position && r < rows;
        const float s = visible ? sm.s[r][c] * p.scale : -INFINITY;
        sm.s[r][c] = s;
        mx = fmaxf(mx, s);
      }
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      const float m_old = sm.m[r], m_new = fmaxf(m_old, mx);
      float sum = 0.0f;
      for (int c = half * 32; c < half * 32 + 32; ++c) {
        const float e = m_new == -INFINITY ? 0.0f : __expf(sm.s[r][c] - m_new);
        sm.p[r][c] = __float2bfloat16_rn(e);
        sum += e;
      }
      sum += __shfl_xor_sync(0xffffffffu, sum, 1);
      if (half == 0) {
        const float alpha = m_old == -INFINITY ? 0.0f : __expf(m_old - m_new);
        sm.alpha[r] = alpha;
        sm.l[r] = sm.l[r] * alpha + sum;
        sm.m[r] = m_new;
      }
    }
    __syncwarp();
    // O = O · alpha + P · V for this warp's 16 rows: P·V in 16×16 pieces through sm.s.
    for (int n = 0; n < D / 16; ++n) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      wmma::fill_fragment(acc, 0.0f);
      for (int kk = 0; kk < kTile / 16; ++kk) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> a;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::row_major> b;
        wmma::load_matrix_sync(a, &sm.p[warp * 16][kk * 16], Smem<D>::kPLd);
        wmma::load_matrix_sync(b, &sm.v[kk * 16][n * 16], Smem<D>::kLd);
        wmma::mma_sync(acc, a, b, acc);
      }
      float* scratch = &sm.s[warp * 16][0];  // this warp's 16 rows of S are free now
      wmma::store_matrix_sync(scratch, acc, Smem<D>::kSLd, wmma::mem_row_major);
      __syncwarp();
      for (int i = lane; i < 256; i += 32) {
        const int r = warp * 16 + i / 16, c = n * 16 + i % 16;
        sm.o[r][c] = sm.o[r][c] * sm.alpha[r] + scratch[(i / 16) * Smem<D>::kSLd + i % 16];
      }
      __syncwarp();
    }
  }
  __syncthreads();
  for (int i = threadIdx.x; i < rows * D; i += kThreads) {
    const int r = i / D, c = i % D;
    p.out[((t0 + r) * static_cast<int64_t>(p.num_heads) + h) * D + c] = __float2bfloat16_rn(sm.o[r][c] / sm.l[r]);
  }
}

template <int D>
void launch(const PrefillAttentionParams& p, cudaStream_t stream) {
  const size_t smem = sizeof(Smem<D>);
  VX_CUDA(cudaFuncSetAttribute(prefill_attention_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  dim3 grid(static_cast<unsigned>((p.tokens + kTile - 1) / kTile), static_cast<unsigned>(p.num_heads));
  prefill_attention_kernel<D><<<grid, kThreads, smem, stream>>>(p);
  VX_CUDA_LAUNCH();
}

}  // namespace

bool launch_prefill_attention(const PrefillAttentionParams& p, cudaStream_t stream) {
  if (p.tokens == 0) return true;
  if (p.head_dim == 128) return launch<128>(p, stream), true;
  if (p.head_dim == 64) return launch<64>(p, stream), true;
  return false;
}

}  // namespace vortex::cuda
