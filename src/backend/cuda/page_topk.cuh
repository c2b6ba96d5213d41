// Page selection on the GPU: per segment (the candidate scores of one (row, kv head)), the k best
// candidates, or those scoring at least a threshold (best first, at most k).
//
// The CUDA mirror of select_pages (src/sparse/flow_interpreter.h), equal to it index for index:
// score descending, equal scores (−0 equals +0) by lower candidate index first, NaN never selected,
// k ≤ 0 selects nothing, k ≥ count keeps every candidate that is not NaN (and passes the
// threshold). A top-k is the threshold −inf: every score but NaN is ≥ −inf.
//
// One block per segment: a radix selection over the scores' bits finds the selection, and only
// the selection is sorted (bitonic, in shared memory). A segment may hold any number of
// candidates; it selects at most kPageTopKMaxKeep of them (8192 pages: 128K tokens at page 16).
// The candidates' sort keys sit in shared memory up to kPageTopKSharedCount candidates (4 bytes
// each) and in the `keys` workspace beyond; the selection takes 8 bytes per entry, rounded up to a
// power of two (96 KB in all at 8192 candidates, 64 KB beyond).
// Letters: N segments, C ≤ max_count candidates of a segment.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace vortex::cuda {

constexpr int32_t kPageTopKMaxKeep = 8192;      // candidates one segment selects at most
constexpr int32_t kPageTopKSharedCount = 8192;  // segments up to this many candidates keep their keys in shared memory

struct PageTopKParams {
  const float* scores = nullptr;          // flat; segment i's (C) scores start at score_offset[i]
  const int64_t* score_offset = nullptr;  // (N)
  const int32_t* count = nullptr;         // (N) C of each segment, 0 ≤ C ≤ max_count (the kernel traps otherwise)
  const int32_t* k = nullptr;             // (N) candidates to select; ≤ 0 selects none
  const float* threshold = nullptr;       // (N) keep scores ≥ threshold (threshold flows); null: top-k
  int32_t* selected = nullptr;            // (N, selected_stride) candidate indices in [0, C), best first
  int32_t* selected_count = nullptr;      // (N) entries written to selected; the rest of the row is untouched
  // (N, key_stride) workspace for the candidates' sort keys when max_count > kPageTopKSharedCount
  // (null otherwise); key_stride ≥ max_count.
  uint32_t* keys = nullptr;
  int64_t key_stride = 0;
  int64_t segments = 0;                   // N
  // ≥ every C: sizes the shared memory. A segment selects at most min(max_count, kPageTopKMaxKeep)
  // candidates (min(valid, k)); the caller keeps k within that (the kernel traps otherwise).
  int32_t max_count = 0;
  int64_t selected_stride = 0;            // ≥ min(max_count, kPageTopKMaxKeep)
  // A stage's pruning top-k: a segment whose k covers its count selects nothing (selected_count 0;
  // stage_compact keeps every alive candidate there without reading the selection).
  bool prune_only = false;
};

void launch_page_topk(const PageTopKParams& p, cudaStream_t stream);

}  // namespace vortex::cuda
