// Token selection from logits: greedy, or temperature → top-k → top-p → min-p and a seeded draw.
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <utility>
#include <vector>

#include "vortex/sampling.h"

namespace vortex {

// Throws a vortex::Error naming the first invalid field (negative temperature, top_p outside
// (0, 1], min_p outside [0, 1], negative top_k).
void validate_sampling(const SamplingParams& params);

class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);
  // Picks the next token from logits (V). Deterministic for a given seed and call sequence.
  int32_t sample(std::span<const float> logits);

 private:
  SamplingParams params_;
  std::mt19937_64 rng_;
  std::vector<std::pair<float, int32_t>> candidates_;  // scratch: (scaled logit, id), best first
  std::vector<double> probs_;                          // scratch: probabilities of candidates_
};

// log_softmax of logits (V) in double precision, written as float to `out` (V).
void log_softmax(std::span<const float> logits, std::span<float> out);
// The n most likely (id, logprob) pairs of a log-probability row, best first (ties: lower id first).
std::vector<std::pair<int32_t, float>> top_logprobs(std::span<const float> logprobs, int32_t n);
int32_t argmax(std::span<const float> logits);

}  // namespace vortex
