// Page lists on the GPU: per (row, kv head), the pages a sparse decode row attends, as the paged
// attention kernel reads them (per_head_pages): physical page ids in ascending page-index order,
// the row's own (partly filled) page last, and the row's key count.
//
// The CUDA mirror of plan_query_pages + merge_pages (src/sparse/page_selection.{h,cpp}): the
// always-kept pages (sink [0, sink_pages) and window [window_first, own]) ∪ the selected
// candidates. Candidates are the pages [sink_pages, min(window start, own)), so the three parts
// are disjoint and already in order: sink, selected candidates ascending, window. Which
// candidates are selected follows select_head: a top-k whose k covers every candidate takes them
// all (NaN scores included, as the CPU does); a select-none flow or k ≤ 0 takes none; otherwise
// page_topk's selection for (row, kv head).
// Letters: R rows, G kv heads, P page size, N candidates of a row.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "vortex/flow.h"

namespace vortex::cuda {

// At most this many pages per list: the compose kernel marks the selected candidates in
// list_stride bytes of shared memory.
constexpr int32_t kPageListMaxPages = 128 * 1024;

// One sparse query row, as the host planner fills it each step.
struct SparseRow {
  int64_t table_offset = 0;  // where the row's sequence's page table starts in page_table
  int32_t position = 0;      // the query's position: it attends positions 0..position
  int32_t sink = 0;          // tokens always kept at the start (the host clamps to INT32_MAX: same pages)
  int32_t window = 0;        // most recent tokens always kept (clamped likewise)
  int32_t k = 0;             // candidates to select: SparseAttention::pages_to_select(position + 1)
  FlowSelectKind select_kind = FlowSelectKind::kTopK;  // the row's flow's selection
  uint8_t saves = 0;         // the flow saves state: its indexer runs even when nothing is selected
};

// The always-kept pages and the candidates of one row (page indices into the sequence's table).
struct SparseRowPlan {
  int32_t sink_pages = 0;    // sink: pages [0, sink_pages)
  int32_t window_first = 0;  // window: pages [window_first, own], window_first ≥ sink_pages
  int32_t own = 0;           // the query's page
  int32_t candidates = 0;    // N: candidate i is page sink_pages + i, all before window_first
};

// plan_query_pages, page indices only: the same pages for any sink and window. (Plain ternaries:
// this compiles for the host compiler too, where CUDA's min/max do not exist.)
__host__ __device__ inline SparseRowPlan plan_sparse_row(const SparseRow& row, int page_size) {
  const int64_t P = page_size, position = row.position, own = position / P;
  const int64_t sink_ceil = row.sink / P + (row.sink % P != 0);  // ceil, no overflow
  const int64_t sink_pages = sink_ceil < own ? sink_ceil : own;
  const int64_t window_reach = position - row.window + 1;       // the first position the window keeps
  const int64_t window_start = row.window > 0 ? (window_reach > 0 ? window_reach : 0) / P : own;
  const int64_t candidates_end = window_start < own ? window_start : own;
  SparseRowPlan plan;
  plan.sink_pages = static_cast<int32_t>(sink_pages);
  plan.window_first = static_cast<int32_t>(window_start > sink_pages ? window_start : sink_pages);
  plan.own = static_cast<int32_t>(own);
  plan.candidates = static_cast<int32_t>(candidates_end > sink_pages ? candidates_end - sink_pages : 0);
  return plan;
}

struct PageListComposeParams {
  const SparseRow* rows = nullptr;          // (R)
  // Where row r's selection and outputs live: segment (batch_row[r]·G + g) of selected,
  // selected_count, list_offset and kv_len (the row's place in the forward's batch); null: r.
  const int32_t* batch_row = nullptr;       // (R) or null
  const int32_t* page_table = nullptr;      // flat page ids of all sequences; row r's table at rows[r].table_offset
  const int32_t* selected = nullptr;        // (R, G, selected_stride) page_topk's candidate indices, best first
  const int32_t* selected_count = nullptr;  // (R, G) entries of selected
  int32_t* list_pages = nullptr;            // (R, G, list_stride) page ids to attend; tails past the list untouched
  int64_t* list_offset = nullptr;           // (segments) = list_base + (r·G + g)·list_stride: paged attention's page_offset
  int32_t* kv_len = nullptr;                // (segments) = (list length − 1)·P + keys in the own page
  int64_t rows_count = 0;                   // R
  int num_kv_heads = 0;                     // G
  int page_size = 0;                        // P
  int64_t selected_stride = 0;              // ≥ every selected_count
  int32_t list_stride = 0;                  // ≥ own + 1 of every row (the kernel traps otherwise), ≤ kPageListMaxPages
  int64_t list_base = 0;                    // where list_pages starts in the buffer paged attention reads
};

void launch_page_list_compose(const PageListComposeParams& p, cudaStream_t stream);

// The step's candidates, once per step for every layer: for sparse row r and kv head g, segment
// s = batch_row[r]·G + g gets the candidate page ids (pages [sink_pages, sink_pages + N) of the
// row's table, as plan_sparse_row says) at pages[s·stride ...], and the per-segment inputs of the
// flow indexer (offsets, group_counts) and of page_topk (score_offset, counts, k, threshold).
// Segments of rows not listed keep what the caller set (zero counts: nothing is scored or selected).
struct SparseCandidatesParams {
  const SparseRow* rows = nullptr;         // (R)
  const int32_t* batch_row = nullptr;      // (R) the row's place in the batch
  const int32_t* group = nullptr;          // (R) the indexer launch group of the row (its spec and wave)
  const float* threshold = nullptr;        // (R) threshold flows' threshold; −inf for top-k
  const int32_t* page_table = nullptr;     // flat page ids; row r's table at rows[r].table_offset
  int32_t* pages = nullptr;                // (segments, stride) candidate page ids
  int32_t* offsets = nullptr;              // (segments) s·stride: the indexer's list starts
  int64_t* score_offset = nullptr;         // (segments) s·stride: page_topk's segment starts
  int32_t* counts = nullptr;               // (segments) page_topk's counts: N when the row selects, else 0
  int32_t* k = nullptr;                    // (segments) the row's k
  float* thresholds = nullptr;             // (segments) the row's threshold
  int32_t* group_counts = nullptr;         // (groups, segments) N in the row's group's array when its flow
                                           // must run (it selects, or it saves state), else untouched
  int64_t rows_count = 0;                  // R
  int64_t segments = 0;                    // batch rows × G
  int num_kv_heads = 0;                    // G
  int page_size = 0;                       // P
  int32_t stride = 0;                      // ≥ N of every row (the kernel traps otherwise)
};

void launch_sparse_candidates(const SparseCandidatesParams& p, cudaStream_t stream);

}  // namespace vortex::cuda
