// Bitonic sort of a power-of-two array in shared memory by one thread block: each pass one
// compare-exchange of n / 2 pairs across the block. Used by page_topk (its selection's 64-bit
// keys) and page_stage (a stage's surviving candidate indices).
#pragma once

namespace vortex::cuda {

// Sorts keys (n), n a power of two, ascending; every thread of the block calls it.
template <typename T>
__device__ void bitonic_sort(T* keys, int n) {
  for (int size = 2; size <= n; size <<= 1) {
    for (int stride = size >> 1; stride > 0; stride >>= 1) {
      __syncthreads();
      for (int t = threadIdx.x; t < n / 2; t += blockDim.x) {
        const int i = 2 * t - (t & (stride - 1)), j = i + stride;  // pairs (i, i + stride), i's bit `stride` clear
        const bool ascending = (i & size) == 0;
        const T a = keys[i], b = keys[j];
        if ((a > b) == ascending) keys[i] = b, keys[j] = a;
      }
    }
  }
  __syncthreads();
}

}  // namespace vortex::cuda
