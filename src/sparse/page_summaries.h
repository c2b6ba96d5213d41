// Per-page key summaries and flow state of the CPU backend, stored beside the KV pages with the
// same page ids (DESIGN.md "Page summaries").
//
// A summary kind is one field reduction (max, min, mean, std, norm; S interleaved sub-rows) in one
// storage type; a kind's values for one layer form an array (num_pages, G, S, W) with W = D, or 1
// for `norm`, holding f32 values rounded as the storage type stores them (field_storage.h).
// Kinds are registered when a spec is resolved for a sequence (register_flow), so one store serves
// every flow that requests share. A page is summarised for every registered kind when it fills
// (on_append) and, for kinds registered later, the first time a flow needs it (ensure). A page
// whose slot 0 is written again (it was freed and reused) loses its summaries and its state.
//
// Flow state (`save`/`load`) is one float per (layer, page, kv head) per state slot, keyed by
// flow name and state name, zero for a page never saved.
//
// `rest=` estimates (attention_spec.h) read a key kind registered as a flow field would be (mean:
// mean(k); proxy: the keys in int4, `auto`'s first field) and each page's mean value, (num_pages,
// G, D) per layer, summarised from the values as pages fill once any estimate is registered.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "kv/kv_cache.h"
#include "sparse/attention_spec.h"
#include "sparse/flow_interpreter.h"
#include "vortex/flow.h"

namespace vortex {

class PageSummaryStore {
 public:
  explicit PageSummaryStore(const KvCacheShape& shape);

  // Registers the flow's field kinds and state slots (idempotent). Not thread-safe.
  void register_flow(const Flow& flow);

  // Keys of positions [start, start + count) of one sequence were written to `layer`: pages that
  // restarted lose summaries and state; pages that became full are summarised for every kind.
  void on_append(const KvCache& cache, int64_t layer, const std::vector<int32_t>& page_table, int64_t start, int64_t count);
  // Summarises, for the flow's fields, every page in `pages` not yet summarised. Pages must be full.
  void ensure(const KvCache& cache, int64_t layer, const Flow& flow, std::span<const int32_t> pages);

  // The flow's i-th field (or state slot) for (layer, kv head g): element for page p at base + p·stride.
  FlowPageView field_view(const Flow& flow, size_t field, int64_t layer, int64_t g) const;
  float* state_base(const Flow& flow, size_t slot, int64_t layer, int64_t g);
  int64_t state_page_stride() const { return shape_.num_kv_heads; }

  // rest= estimates: registers what `rest` reads (idempotent; kDrop reads nothing); summarises the
  // full `pages` not yet summarised for it; its key kind for (layer, kv head g) — kMean: (D) per
  // page, kProxy: (P, D) — and a page's mean value (D).
  void register_rest(RestEstimate rest);
  void ensure_rest(const KvCache& cache, int64_t layer, RestEstimate rest, std::span<const int32_t> pages);
  FlowPageView rest_keys(RestEstimate rest, int64_t layer, int64_t g) const;
  const float* value_mean(int64_t layer, int32_t page, int64_t g) const {
    return value_means_[static_cast<size_t>(layer)].get() + (static_cast<int64_t>(page) * shape_.num_kv_heads + g) * shape_.head_dim;
  }

 private:
  struct Kind {
    FieldReduce reduce;
    FieldStorage storage = FieldStorage::kF32;
    int64_t sub = 1;    // S
    int64_t width = 0;  // W
    std::vector<std::unique_ptr<float[]>> values;   // (L) of (num_pages, G, S, W)
    std::vector<std::vector<uint8_t>> valid;        // (L) of (num_pages)
  };
  struct State {
    std::string key;                                // flow name + "/" + state name
    std::vector<std::unique_ptr<float[]>> values;   // (L) of (num_pages, G)
  };
  size_t kind_index(const FlowField& field) const;  // registered kinds only
  size_t state_index(const Flow& flow, size_t slot) const;
  void summarise(const KvCache& cache, int64_t layer, Kind& kind, int32_t page);
  void summarise_values(const KvCache& cache, int64_t layer, int32_t page);

  KvCacheShape shape_;
  std::vector<Kind> kinds_;
  std::vector<State> states_;
  std::vector<std::unique_ptr<float[]>> value_means_;  // (L) of (num_pages, G, D); empty until a rest= estimate
  std::vector<std::vector<uint8_t>> value_valid_;      // (L) of (num_pages)
};

}  // namespace vortex
