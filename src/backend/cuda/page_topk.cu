#include "backend/cuda/cuda_check.h"
#include "backend/cuda/page_topk.cuh"

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

// Sorts keys (n), n a power of two, ascending: bitonic merges, each pass one compare-exchange of
// n / 2 pairs across the block.
__device__ void bitonic_sort(uint64_t* keys, int n) {
  for (int size = 2; size <= n; size <<= 1) {
    for (int stride = size >> 1; stride > 0; stride >>= 1) {
      __syncthreads();
      for (int t = threadIdx.x; t < n / 2; t += blockDim.x) {
        const int i = 2 * t - (t & (stride - 1)), j = i + stride;  // pairs (i, i + stride), i's bit `stride` clear
        const bool ascending = (i & size) == 0;
        const uint64_t a = keys[i], b = keys[j];
        if ((a > b) == ascending) keys[i] = b, keys[j] = a;
      }
    }
  }
  __syncthreads();
}

// Block i: segment i. Key of candidate c = (descending score bits, c): ascending keys are the
// CPU's order; excluded candidates (NaN, below the threshold) and the padding sort last.
__global__ void __launch_bounds__(kThreads) page_topk_kernel(PageTopKParams p) {
  static_assert(kThreads % 32 == 0 && kThreads <= 1024, "whole warps, one block");
  extern __shared__ uint64_t keys[];  // (n) C rounded up to a power of two
  __shared__ int valid;               // candidates that may be selected
  const int64_t segment = blockIdx.x;
  const int count = p.count[segment], k = p.k[segment];
  if (count < 0 || count > p.max_count) __trap();  // a planner bug; shared memory was sized by max_count
  if (count == 0 || k <= 0) {
    if (threadIdx.x == 0) p.selected_count[segment] = 0;
    return;
  }
  const float* scores = p.scores + p.score_offset[segment];
  const float threshold = p.threshold ? p.threshold[segment] : -INFINITY;
  const int n = ceil_pow2(count);
  if (threadIdx.x == 0) valid = 0;
  __syncthreads();
  int mine = 0;
  for (int c = threadIdx.x; c < n; c += blockDim.x) {
    uint64_t key = kExcluded;
    if (c < count) {
      const float s = scores[c];
      if (s >= threshold) {  // false for NaN
        key = (static_cast<uint64_t>(descending_bits(s)) << 32) | static_cast<uint32_t>(c);
        ++mine;
      }
    }
    keys[c] = key;
  }
  atomicAdd(&valid, mine);
  bitonic_sort(keys, n);
  const int keep = min(valid, k);
  int32_t* out = p.selected + segment * p.selected_stride;
  for (int j = threadIdx.x; j < keep; j += blockDim.x) out[j] = static_cast<int32_t>(keys[j] & 0xffffffffu);
  if (threadIdx.x == 0) p.selected_count[segment] = keep;
}

}  // namespace

void launch_page_topk(const PageTopKParams& p, cudaStream_t stream) {
  check(p.segments >= 0 && p.segments <= 0x7fffffff, "internal: page_topk of {} segments", p.segments);
  if (p.segments == 0) return;
  check(p.max_count >= 0 && p.max_count <= kPageTopKMaxCount, "page_topk: {} candidates per segment exceed the limit {}", p.max_count,
        kPageTopKMaxCount);
  check(p.selected_stride >= p.max_count, "internal: page_topk output stride {} < max count {}", p.selected_stride, p.max_count);
  check(p.scores != nullptr && p.score_offset != nullptr && p.count != nullptr && p.k != nullptr && p.selected != nullptr &&
            p.selected_count != nullptr, "internal: page_topk with a null pointer");
  const size_t smem = static_cast<size_t>(ceil_pow2(p.max_count)) * sizeof(uint64_t);
  static SmemLimit limit;
  raise_smem_limit(page_topk_kernel, smem, limit);
  page_topk_kernel<<<static_cast<unsigned>(p.segments), kThreads, smem, stream>>>(p);
  VX_CUDA_LAUNCH();
}

}  // namespace vortex::cuda
