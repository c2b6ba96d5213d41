// OpenAI-compatible request parsing and validation: pure functions from a request body to typed
// parameters, and from those to engine requests. No HTTP here, so all of it is unit-tested.
//
// Every problem is an ApiError carrying the HTTP status (400, 404 unknown model, 413 too large)
// and the field at fault, rendered as OpenAI's {"error": {message, type, param, code}}.
// Fields this server does not know are ignored, as OpenAI clients expect; known fields it cannot
// honour (echo, penalties, logit_bias) are refused by name rather than silently ignored.
#pragma once

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "vortex/request.h"

namespace vortex {
class Tokenizer;
class ChatTemplate;
}  // namespace vortex

namespace vortex::server {

class ApiError : public std::runtime_error {
 public:
  ApiError(int status, const std::string& message, std::string param = {}, std::string type = "invalid_request_error",
           std::string code = {})
      : std::runtime_error(message), status(status), param(std::move(param)), type(std::move(type)), code(std::move(code)) {}
  int status;
  std::string param;  // the request field at fault, or empty
  std::string type;   // invalid_request_error | server_error | ...
  std::string code;   // model_not_found | context_length_exceeded | ... or empty
};

// {"error": {"message", "type", "param", "code"}}; param and code are null when empty.
nlohmann::ordered_json error_json(const ApiError& error);

enum class Endpoint { kCompletions, kChatCompletions };

// What the server serves: the names a request's `model` may use and the limits it checks against.
struct ServedModel {
  std::vector<std::string> names;  // names[0] is listed by /v1/models
  int64_t max_context = 0;
  int64_t vocab_size = 0;
  std::string default_attention = "dense";
  std::string default_speculate;  // self-speculation's draft spec for requests that do not choose (empty: off)
  int32_t default_gamma = 0;      // 0 = auto
};

struct CompletionParams {
  Endpoint endpoint = Endpoint::kCompletions;
  std::string model;
  // completions: each prompt is text or token ids; chat: `messages` with text content.
  std::vector<std::string> prompt_texts;
  std::vector<std::vector<int32_t>> prompt_tokens;  // used when the prompt came as ids
  bool prompt_is_tokens = false;
  nlohmann::ordered_json messages;                  // chat: [{role, content: string, ...}]
  nlohmann::ordered_json template_kwargs = nlohmann::ordered_json::object();  // chat_template_kwargs
  std::optional<int64_t> max_tokens;                // absent: completions 16, chat the rest of the context
  std::string max_tokens_field = "max_tokens";      // the field it came from, for error messages
  SamplingParams sampling;
  bool seed_given = false;
  std::vector<std::string> stop;
  int32_t n = 1;
  int32_t logprobs = -1;  // -1: off; else alternatives per token (chat: top_logprobs)
  bool stream = false;
  bool include_usage = false;
  bool ignore_eos = false;
  std::string attention;  // validated spec text
  std::string speculate;  // self-speculation's draft spec (validated grammar; empty: off)
  int32_t gamma = 0;      // drafts per verify step, 0 = auto
};

// Parses and validates a body (throws ApiError): JSON syntax and UTF-8, types, ranges, the model
// name, roles, the attention spec. Tokenisation and context checks come in build_requests().
CompletionParams parse_request(Endpoint endpoint, std::string_view body, const ServedModel& model);

// Prompt token ids per prompt (chat: the chat template applied to `messages`).
std::vector<std::vector<int32_t>> tokenize_prompts(const CompletionParams& params, const Tokenizer* tokenizer,
                                                    const ChatTemplate* chat_template, const ServedModel& model);

// One GenerateRequest per (prompt, choice): index = prompt * n + choice. Checks the context
// (prompt too long, max_tokens too large). `random_seed` seeds requests that gave no seed.
std::vector<GenerateRequest> build_requests(const CompletionParams& params, const std::vector<std::vector<int32_t>>& prompts,
                                            const ServedModel& model, uint64_t random_seed);

}  // namespace vortex::server
