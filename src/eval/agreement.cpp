// Sparse-vs-dense agreement α and its per-bin statistics (see agreement.h).
#include "eval/agreement.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/error.h"

namespace vortex {

double distribution_agreement(std::span<const float> logprobs_a, std::span<const float> logprobs_b) {
  check(logprobs_a.size() == logprobs_b.size(), "internal: agreement of rows of {} and {} entries", logprobs_a.size(),
        logprobs_b.size());
  double total_variation_x2 = 0.0;  // Σ_v |p_v − q_v|
  for (size_t v = 0; v < logprobs_a.size(); ++v) {
    const double a = logprobs_a[v], b = logprobs_b[v];
    const double hi = std::max(a, b), lo = std::min(a, b);
    if (hi == -std::numeric_limits<double>::infinity()) continue;  // both zero
    total_variation_x2 += std::exp(hi) * -std::expm1(lo - hi);
  }
  return std::clamp(1.0 - 0.5 * total_variation_x2, 0.0, 1.0);
}

double percentile_nearest_rank(std::vector<double> values, double q) {
  check(!values.empty(), "internal: percentile of no values");
  check(q > 0.0 && q <= 100.0, "internal: percentile {} is outside (0, 100]", q);
  const auto n = static_cast<double>(values.size());
  // ceil(q/100 · N) in exact arithmetic: q·N/100 can land a hair above an integer in floating point.
  const double scaled = q * n / 100.0;
  auto rank = static_cast<size_t>(std::ceil(scaled - 1e-9 * std::max(1.0, scaled)));
  rank = std::clamp<size_t>(rank, 1, values.size());
  std::nth_element(values.begin(), values.begin() + static_cast<std::ptrdiff_t>(rank - 1), values.end());
  return values[rank - 1];
}

void AlphaStats::add(int64_t position, double alpha) {
  check(position >= 0, "internal: α at negative position {}", position);
  by_bin_[alpha_bin(position)].push_back(alpha);
  sum_ += alpha;
  ++count_;
}

std::optional<double> AlphaStats::mean() const {
  if (count_ == 0) return std::nullopt;
  return sum_ / static_cast<double>(count_);
}

std::vector<AlphaBin> AlphaStats::bins() const {
  std::vector<AlphaBin> out;
  for (const auto& [bin, values] : by_bin_) {
    double sum = 0.0;
    for (double v : values) sum += v;
    out.push_back({.bin = bin, .tokens = static_cast<int64_t>(values.size()),
                   .mean = sum / static_cast<double>(values.size()), .p5 = percentile_nearest_rank(values, 5.0)});
  }
  return out;
}

}  // namespace vortex
