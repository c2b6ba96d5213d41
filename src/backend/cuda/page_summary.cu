#include <cuda_bf16.h>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kv_fp8.cuh"
#include "backend/cuda/page_summary.cuh"
#include "backend/cuda/types.cuh"
#include "kv/hadamard.h"
#include "sparse/field_storage.h"

namespace vortex::cuda {
namespace {

constexpr int kThreads = 256;
constexpr size_t kMaxSmemBytes = 160 * 1024;  // within the 227 KB of a Hopper SM

// A (page, kv head)'s (P, D) keys as the CPU cache holds them: element `index` of the stored row
// (an fp8 cache's int8 key times its row's scale, exact), or of the rows rotated back into shared memory.
template <typename T>
struct PageKeys {
  const T* keys;           // (P, D)
  const float* scales;     // (P) with fp8 keys
  const float* unrotated;  // (P, D) in shared memory with rotated fp8 keys, else null
  int D;
  __device__ __forceinline__ float operator()(int64_t index) const {
    if (unrotated) return unrotated[index];
    if constexpr (kIsFp8<T>) return key_to_float(keys[index]) * scales[index / D];
    else return to_float(keys[index]);
  }
};

// Rotated fp8 keys back, one warp per row: H·(int8 · scale) / D into `out` (P, D), the CPU's values
// bit for bit (kv/kv_rounding.h's round_kv_row).
template <typename T>
__device__ void unrotate_keys(const T* keys, const float* scales, int P, int D, float* out) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
  const float inverse = 1.0f / static_cast<float>(D);  // a power of two: exact
  for (int r = warp; r < P; r += warps) {
    float* row = out + r * D;
    for (int d = lane; d < D; d += 32) row[d] = key_to_float(keys[r * D + d]) * scales[r];
    __syncwarp();
    warp_hadamard_in_place(row, D, lane);
    for (int d = lane; d < D; d += 32) row[d] *= inverse;
  }
  __syncthreads();
}

// max, min, mean, std of sub-row s at feature d, one thread per (s, d): the keys of slots s, s + S,
// s + 2S, ... in slot order, with the CPU's operations (std::max(a, b) is a < b ? b : a,
// std::min(a, b) is b < a ? b : a) rounded one at a time (no fused multiply-add), so that the
// result equals reduce_page's.
//   key: one (page, kv head)'s (P, D) keys   out: (S, D)
template <typename T>
__device__ void reduce_features(const PageSummaryParams<T>& p, const PageKeys<T>& key, float* out) {
  const int S = p.sub, D = p.head_dim, n = p.page_size / S;  // n keys per sub-row
  const int64_t step = static_cast<int64_t>(S) * D;           // from slot r to slot r + S
  const float inv = __fdiv_rn(1.0f, static_cast<float>(n));
  for (int e = threadIdx.x; e < S * D; e += blockDim.x) {
    auto k = [&](int i) { return key(e + i * step); };  // e = s * D + d is slot s, feature d
    float v = k(0);
    switch (p.reduce) {
      case FieldReduce::kMax:
        for (int i = 1; i < n; ++i) { const float x = k(i); v = v < x ? x : v; }
        break;
      case FieldReduce::kMin:
        for (int i = 1; i < n; ++i) { const float x = k(i); v = x < v ? x : v; }
        break;
      case FieldReduce::kMean:
      case FieldReduce::kStd: {
        float sum = 0.0f;
        for (int i = 0; i < n; ++i) sum = __fadd_rn(sum, k(i));
        const float mean = __fmul_rn(sum, inv);
        v = mean;
        if (p.reduce == FieldReduce::kStd) {  // two passes, as the CPU: no cancellation on a large offset
          float var = 0.0f;
          for (int i = 0; i < n; ++i) {
            const float dev = __fsub_rn(k(i), mean);
            var = __fadd_rn(var, __fmul_rn(dev, dev));
          }
          v = __fsqrt_rn(__fmul_rn(var, inv));
        }
        break;
      }
      case FieldReduce::kNorm: break;  // reduce_norms
    }
    out[e] = v;
  }
}

// norm: one warp per key computes its L2 norm into shared memory, then one thread per sub-row takes
// the largest (from 0, as the CPU).
//   key: the (P, D) keys   norms: (P) shared   out: (S, 1)
template <typename T>
__device__ void reduce_norms(const PageSummaryParams<T>& p, const PageKeys<T>& key, float* norms, float* out) {
  const int P = p.page_size, D = p.head_dim, S = p.sub;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
  for (int r = warp; r < P; r += warps) {
    float sq = 0.0f;
    for (int d = lane; d < D; d += 32) {
      const float x = key(static_cast<int64_t>(r) * D + d);
      sq += x * x;
    }
    sq = warp_sum(sq);
    if (lane == 0) norms[r] = sqrtf(sq);
  }
  __syncthreads();
  for (int s = threadIdx.x; s < S; s += blockDim.x) {
    float best = 0.0f;
    for (int r = s; r < P; r += S) best = best < norms[r] ? norms[r] : best;
    out[s] = best;
  }
}

// The f32 values (S, W) in shared memory → the record, with field_storage.h's rounding: a thread
// per sub-row finds its scale (in element order, as the CPU), then a thread per stored element (a
// byte of two elements for int4, of eight for sign).
//   values: (S, W)   scales: (S) shared   record: field_record_bytes bytes
__device__ void store_record(FieldStorage storage, const float* values, float* scales, int S, int W, uint8_t* record) {
  const bool scaled = field_storage_scaled(storage);
  if (scaled) {
    float* record_scales = reinterpret_cast<float*>(record + field_scales_offset(storage, S, W));
    for (int r = threadIdx.x; r < S; r += blockDim.x) scales[r] = record_scales[r] = field_row_scale(storage, values + r * W, W);
  }
  __syncthreads();
  const int n = S * W;
  auto code = [&](int e) { return field_code(storage, values[e], scaled ? scales[e / W] : 1.0f); };
  switch (field_storage_bits(storage)) {
    case 16:
      for (int e = threadIdx.x; e < n; e += blockDim.x) reinterpret_cast<uint16_t*>(record)[e] = static_cast<uint16_t>(code(e));
      break;
    case 8:
      for (int e = threadIdx.x; e < n; e += blockDim.x) record[e] = static_cast<uint8_t>(code(e));
      break;
    case 4:
      for (int b = threadIdx.x; b < (n + 1) / 2; b += blockDim.x)
        record[b] = static_cast<uint8_t>(code(2 * b) | (2 * b + 1 < n ? code(2 * b + 1) << 4 : 0u));
      break;
    case 1:
      for (int b = threadIdx.x; b < (n + 7) / 8; b += blockDim.x) {
        uint32_t bits = 0;
        for (int e = 8 * b; e < n && e < 8 * b + 8; ++e) bits |= code(e) << (e - 8 * b);
        record[b] = static_cast<uint8_t>(bits);
      }
      break;
    default:
      for (int e = threadIdx.x; e < n; e += blockDim.x) reinterpret_cast<float*>(record)[e] = values[e];
  }
}

// Block (i, g): page p.pages[i], kv head g. f32 fields are reduced straight into the record;
// others into shared memory first, then stored.
template <typename T>
__global__ void __launch_bounds__(kThreads) page_summary_kernel(PageSummaryParams<T> p) {
  static_assert(kThreads % 32 == 0, "whole warps");
  // [keys rotated back (P, D), rotated keys only | norms (P), norm only | values (S, W) and scales (S), below f32]
  extern __shared__ float smem[];
  const int64_t page = p.pages[blockIdx.x];
  if (page < 0) return;  // a slot of a fixed-size list with no page this step
  const int g = blockIdx.y, G = p.num_kv_heads, P = p.page_size, D = p.head_dim, S = p.sub;
  const int W = p.reduce == FieldReduce::kNorm ? 1 : D;
  const T* keys = p.k_cache + (page * G + g) * P * D;                                     // (P, D)
  const float* scales = kIsFp8<T> ? p.k_scale + (page * G + g) * P : nullptr;             // (P)
  uint8_t* record = static_cast<uint8_t*>(p.summary) + (page * G + g) * p.record_bytes;
  const bool direct = p.storage == FieldStorage::kF32;
  float* unrotated = p.keys_rotated ? smem : nullptr;
  float* norms = smem + (p.keys_rotated ? P * D : 0);
  float* values = direct ? reinterpret_cast<float*>(record) : norms + (p.reduce == FieldReduce::kNorm ? P : 0);  // (S, W)
  if constexpr (kIsFp8<T>)
    if (p.keys_rotated) unrotate_keys(keys, scales, P, D, unrotated);
  const PageKeys<T> key{keys, scales, unrotated, D};
  if (p.reduce == FieldReduce::kNorm) reduce_norms(p, key, norms, values);
  else reduce_features(p, key, values);
  if (direct) return;
  __syncthreads();
  store_record(p.storage, values, values + S * W, S, W, record);
}

// Block i: zeroes (page pages[i], every kv head) of every slot.
__global__ void page_state_reset_kernel(PageStateResetParams p) {
  const int64_t page = p.pages[blockIdx.x];
  if (page < 0) return;
  for (int s = 0; s < p.slots; ++s)
    for (int g = threadIdx.x; g < p.num_kv_heads; g += blockDim.x) p.state[s][page * p.num_kv_heads + g] = 0.0f;
}

}  // namespace

void launch_page_state_reset(const PageStateResetParams& p, cudaStream_t stream) {
  check(p.count >= 0 && p.count <= 0x7fffffff, "internal: page_state_reset of {} pages", p.count);
  check(p.slots >= 0 && p.slots <= kPageStateMaxSlots, "internal: page_state_reset of {} slots", p.slots);
  if (p.count == 0 || p.slots == 0) return;
  page_state_reset_kernel<<<static_cast<unsigned>(p.count), 32, 0, stream>>>(p);
  VX_CUDA_LAUNCH();
}

template <typename T>
void launch_page_summary(const PageSummaryParams<T>& p, cudaStream_t stream) {
  check(p.count >= 0 && p.count <= 0x7fffffff, "internal: page_summary of {} pages", p.count);
  if (p.count == 0) return;
  check(p.k_cache != nullptr && p.pages != nullptr && p.summary != nullptr && (!kIsFp8<T> || p.k_scale != nullptr),
        "internal: page_summary with a null pointer");
  check(p.num_kv_heads >= 1 && p.num_kv_heads <= 65535, "internal: page_summary of {} kv heads", p.num_kv_heads);
  check(p.page_size >= 1 && p.head_dim >= 1, "internal: page_summary with page size {} and head dim {}", p.page_size, p.head_dim);
  check(p.sub >= 1 && p.page_size % p.sub == 0, "page_summary: sub={} does not divide the page size {}", p.sub, p.page_size);
  const int reduce = static_cast<int>(p.reduce);
  check(reduce >= static_cast<int>(FieldReduce::kMax) && reduce <= static_cast<int>(FieldReduce::kNorm), "internal: page_summary of reduce {}", reduce);
  const int64_t W = p.reduce == FieldReduce::kNorm ? 1 : p.head_dim;
  check(p.record_bytes == field_record_bytes(p.storage, p.sub, W), "internal: page_summary records of {} bytes, not {}",
        p.record_bytes, field_record_bytes(p.storage, p.sub, W));
  check(!p.keys_rotated || (kIsFp8<T> && is_power_of_two(p.head_dim)),
        "internal: page_summary of rotated keys needs fp8 keys of a power-of-two head dim, not {}", p.head_dim);
  const int64_t floats = (p.keys_rotated ? p.page_size * p.head_dim : 0) + (p.reduce == FieldReduce::kNorm ? p.page_size : 0) +
                         (p.storage == FieldStorage::kF32 ? 0 : p.sub * W + p.sub);
  const size_t smem = static_cast<size_t>(floats) * sizeof(float);
  check(smem <= kMaxSmemBytes, "page_summary: a {} field of {} sub-rows of {} values{} needs {} bytes of shared memory (limit {})",
        field_storage_name(p.storage), p.sub, W, p.keys_rotated ? " over rotated fp8 keys" : "", smem, kMaxSmemBytes);
  static SmemLimit limit;
  raise_smem_limit(page_summary_kernel<T>, smem, limit);
  const dim3 grid(static_cast<unsigned>(p.count), static_cast<unsigned>(p.num_kv_heads));
  page_summary_kernel<T><<<grid, kThreads, smem, stream>>>(p);
  VX_CUDA_LAUNCH();
}

template void launch_page_summary<float>(const PageSummaryParams<float>&, cudaStream_t);
template void launch_page_summary<__nv_bfloat16>(const PageSummaryParams<__nv_bfloat16>&, cudaStream_t);
template void launch_page_summary<Fp8>(const PageSummaryParams<Fp8>&, cudaStream_t);

}  // namespace vortex::cuda
