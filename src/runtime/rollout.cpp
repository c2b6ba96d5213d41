#include "runtime/rollout.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "core/error.h"

namespace vortex {

double temperature_distribution(std::span<const float> logits, float temperature, int32_t token, std::vector<double>& probs) {
  check(!logits.empty() && token >= 0 && static_cast<size_t>(token) < logits.size(), "internal: token {} outside a row of {}",
        token, logits.size());
  const double inv_t = temperature > 0.0f ? 1.0 / static_cast<double>(temperature) : 1.0;
  double top = -std::numeric_limits<double>::infinity();
  for (float z : logits) top = std::max(top, static_cast<double>(z) * inv_t);
  probs.resize(logits.size());
  double sum = 0.0;
  for (size_t v = 0; v < logits.size(); ++v) sum += probs[v] = std::exp(static_cast<double>(logits[v]) * inv_t - top);
  for (double& p : probs) p /= sum;
  return static_cast<double>(logits[static_cast<size_t>(token)]) * inv_t - top - std::log(sum);
}

void keep_top(const std::vector<double>& probs, int32_t top, std::vector<int32_t>& scratch, PolicyTop& out) {
  const auto V = static_cast<int64_t>(probs.size());
  const int64_t k = top <= 0 ? V : std::min<int64_t>(top, V);
  scratch.resize(probs.size());
  std::iota(scratch.begin(), scratch.end(), 0);
  if (k < V)
    std::nth_element(scratch.begin(), scratch.begin() + k, scratch.end(),
                     [&](int32_t a, int32_t b) { return probs[static_cast<size_t>(a)] > probs[static_cast<size_t>(b)]; });
  out.ids.assign(scratch.begin(), scratch.begin() + k);
  out.probs.resize(static_cast<size_t>(k));
  double kept = 0.0;
  for (int64_t i = 0; i < k; ++i) kept += out.probs[static_cast<size_t>(i)] = probs[static_cast<size_t>(out.ids[static_cast<size_t>(i)])];
  out.residual = k == V ? 0.0 : std::max(0.0, 1.0 - kept);
}

void keep_given(std::span<const int32_t> ids, std::span<const double> probs, int64_t vocab, PolicyTop& out) {
  out.ids.assign(ids.begin(), ids.end());
  out.probs.assign(probs.begin(), probs.end());
  double kept = 0.0;
  for (double p : probs) kept += p;
  out.residual = static_cast<int64_t>(ids.size()) >= vocab ? 0.0 : std::max(0.0, 1.0 - kept);
}

void compare_with_policy(const PolicyTop& policy, const std::vector<double>& dense, double lambda, RowStats& stats) {
  stats.overlap = stats.covered = stats.obrs = 0.0;
  for (size_t i = 0; i < policy.ids.size(); ++i) {
    const double q = policy.probs[i], p = dense[static_cast<size_t>(policy.ids[i])];
    stats.overlap += std::min(q, p);
    stats.covered += p;
    if (lambda > 0.0) stats.obrs += std::min(q, p / lambda);
  }
}

double agreement(const PolicyTop& policy, const RowStats& dense, int64_t vocab, double& error) {
  error = static_cast<int64_t>(policy.ids.size()) >= vocab ? 0.0 : std::min(policy.residual, std::max(0.0, 1.0 - dense.covered));
  return std::clamp(dense.overlap, 0.0, 1.0);
}

double agreement(const PolicyTop& policy, const std::vector<double>& dense, double& error) {
  RowStats stats;
  compare_with_policy(policy, dense, 0.0, stats);
  return agreement(policy, stats, static_cast<int64_t>(dense.size()), error);
}

ObrsToken obrs_token(const PolicyTop& policy, int32_t token, double policy_prob, const RowStats& dense, double lambda) {
  check(lambda > 0.0, "internal: OBRS needs lambda > 0, got {}", lambda);
  // dense.obrs sums min(q, p/λ) over the policy's kept tokens; dense top tokens outside them add min(0, ·) = 0.
  double z = dense.obrs;
  const bool token_kept = std::find(policy.ids.begin(), policy.ids.end(), token) != policy.ids.end();
  const double p = std::exp(dense.logprob), q = policy_prob, kept = std::min(q, p / lambda);
  if (!token_kept) z += kept;
  ObrsToken out;
  out.accept = q > 0.0 ? std::min(1.0, p / (lambda * q)) : 1.0;
  out.normaliser = z;
  out.weight = kept > 0.0 ? p * z / kept : 0.0;
  return out;
}

ObrsToken obrs_token(const PolicyTop& policy, int32_t token, double policy_prob, const std::vector<double>& dense, double lambda) {
  check(lambda > 0.0, "internal: OBRS needs lambda > 0, got {}", lambda);
  RowStats stats;
  compare_with_policy(policy, dense, lambda, stats);
  stats.logprob = std::log(dense[static_cast<size_t>(token)]);
  return obrs_token(policy, token, policy_prob, stats, lambda);
}

void reduce_rows(std::span<const float> logits, int64_t vocab, std::span<const int32_t> tokens, RowReductions& r) {
  const auto rows = static_cast<int64_t>(r.rows.size());
  check(static_cast<int64_t>(logits.size()) == rows * vocab && static_cast<int64_t>(tokens.size()) == rows,
        "internal: {} reductions for {} logits and {} tokens", rows, logits.size(), tokens.size());
  std::vector<double> probs;
  std::vector<int32_t> order;
  PolicyTop policy;
  r.stats.assign(static_cast<size_t>(rows), RowStats{});
  r.top_offsets.assign(1, 0), r.top_ids.clear(), r.top_probs.clear();
  for (int64_t i = 0; i < rows; ++i) {
    const RowReduction& want = r.rows[static_cast<size_t>(i)];
    RowStats& out = r.stats[static_cast<size_t>(i)];
    if (want.temperature > 0.0f) {
      const std::span<const float> row = logits.subspan(static_cast<size_t>(i * vocab), static_cast<size_t>(vocab));
      out.logprob = temperature_distribution(row, want.temperature, want.token >= 0 ? want.token : tokens[static_cast<size_t>(i)], probs);
      if (want.policy >= 0) {
        const auto first = static_cast<size_t>(r.policy_offsets[static_cast<size_t>(want.policy)]);
        const auto last = static_cast<size_t>(r.policy_offsets[static_cast<size_t>(want.policy) + 1]);
        keep_given({r.policy_ids.data() + first, last - first}, {r.policy_probs.data() + first, last - first}, vocab, policy);
        compare_with_policy(policy, probs, want.lambda, out);
      }
      if (want.top > 0) {
        const int64_t k = std::min<int64_t>(want.top, vocab);
        order.resize(static_cast<size_t>(vocab));
        std::iota(order.begin(), order.end(), 0);
        // The device sorts by the float z / T (the sampler's key), equal keys in id order.
        std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int32_t a, int32_t b) {
          const float za = row[static_cast<size_t>(a)] / want.temperature, zb = row[static_cast<size_t>(b)] / want.temperature;
          return za != zb ? za > zb : a < b;
        });
        for (int64_t j = 0; j < k; ++j) {
          r.top_ids.push_back(order[static_cast<size_t>(j)]);
          r.top_probs.push_back(probs[static_cast<size_t>(order[static_cast<size_t>(j)])]);
        }
      }
    }
    r.top_offsets.push_back(static_cast<int64_t>(r.top_ids.size()));
  }
}

}  // namespace vortex
