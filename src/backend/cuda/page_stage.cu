#include <algorithm>

#include "backend/cuda/bitonic.cuh"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/page_stage.cuh"

namespace vortex::cuda {
namespace {

constexpr int kThreads = 256;

// The selection a pruning stage sorts: at most min(stride, kStageMaxKeep), rounded up to a power of two.
int sort_capacity(int stride) {
  int size = 1;
  while (size < std::min(stride, kStageMaxKeep)) size <<= 1;
  return size;
}

// Block i: segment i.
__global__ void __launch_bounds__(kThreads) stage_compact_kernel(StageCompactParams p) {
  extern __shared__ int32_t sorted[];  // (pow2 ≥ min(stride, kStageMaxKeep) ≥ selected_count)
  const int64_t segment = blockIdx.x;
  const int n = p.count[segment], keep = p.keep[segment];
  if (n <= 0 || keep <= 0) return;
  if (n > p.stride) __trap();  // a planner bug
  int32_t* alive = p.alive + segment * p.stride;
  int32_t* pages = p.alive_pages + segment * p.stride;
  const int32_t* cand = p.cand_pages + segment * p.stride;
  if (keep >= n) {  // nothing to prune: the survivors are the alive candidates
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
      const int32_t c = p.first ? i : alive[i];
      if (p.first) alive[i] = c;
      pages[i] = cand[c];
    }
    if (threadIdx.x == 0) p.final_count[segment] = n;
    return;
  }
  const int m = p.selected_count[segment];
  if (m < 0 || m > keep || m > kStageMaxKeep) __trap();  // a planner bug: the sort has no room
  int size = 1;
  while (size < m) size <<= 1;
  const int32_t* sel = p.selected + segment * p.stride;
  for (int j = threadIdx.x; j < size; j += blockDim.x) sorted[j] = j < m ? sel[j] : 0x7fffffff;
  bitonic_sort(sorted, size);
  // Indices into the old alive list → candidate indices (read everything before writing in place).
  for (int j = threadIdx.x; j < m; j += blockDim.x) sorted[j] = p.first ? sorted[j] : alive[sorted[j]];
  __syncthreads();
  for (int j = threadIdx.x; j < m; j += blockDim.x) alive[j] = sorted[j], pages[j] = cand[sorted[j]];
  if (threadIdx.x == 0) p.count[segment] = m, p.final_count[segment] = m;
}

// Block i: segment i.
__global__ void stage_map_kernel(StageMapParams p) {
  const int64_t segment = blockIdx.x;
  if (!p.staged[segment]) return;
  int32_t* sel = p.selected + segment * p.stride;
  const int32_t* alive = p.alive + segment * p.stride;
  for (int j = threadIdx.x; j < p.selected_count[segment]; j += blockDim.x) sel[j] = alive[sel[j]];
}

}  // namespace

void launch_stage_compact(const StageCompactParams& p, cudaStream_t stream) {
  check(p.segments >= 0 && p.segments <= 0x7fffffff, "internal: stage_compact of {} segments", p.segments);
  if (p.segments == 0) return;
  check(p.stride >= 1, "internal: stage_compact with stride {}", p.stride);
  check(p.selected && p.selected_count && p.keep && p.count && p.final_count && p.alive && p.cand_pages && p.alive_pages,
        "internal: stage_compact with a null pointer");
  const size_t smem = static_cast<size_t>(sort_capacity(p.stride)) * sizeof(int32_t);
  static SmemLimit limit;
  raise_smem_limit(stage_compact_kernel, smem, limit);
  stage_compact_kernel<<<static_cast<unsigned>(p.segments), kThreads, smem, stream>>>(p);
  VX_CUDA_LAUNCH();
}

void launch_stage_map(const StageMapParams& p, cudaStream_t stream) {
  check(p.segments >= 0 && p.segments <= 0x7fffffff, "internal: stage_map of {} segments", p.segments);
  if (p.segments == 0) return;
  check(p.selected && p.selected_count && p.alive && p.staged, "internal: stage_map with a null pointer");
  stage_map_kernel<<<static_cast<unsigned>(p.segments), 128, 0, stream>>>(p);
  VX_CUDA_LAUNCH();
}

}  // namespace vortex::cuda
