#include "runtime/sampler.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace vortex {

void validate_sampling(const SamplingParams& p) {
  check(std::isfinite(p.temperature) && p.temperature >= 0.0f, "temperature must be >= 0, got {}", p.temperature);
  check(p.top_k >= 0, "top_k must be >= 0 (0 = off), got {}", p.top_k);
  check(std::isfinite(p.top_p) && p.top_p > 0.0f && p.top_p <= 1.0f, "top_p must be in (0, 1], got {}", p.top_p);
  check(std::isfinite(p.min_p) && p.min_p >= 0.0f && p.min_p <= 1.0f, "min_p must be in [0, 1], got {}", p.min_p);
}

int32_t argmax(std::span<const float> logits) {
  // First maximum wins, as torch.argmax does.
  return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

Sampler::Sampler(const SamplingParams& params) : params_(params), rng_(params.seed) {
  validate_sampling(params);
}

int32_t Sampler::sample(std::span<const float> logits) {
  if (greedy()) return argmax(logits);
  return sample_with_draw(logits, next_draw(), scratch_);
}

TokenDraw Sampler::next_draw() {
  TokenDraw draw = params();
  if (!greedy()) draw.uniform = uniform();
  return draw;
}

TokenDraw Sampler::params() const {
  return {.temperature = params_.temperature, .top_k = params_.top_k, .top_p = params_.top_p, .min_p = params_.min_p};
}

double Sampler::uniform() { return std::uniform_real_distribution<double>(0.0, 1.0)(rng_); }

namespace {

// The kept set of non-greedy parameters: scratch.candidates[0, keep) best first, scratch.probs
// their softmax over the top-k survivors (not renormalised after top-p and min-p); returns keep.
size_t kept_candidates(std::span<const float> logits, const TokenDraw& params, SamplerScratch& scratch) {
  // Candidates sorted by logit, best first; top-k cuts the list.
  auto& candidates = scratch.candidates;
  candidates.clear();
  for (size_t i = 0; i < logits.size(); ++i) candidates.emplace_back(logits[i] / params.temperature, static_cast<int32_t>(i));
  auto by_logit = [](const auto& a, const auto& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); };
  size_t keep = candidates.size();
  if (params.top_k > 0 && static_cast<size_t>(params.top_k) < keep) {
    keep = static_cast<size_t>(params.top_k);
    std::partial_sort(candidates.begin(), candidates.begin() + static_cast<std::ptrdiff_t>(keep), candidates.end(), by_logit);
  } else {
    std::sort(candidates.begin(), candidates.end(), by_logit);
  }
  candidates.resize(keep);
  // Softmax over the kept candidates.
  double max_logit = candidates.front().first, total = 0.0;
  std::vector<double>& probs = scratch.probs;
  probs.assign(keep, 0.0);
  for (size_t i = 0; i < keep; ++i) total += probs[i] = std::exp(static_cast<double>(candidates[i].first) - max_logit);
  for (double& p : probs) p /= total;
  // top-p: the smallest prefix whose mass reaches top_p (the best token always stays).
  if (params.top_p < 1.0f) {
    double mass = 0.0;
    size_t cut = keep;
    for (size_t i = 0; i < keep; ++i) {
      mass += probs[i];
      if (mass >= params.top_p) { cut = i + 1; break; }
    }
    keep = cut;
  }
  // min-p: drop tokens below min_p × the best probability.
  if (params.min_p > 0.0f) {
    double threshold = params.min_p * probs[0];
    size_t cut = 1;
    while (cut < keep && probs[cut] >= threshold) ++cut;
    keep = cut;
  }
  return keep;
}

}  // namespace

int32_t sample_with_draw(std::span<const float> logits, const TokenDraw& params, SamplerScratch& scratch) {
  if (params.greedy()) return argmax(logits);
  const size_t keep = kept_candidates(logits, params, scratch);
  const auto& candidates = scratch.candidates;
  const std::vector<double>& probs = scratch.probs;
  double kept_mass = 0.0;
  for (size_t i = 0; i < keep; ++i) kept_mass += probs[i];
  double draw = params.uniform * kept_mass;
  for (size_t i = 0; i < keep; ++i) {
    draw -= probs[i];
    if (draw < 0.0) return candidates[i].second;
  }
  return candidates[keep - 1].second;
}

void processed_distribution(std::span<const float> logits, const TokenDraw& params, SamplerScratch& scratch,
                            std::vector<double>& out) {
  out.assign(logits.size(), 0.0);
  if (params.greedy()) {
    out[static_cast<size_t>(argmax(logits))] = 1.0;
    return;
  }
  const size_t keep = kept_candidates(logits, params, scratch);
  double kept_mass = 0.0;
  for (size_t i = 0; i < keep; ++i) kept_mass += scratch.probs[i];
  for (size_t i = 0; i < keep; ++i) out[static_cast<size_t>(scratch.candidates[i].second)] = scratch.probs[i] / kept_mass;
}

int32_t sample_from(std::span<const double> probs, double uniform) {
  double total = 0.0;
  int32_t last = -1;
  for (size_t i = 0; i < probs.size(); ++i)
    if (probs[i] > 0.0) total += probs[i], last = static_cast<int32_t>(i);
  check(last >= 0, "internal: sampling from an empty distribution");
  double draw = uniform * total;
  for (size_t i = 0; i < probs.size(); ++i) {
    if (probs[i] <= 0.0) continue;
    draw -= probs[i];
    if (draw < 0.0) return static_cast<int32_t>(i);
  }
  return last;
}

void log_softmax(std::span<const float> logits, std::span<float> out) {
  double max_logit = *std::max_element(logits.begin(), logits.end());
  double total = 0.0;
  for (float v : logits) total += std::exp(static_cast<double>(v) - max_logit);
  double log_total = std::log(total) + max_logit;
  for (size_t i = 0; i < logits.size(); ++i) out[i] = static_cast<float>(static_cast<double>(logits[i]) - log_total);
}

std::vector<std::pair<int32_t, float>> top_logprobs(std::span<const float> logprobs, int32_t n) {
  std::vector<int32_t> ids(logprobs.size());
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>(i);
  size_t count = std::min(static_cast<size_t>(std::max(n, 0)), ids.size());
  std::partial_sort(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(count), ids.end(), [&](int32_t a, int32_t b) {
    return logprobs[static_cast<size_t>(a)] > logprobs[static_cast<size_t>(b)] ||
           (logprobs[static_cast<size_t>(a)] == logprobs[static_cast<size_t>(b)] && a < b);
  });
  std::vector<std::pair<int32_t, float>> top;
  for (size_t i = 0; i < count; ++i) top.emplace_back(ids[i], logprobs[static_cast<size_t>(ids[i])]);
  return top;
}

}  // namespace vortex
