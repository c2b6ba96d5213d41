#include <cuda_bf16.h>

#include <cstdint>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kv_fp8.cuh"
#include "backend/cuda/mma.cuh"
#include "backend/cuda/prefill_attention.cuh"

namespace vortex::cuda {
namespace {

// FlashAttention-2 on mma.sync (m16n8k16, bf16 in, fp32 accumulate). A block takes kTile query rows
// of one head, four warps of 16 rows each; key/value tiles of kTile keys stream through shared
// memory with cp.async, double-buffered so the next tile loads while this one is computed. Scores,
// the online softmax state (m, l) and the output stay in registers: S = Q·Kᵀ lands in mma
// accumulator fragments whose layout is exactly the A operand of P·V, so P never touches memory.
constexpr int kTile = 64;
constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
// Shared rows are padded by 16 bytes: the 8 row addresses of an ldmatrix phase then fall in 8
// different 16-byte bank groups (unpadded rows of 128 or 256 bytes all start in the same one).
template <int D>
constexpr int kLd = D + 8;
// 2 stages × (K, V); Q shares stage 1's space (it moves to registers before stage 1 is first
// loaded), which leaves room for three blocks per multiprocessor. An fp8 cache: one stage of bf16
// (K, V) that each tile is turned into (Q shares K's), then 2 stages × (K, V) of byte rows (int8
// keys, e4m3 values) and of row scales, which cp.async fills: three blocks still fit.
template <int D, bool kFp8>
constexpr size_t kSmemBytes = kFp8 ? 2 * kTile * kLd<D> * sizeof(__nv_bfloat16) + 4 * kTile * (D + sizeof(float))
                                   : 4 * kTile * kLd<D> * sizeof(__nv_bfloat16);

// Fragment layout (PTX ISA, mma.m16n8k16): lane = 4·g + t holds accumulator rows g and g + 8,
// columns 2t and 2t + 1 of each 16×8 tile.
template <int D, bool kFp8>
__global__ void __launch_bounds__(kThreads, 3) prefill_attention_kernel(PrefillAttentionParams p) {
  static_assert(D % 16 == 0 && (kTile * D / 8) % kThreads == 0, "tiles of 16-byte vectors split evenly over the threads");
  constexpr int L = kLd<D>, kVectors = D / 8, kStages = kFp8 ? 1 : 2;
  extern __shared__ __align__(128) unsigned char raw[];
  __nv_bfloat16* sk = reinterpret_cast<__nv_bfloat16*>(raw);  // (kStages, kTile, L), stage-major
  __nv_bfloat16* sv = sk + kStages * kTile * L;                // (kStages, kTile, L)
  // (kTile, L): stage 1 of K until tile 1 loads; fp8: K's rows until tile 0 is turned into them.
  __nv_bfloat16* sq = kFp8 ? sk : sk + kTile * L;
  uint8_t* sk8 = reinterpret_cast<uint8_t*>(sv + kStages * kTile * L);  // fp8: (2, kTile, D) int8
  uint8_t* sv8 = sk8 + 2 * kTile * D;                                   // fp8: (2, kTile, D)
  float* sks = reinterpret_cast<float*>(sv8 + 2 * kTile * D);           // fp8: (2, kTile) row scales
  float* svs = sks + 2 * kTile;                                         // fp8: (2, kTile)
  const int h = blockIdx.y, g = h / (p.num_heads / p.num_kv_heads);
  const int t0 = (gridDim.x - 1 - blockIdx.x) * kTile;  // the last query tiles (most keys) start first
  const int rows = min(kTile, static_cast<int>(p.tokens) - t0);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, quad = lane / 4, pair = 2 * (lane % 4);
  const int64_t first_position = p.start + t0, last_position = first_position + rows - 1;
  const int num_key_tiles = static_cast<int>((last_position + kTile) / kTile);
  const int64_t head_stride = static_cast<int64_t>(p.num_heads) * D;

  for (int i = threadIdx.x; i < kTile * kVectors; i += kThreads) {  // Q rows past `rows` are zero
    const int r = i / kVectors, c = (i % kVectors) * 8;
    if (r < rows) cp_async_16(sq + r * L + c, p.q + (t0 + r) * head_stride + static_cast<int64_t>(h) * D + c);
    else *reinterpret_cast<uint4*>(sq + r * L + c) = make_uint4(0, 0, 0, 0);
  }
  // Keys past the last query's position are loaded as that position's (finite) row and masked.
  auto load_kv = [&](int tile, int stage) {
    if constexpr (kFp8) {
      constexpr int kPieces = D / 16;  // 16-byte pieces of a row of bytes
      for (int i = threadIdx.x; i < kTile * kPieces; i += kThreads) {
        const int r = i / kPieces, c = (i % kPieces) * 16;
        const int64_t key = min(static_cast<int64_t>(tile) * kTile + r, last_position);
        const int64_t row = (static_cast<int64_t>(p.pages[key / p.page_size]) * p.num_kv_heads + g) * p.page_size + key % p.page_size;
        cp_async_16(sk8 + (stage * kTile + r) * D + c, p.k_fp8 + row * D + c);
        cp_async_16(sv8 + (stage * kTile + r) * D + c, p.v_fp8 + row * D + c);
        if (c == 0) cp_async_4(sks + stage * kTile + r, p.k_scale + row), cp_async_4(svs + stage * kTile + r, p.v_scale + row);
      }
    } else {
      for (int i = threadIdx.x; i < kTile * kVectors; i += kThreads) {
        const int r = i / kVectors, c = (i % kVectors) * 8;
        const int64_t key = min(static_cast<int64_t>(tile) * kTile + r, last_position);
        const int64_t offset = ((static_cast<int64_t>(p.pages[key / p.page_size]) * p.num_kv_heads + g) * p.page_size + key % p.page_size) * D + c;
        cp_async_16(sk + (stage * kTile + r) * L + c, p.k_cache + offset);
        cp_async_16(sv + (stage * kTile + r) * L + c, p.v_cache + offset);
      }
    }
  };
  // fp8: a landed stage's rows times their scales into the bf16 tile (exact).
  auto convert_kv = [&](int stage) {
    for (int i = threadIdx.x; i < kTile * kVectors; i += kThreads) {
      const int r = i / kVectors, c = (i % kVectors) * 8, from = (stage * kTile + r) * D + c;
      *reinterpret_cast<uint4*>(sk + r * L + c) = int8x8_to_bf16x8(*reinterpret_cast<const uint2*>(sk8 + from), sks[stage * kTile + r]);
      *reinterpret_cast<uint4*>(sv + r * L + c) = fp8x8_to_bf16x8(*reinterpret_cast<const uint2*>(sv8 + from), svs[stage * kTile + r]);
    }
  };
  load_kv(0, 0);
  cp_async_commit();
  cp_async_wait<0>();
  __syncthreads();
  uint32_t qf[D / 16][4];  // this warp's 16 query rows as A fragments, one per 16 dims
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) ldmatrix_x4(qf[kk], sq + (warp * 16 + lane % 16) * L + kk * 16 + (lane / 16) * 8);
  __syncthreads();  // every warp holds its Q fragments: stage 1 may be overwritten

  float o[D / 8][4] = {};                     // output rows (quad, quad + 8), dims 8n + pair (+1)
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};  // per row, in log2 units; l is this lane's part
  const float scale_log2 = p.scale * 1.4426950408889634f;
  const int64_t position[2] = {first_position + warp * 16 + quad, first_position + warp * 16 + quad + 8};

  for (int j = 0; j < num_key_tiles; ++j) {
    const int stage = j & 1;
    if (j + 1 < num_key_tiles) load_kv(j + 1, stage ^ 1);
    cp_async_commit();
    cp_async_wait<1>();  // tile j has landed
    __syncthreads();
    if constexpr (kFp8) {
      convert_kv(stage);
      __syncthreads();
    }
    const __nv_bfloat16* kt = sk + (kFp8 ? 0 : stage) * kTile * L;
    const __nv_bfloat16* vt = sv + (kFp8 ? 0 : stage) * kTile * L;
    // S (16 × kTile) = Q · Kᵀ: n-tiles of 8 keys; one ldmatrix.x4 feeds two 16-dim steps.
    float s[kTile / 8][4] = {};
#pragma unroll
    for (int n = 0; n < kTile / 8; ++n) {
#pragma unroll
      for (int kk = 0; kk < D / 16; kk += 2) {
        uint32_t b[4];
        ldmatrix_x4(b, kt + (n * 8 + lane % 8) * L + kk * 16 + (lane / 8) * 8);
        mma_16x8x16(s[n], qf[kk], b[0], b[1]);
        mma_16x8x16(s[n], qf[kk + 1], b[2], b[3]);
      }
    }
    // Causal mask (only tiles reaching past the first query's position need it), online softmax.
    const int64_t k0 = static_cast<int64_t>(j) * kTile;
    const bool masked = k0 + kTile - 1 > first_position;
    float tile_max[2] = {m[0], m[1]};
#pragma unroll
    for (int n = 0; n < kTile / 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int r = e / 2;
        float v = s[n][e] * scale_log2;
        if (masked && k0 + n * 8 + pair + (e & 1) > position[r]) v = -INFINITY;
        s[n][e] = v;
        tile_max[r] = fmaxf(tile_max[r], v);
      }
    float alpha[2], row_sum[2] = {0.0f, 0.0f};
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 1));
      tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 2));
      alpha[r] = exp2f(m[r] - tile_max[r]);  // 0 on the first tile (m = -inf); key 0 is always visible
      m[r] = tile_max[r];
    }
#pragma unroll
    for (int n = 0; n < kTile / 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        s[n][e] = exp2f(s[n][e] - m[e / 2]);
        row_sum[e / 2] += s[n][e];
      }
#pragma unroll
    for (int r = 0; r < 2; ++r) l[r] = l[r] * alpha[r] + row_sum[r];
#pragma unroll
    for (int n = 0; n < D / 8; ++n) o[n][0] *= alpha[0], o[n][1] *= alpha[0], o[n][2] *= alpha[1], o[n][3] *= alpha[1];
    // O += P · V: the S fragments of keys 16kc..16kc+15 are the A fragment; V through ldmatrix.trans.
#pragma unroll
    for (int kc = 0; kc < kTile / 16; ++kc) {
      const uint32_t a[4] = {pack_bf16(s[2 * kc][0], s[2 * kc][1]), pack_bf16(s[2 * kc][2], s[2 * kc][3]),
                             pack_bf16(s[2 * kc + 1][0], s[2 * kc + 1][1]), pack_bf16(s[2 * kc + 1][2], s[2 * kc + 1][3])};
#pragma unroll
      for (int n = 0; n < D / 8; n += 2) {
        uint32_t b[4];
        ldmatrix_x4_trans(b, vt + (kc * 16 + lane % 8 + ((lane / 8) % 2) * 8) * L + n * 8 + (lane / 16) * 8);
        mma_16x8x16(o[n], a, b[0], b[1]);
        mma_16x8x16(o[n + 1], a, b[2], b[3]);
      }
    }
    __syncthreads();  // this stage is reloaded two tiles from now
  }
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
    l[r] = 1.0f / l[r];
  }
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = warp * 16 + quad + 8 * r;
    if (row >= rows) continue;
    __nv_bfloat16* out = p.out + (t0 + row) * head_stride + static_cast<int64_t>(h) * D + pair;
#pragma unroll
    for (int n = 0; n < D / 8; ++n) *reinterpret_cast<uint32_t*>(out + n * 8) = pack_bf16(o[n][2 * r] * l[r], o[n][2 * r + 1] * l[r]);
  }
}

template <int D, bool kFp8>
void launch(const PrefillAttentionParams& p, cudaStream_t stream) {
  static SmemLimit limit;
  raise_smem_limit(prefill_attention_kernel<D, kFp8>, kSmemBytes<D, kFp8>, limit);
  dim3 grid(static_cast<unsigned>((p.tokens + kTile - 1) / kTile), static_cast<unsigned>(p.num_heads));
  prefill_attention_kernel<D, kFp8><<<grid, kThreads, kSmemBytes<D, kFp8>, stream>>>(p);
  VX_CUDA_LAUNCH();
}

template <int D>
void launch(const PrefillAttentionParams& p, cudaStream_t stream) {
  if (p.k_fp8) {
    check(p.v_fp8 != nullptr && p.k_scale != nullptr && p.v_scale != nullptr, "internal: prefill_attention over an fp8 cache without scales");
    launch<D, true>(p, stream);
  } else {
    launch<D, false>(p, stream);
  }
}

}  // namespace

bool launch_prefill_attention(const PrefillAttentionParams& p, cudaStream_t stream) {
  if (p.tokens == 0) return true;
  if (p.head_dim == 128) return launch<128>(p, stream), true;
  if (p.head_dim == 64) return launch<64>(p, stream), true;
  return false;
}

}  // namespace vortex::cuda
