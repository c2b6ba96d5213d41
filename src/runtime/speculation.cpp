#include "runtime/speculation.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace vortex {

namespace {

std::span<const float> row(std::span<const float> rows, int64_t i, int64_t vocab) {
  return rows.subspan(static_cast<size_t>(i * vocab), static_cast<size_t>(vocab));
}

}  // namespace

SpeculationVerdict verify_greedy(std::span<const float> p, std::span<const int32_t> drafts, int64_t vocab) {
  const auto gamma = static_cast<int64_t>(drafts.size());
  check(static_cast<int64_t>(p.size()) == (gamma + 1) * vocab, "internal: {} verify logits for {} drafts", p.size() / vocab, gamma);
  for (int64_t i = 0; i < gamma; ++i) {
    const int32_t dense = argmax(row(p, i, vocab));
    if (dense != drafts[static_cast<size_t>(i)]) return {.accepted = static_cast<int32_t>(i), .token = dense};
  }
  return {.accepted = static_cast<int32_t>(gamma), .token = argmax(row(p, gamma, vocab))};
}

SpeculationVerdict verify_greedy_tokens(std::span<const int32_t> p_tokens, std::span<const int32_t> drafts) {
  check(p_tokens.size() == drafts.size() + 1, "internal: {} verify tokens for {} drafts", p_tokens.size(), drafts.size());
  size_t i = 0;
  while (i < drafts.size() && p_tokens[i] == drafts[i]) ++i;
  return {.accepted = static_cast<int32_t>(i), .token = p_tokens[i]};
}

SpeculationVerdict verify_sampled(std::span<const float> p, std::span<const float> q, std::span<const int32_t> drafts,
                                  int64_t vocab, Sampler& sampler, SpeculationScratch& s) {
  const auto gamma = static_cast<int64_t>(drafts.size());
  check(static_cast<int64_t>(p.size()) == (gamma + 1) * vocab && static_cast<int64_t>(q.size()) == gamma * vocab,
        "internal: {} verify and {} draft logits rows for {} drafts", p.size() / vocab, q.size() / vocab, gamma);
  const TokenDraw params = sampler.params();
  for (int64_t i = 0; i < gamma; ++i) {
    const auto d = static_cast<size_t>(drafts[static_cast<size_t>(i)]);
    processed_distribution(row(p, i, vocab), params, s.sampler, s.p);
    processed_distribution(row(q, i, vocab), params, s.sampler, s.q);
    check(s.q[d] > 0.0, "internal: draft token {} has no probability under its own distribution", d);
    if (sampler.uniform() < std::min(1.0, s.p[d] / s.q[d])) continue;
    // Rejected: the residual max(0, p − q) has mass wherever p exceeds q (p ≠ q here, since
    // p(d) < q(d)); sample_from normalises it.
    for (size_t v = 0; v < s.p.size(); ++v) s.p[v] = std::max(0.0, s.p[v] - s.q[v]);
    return {.accepted = static_cast<int32_t>(i), .token = sample_from(s.p, sampler.uniform())};
  }
  processed_distribution(row(p, gamma, vocab), params, s.sampler, s.p);
  return {.accepted = static_cast<int32_t>(gamma), .token = sample_from(s.p, sampler.uniform())};
}

double expected_tokens(double acceptance, int32_t gamma) {
  double total = 0.0, term = 1.0;
  for (int32_t i = 0; i <= gamma; ++i, term *= acceptance) total += term;
  return total;
}

void GammaController::record_round(int32_t drafted, int32_t accepted) {
  if (drafted <= 0) return;
  const double rate = static_cast<double>(accepted) / drafted;
  // A plain mean over the first rounds, then a running one that follows the batch's content.
  ++rounds_;
  const double weight = std::max(1.0 / static_cast<double>(rounds_), 0.02);
  acceptance_ += weight * (rate - acceptance_);
}

int32_t GammaController::choose() {
  if (draft_ms_ < 0.0 || verify_ms_ < 0.0) return kStartGamma;
  int32_t best = 0;
  double best_rate = 1.0 / verify_ms_;  // γ = 0: a plain dense decode step
  for (int32_t gamma = 1; gamma <= kMaxGamma; ++gamma) {
    const double rate = expected_tokens(acceptance_, gamma) / (gamma * draft_ms_ + verify_ms_);
    if (rate > best_rate) best = gamma, best_rate = rate;
  }
  // Drafting does not pay: decode densely, but probe now and then, since the content may change.
  if (best == 0 && ++declined_ % kProbeEvery == 0) return 1;
  return best;
}

}  // namespace vortex
