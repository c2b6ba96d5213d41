// Stages of a flow on the GPU (`stage topk(score, factor)`, include/vortex/flow.h): between two
// scoring passes, the candidates that survive a stage become the next pass's candidate list.
//
// The CUDA mirror of run_passes (src/sparse/page_selection.cpp). Per segment (one (row, kv head)):
// `alive` lists the surviving candidates as indices into the segment's candidates, ascending (so
// that equal scores break by candidate index in every pass, as on the CPU), and `alive_pages` their
// page ids, the candidate list the next pass's indexer reads.
//   stage_compact  after a stage's page_topk: when the stage prunes (keep < alive count), the
//                  selected survivors sorted by index become `alive`; otherwise `alive` stays (the
//                  identity on the first stage). Writes alive_pages and the counts.
//   stage_map      after the final page_topk over the survivors: its indices into `alive` become
//                  indices into the candidates, as page_list_compose reads them.
// Letters: N segments, C candidates of a segment (≤ stride).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace vortex::cuda {

// A pruning stage keeps at most this many candidates per segment (stage_compact sorts them in
// shared memory); the candidates themselves are not limited.
constexpr int32_t kStageMaxKeep = 8192;

struct StageCompactParams {
  const int32_t* selected = nullptr;        // (N, stride) this stage's page_topk selection (indices into alive), best first
  const int32_t* selected_count = nullptr;  // (N)
  const int32_t* keep = nullptr;            // (N) survivors the stage keeps: ceil(factor · k), ≤ kStageMaxKeep where it prunes; 0 outside the group
  int32_t* count = nullptr;                 // (N) in: alive candidates; out: survivors (segments with keep > 0)
  int32_t* final_count = nullptr;           // (N) out: survivors, the final page_topk's counts (segments with keep > 0)
  int32_t* alive = nullptr;                 // (N, stride) in/out: surviving candidate indices, ascending
  const int32_t* cand_pages = nullptr;      // (N, stride) the candidates' page ids
  int32_t* alive_pages = nullptr;           // (N, stride) out: the survivors' page ids
  int64_t segments = 0;                     // N
  int32_t stride = 0;                       // ≥ every count
  bool first = false;                       // the first stage: alive is the identity (not read)
};
void launch_stage_compact(const StageCompactParams& p, cudaStream_t stream);

struct StageMapParams {
  int32_t* selected = nullptr;              // (N, stride) in: indices into alive; out: into the candidates
  const int32_t* selected_count = nullptr;  // (N)
  const int32_t* alive = nullptr;           // (N, stride)
  const uint8_t* staged = nullptr;          // (N) 1: the segment's flow has stages (mapped), 0: left alone
  int64_t segments = 0;
  int32_t stride = 0;
};
void launch_stage_map(const StageMapParams& p, cudaStream_t stream);

}  // namespace vortex::cuda
