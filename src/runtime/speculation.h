// Self-speculative decoding with a sparse draft (MagicDec): the same model, attending only the
// pages a sparse spec selects, drafts γ tokens one decode step at a time; one dense chunk of γ+1
// tokens (the last verified token and the drafts) verifies them all and rewrites their K/V. The
// batch engine runs the rounds (runtime/batch_engine.h); this file holds what is decided per
// round: the acceptance rule and γ.
//
// Acceptance is lossless. Greedy: a draft is kept while it equals the dense argmax at its
// position; the first mismatch is replaced by the dense argmax, and when every draft is kept the
// dense row after the last one gives a bonus token. Sampling (Leviathan et al. 2023, Chen et al.
// 2023): with p and q the target's and the draft's processed distributions (sampler.h), draft d is
// kept with probability min(1, p(d)/q(d)); a rejected one is replaced by a sample of
// norm(max(0, p − q)). Every uniform comes from the request's seeded stream, so a run is
// reproducible, and each emitted token is distributed exactly as dense sampling's.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "runtime/sampler.h"

namespace vortex {

struct SpeculationVerdict {
  int32_t accepted = 0;  // drafts kept, in order
  int32_t token = 0;     // the token after them: a correction, or the bonus when all were kept
};

// p: (γ+1, V) the verify chunk's logits; drafts: (γ). The dense argmax rule.
SpeculationVerdict verify_greedy(std::span<const float> p, std::span<const int32_t> drafts, int64_t vocab);

// The same rule from each verify row's argmax (p_tokens: γ+1), when the device picked them.
SpeculationVerdict verify_greedy_tokens(std::span<const int32_t> p_tokens, std::span<const int32_t> drafts);

struct SpeculationScratch {
  SamplerScratch sampler;
  std::vector<double> p, q;  // (V) processed distributions
};
// p: (γ+1, V) the verify chunk's logits; q: (γ, V) the draft steps' logits; drafts (γ) were drawn
// from q's processed distributions. Draws acceptance and residual uniforms from `sampler`.
SpeculationVerdict verify_sampled(std::span<const float> p, std::span<const float> q, std::span<const int32_t> drafts,
                                  int64_t vocab, Sampler& sampler, SpeculationScratch& scratch);

// Expected tokens a round emits when each draft is kept with probability `acceptance`
// independently: 1 + α + … + α^γ.
double expected_tokens(double acceptance, int32_t gamma);

// γ per round for `--gamma auto`: the γ in [0, kMaxGamma] that maximises expected tokens per unit
// of time, (1 + α + … + α^γ) / (γ·t_draft + t_verify), from running means of the measured draft
// and verify step times and of the acceptance rate over every round of the batch (γ = 0 is a plain
// dense step, timed as a verify step). Until both step kinds were timed it answers kStartGamma;
// while drafting does not pay, every kProbeEvery-th answer is 1, so the acceptance rate stays
// measured.
class GammaController {
 public:
  static constexpr int32_t kMaxGamma = 8;
  static constexpr int32_t kStartGamma = 4;
  static constexpr int32_t kProbeEvery = 16;
  void record_draft_step(double ms) { mix(draft_ms_, ms); }
  void record_verify_step(double ms) { mix(verify_ms_, ms); }
  void record_round(int32_t drafted, int32_t accepted);
  int32_t choose();
  double acceptance() const { return acceptance_; }

 private:
  static void mix(double& mean, double value) { mean = mean < 0.0 ? value : 0.9 * mean + 0.1 * value; }
  double draft_ms_ = -1.0, verify_ms_ = -1.0;
  double acceptance_ = 0.8;  // prior until rounds are measured
  int64_t rounds_ = 0;
  int64_t declined_ = 0;
};

}  // namespace vortex
