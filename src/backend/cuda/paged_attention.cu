#include <cuda_bf16.h>

#include <type_traits>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kv_fp8.cuh"
#include "backend/cuda/pdl.cuh"
#include "backend/cuda/mma.cuh"
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
  pdl_wait(), pdl_release();  // (pdl.cuh)
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
    const int64_t kv_row = (static_cast<int64_t>(pages[key / P]) * p.num_kv_heads + g) * P + key % P;
    const Tkv* k = p.k_cache + kv_row * D;
    const float k_scale = kIsFp8<Tkv> ? p.k_scale[kv_row] : 1.0f;
    float dots[kMaxGroup];
    for (int h = 0; h < group; ++h) dots[h] = 0.0f;
    for (int d = 0; d < D; ++d) {
      float kd;
      if constexpr (kIsFp8<Tkv>) kd = key_to_float(k[d]) * k_scale;
      else kd = to_float(k[d]);
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
      const int64_t kv_row = (static_cast<int64_t>(pages[key / P]) * p.num_kv_heads + g) * P + key % P;
      const float vd = to_float(p.v_cache[kv_row * D + d]) * (kIsFp8<Tkv> ? p.v_scale[kv_row] : 1.0f);
      for (int h = 0; h < group; ++h) acc[h] += scores[h * kAttentionSplitTokens + j] * vd;
    }
    for (int h = 0; h < group; ++h)
      p.partial_o[((row * p.num_heads + g * group + h) * p.num_splits + split) * D + d] = acc[h];
  }
}

// ---- the bf16 fast path: tensor cores ------------------------------------------------------------
// Block (split, g, row), four warps. The query heads of kv head g are the rows of one 16-row mma
// tile (rows past the group are zero), so every K and V element is loaded once for the whole group
// and the arithmetic per byte is a few tensor-core instructions. The split's keys stream through
// shared memory in tiles of kKeyTile keys (cp.async, double-buffered); warp w takes keys
// 16w..16w+15 of each tile: S (16 × 16) = Q·Kᵀ, an online softmax over its keys, O (16 × D) += P·V
// with P straight from the S fragments. At the end the four warps' (m, l, O) merge through shared
// memory (reusing the tiles' space) into the split's partial state.
// An fp8 cache (kv_fp8.cuh): cp.async brings the tile's byte rows (int8 keys, e4m3 values) and
// their scales into a second pair of stages, and each tile is turned into the bf16 rows (one stage) before it is computed:
// exactly the values the CPU attends to, so the rest of the kernel is the bf16 one.
constexpr int kTcWarps = 4, kKeyTile = 16 * kTcWarps, kMaxTcGroup = 16;
template <int D>
constexpr int kTcLd = D + 8;  // padded rows: conflict-free ldmatrix (see prefill_attention.cu)
template <typename Tkv>
constexpr int kTcBf16Stages = kIsFp8<Tkv> ? 1 : 2;
// Q, then K and V of bf16 rows; fp8: then 2 stages × (K, V) of byte rows and of row scales.
template <int D, typename Tkv>
constexpr size_t kTcTileBytes = (16 + 2 * kTcBf16Stages<Tkv> * kKeyTile) * kTcLd<D> * sizeof(__nv_bfloat16) +
                                (kIsFp8<Tkv> ? 4 * kKeyTile * (D + sizeof(float)) : 0);
template <int D>
constexpr size_t kTcMergeBytes = kTcWarps * kMaxTcGroup * (D + 2) * sizeof(float);      // O, m, l per warp
template <int D, typename Tkv>
constexpr size_t kTcSmemBytes = kTcTileBytes<D, Tkv> > kTcMergeBytes<D> ? kTcTileBytes<D, Tkv> : kTcMergeBytes<D>;

template <int D, typename Tkv>
__global__ void __launch_bounds__(kTcWarps * 32) paged_attention_tc_kernel(PagedAttentionParams<__nv_bfloat16, Tkv> p) {
  static_assert(D % 16 == 0 && (kKeyTile * D / 8) % (kTcWarps * 32) == 0, "tiles of 16-byte vectors split evenly over the threads");
  constexpr bool kFp8 = kIsFp8<Tkv>;
  constexpr int L = kTcLd<D>, kVectors = D / 8, kThreadsTc = kTcWarps * 32, kStages = kTcBf16Stages<Tkv>;
  extern __shared__ __align__(128) unsigned char raw[];
  pdl_wait(), pdl_release();  // (pdl.cuh)
  __nv_bfloat16* sq = reinterpret_cast<__nv_bfloat16*>(raw);  // (16, L)
  __nv_bfloat16* sk = sq + 16 * L;                             // (kStages, kKeyTile, L)
  __nv_bfloat16* sv = sk + kStages * kKeyTile * L;             // (kStages, kKeyTile, L)
  uint8_t* sk8 = reinterpret_cast<uint8_t*>(sv + kStages * kKeyTile * L);  // fp8: (2, kKeyTile, D) int8
  uint8_t* sv8 = sk8 + 2 * kKeyTile * D;                                   // fp8: (2, kKeyTile, D)
  float* sks = reinterpret_cast<float*>(sv8 + 2 * kKeyTile * D);           // fp8: (2, kKeyTile) row scales
  float* svs = sks + 2 * kKeyTile;                                         // fp8: (2, kKeyTile)
  const int split = blockIdx.x, g = blockIdx.y;
  // Tile row r is query head r % group of row row0 + r / group (rows_per_block rows of one chunk).
  const int64_t row0 = static_cast<int64_t>(blockIdx.z) * p.rows_per_block;
  const int group = p.num_heads / p.num_kv_heads, head0 = g * group, tile_rows = group * p.rows_per_block;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, quad = lane / 4, pair = 2 * (lane % 4);
  const int P = p.page_size, G = p.num_kv_heads;
  const int begin = split * kAttentionSplitTokens;
  auto row_end = [&](int r) { return min(p.kv_len[list_index(p, row0 + r / group, g)], begin + kAttentionSplitTokens); };
  auto out_index = [&](int r) { return (row0 + r / group) * p.num_heads + head0 + r % group; };  // (row, head)
  int end = begin;  // the block's last key: its longest row's
  for (int i = 0; i < p.rows_per_block; ++i) end = max(end, row_end(i * group));
  if (begin >= end) {  // an empty part: -inf lse, zero o
    if (threadIdx.x < tile_rows) p.partial_lse[out_index(threadIdx.x) * p.num_splits + split] = -INFINITY;
    for (int i = threadIdx.x; i < tile_rows * D; i += kThreadsTc)
      p.partial_o[(out_index(i / D) * p.num_splits + split) * D + i % D] = 0.0f;
    return;
  }
  const int32_t* pages = p.page_table + p.page_offset[list_index(p, row0, g)];
  for (int i = threadIdx.x; i < 16 * kVectors; i += kThreadsTc) {
    const int r = i / kVectors, c = (i % kVectors) * 8;
    uint4 value = make_uint4(0, 0, 0, 0);
    if (r < tile_rows) value = *reinterpret_cast<const uint4*>(p.q + out_index(r) * D + c);
    *reinterpret_cast<uint4*>(sq + r * L + c) = value;
  }
  // Each lane's two tile rows mask keys at their own row's end.
  const int lane_end[2] = {quad < tile_rows ? row_end(quad) : begin, quad + 8 < tile_rows ? row_end(quad + 8) : begin};
  // Keys past `end` are loaded as key end − 1 (a row that exists) and masked.
  auto load_tile = [&](int tile, int stage) {
    if constexpr (kFp8) {
      constexpr int kPieces = D / 16;  // 16-byte pieces of a row of bytes
      for (int i = threadIdx.x; i < kKeyTile * kPieces; i += kThreadsTc) {
        const int r = i / kPieces, c = (i % kPieces) * 16;
        const int key = min(begin + tile * kKeyTile + r, end - 1);
        const int64_t row = (static_cast<int64_t>(pages[key / P]) * G + g) * P + key % P;
        cp_async_16(sk8 + (stage * kKeyTile + r) * D + c, reinterpret_cast<const uint8_t*>(p.k_cache) + row * D + c);
        cp_async_16(sv8 + (stage * kKeyTile + r) * D + c, reinterpret_cast<const uint8_t*>(p.v_cache) + row * D + c);
        if (c == 0) cp_async_4(sks + stage * kKeyTile + r, p.k_scale + row), cp_async_4(svs + stage * kKeyTile + r, p.v_scale + row);
      }
    } else {
      for (int i = threadIdx.x; i < kKeyTile * kVectors; i += kThreadsTc) {
        const int r = i / kVectors, c = (i % kVectors) * 8;
        const int key = min(begin + tile * kKeyTile + r, end - 1);
        const int64_t offset = ((static_cast<int64_t>(pages[key / P]) * G + g) * P + key % P) * D + c;
        cp_async_16(sk + (stage * kKeyTile + r) * L + c, p.k_cache + offset);
        cp_async_16(sv + (stage * kKeyTile + r) * L + c, p.v_cache + offset);
      }
    }
  };
  // fp8: a landed stage's rows times their scales into the bf16 tile (exact).
  auto convert_tile = [&](int stage) {
    for (int i = threadIdx.x; i < kKeyTile * kVectors; i += kThreadsTc) {
      const int r = i / kVectors, c = (i % kVectors) * 8, from = (stage * kKeyTile + r) * D + c;
      *reinterpret_cast<uint4*>(sk + r * L + c) = int8x8_to_bf16x8(*reinterpret_cast<const uint2*>(sk8 + from), sks[stage * kKeyTile + r]);
      *reinterpret_cast<uint4*>(sv + r * L + c) = fp8x8_to_bf16x8(*reinterpret_cast<const uint2*>(sv8 + from), svs[stage * kKeyTile + r]);
    }
  };
  const int tiles = (end - begin + kKeyTile - 1) / kKeyTile;
  load_tile(0, 0);
  cp_async_commit();
  __syncthreads();  // Q is in shared memory
  uint32_t qf[D / 16][4];
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) ldmatrix_x4(qf[kk], sq + (lane % 16) * L + kk * 16 + (lane / 16) * 8);
  float o[D / 8][4] = {};
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};  // rows quad, quad + 8; log2 units; l is this lane's part
  const float scale_log2 = p.scale * 1.4426950408889634f;
  for (int t = 0; t < tiles; ++t) {
    const int stage = t & 1;
    if (t + 1 < tiles) load_tile(t + 1, stage ^ 1);
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    if constexpr (kFp8) {
      convert_tile(stage);
      __syncthreads();
    }
    const int tile_stage = kFp8 ? 0 : stage;
    const __nv_bfloat16* kt = sk + (tile_stage * kKeyTile + warp * 16) * L;  // this warp's 16 keys
    const __nv_bfloat16* vt = sv + (tile_stage * kKeyTile + warp * 16) * L;
    float s[2][4] = {};
#pragma unroll
    for (int n = 0; n < 2; ++n)
#pragma unroll
      for (int kk = 0; kk < D / 16; kk += 2) {
        uint32_t b[4];
        ldmatrix_x4(b, kt + (n * 8 + lane % 8) * L + kk * 16 + (lane / 8) * 8);
        mma_16x8x16(s[n], qf[kk], b[0], b[1]);
        mma_16x8x16(s[n], qf[kk + 1], b[2], b[3]);
      }
    const int key0 = begin + t * kKeyTile + warp * 16;
    float tile_max[2] = {m[0], m[1]};
#pragma unroll
    for (int n = 0; n < 2; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float v = key0 + n * 8 + pair + (e & 1) < lane_end[e / 2] ? s[n][e] * scale_log2 : -INFINITY;
        s[n][e] = v;
        tile_max[e / 2] = fmaxf(tile_max[e / 2], v);
      }
    float row_sum[2] = {0.0f, 0.0f}, alpha[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 1));
      tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 2));
      // A warp may have seen no key yet (its keys all past `end`): keep its state empty, not NaN.
      const float base = tile_max[r] == -INFINITY ? 0.0f : tile_max[r];
      alpha[r] = exp2f(m[r] - base);
      m[r] = tile_max[r];
#pragma unroll
      for (int n = 0; n < 2; ++n) {
        s[n][2 * r] = exp2f(s[n][2 * r] - base), s[n][2 * r + 1] = exp2f(s[n][2 * r + 1] - base);
        row_sum[r] += s[n][2 * r] + s[n][2 * r + 1];
      }
      l[r] = l[r] * alpha[r] + row_sum[r];
    }
    const uint32_t a[4] = {pack_bf16(s[0][0], s[0][1]), pack_bf16(s[0][2], s[0][3]), pack_bf16(s[1][0], s[1][1]), pack_bf16(s[1][2], s[1][3])};
#pragma unroll
    for (int n = 0; n < D / 8; n += 2) {
      o[n][0] *= alpha[0], o[n][1] *= alpha[0], o[n][2] *= alpha[1], o[n][3] *= alpha[1];
      o[n + 1][0] *= alpha[0], o[n + 1][1] *= alpha[0], o[n + 1][2] *= alpha[1], o[n + 1][3] *= alpha[1];
      uint32_t b[4];
      ldmatrix_x4_trans(b, vt + (lane % 8 + ((lane / 8) % 2) * 8) * L + n * 8 + (lane / 16) * 8);
      mma_16x8x16(o[n], a, b[0], b[1]);
      mma_16x8x16(o[n + 1], a, b[2], b[3]);
    }
    __syncthreads();  // this stage is reloaded two tiles from now
  }
  // Merge the warps' states: shared memory is free now (every cp.async group has completed).
  cp_async_wait<0>();
  float* s_o = reinterpret_cast<float*>(raw);                 // (kTcWarps, kMaxTcGroup, D)
  float* s_m = s_o + kTcWarps * kMaxTcGroup * D;              // (kTcWarps, kMaxTcGroup)
  float* s_l = s_m + kTcWarps * kMaxTcGroup;                  // (kTcWarps, kMaxTcGroup)
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
    const int h = quad + 8 * r;  // the tile row
    if (h >= tile_rows) continue;
    if (lane % 4 == 0) s_m[warp * kMaxTcGroup + h] = m[r], s_l[warp * kMaxTcGroup + h] = l[r];
#pragma unroll
    for (int n = 0; n < D / 8; ++n) {
      s_o[(warp * kMaxTcGroup + h) * D + n * 8 + pair] = o[n][2 * r];
      s_o[(warp * kMaxTcGroup + h) * D + n * 8 + pair + 1] = o[n][2 * r + 1];
    }
  }
  __syncthreads();
  for (int i = threadIdx.x; i < tile_rows * D; i += kThreadsTc) {
    const int h = i / D, d = i % D;  // tile row h
    float* o_out = p.partial_o + (out_index(h) * p.num_splits + split) * D + d;
    float* lse_out = p.partial_lse + out_index(h) * p.num_splits + split;
    float m_all = -INFINITY;
    for (int w = 0; w < kTcWarps; ++w) m_all = fmaxf(m_all, s_m[w * kMaxTcGroup + h]);
    if (m_all == -INFINITY) {  // a row of the block whose keys all lie before this split
      *o_out = 0.0f;
      if (d == 0) *lse_out = -INFINITY;
      continue;
    }
    float l_all = 0.0f, out = 0.0f;
    for (int w = 0; w < kTcWarps; ++w) {
      const float mw = s_m[w * kMaxTcGroup + h];
      if (mw == -INFINITY) continue;
      const float weight = exp2f(mw - m_all);
      l_all += weight * s_l[w * kMaxTcGroup + h];
      out += weight * s_o[(w * kMaxTcGroup + h) * D + d];
    }
    *o_out = out / l_all;
    if (d == 0) *lse_out = (m_all + log2f(l_all)) * 0.6931471805599453f;
  }
}

template <int D, typename Tkv>
void launch_tc(const PagedAttentionParams<__nv_bfloat16, Tkv>& p, cudaStream_t stream) {
  static SmemLimit limit;
  raise_smem_limit(paged_attention_tc_kernel<D, Tkv>, kTcSmemBytes<D, Tkv>, limit);
  dim3 grid(static_cast<unsigned>(p.num_splits), static_cast<unsigned>(p.num_kv_heads), static_cast<unsigned>(p.rows / p.rows_per_block));
  launch_pdl(paged_attention_tc_kernel<D, Tkv>, grid, dim3(kTcWarps * 32), kTcSmemBytes<D, Tkv>, stream, p);
}

// The fast path when the shapes allow it (bf16 queries, a bf16 or fp8 cache, D 64 or 128, group ≤
// 16); false otherwise.
template <typename Tq, typename Tkv>
bool try_launch_fast(const PagedAttentionParams<Tq, Tkv>& p, cudaStream_t stream) {
  if constexpr (std::is_same_v<Tq, __nv_bfloat16> && (std::is_same_v<Tkv, __nv_bfloat16> || kIsFp8<Tkv>)) {
    if (p.num_heads / p.num_kv_heads > kMaxTcGroup) return false;
    if (p.head_dim == 128) return launch_tc<128>(p, stream), true;
    if (p.head_dim == 64) return launch_tc<64>(p, stream), true;
  }
  return false;
}

}  // namespace

template <typename Tq, typename Tkv>
void launch_paged_attention(const PagedAttentionParams<Tq, Tkv>& p, cudaStream_t stream) {
  const int group = p.num_heads / p.num_kv_heads;
  check(group <= kMaxGroup && p.head_dim <= kMaxHeadDim, "paged_attention: group {} / head_dim {} unsupported", group, p.head_dim);
  check(kAttentionSplitTokens % p.page_size == 0, "paged_attention: page size {} must divide {}", p.page_size, kAttentionSplitTokens);
  check(p.rows_per_block >= 1 && p.rows % p.rows_per_block == 0, "internal: paged_attention of {} rows in blocks of {}", p.rows,
        p.rows_per_block);
  if (p.rows == 0) return;
  if constexpr (kIsFp8<Tkv>) check(p.k_scale != nullptr && p.v_scale != nullptr, "internal: paged_attention over an fp8 cache without scales");
  if (p.rows_per_block > 1) {
    check(!p.per_head_pages && group * p.rows_per_block <= kMaxTcGroup && try_launch_fast(p, stream),
          "internal: paged_attention takes {} rows per block only with bf16 queries, dense, with group × rows ≤ {} and D 64 or 128",
          p.rows_per_block, kMaxTcGroup);
    VX_CUDA_LAUNCH();
    return;
  }
  if (try_launch_fast(p, stream)) {
    VX_CUDA_LAUNCH();
    return;
  }
  const size_t smem = (static_cast<size_t>(group) * (p.head_dim + kAttentionSplitTokens) + 32) * sizeof(float);
  dim3 grid(static_cast<unsigned>(p.num_splits), static_cast<unsigned>(p.num_kv_heads), static_cast<unsigned>(p.rows));
  launch_pdl(paged_attention_kernel<Tq, Tkv>, grid, dim3(kThreads), smem, stream, p);
  VX_CUDA_LAUNCH();
}

template void launch_paged_attention<float, float>(const PagedAttentionParams<float, float>&, cudaStream_t);
template void launch_paged_attention<__nv_bfloat16, __nv_bfloat16>(const PagedAttentionParams<__nv_bfloat16, __nv_bfloat16>&, cudaStream_t);
template void launch_paged_attention<__nv_bfloat16, Fp8>(const PagedAttentionParams<__nv_bfloat16, Fp8>&, cudaStream_t);

}  // namespace vortex::cuda
