#include "sparse/page_selection.h"

#include <algorithm>

#include "core/error.h"

namespace vortex {

namespace {

struct QueryBounds {
  int64_t own = 0, sink_pages = 0, window_first = 0;
};

QueryBounds query_bounds(const SparseAttention& a, int64_t position) {
  const int64_t P = a.page_size, own = position / P;  // the query's page, partly filled
  const int64_t sink_pages = std::min(a.sink / P + (a.sink % P != 0), own);  // ceil, without overflow for huge sinks
  const int64_t window_first = a.window > 0 ? std::max<int64_t>(0, position - a.window + 1) / P : own;
  return {.own = own, .sink_pages = sink_pages, .window_first = window_first};
}

}  // namespace

QueryPageCounts count_query_pages(const SparseAttention& a, int64_t position) {
  const auto [own, sink_pages, window_first] = query_bounds(a, position);
  return {.always = sink_pages + (own - std::max(sink_pages, window_first) + 1),
          .candidates = std::max<int64_t>(0, std::min(window_first, own) - sink_pages),
          .k = a.pages_to_select(position + 1)};
}

void plan_query_pages(const SparseAttention& a, int64_t position, QueryPages& out) {
  const auto [own, sink_pages, window_first] = query_bounds(a, position);
  out.position = position;
  out.always.clear();
  out.candidates.clear();
  for (int64_t i = 0; i < sink_pages; ++i) out.always.push_back(static_cast<int32_t>(i));
  for (int64_t i = std::max(sink_pages, window_first); i <= own; ++i) out.always.push_back(static_cast<int32_t>(i));
  for (int64_t i = sink_pages; i < std::min(window_first, own); ++i) out.candidates.push_back(static_cast<int32_t>(i));
  out.k = a.pages_to_select(position + 1);
}

namespace {

// Union of the always-kept pages and the selected candidates, ascending.
void merge_pages(const QueryPages& query, std::span<const int32_t> picked, std::vector<int32_t>& list) {
  list.clear();
  list.reserve(query.always.size() + picked.size());
  for (int32_t i : picked) list.push_back(query.candidates[static_cast<size_t>(i)]);
  list.insert(list.end(), query.always.begin(), query.always.end());
  std::sort(list.begin(), list.end());
}

struct HeadScratch {
  std::vector<int32_t> alive;      // (≤ N) candidates still in the running, ascending indices into the candidates
  std::vector<int32_t> survivors;  // the first stage's survivors (selection recall), empty without stages
  std::vector<int32_t> page_ids;   // (alive) their page ids
  std::vector<float> scores;       // (alive)
  std::vector<int32_t> all;        // 0..N-1 when every candidate fits the budget
  std::vector<int32_t> picked;     // (≤ k) the flow's selection, indices into the candidates
  std::vector<float> logits;       // selection recall's scratch
  FlowScratch flow;
};

void record_recall(const LayerSelectionInput& in, const KvCache& cache, const QueryPages& query, int64_t g, HeadScratch& s) {
  const int64_t group = in.num_heads / cache.shape().num_kv_heads;
  const auto t = static_cast<int64_t>(&query - in.queries.data());
  SelectionProbe probe{.q = in.q + (t * in.num_heads + g * group) * cache.shape().head_dim, .group = group,
                       .position = query.position, .layer = in.layer, .kv_head = g, .page_table = in.page_table,
                       .candidates = query.candidates, .always = query.always, .picked = s.picked,
                       .survivors = s.survivors, .k = query.k};
  in.recorder->record(measure_selection(cache, probe, s.logits));
}

// Scores the alive candidates with `pass` and keeps its best `keep` (indices into the candidates).
void score_pass(const Flow& pass, const QueryPages& query, const std::vector<int32_t>& page_table, int64_t keep,
                FlowInputs& inputs, HeadScratch& s) {
  s.page_ids.resize(s.alive.size());
  for (size_t i = 0; i < s.alive.size(); ++i)
    s.page_ids[i] = page_table[static_cast<size_t>(query.candidates[static_cast<size_t>(s.alive[i])])];
  s.scores.resize(s.alive.size());
  inputs.pages = s.page_ids;
  evaluate_flow(pass, inputs, s.scores, s.flow);
  select_pages(pass, s.scores, keep, s.picked);
  for (int32_t& i : s.picked) i = s.alive[static_cast<size_t>(i)];
}

// The flow's passes: each stage narrows the alive candidates to its best ceil(factor · k) (kept in
// ascending candidate order, so equal scores break the same way in every pass); the last pass
// selects k of the survivors into s.picked.
void run_passes(const LayerSelectionInput& in, const QueryPages& query, FlowInputs& inputs, HeadScratch& s) {
  const SparseAttention& a = *in.attention;
  s.alive.resize(query.candidates.size());
  for (size_t i = 0; i < s.alive.size(); ++i) s.alive[i] = static_cast<int32_t>(i);
  s.survivors.clear();
  for (size_t p = 0; p + 1 < a.passes.size(); ++p) {
    const int64_t keep = a.stage_keep(p, query.k);
    if (keep >= static_cast<int64_t>(s.alive.size())) continue;  // nothing to prune
    score_pass(*a.passes[p], query, *in.page_table, keep, inputs, s);
    std::sort(s.picked.begin(), s.picked.end());
    s.alive.swap(s.picked);
    if (s.survivors.empty()) s.survivors = s.alive;
  }
  score_pass(*a.passes.back(), query, *in.page_table, query.k, inputs, s);
}

void select_head(const LayerSelectionInput& in, const KvCache& cache, PageSummaryStore& summaries, int64_t g,
                 HeadScratch& s, std::vector<std::vector<int32_t>>& lists) {
  const Flow& flow = *in.attention->flow;
  const KvCacheShape& shape = cache.shape();
  const int64_t G = shape.num_kv_heads, D = shape.head_dim, group = in.num_heads / G;
  FlowInputs inputs{.q = nullptr, .group = group, .head_dim = D, .page_size = shape.page_size, .pages = {},
                    .fields = {}, .state_base = {}, .state_page_stride = summaries.state_page_stride()};
  for (size_t f = 0; f < flow.fields.size(); ++f) inputs.fields.push_back(summaries.field_view(flow, f, in.layer, g));
  for (size_t slot = 0; slot < flow.state.size(); ++slot) inputs.state_base.push_back(summaries.state_base(flow, slot, in.layer, g));
  for (size_t t = 0; t < in.queries.size(); ++t) {
    const QueryPages& query = in.queries[t];
    std::vector<int32_t>& list = lists[t * static_cast<size_t>(G) + static_cast<size_t>(g)];
    const auto n = static_cast<int64_t>(query.candidates.size());
    // Nothing to score: streaming (no selection), or no budget — unless the flow keeps state.
    if ((flow.select.kind == FlowSelectKind::kNone || query.k <= 0) && flow.saves.empty()) {
      merge_pages(query, {}, list);
      continue;
    }
    inputs.q = in.q + (static_cast<int64_t>(t) * in.num_heads + g * group) * D;
    // A top-k whose budget covers every candidate keeps them all (dense). The flow still runs when
    // it saves state, so that state accumulates at every sparse step; a threshold flow always
    // runs, the budget only caps it.
    if (query.k >= n && flow.select.kind == FlowSelectKind::kTopK) {
      s.all.resize(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) s.all[static_cast<size_t>(i)] = static_cast<int32_t>(i);
      if (!flow.saves.empty()) {  // stateful flows have no stages: one pass, run for its saves
        s.alive = s.all;
        score_pass(flow, query, *in.page_table, n, inputs, s);
      }
      merge_pages(query, s.all, list);
      continue;
    }
    run_passes(in, query, inputs, s);
    if (in.recorder != nullptr && query.k > 0 && flow.select.kind != FlowSelectKind::kNone) record_recall(in, cache, query, g, s);
    merge_pages(query, s.picked, list);
  }
}

}  // namespace

void select_layer_pages(const LayerSelectionInput& in, const KvCache& cache, PageSummaryStore& summaries,
                        std::vector<std::vector<int32_t>>& lists) {
  const int64_t G = cache.shape().num_kv_heads;
  lists.resize(in.queries.size() * static_cast<size_t>(G));
  if (in.queries.empty()) return;
  // Every full page before the last query's own page is summarised before the heads run in
  // parallel (each page once: the store remembers which it has).
  const int64_t full_pages = in.queries.back().position / cache.shape().page_size;
  std::span<const int32_t> ids(in.page_table->data(), static_cast<size_t>(full_pages));
  summaries.ensure(cache, in.layer, *in.attention->flow, ids);
#pragma omp parallel if (G > 1)
  {
    // Scratch that only grows, one per OpenMP thread: after the first steps a decode step
    // allocates nothing here (it holds no state between calls, only capacity).
    thread_local HeadScratch scratch;
#pragma omp for schedule(static)
    for (int64_t g = 0; g < G; ++g) select_head(in, cache, summaries, g, scratch, lists);
  }
}

}  // namespace vortex
