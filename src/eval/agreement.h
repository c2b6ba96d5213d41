// Sparse-vs-dense agreement α and its statistics, as the sparse-rollout work scores a sparse
// attention method (DESIGN.md, "Sparse rollout").
//
// For one generated token at query position t, with p = the sparse model's next-token distribution
// and q = the dense model's (teacher-forced on the same tokens):
//   α_t = Σ_v min(p(v), q(v)) = 1 − TV(p, q)      (0 = disjoint, 1 = identical)
// The statistics group α_t by 2K-position bins (bin = t / 2048, integer division) and report
// each bin's mean and 5th percentile: the tail is what matters, since one bad token can derail a
// long reasoning trace.
//
// Percentile definition: nearest rank. The q-th percentile of N values sorted ascending
// x_1 ≤ … ≤ x_N is x_k with k = ceil(q/100 · N), at least 1: the smallest observed value with at
// least q% of the values at or below it. It is always an observed α, never an interpolation.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <vector>

namespace vortex {

constexpr int64_t kAlphaBinTokens = 2048;  // positions per α bin

// α between two next-token distributions given as log-probability rows (V each, log-softmax
// output; -inf allowed). Computed as 1 − ½ Σ_v |exp(a_v) − exp(b_v)| in double, each difference
// as exp(max)·(−expm1(min − max)) so near-equal entries lose no precision, clamped to [0, 1]:
// identical rows give exactly 1. Equal to Σ_v min(exp(a_v), exp(b_v)) when both rows sum to 1.
double distribution_agreement(std::span<const float> logprobs_a, std::span<const float> logprobs_b);

// Nearest-rank percentile (see the file header) of `values`; q in (0, 100]. Throws on empty input.
double percentile_nearest_rank(std::vector<double> values, double q);

// The bin of a query position: position / kAlphaBinTokens.
inline int64_t alpha_bin(int64_t position) { return position / kAlphaBinTokens; }

struct AlphaBin {
  int64_t bin = 0;         // positions [bin · 2048, (bin + 1) · 2048)
  int64_t tokens = 0;      // α values in the bin
  double mean = 0.0;
  double p5 = 0.0;         // nearest-rank 5th percentile
};

// Accumulates α_t values by query position. Keeps every value (8 bytes a generated token) so the
// percentiles are exact.
class AlphaStats {
 public:
  void add(int64_t position, double alpha);
  int64_t count() const { return count_; }
  std::optional<double> mean() const;  // over all values; empty when none were added
  std::vector<AlphaBin> bins() const;  // bins holding at least one value, ascending

 private:
  std::map<int64_t, std::vector<double>> by_bin_;  // bin → α values in arrival order
  double sum_ = 0.0;
  int64_t count_ = 0;
};

}  // namespace vortex
