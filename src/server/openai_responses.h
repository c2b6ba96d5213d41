// OpenAI-compatible response bodies, built from the engine's stream events: pure functions and
// two small state machines, unit-tested without a socket.
//
//   StreamFormatter   events → server-sent events, chunk format and the final `data: [DONE]`
//                     exactly as OpenAI writes them (chat: a role chunk first, a chunk with
//                     finish_reason last, per choice; usage chunk with choices [] when asked).
//   ResponseCollector events → one non-streaming response object.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/serving_engine.h"
#include "server/openai_protocol.h"

namespace vortex::server {

struct ResponseMeta {
  Endpoint endpoint = Endpoint::kCompletions;
  std::string id;        // "cmpl-…" or "chatcmpl-…"
  int64_t created = 0;   // unix seconds
  std::string model;
  int32_t logprobs = -1;  // as requested: -1 off, else alternatives per token
  // The model has no tokenizer (serve --random-weights): there is no text, so every generated token
  // makes a stream chunk with empty text, and the stream shows its progress.
  bool textless = false;
};

struct Usage {
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  int64_t cached_tokens = 0;  // prompt tokens served from the prefix cache (the most over the choices)
};

// JSON text with invalid UTF-8 replaced by U+FFFD (never throws on bytes).
std::string dump_json(const nlohmann::ordered_json& value);
std::string dump_json(const nlohmann::json& value);
std::string sse_data(const nlohmann::ordered_json& value);  // "data: {…}\n\n"
const char* finish_reason_text(FinishReason reason);

// logprobs of generated tokens (stop tokens excluded): chat {"content": [...]}, completions
// {"tokens", "token_logprobs", "top_logprobs", "text_offset"} starting at `text_offset`.
nlohmann::ordered_json logprobs_json(const ResponseMeta& meta, std::span<const TokenOutput> tokens, const Tokenizer* tokenizer,
                                     int64_t text_offset);
nlohmann::ordered_json usage_json(const Usage& usage);
nlohmann::ordered_json models_json(const ServedModel& model, int64_t created);

class StreamFormatter {
 public:
  // `prompt_tokens`: of the request's prompts, each counted once whatever n is (as OpenAI's usage).
  StreamFormatter(ResponseMeta meta, int32_t choices, int64_t prompt_tokens, bool include_usage, const Tokenizer* tokenizer);
  std::string begin();                           // chat: the role chunk of every choice
  std::string on_event(const StreamEvent& event);  // SSE text for this event (often empty)
  bool finished() const { return finished_ == static_cast<int32_t>(text_offsets_.size()); }
  std::string end();                             // usage chunk when asked, then data: [DONE]

 private:
  nlohmann::ordered_json chunk(int32_t choice, const std::string& text, const nlohmann::ordered_json& logprobs,
                               const char* finish_reason) const;

  ResponseMeta meta_;
  bool include_usage_;
  const Tokenizer* tokenizer_;
  std::vector<int64_t> text_offsets_;  // (choices) text bytes sent so far
  int32_t finished_ = 0;
  Usage usage_;
};

class ResponseCollector {
 public:
  ResponseCollector(ResponseMeta meta, int32_t choices, int64_t prompt_tokens, const Tokenizer* tokenizer);
  void on_event(const StreamEvent& event);
  bool finished() const { return finished_ == static_cast<int32_t>(choices_.size()); }
  const std::string& error() const { return error_; }  // non-empty after an internal failure
  nlohmann::ordered_json response() const;

 private:
  struct Choice {
    std::string text;
    std::vector<TokenOutput> tokens;
    FinishReason reason = FinishReason::kLength;
  };
  ResponseMeta meta_;
  const Tokenizer* tokenizer_;
  std::vector<Choice> choices_;
  int32_t finished_ = 0;
  Usage usage_;
  std::string error_;
};

}  // namespace vortex::server
