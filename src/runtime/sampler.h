// Token selection from logits: greedy, or temperature → top-k → top-p → min-p and a seeded draw.
// The draw is split in two so that a backend can pick the token on its device: the Sampler owns
// the random stream (one uniform per non-greedy token), and sample_with_draw() is the pure
// function of (logits, parameters, uniform) that the GPU kernel reproduces.
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <utility>
#include <vector>

#include "backend/chunk.h"
#include "vortex/sampling.h"

namespace vortex {

// Throws a vortex::Error naming the first invalid field (negative temperature, top_p outside
// (0, 1], min_p outside [0, 1], negative top_k).
void validate_sampling(const SamplingParams& params);

// Scratch space of sample_with_draw, reused across calls.
struct SamplerScratch {
  std::vector<std::pair<float, int32_t>> candidates;  // (scaled logit, id), best first
  std::vector<double> probs;                          // probabilities of candidates
};

// The token for a draw's parameters and uniform ∈ [0, 1): the kept set is the best-first prefix that top-k, top-p and
// min-p leave (ties between equal logits broken by the lower id), and the token is the first kept
// one, walking best first, at which the cumulative kept probability exceeds uniform × kept mass.
// Greedy parameters (temperature 0 or top_k 1) give the argmax and ignore the uniform.
int32_t sample_with_draw(std::span<const float> logits, const TokenDraw& params, SamplerScratch& scratch);

// The distribution sample_with_draw draws from, as probabilities over the vocabulary (V): the kept
// set's softmax renormalised over the kept mass, zero elsewhere; greedy parameters give a one-hot
// argmax. Speculative sampling compares a draft's and the target's processed distributions.
void processed_distribution(std::span<const float> logits, const TokenDraw& params, SamplerScratch& scratch,
                            std::vector<double>& out);
// The token at which the cumulative mass of `probs` (non-negative, not necessarily normalised)
// first exceeds uniform × total.
int32_t sample_from(std::span<const double> probs, double uniform);

class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);
  // Picks the next token from logits (V). Deterministic for a given seed and call sequence.
  int32_t sample(std::span<const float> logits);
  // The same choice made elsewhere: the parameters and the next uniform of the stream (none is
  // consumed for greedy parameters, as sample() consumes none), for a backend to sample with.
  TokenDraw next_draw();
  bool greedy() const { return TokenDraw{.temperature = params_.temperature, .top_k = params_.top_k}.greedy(); }
  // The request's parameters as a draw (uniform 0), and the stream's next uniform in [0, 1): what
  // speculative sampling (runtime/speculation.h) draws its acceptances and residual samples from.
  TokenDraw params() const;
  double uniform();

 private:
  SamplingParams params_;
  std::mt19937_64 rng_;
  SamplerScratch scratch_;
};

// log_softmax of logits (V) in double precision, written as float to `out` (V).
void log_softmax(std::span<const float> logits, std::span<float> out);
// The n most likely (id, logprob) pairs of a log-probability row, best first (ties: lower id first).
std::vector<std::pair<int32_t, float>> top_logprobs(std::span<const float> logprobs, int32_t n);
int32_t argmax(std::span<const float> logits);

}  // namespace vortex
