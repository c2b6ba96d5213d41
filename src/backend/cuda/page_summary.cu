#include <cuda_bf16.h>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/page_summary.cuh"
#include "backend/cuda/types.cuh"

namespace vortex::cuda {
namespace {

constexpr int kThreads = 256;

// max, min, mean, std of sub-row s at feature d, one thread per (s, d): the keys of slots s, s + S,
// s + 2S, ... in slot order, with the CPU's operations (std::max(a, b) is a < b ? b : a,
// std::min(a, b) is b < a ? b : a) rounded one at a time (no fused multiply-add), so that the
// result equals reduce_page's.
//   keys: (P, D) one (page, kv head)   out: (S, D)
template <typename T>
__device__ void reduce_features(const PageSummaryParams<T>& p, const T* keys, float* out) {
  const int S = p.sub, D = p.head_dim, n = p.page_size / S;  // n keys per sub-row
  const int64_t step = static_cast<int64_t>(S) * D;           // from slot r to slot r + S
  const float inv = __fdiv_rn(1.0f, static_cast<float>(n));
  for (int e = threadIdx.x; e < S * D; e += blockDim.x) {
    const T* k = keys + e;  // e = s * D + d is slot s, feature d
    float v = to_float(k[0]);
    switch (p.reduce) {
      case FieldReduce::kMax:
        for (int i = 1; i < n; ++i) { const float x = to_float(k[i * step]); v = v < x ? x : v; }
        break;
      case FieldReduce::kMin:
        for (int i = 1; i < n; ++i) { const float x = to_float(k[i * step]); v = x < v ? x : v; }
        break;
      case FieldReduce::kMean:
      case FieldReduce::kStd: {
        float sum = 0.0f;
        for (int i = 0; i < n; ++i) sum = __fadd_rn(sum, to_float(k[i * step]));
        const float mean = __fmul_rn(sum, inv);
        v = mean;
        if (p.reduce == FieldReduce::kStd) {  // two passes, as the CPU: no cancellation on a large offset
          float var = 0.0f;
          for (int i = 0; i < n; ++i) {
            const float dev = __fsub_rn(to_float(k[i * step]), mean);
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
//   keys: (P, D)   norms: (P) shared   out: (S, 1)
template <typename T>
__device__ void reduce_norms(const PageSummaryParams<T>& p, const T* keys, float* norms, float* out) {
  const int P = p.page_size, D = p.head_dim, S = p.sub;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
  for (int r = warp; r < P; r += warps) {
    float sq = 0.0f;
    for (int d = lane; d < D; d += 32) {
      const float x = to_float(keys[static_cast<int64_t>(r) * D + d]);
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

// Block (i, g): page p.pages[i], kv head g.
template <typename T>
__global__ void __launch_bounds__(kThreads) page_summary_kernel(PageSummaryParams<T> p) {
  static_assert(kThreads % 32 == 0, "whole warps");
  extern __shared__ float norms[];  // (P), norm only
  const int64_t page = p.pages[blockIdx.x];
  if (page < 0) return;  // a slot of a fixed-size list with no page this step
  const int g = blockIdx.y, G = p.num_kv_heads, P = p.page_size, D = p.head_dim;
  const int W = p.reduce == FieldReduce::kNorm ? 1 : D;
  const T* keys = p.k_cache + (page * G + g) * P * D;            // (P, D)
  float* out = p.summary + (page * G + g) * p.sub * W;           // (S, W)
  if (p.reduce == FieldReduce::kNorm) reduce_norms(p, keys, norms, out);
  else reduce_features(p, keys, out);
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
  check(p.k_cache != nullptr && p.pages != nullptr && p.summary != nullptr, "internal: page_summary with a null pointer");
  check(p.num_kv_heads >= 1 && p.num_kv_heads <= 65535, "internal: page_summary of {} kv heads", p.num_kv_heads);
  check(p.page_size >= 1 && p.head_dim >= 1, "internal: page_summary with page size {} and head dim {}", p.page_size, p.head_dim);
  check(p.sub >= 1 && p.page_size % p.sub == 0, "page_summary: sub={} does not divide the page size {}", p.sub, p.page_size);
  const int reduce = static_cast<int>(p.reduce);
  check(reduce >= static_cast<int>(FieldReduce::kMax) && reduce <= static_cast<int>(FieldReduce::kNorm), "internal: page_summary of reduce {}", reduce);
  const size_t smem = p.reduce == FieldReduce::kNorm ? static_cast<size_t>(p.page_size) * sizeof(float) : 0;
  check(smem <= 48 * 1024, "page_summary: page size {} is too large for a norm", p.page_size);
  const dim3 grid(static_cast<unsigned>(p.count), static_cast<unsigned>(p.num_kv_heads));
  page_summary_kernel<T><<<grid, kThreads, smem, stream>>>(p);
  VX_CUDA_LAUNCH();
}

template void launch_page_summary<float>(const PageSummaryParams<float>&, cudaStream_t);
template void launch_page_summary<__nv_bfloat16>(const PageSummaryParams<__nv_bfloat16>&, cudaStream_t);

}  // namespace vortex::cuda
