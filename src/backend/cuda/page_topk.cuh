// Page selection on the GPU: per segment (the candidate scores of one (row, kv head)), the k best
// candidates, or those scoring at least a threshold (best first, at most k).
//
// The CUDA mirror of select_pages (src/sparse/flow_interpreter.h), equal to it index for index:
// score descending, equal scores (−0 equals +0) by lower candidate index first, NaN never selected,
// k ≤ 0 selects nothing, k ≥ count keeps every candidate that is not NaN (and passes the
// threshold). A top-k is the threshold −inf: every score but NaN is ≥ −inf.
//
// One block per segment: a radix selection over the scores' bits finds the selection, and only
// the selection is sorted (bitonic, in shared memory); a segment holds at most kPageTopKMaxCount
// candidates: 8192 pages, 128K tokens at page 16. Shared memory is 4 bytes per candidate of the
// largest segment plus 8 per candidate rounded up to a power of two (96 KB at 8192).
// Letters: N segments, C ≤ max_count candidates of a segment.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace vortex::cuda {

constexpr int32_t kPageTopKMaxCount = 8192;

struct PageTopKParams {
  const float* scores = nullptr;          // flat; segment i's (C) scores start at score_offset[i]
  const int64_t* score_offset = nullptr;  // (N)
  const int32_t* count = nullptr;         // (N) C of each segment, 0 ≤ C ≤ max_count (the kernel traps otherwise)
  const int32_t* k = nullptr;             // (N) candidates to select; ≤ 0 selects none
  const float* threshold = nullptr;       // (N) keep scores ≥ threshold (threshold flows); null: top-k
  int32_t* selected = nullptr;            // (N, selected_stride) candidate indices in [0, C), best first
  int32_t* selected_count = nullptr;      // (N) entries written to selected; the rest of the row is untouched
  int64_t segments = 0;                   // N
  int32_t max_count = 0;                  // ≥ every C, ≤ kPageTopKMaxCount: sizes the shared memory
  int64_t selected_stride = 0;            // ≥ max_count
};

void launch_page_topk(const PageTopKParams& p, cudaStream_t stream);

}  // namespace vortex::cuda
