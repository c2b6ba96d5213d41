// A generation request and its result.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "vortex/sampling.h"

namespace vortex {

// RL rollouts (docs/rollouts.md): for every generated token, the sampling policy's log-prob, the
// dense model's log-prob of the same token and their agreement α_t = Σ_v min(π_policy(v), π_dense(v)),
// both distributions at the sampling temperature (1 for greedy), untruncated (what a trainer's
// log-probs use). The dense rows come from dense passes over the sequence's own pages: one at the
// end (the K/V the policy attended stay as they were), or every `refresh` tokens, which rewrites
// their K/V densely (Sirius-style correction; the token after each pass is sampled densely).
struct RolloutOptions {
  bool enabled = false;
  int64_t refresh = 0;       // > 0: a dense pass every `refresh` sparse tokens; 0: one at the end
  int32_t alpha_top = 256;   // α over each policy distribution's this many most likely tokens; 0: all (exact)
  double obrs_lambda = 0.0;  // > 0: Jackpot's OBRS acceptance and weight per token with this λ
};

struct GenerateRequest {
  std::vector<int32_t> prompt;              // token ids
  SamplingParams sampling;
  int64_t max_tokens = 256;                 // generated tokens at most
  std::vector<int32_t> stop_token_ids;      // in addition to the model's eos ids
  std::vector<std::string> stop_strings;    // the text is cut before the first occurrence
  bool ignore_eos = false;
  int32_t logprobs = -1;     // >= 0: report each token's logprob and this many alternatives; -1: off
  std::string attention;     // attention spec (e.g. "dense"); empty: the engine's default
  // Self-speculative decoding: the draft's sparse attention spec (e.g. "quest:budget=256"; empty:
  // off), whose γ drafted tokens one dense step verifies; the output is dense decoding's.
  std::string speculate;
  int32_t gamma = 0;         // drafts per verify step, 1..16; 0 = auto (chosen per round from measured times)
  RolloutOptions rollout;
};

enum class FinishReason { kStop, kLength };
const char* finish_reason_name(FinishReason reason);  // "stop" | "length"

struct GenerateTiming {
  double prefill_ms = 0;   // prompt forward, up to the first sampled token
  double decode_ms = 0;    // every step after the first token
  int64_t prompt_tokens = 0;
  int64_t cached_tokens = 0;  // of the prompt, taken from the prefix cache (not computed)
  int64_t generated_tokens = 0;
  double decode_tokens_per_s() const { return generated_tokens > 1 ? (generated_tokens - 1) / (decode_ms / 1e3) : 0.0; }
};

struct SpeculationStats {
  int64_t drafted = 0;    // tokens the sparse draft proposed
  int64_t accepted = 0;   // of which the dense verify step kept
  int64_t verifies = 0;   // verify steps (rounds)
  double acceptance_rate() const { return drafted > 0 ? static_cast<double>(accepted) / drafted : 0.0; }
  // Tokens emitted per verify step: the accepted drafts plus the correction or bonus token.
  double tokens_per_verify() const { return verifies > 0 ? static_cast<double>(accepted + verifies) / verifies : 0.0; }
};

struct RolloutTrace {
  std::vector<float> logprobs;          // per generated token: log π_policy(token)
  std::vector<float> dense_logprobs;    // log π_dense(token)
  std::vector<float> alpha;             // α_t; a lower bound when alpha_top leaves tokens out
  std::vector<uint8_t> dense_sampled;   // 1 where the policy itself was dense (the first token; after each refresh)
  std::vector<float> obrs_accept;       // with obrs_lambda: a = min(1, p_dense / (λ p_policy)) per token
  std::vector<float> obrs_weight;       // and the weight p_dense / q̃ of an accepted token
  double alpha_error = 0.0;             // the most any α_t lies below its exact value
  int64_t dense_passes = 0;
};

struct GenerateResult {
  std::vector<int32_t> tokens;  // generated ids; a stop token that ended generation is included
  std::string text;             // detokenised, stop token and stop string excluded
  FinishReason finish_reason = FinishReason::kLength;
  GenerateTiming timing;
  SpeculationStats speculation;  // zero without GenerateRequest::speculate
  RolloutTrace rollout;          // empty without GenerateRequest::rollout
};

struct ScoreOptions {
  int32_t top_n = 0;        // alternatives reported per position
  std::string attention;    // attention spec; empty or "dense": dense
  int64_t sparse_from = 0;  // positions >= this attend sparsely (as decode steps would); earlier ones densely
  bool full_logprobs = false;  // also return every position's whole log-softmax row
  // Measure every sparse selection against the oracle's (ScoreResult::selection; CPU backend only;
  // costs a dense attention pass beside each selection).
  bool selection_recall = false;
};

// One sparse selection of one (query position, layer, KV head) measured against the oracle's
// selection of as many pages (src/sparse/selection_recall.h has the definitions).
struct SelectionSample {
  int64_t position = 0;      // the query's position
  int32_t layer = 0;
  int32_t kv_head = 0;
  int32_t k = 0;             // pages the budget allows
  int32_t candidates = 0;    // pages the flow chose among
  float recall = 0.0f;       // share of the oracle's top-k pages that the flow selected
  float mass = 0.0f;         // exact attention weight held by the attended pages, mean over the group's heads
  float oracle_mass = 0.0f;  // the same for the oracle's top-k pages with the same always-kept pages
  float stage_recall = 1.0f; // share of the oracle's top-k pages that survived a flow's first stage
};

struct ScoreResult {
  std::vector<float> logprobs;  // (n-1): log p(token_i | tokens_<i), i = 1..n-1
  std::vector<float> full;      // (n-1, V) log-softmax rows, with ScoreOptions::full_logprobs
  // (n-1) × top_n pairs: the most likely tokens at each scored position, best first.
  std::vector<std::vector<std::pair<int32_t, float>>> top;
  // With ScoreOptions::selection_recall: every measured sparse selection, sorted by (position, layer, kv head).
  std::vector<SelectionSample> selection;
};

}  // namespace vortex
