// The arithmetic of RL rollouts (GenerateRequest::rollout): a policy distribution kept as its most
// likely tokens until the dense row of the same position arrives, then the token's dense log-prob
// and the agreement α_t = Σ_v min(π_policy(v), π_dense(v)). Both distributions are softmax(z / T)
// at the sampling temperature T (1 for greedy), untruncated. BatchEngine runs the passes.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "backend/chunk.h"

namespace vortex {

// softmax(logits / temperature) in double into `probs` (V); returns log probs[token].
double temperature_distribution(std::span<const float> logits, float temperature, int32_t token, std::vector<double>& probs);

// The policy's side of one generated token, kept until its dense row comes.
struct PolicyTop {
  std::vector<int32_t> ids;   // the `top` most likely tokens (all V when top is 0 or >= V), any order
  std::vector<double> probs;  // their probabilities
  double residual = 0.0;      // 1 − Σ probs: the policy mass left out
};
void keep_top(const std::vector<double>& probs, int32_t top, std::vector<int32_t>& scratch, PolicyTop& out);
// A kept distribution that arrives as ids and probabilities (a device's export, best first).
void keep_given(std::span<const int32_t> ids, std::span<const double> probs, int64_t vocab, PolicyTop& out);

// The dense distribution's sums over the policy's kept tokens (RowStats' overlap, covered and, with
// λ > 0, obrs): everything agreement() and obrs_token() need of the dense row besides p(token).
void compare_with_policy(const PolicyTop& policy, const std::vector<double>& dense, double lambda, RowStats& stats);

// α_t against the dense distribution `dense` (V, sums to 1): Σ over the kept tokens of
// min(p, q), a lower bound of the exact α whose shortfall is at most `error` = min(policy mass
// left out, dense mass outside the kept tokens) — 0 when every token is kept.
double agreement(const PolicyTop& policy, const std::vector<double>& dense, double& error);
// The same from the dense row's sums (`vocab`: V, to tell whether every token was kept).
double agreement(const PolicyTop& policy, const RowStats& dense, int64_t vocab, double& error);

// Jackpot's optimal budget rejection sampling (OBRS) for one token x drawn from the policy q,
// with the dense model p as the target: accept x with a = min(1, p(x) / (λ q(x))); the accepted
// tokens follow q̃(x) = min(q(x), p(x)/λ) / Z with Z = Σ_v min(q(v), p(v)/λ), and weight
// w = p(x) / q̃(x) makes them p-distributed. Z is summed over the union of the policy's kept tokens
// and the dense distribution's top tokens (as many), the policy's probability of a token it did not
// keep taken as 0 (a lower bound of Z; the sampled token itself is always counted exactly).
struct ObrsToken {
  double accept = 1.0;
  double weight = 1.0;
  double normaliser = 1.0;  // Z
};
ObrsToken obrs_token(const PolicyTop& policy, int32_t token, double policy_prob, const std::vector<double>& dense, double lambda);
// The same from the dense row's sums, with p(token) = exp(dense.logprob).
ObrsToken obrs_token(const PolicyTop& policy, int32_t token, double policy_prob, const RowStats& dense, double lambda);

// The host's twin of a device's rollout reductions (chunk.h's RowReduction): `logits` (R, V),
// `tokens` (R) each row's drawn token. Fills r.stats and r.top_* (the top tokens best first, equal
// probabilities in id order, as the device's stable sort leaves them).
void reduce_rows(std::span<const float> logits, int64_t vocab, std::span<const int32_t> tokens, RowReductions& r);

}  // namespace vortex
