// One sequence's generation state inside the running batch: its sampler, stop conditions,
// incremental detokeniser and stop-string matcher, its result so far, and its callbacks.
// The batch engine hands it the logits row of its last token; it picks the next token, decides
// whether the sequence is finished, and delivers text as it becomes final — the same loop body
// the single-request engine ran, now one sequence of many.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "runtime/sampler.h"
#include "runtime/stop.h"
#include "vortex/request.h"

namespace vortex {

class Tokenizer;
class IncrementalDecoder;
using Clock = std::chrono::steady_clock;

struct TokenOutput {
  int32_t token = 0;
  bool stop_token = false;  // a stop/eos id that ended generation: it adds no text
  float logprob = 0.0f;     // log p(token), when the request asked for logprobs
  std::vector<std::pair<int32_t, float>> top;  // the most likely alternatives, best first
  std::string text;         // text that became final with this token (often empty: held back)
};

struct SequenceFinish {
  GenerateResult result;  // every token, the whole text, finish reason and timing
  std::string text;       // text released at the end (held-back bytes), not yet in any TokenOutput
  std::string error;      // non-empty when the sequence was ended by an internal failure
};

// Called on the stepping thread; they must not call back into the engine.
struct SequenceCallbacks {
  std::function<void(const TokenOutput&)> on_token;
  std::function<void(const SequenceFinish&)> on_finish;
};

struct GenerationLimits {
  int64_t max_context = 0;              // prompt + generated tokens at most
  std::vector<int32_t> eos_token_ids;   // the model's, unless the request ignores eos
};

class Generation {
 public:
  Generation(const GenerateRequest& request, const GenerationLimits& limits, const Tokenizer* tokenizer,
             SequenceCallbacks callbacks, Clock::time_point arrival);
  ~Generation();

  struct Step {
    int32_t token = 0;
    bool finished = false;
    double first_token_s = -1.0;  // time to first token, when this was the first token
    double inter_token_s = -1.0;  // gap since the previous token, otherwise
  };
  // Picks the next token from the logits (V) of the sequence's last token and delivers it.
  Step advance(std::span<const float> logits, Clock::time_point now);
  // The same with the token chosen elsewhere (a backend sampling on its device) from next_draw().
  Step advance(int32_t token, Clock::time_point now);
  // A token that self-speculation's verify step chose; `logits` (V) is the dense row it was chosen
  // from, for log-probabilities.
  Step advance(int32_t token, std::span<const float> logits, Clock::time_point now);
  // Self-speculation: a verify step kept `accepted` of `drafted` tokens (counted in the result);
  // the sequence's sampler draws drafts, acceptances and residual samples from its stream.
  void record_round(int64_t drafted, int64_t accepted);
  Sampler& sampler() { return sampler_; }
  bool greedy() const { return sampler_.greedy(); }
  // Tokens the sequence may still emit before max_tokens or the context ends it.
  int64_t remaining_tokens() const;
  // The sampling parameters and the next uniform of this sequence's stream, for a backend that
  // samples on its device; the token it picks goes to advance(token).
  TokenDraw next_draw() { return sampler_.next_draw(); }
  // Whether advance needs the logits themselves (the request asked for log-probabilities).
  bool needs_logits() const { return logprobs_ >= 0; }
  // Ends the sequence without a token (max_tokens 0) or after an internal failure. With
  // defer_finish, the finish is kept (its result still writable through trace()) until
  // release_finish delivers it; a second finish only records its error.
  void finish(FinishReason reason, const std::string& error = {});
  void defer_finish() { defer_finish_ = true; }
  void release_finish();
  bool finished() const { return deferred_.has_value(); }
  RolloutTrace& trace() { return deferred_ ? deferred_->result.rollout : result_.rollout; }
  int64_t prompt_tokens() const { return result_.timing.prompt_tokens; }
  void set_cached_tokens(int64_t tokens) { result_.timing.cached_tokens = tokens; }
  int64_t generated_tokens() const { return static_cast<int64_t>(result_.tokens.size()); }

 private:
  void fill_logprobs(std::span<const float> logits, TokenOutput& out);
  Step deliver(TokenOutput& out, Clock::time_point now);
  bool is_stop_id(int32_t token) const;

  int64_t max_tokens_;
  int32_t logprobs_;
  GenerationLimits limits_;
  Sampler sampler_;
  StopStringMatcher stops_;
  std::unique_ptr<IncrementalDecoder> detok_;
  SequenceCallbacks callbacks_;
  GenerateResult result_;
  std::vector<float> logprob_row_;  // (V) scratch
  Clock::time_point arrival_, first_token_, last_token_;
  bool defer_finish_ = false;
  std::optional<SequenceFinish> deferred_;
};

}  // namespace vortex
