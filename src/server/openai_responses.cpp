#include "server/openai_responses.h"

#include <algorithm>

#include "io/tokenizer.h"

namespace vortex::server {
namespace {

using json = nlohmann::ordered_json;

bool is_chat(const ResponseMeta& meta) { return meta.endpoint == Endpoint::kChatCompletions; }

json base_object(const ResponseMeta& meta, const char* object) {
  return {{"id", meta.id}, {"object", object}, {"created", meta.created}, {"model", meta.model}};
}

std::string token_text(const Tokenizer* tokenizer, int32_t id) {
  return tokenizer ? tokenizer->decode({id}) : "token_id:" + std::to_string(id);
}

json token_bytes(const std::string& text) {
  json bytes = json::array();
  for (unsigned char c : text) bytes.push_back(static_cast<int>(c));
  return bytes;
}

json chat_logprob_entry(const Tokenizer* tokenizer, int32_t id, float logprob) {
  std::string text = token_text(tokenizer, id);
  return {{"token", text}, {"logprob", logprob}, {"bytes", token_bytes(text)}};
}

json chat_logprobs(std::span<const TokenOutput> tokens, const Tokenizer* tokenizer) {
  json content = json::array();
  for (const TokenOutput& t : tokens) {
    if (t.stop_token) continue;
    json entry = chat_logprob_entry(tokenizer, t.token, t.logprob);
    json top = json::array();
    for (const auto& [id, lp] : t.top) top.push_back(chat_logprob_entry(tokenizer, id, lp));
    entry["top_logprobs"] = std::move(top);
    content.push_back(std::move(entry));
  }
  return {{"content", std::move(content)}, {"refusal", nullptr}};
}

json completion_logprobs(std::span<const TokenOutput> tokens, const Tokenizer* tokenizer, int64_t text_offset) {
  json out = {{"tokens", json::array()}, {"token_logprobs", json::array()}, {"top_logprobs", json::array()},
              {"text_offset", json::array()}};
  for (const TokenOutput& t : tokens) {
    if (t.stop_token) continue;
    std::string text = token_text(tokenizer, t.token);
    json top = json::object();
    for (const auto& [id, lp] : t.top) top[token_text(tokenizer, id)] = lp;
    out["tokens"].push_back(text);
    out["token_logprobs"].push_back(t.logprob);
    out["top_logprobs"].push_back(std::move(top));
    out["text_offset"].push_back(text_offset);
    text_offset += static_cast<int64_t>(text.size());
  }
  return out;
}

json error_event(const std::string& message) {
  return error_json(ApiError(500, message, {}, "server_error"));
}

}  // namespace

std::string dump_json(const nlohmann::ordered_json& value) {
  return value.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}
std::string dump_json(const nlohmann::json& value) {
  return value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}
std::string sse_data(const nlohmann::ordered_json& value) { return "data: " + dump_json(value) + "\n\n"; }
const char* finish_reason_text(FinishReason reason) { return finish_reason_name(reason); }

nlohmann::ordered_json logprobs_json(const ResponseMeta& meta, std::span<const TokenOutput> tokens, const Tokenizer* tokenizer,
                                     int64_t text_offset) {
  return is_chat(meta) ? chat_logprobs(tokens, tokenizer) : completion_logprobs(tokens, tokenizer, text_offset);
}

nlohmann::ordered_json usage_json(const Usage& usage) {
  return {{"prompt_tokens", usage.prompt_tokens}, {"completion_tokens", usage.completion_tokens},
          {"total_tokens", usage.prompt_tokens + usage.completion_tokens},
          {"prompt_tokens_details", {{"cached_tokens", usage.cached_tokens}}}};
}

nlohmann::ordered_json models_json(const ServedModel& model, int64_t created) {
  json entry = {{"id", model.names.at(0)}, {"object", "model"}, {"created", created}, {"owned_by", "vortex"},
                {"max_model_len", model.max_context}};
  return {{"object", "list"}, {"data", json::array({entry})}};
}

// ---- streaming --------------------------------------------------------------------------------

StreamFormatter::StreamFormatter(ResponseMeta meta, int32_t choices, int64_t prompt_tokens, bool include_usage,
                                 const Tokenizer* tokenizer)
    : meta_(std::move(meta)), include_usage_(include_usage), tokenizer_(tokenizer), text_offsets_(static_cast<size_t>(choices), 0) {
  usage_.prompt_tokens = prompt_tokens;
}

json StreamFormatter::chunk(int32_t choice, const std::string& text, const json& logprobs, const char* finish_reason) const {
  json out = base_object(meta_, is_chat(meta_) ? "chat.completion.chunk" : "text_completion");
  json c = {{"index", choice}};
  if (is_chat(meta_)) c["delta"] = finish_reason ? json::object() : json{{"content", text}};
  else c["text"] = text;
  c["logprobs"] = logprobs;
  c["finish_reason"] = finish_reason ? json(finish_reason) : json(nullptr);
  out["choices"] = json::array({std::move(c)});
  if (include_usage_) out["usage"] = nullptr;  // OpenAI: null on every chunk but the last
  return out;
}

std::string StreamFormatter::begin() {
  if (!is_chat(meta_)) return {};
  std::string out;
  for (size_t i = 0; i < text_offsets_.size(); ++i) {
    json c = chunk(static_cast<int32_t>(i), "", nullptr, nullptr);
    c["choices"][0]["delta"] = {{"role", "assistant"}, {"content", ""}};
    out += sse_data(c);
  }
  return out;
}

std::string StreamFormatter::on_event(const StreamEvent& event) {
  int64_t& offset = text_offsets_.at(static_cast<size_t>(event.choice));
  if (event.kind == StreamEvent::Kind::kToken) {
    const TokenOutput& t = event.token;
    bool with_logprobs = meta_.logprobs >= 0 && !t.stop_token;
    // Text held back (part of a UTF-8 sequence or of a possible stop string) makes no chunk.
    if (t.text.empty() && !with_logprobs && !meta_.textless) return {};
    json logprobs = with_logprobs ? logprobs_json(meta_, {&t, 1}, tokenizer_, offset) : json(nullptr);
    offset += static_cast<int64_t>(t.text.size());
    return sse_data(chunk(event.choice, t.text, logprobs, nullptr));
  }
  ++finished_;
  usage_.completion_tokens += event.generated_tokens;
  usage_.cached_tokens = std::max(usage_.cached_tokens, event.cached_tokens);
  if (!event.error.empty()) return sse_data(error_event(event.error));
  std::string out;
  if (!event.text.empty()) out += sse_data(chunk(event.choice, event.text, nullptr, nullptr));
  offset += static_cast<int64_t>(event.text.size());
  out += sse_data(chunk(event.choice, "", nullptr, finish_reason_text(event.finish_reason)));
  return out;
}

std::string StreamFormatter::end() {
  std::string out;
  if (include_usage_) {
    json last = base_object(meta_, is_chat(meta_) ? "chat.completion.chunk" : "text_completion");
    last["choices"] = json::array();
    last["usage"] = usage_json(usage_);
    out += sse_data(last);
  }
  return out + "data: [DONE]\n\n";
}

// ---- non-streaming ----------------------------------------------------------------------------

ResponseCollector::ResponseCollector(ResponseMeta meta, int32_t choices, int64_t prompt_tokens, const Tokenizer* tokenizer)
    : meta_(std::move(meta)), tokenizer_(tokenizer), choices_(static_cast<size_t>(choices)) {
  usage_.prompt_tokens = prompt_tokens;
}

void ResponseCollector::on_event(const StreamEvent& event) {
  Choice& choice = choices_.at(static_cast<size_t>(event.choice));
  if (event.kind == StreamEvent::Kind::kToken) {
    choice.text += event.token.text;
    if (meta_.logprobs >= 0) choice.tokens.push_back(event.token);
    return;
  }
  ++finished_;
  choice.text += event.text;
  choice.reason = event.finish_reason;
  usage_.completion_tokens += event.generated_tokens;
  usage_.cached_tokens = std::max(usage_.cached_tokens, event.cached_tokens);
  if (!event.error.empty()) error_ = event.error;
}

nlohmann::ordered_json ResponseCollector::response() const {
  json out = base_object(meta_, is_chat(meta_) ? "chat.completion" : "text_completion");
  json choices = json::array();
  for (size_t i = 0; i < choices_.size(); ++i) {
    const Choice& c = choices_[i];
    json entry = {{"index", static_cast<int64_t>(i)}};
    if (is_chat(meta_)) entry["message"] = {{"role", "assistant"}, {"content", c.text}};
    else entry["text"] = c.text;
    entry["logprobs"] = meta_.logprobs >= 0 ? logprobs_json(meta_, c.tokens, tokenizer_, 0) : json(nullptr);
    entry["finish_reason"] = finish_reason_text(c.reason);
    choices.push_back(std::move(entry));
  }
  out["choices"] = std::move(choices);
  out["usage"] = usage_json(usage_);
  return out;
}

}  // namespace vortex::server
