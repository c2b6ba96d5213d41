// Selection recall: how close a flow's page selection comes to the oracle's, measured beside a
// sparse pass (evaluation only: every measured selection costs a dense attention pass over the
// query's keys). `vortex eval gsm-inf --recall` reports it (docs/accuracy.md).
//
// For one sparse query at position t, in layer l and KV head g, whose flow picked the pages S
// among the candidates C (k = the pages its budget allows) and always keeps the pages A (sink,
// window and its own page):
//   recall      = |S ∩ O| / |O|, O = the oracle's top k of C: pages ranked by the `oracle` flow's
//                 exact score, Σ over the group's query heads of the head's largest q·k over the
//                 page's keys, equal scores to the lower candidate index;
//   mass        = the exact attention weight (softmax over every key 0..t) that the keys of S ∪ A
//                 hold, averaged over the group's query heads; 1 = nothing of dense attention lost;
//   oracle_mass = the same for O ∪ A (what the oracle's pages hold at the same k);
//   stage_recall = for a flow with stages (`stage topk`), |O ∩ survivors of the first stage| / |O|:
//                 whether the cheap first stage kept the pages the final score needed (1 otherwise).
// Only queries where the flow chooses (0 < k < |C|) are measured: with k ≥ |C| every page is kept.
// Letters: Hg query heads of a KV head, D head dim, P page size.
#pragma once

#include <cstdint>
#include <mutex>
#include <span>
#include <vector>

#include "kv/kv_cache.h"
#include "vortex/request.h"

namespace vortex {

// Collects SelectionSamples from the threads of a forward pass (record is thread-safe).
class SelectionRecorder {
 public:
  void record(const SelectionSample& sample);
  std::vector<SelectionSample> take();  // the samples so far, in no particular order; clears

 private:
  std::mutex mutex_;
  std::vector<SelectionSample> samples_;
};

// One selection to measure, for query heads q (Hg, D) of KV head `kv_head` in `layer`.
struct SelectionProbe {
  const float* q = nullptr;                      // (Hg, D) after RoPE
  int64_t group = 0;                             // Hg
  int64_t position = 0;                          // t: the query attends keys 0..t
  int64_t layer = 0, kv_head = 0;
  const std::vector<int32_t>* page_table = nullptr;
  std::span<const int32_t> candidates;           // page indices (into the page table)
  std::span<const int32_t> always;               // page indices kept in every layer
  std::span<const int32_t> picked;               // indices into candidates: the flow's selection
  std::span<const int32_t> survivors;            // indices into candidates after a first stage; empty: none
  int64_t k = 0;
};

// The probe's SelectionSample (see the file header). `logits` is scratch, grown as needed.
SelectionSample measure_selection(const KvCache& cache, const SelectionProbe& probe, std::vector<float>& logits);

}  // namespace vortex
