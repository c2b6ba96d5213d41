#include "backend/cuda/bitonic.cuh"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/page_topk.cuh"
#include "backend/cuda/types.cuh"

namespace vortex::cuda {
namespace {

constexpr int kThreads = 512;
constexpr uint64_t kExcluded = ~0ull;  // sorts after every real key (a real key's index is < 2^31)

// The smallest power of two ≥ max(n, 1).
__host__ __device__ inline int ceil_pow2(int n) {
  int r = 1;
  while (r < n) r <<= 1;
  return r;
}

// Bits whose unsigned order is the descending order of the scores (never NaN here); −0 and +0 give
// one value, as they compare equal on the CPU.
__device__ __forceinline__ uint32_t descending_bits(float score) {
  uint32_t bits = __float_as_uint(score);
  if ((bits & 0x7fffffffu) == 0) bits = 0;
  const uint32_t ascending = (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
  return ~ascending;
}

constexpr int kRadixBits = 11, kBins = 1 << kRadixBits;  // three digits: bits 31..21, 20..10, 9..0
constexpr uint32_t kInvalid = 0xffffffffu;  // NaN or below the threshold (no real score's key: that is a NaN's)

// Shared memory: the candidates' descending-score keys (max_count; none when they live in the
// global workspace), then the selection's 64-bit (key, index) pairs (its capacity rounded up to a
// power of two).
__host__ __device__ inline bool shared_keys(int max_count) { return max_count <= kPageTopKSharedCount; }
__host__ __device__ inline int keep_capacity(int max_count) { return max_count < kPageTopKMaxKeep ? max_count : kPageTopKMaxKeep; }
__host__ __device__ inline size_t keys_offset(int max_count) {
  return shared_keys(max_count) ? (static_cast<size_t>(max_count) * 4 + 7) / 8 * 8 : 0;
}

// Block i: segment i. The CPU's order is ascending (descending score bits, candidate index). A
// radix selection over the score bits (three passes of a 2048-bin histogram) finds the key T of
// the keep-th best candidate; every candidate with a better key, and the first ones (by index) of
// those tied at T, are gathered and only they are sorted (bitonic), so the cost is a few passes over
// the candidates plus a sort of the selection, not a sort of all of them.
__global__ void __launch_bounds__(kThreads) page_topk_kernel(PageTopKParams p) {
  static_assert(kThreads % 32 == 0 && kThreads <= 1024 && kBins % kThreads == 0, "whole warps; bins split evenly");
  extern __shared__ __align__(16) uint8_t smem[];
  const int64_t segment = blockIdx.x;
  uint32_t* desc = shared_keys(p.max_count) ? reinterpret_cast<uint32_t*>(smem) : p.keys + segment * p.key_stride;  // (C)
  uint64_t* keys = reinterpret_cast<uint64_t*>(smem + keys_offset(p.max_count));  // (pow2 ≥ keep)
  __shared__ uint32_t hist[kBins];
  __shared__ int scratch[32];
  __shared__ int valid, gathered, bin, less_in_bins;
  const int count = p.count[segment], k = p.k[segment];
  if (count < 0 || count > p.max_count) __trap();  // a planner bug; shared memory was sized by max_count
  if (count == 0 || k <= 0 || (p.prune_only && k >= count)) {
    if (threadIdx.x == 0) p.selected_count[segment] = 0;
    return;
  }
  const float* scores = p.scores + p.score_offset[segment];
  const float threshold = p.threshold ? p.threshold[segment] : -INFINITY;
  if (threadIdx.x == 0) valid = 0, gathered = 0;
  __syncthreads();
  int mine = 0;
  for (int c = threadIdx.x; c < count; c += blockDim.x) {
    const float s = scores[c];
    const bool ok = s >= threshold;  // false for NaN
    desc[c] = ok ? descending_bits(s) : kInvalid;
    mine += ok;
  }
  atomicAdd(&valid, mine);
  __syncthreads();
  const int keep = min(valid, k);
  if (keep > keep_capacity(p.max_count)) __trap();  // a planner bug: the selection has no room
  // Selected: key < t, and the first `ties` (by index) of key == t.
  uint32_t t = kInvalid;
  int less = valid;
  if (keep < valid) {
    t = 0, less = 0;
    for (int shift = 32 - kRadixBits; shift > -kRadixBits; shift -= kRadixBits) {
      const int low = max(shift, 0), width = shift + kRadixBits - low;  // this digit: bits [low, low + width)
      const uint64_t above = static_cast<uint64_t>(t) >> (low + width);   // the digits chosen so far
      for (int b = threadIdx.x; b < kBins; b += blockDim.x) hist[b] = 0;
      __syncthreads();
      for (int c = threadIdx.x; c < count; c += blockDim.x) {
        const uint32_t d = desc[c];
        if (d != kInvalid && (static_cast<uint64_t>(d) >> (low + width)) == above) atomicAdd(&hist[(d >> low) & ((1u << width) - 1)], 1u);
      }
      __syncthreads();
      // The first bin at which the running count reaches the keep − less still needed.
      constexpr int kPerThread = kBins / kThreads;
      const int first_bin = threadIdx.x * kPerThread;
      int local = 0;
      for (int j = 0; j < kPerThread; ++j) local += static_cast<int>(hist[first_bin + j]);
      int total = 0;
      int run = block_exclusive_sum(local, scratch, total);
      const int need = keep - less;
      if (run < need && run + local >= need)
        for (int j = 0; j < kPerThread; ++j) {
          const int h = static_cast<int>(hist[first_bin + j]);
          if (run + h >= need) {
            bin = first_bin + j, less_in_bins = run;
            break;
          }
          run += h;
        }
      __syncthreads();
      t |= static_cast<uint32_t>(bin) << low;
      less += less_in_bins;
      __syncthreads();  // bin and less_in_bins are rewritten by the next pass
    }
  }
  for (int c = threadIdx.x; c < count; c += blockDim.x)
    if (desc[c] < t) keys[atomicAdd(&gathered, 1)] = (static_cast<uint64_t>(desc[c]) << 32) | static_cast<uint32_t>(c);
  if (less < keep) {  // ties at t, by index: thread runs of consecutive candidates, ranked by a scan
    const int per_thread = (count + blockDim.x - 1) / blockDim.x;
    const int lo = min(count, static_cast<int>(threadIdx.x) * per_thread), hi = min(count, lo + per_thread);
    int tied = 0;
    for (int c = lo; c < hi; ++c) tied += desc[c] == t;
    int total = 0;
    int rank = block_exclusive_sum(tied, scratch, total);
    for (int c = lo; c < hi && rank < keep - less; ++c)
      if (desc[c] == t) keys[atomicAdd(&gathered, 1)] = (static_cast<uint64_t>(t) << 32) | static_cast<uint32_t>(c), ++rank;
  }
  __syncthreads();
  const int n = ceil_pow2(keep);
  for (int j = keep + threadIdx.x; j < n; j += blockDim.x) keys[j] = kExcluded;
  bitonic_sort(keys, n);
  int32_t* out = p.selected + segment * p.selected_stride;
  for (int j = threadIdx.x; j < keep; j += blockDim.x) out[j] = static_cast<int32_t>(keys[j] & 0xffffffffu);
  if (threadIdx.x == 0) p.selected_count[segment] = keep;
}

}  // namespace

void launch_page_topk(const PageTopKParams& p, cudaStream_t stream) {
  check(p.segments >= 0 && p.segments <= 0x7fffffff, "internal: page_topk of {} segments", p.segments);
  if (p.segments == 0) return;
  check(p.max_count >= 0, "internal: page_topk with max count {}", p.max_count);
  check(p.selected_stride >= keep_capacity(p.max_count), "internal: page_topk output stride {} < the selection's capacity {}",
        p.selected_stride, keep_capacity(p.max_count));
  check(p.scores != nullptr && p.score_offset != nullptr && p.count != nullptr && p.k != nullptr && p.selected != nullptr &&
            p.selected_count != nullptr, "internal: page_topk with a null pointer");
  check(shared_keys(p.max_count) || (p.keys != nullptr && p.key_stride >= p.max_count),
        "internal: page_topk of {} candidates per segment needs a key workspace of that stride (got {})", p.max_count, p.key_stride);
  const size_t smem = keys_offset(p.max_count) + static_cast<size_t>(ceil_pow2(keep_capacity(p.max_count))) * sizeof(uint64_t);
  static SmemLimit limit;
  raise_smem_limit(page_topk_kernel, smem, limit);
  page_topk_kernel<<<static_cast<unsigned>(p.segments), kThreads, smem, stream>>>(p);
  VX_CUDA_LAUNCH();
}

}  // namespace vortex::cuda
