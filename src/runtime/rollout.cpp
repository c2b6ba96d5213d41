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

double agreement(const PolicyTop& policy, const std::vector<double>& dense, double& error) {
  double alpha = 0.0, dense_kept = 0.0;
  for (size_t i = 0; i < policy.ids.size(); ++i) {
    const double q = dense[static_cast<size_t>(policy.ids[i])];
    alpha += std::min(policy.probs[i], q);
    dense_kept += q;
  }
  error = policy.ids.size() == dense.size() ? 0.0 : std::min(policy.residual, std::max(0.0, 1.0 - dense_kept));
  return std::clamp(alpha, 0.0, 1.0);
}

ObrsToken obrs_token(const PolicyTop& policy, int32_t token, double policy_prob, const std::vector<double>& dense, double lambda) {
  check(lambda > 0.0, "internal: OBRS needs lambda > 0, got {}", lambda);
  // Σ over the policy's kept tokens of min(q, p/λ); dense top tokens outside them add min(0, ·) = 0.
  double z = 0.0;
  bool token_kept = false;
  for (size_t i = 0; i < policy.ids.size(); ++i) {
    z += std::min(policy.probs[i], dense[static_cast<size_t>(policy.ids[i])] / lambda);
    token_kept = token_kept || policy.ids[i] == token;
  }
  const double p = dense[static_cast<size_t>(token)], q = policy_prob, kept = std::min(q, p / lambda);
  if (!token_kept) z += kept;
  ObrsToken out;
  out.accept = q > 0.0 ? std::min(1.0, p / (lambda * q)) : 1.0;
  out.normaliser = z;
  out.weight = kept > 0.0 ? p * z / kept : 0.0;
  return out;
}

}  // namespace vortex
