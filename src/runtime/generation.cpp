#include "runtime/generation.h"

#include <algorithm>

#include "core/error.h"
#include "io/tokenizer.h"

namespace vortex {
namespace {

double seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

}  // namespace

Generation::Generation(const GenerateRequest& request, const GenerationLimits& limits, const Tokenizer* tokenizer,
                       SequenceCallbacks callbacks, Clock::time_point arrival)
    : max_tokens_(request.max_tokens),
      logprobs_(request.logprobs),
      limits_(limits),
      sampler_(request.sampling),
      stops_(request.stop_strings),
      callbacks_(std::move(callbacks)),
      arrival_(arrival) {
  limits_.eos_token_ids.insert(limits_.eos_token_ids.end(), request.stop_token_ids.begin(), request.stop_token_ids.end());
  if (tokenizer) detok_ = std::make_unique<IncrementalDecoder>(*tokenizer, /*skip_special_tokens=*/true);
  result_.timing.prompt_tokens = static_cast<int64_t>(request.prompt.size());
}

Generation::~Generation() = default;

bool Generation::is_stop_id(int32_t token) const {
  return std::find(limits_.eos_token_ids.begin(), limits_.eos_token_ids.end(), token) != limits_.eos_token_ids.end();
}

void Generation::fill_logprobs(std::span<const float> logits, TokenOutput& out) {
  if (logprobs_ < 0) return;
  logprob_row_.resize(logits.size());
  log_softmax(logits, logprob_row_);
  out.logprob = logprob_row_[static_cast<size_t>(out.token)];
  if (logprobs_ > 0) out.top = top_logprobs(logprob_row_, logprobs_);
}

Generation::Step Generation::advance(std::span<const float> logits, Clock::time_point now) {
  TokenOutput out;
  out.token = sampler_.sample(logits);
  fill_logprobs(logits, out);
  return deliver(out, now);
}

Generation::Step Generation::advance(int32_t token, Clock::time_point now) {
  check(!needs_logits(), "internal: a token without logits for a request that asked for log-probabilities");
  TokenOutput out;
  out.token = token;
  return deliver(out, now);
}

Generation::Step Generation::advance(int32_t token, std::span<const float> logits, Clock::time_point now) {
  TokenOutput out;
  out.token = token;
  fill_logprobs(logits, out);
  return deliver(out, now);
}

void Generation::record_round(int64_t drafted, int64_t accepted) {
  result_.speculation.drafted += drafted;
  result_.speculation.accepted += accepted;
  ++result_.speculation.verifies;
}

int64_t Generation::remaining_tokens() const {
  return std::min(max_tokens_ - generated_tokens(), limits_.max_context - result_.timing.prompt_tokens - generated_tokens());
}

Generation::Step Generation::deliver(TokenOutput& out, Clock::time_point now) {
  Step step;
  step.token = out.token;
  if (result_.tokens.empty()) {
    step.first_token_s = seconds(now - arrival_);
    result_.timing.prefill_ms = 1e3 * step.first_token_s;
    first_token_ = now;
  } else {
    step.inter_token_s = seconds(now - last_token_);
  }
  last_token_ = now;
  result_.tokens.push_back(out.token);
  std::optional<FinishReason> reason;
  if (is_stop_id(out.token)) {
    out.stop_token = true;
    reason = FinishReason::kStop;
  } else if (detok_) {
    out.text = stops_.push(detok_->push(out.token));
    if (stops_.stopped()) reason = FinishReason::kStop;
  }
  if (callbacks_.on_token) callbacks_.on_token(out);
  const int64_t generated = generated_tokens();
  if (!reason && (generated == max_tokens_ || result_.timing.prompt_tokens + generated >= limits_.max_context))
    reason = FinishReason::kLength;
  if (reason) finish(*reason);
  step.finished = reason.has_value();
  return step;
}

void Generation::finish(FinishReason reason, const std::string& error) {
  if (deferred_) {  // already finished, waiting for release_finish
    if (!error.empty()) deferred_->error = error;
    return;
  }
  SequenceFinish done;
  if (detok_ && !stops_.stopped()) done.text = stops_.push(detok_->finish());
  done.text += stops_.flush();
  result_.text = stops_.text();
  result_.finish_reason = reason;
  result_.timing.generated_tokens = generated_tokens();
  if (!result_.tokens.empty()) result_.timing.decode_ms = 1e3 * seconds(Clock::now() - first_token_);
  done.result = std::move(result_);
  done.error = error;
  if (defer_finish_) {
    deferred_ = std::move(done);
    return;
  }
  if (callbacks_.on_finish) callbacks_.on_finish(done);
}

void Generation::release_finish() {
  if (!deferred_) return;
  SequenceFinish done = std::move(*deferred_);
  deferred_.reset();
  defer_finish_ = false;
  if (callbacks_.on_finish) callbacks_.on_finish(done);
}

}  // namespace vortex
