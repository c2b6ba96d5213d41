// Statistics of selection recall (ScoreResult::selection, sparse/selection_recall.h): how much of
// the oracle's page selection a flow finds and how much attention mass its pages hold, overall,
// per layer and per 2048-position bin (the bins of α, agreement.h). Means, and 5th percentiles by
// nearest rank (the bad selections that lose an answer hide in the tail).
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "vortex/request.h"

namespace vortex {

struct SelectionGroup {
  int64_t key = 0;            // the layer, the bin, or 0 for the whole
  int64_t samples = 0;        // measured (query, layer, KV head) selections
  double recall_mean = 0.0, recall_p5 = 0.0;
  double mass_mean = 0.0, mass_p5 = 0.0;
  double oracle_mass_mean = 0.0;   // the oracle's pages at the same k
  double stage_recall_mean = 1.0;  // the first stage's survivors (1 without stages)
};

class SelectionStats {
 public:
  void add(std::span<const SelectionSample> samples);
  int64_t count() const { return static_cast<int64_t>(samples_.size()); }
  std::optional<SelectionGroup> overall() const;  // empty when nothing was measured
  std::vector<SelectionGroup> by_layer() const;   // layers with samples, ascending
  std::vector<SelectionGroup> by_bin() const;     // position bins (position / 2048) with samples, ascending

 private:
  std::vector<SelectionSample> samples_;
};

}  // namespace vortex
