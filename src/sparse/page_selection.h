// Which KV pages a query attends under a sparse attention spec: the planner's host logic and the
// CPU reference of the per-layer selection.
//
// Plan, then run: plan_query_pages() runs once per step for each sparse query position and fixes
// what every layer shares — the always-kept pages (sink, local window, and the query's own,
// partly filled page), the candidate pages (every other full page), and k, the pages the budget
// allows. Per layer and KV head, select_layer_pages() evaluates the flow on the candidates and
// unions its top k with the always-kept pages. When k covers every candidate of a top-k flow the
// list is every page, so sparse attention equals dense exactly (the flow runs only to save its
// state); a threshold flow still applies its threshold, a select-none flow still selects none.
// Letters: T tokens of the chunk, H query heads, G kv heads, D head dim, P page size.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "kv/kv_cache.h"
#include "sparse/page_summaries.h"
#include "sparse/selection_recall.h"
#include "sparse/sparse_attention.h"

namespace vortex {

struct QueryPages {
  int64_t position = 0;             // the query's position in its sequence
  std::vector<int32_t> always;      // page indices (into the page table) kept in every layer, ascending
  std::vector<int32_t> candidates;  // page indices of full pages the flow scores, ascending
  int64_t k = 0;                    // candidates to select
};

// Fills `out` for the query at `position` (it attends positions 0..position).
void plan_query_pages(const SparseAttention& attention, int64_t position, QueryPages& out);

// plan_query_pages's sizes without its lists (the engine's per-step accounting).
struct QueryPageCounts {
  int64_t always = 0, candidates = 0, k = 0;
};
QueryPageCounts count_query_pages(const SparseAttention& attention, int64_t position);

struct LayerSelectionInput {
  const SparseAttention* attention = nullptr;
  std::span<const QueryPages> queries;     // (T') the chunk's sparse queries, in position order
  const float* q = nullptr;                // (T', H, D) their queries (RoPE applied)
  int64_t num_heads = 0;                   // H
  const std::vector<int32_t>* page_table = nullptr;
  int64_t layer = 0;
  SelectionRecorder* recorder = nullptr;   // non-null: every choosing selection is measured (selection_recall.h)
};

// For every sparse query t and kv head g, lists[t * G + g] = the page indices to attend, ascending.
// Queries of one head run in position order, so flow state saved by one is seen by the next, as
// in token-by-token decoding.
void select_layer_pages(const LayerSelectionInput& in, const KvCache& cache, PageSummaryStore& summaries,
                        std::vector<std::vector<int32_t>>& lists);

}  // namespace vortex
