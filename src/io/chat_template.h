// Chat templates: a Jinja2-subset interpreter that renders the `chat_template` of a Hugging Face
// tokenizer_config.json exactly as transformers' apply_chat_template does (Jinja2 with
// trim_blocks and lstrip_blocks on, `raise_exception`, `tojson`, `strftime_now`).
//
// The subset covers what real templates use (Qwen2/2.5/3, Llama-3/3.1/3.2, Mistral, ...):
// {{ }}, {% %}, {# #}, whitespace control (-), if/elif/else, for (loop.*, else, filters on the
// iterable, tuple unpacking), set (incl. namespace attributes and block set), macro/call, filters
// (length, trim, tojson, upper, lower, join, first, last, default, items, string, int, list,
// replace, ...), tests (defined, none, string, mapping, ...), slicing, string methods (strip,
// split, startswith, ...), `in`, `~`, arithmetic and comparisons. Anything else is a vortex::Error
// naming the construct and its line.
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace vortex {

class JinjaTemplate {
 public:
  // Parses template source; throws vortex::Error with line/column on a syntax error.
  explicit JinjaTemplate(std::string_view source);
  JinjaTemplate(JinjaTemplate&&) noexcept;
  JinjaTemplate& operator=(JinjaTemplate&&) noexcept;
  ~JinjaTemplate();
  // Renders with `context` (a JSON object) as the global variables. Python dicts keep insertion
  // order and `tojson` prints keys in that order; pass an ordered_json to get the same output
  // (nlohmann::json sorts keys).
  std::string render(const nlohmann::json& context) const;
  std::string render(const nlohmann::ordered_json& context) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// ordered_json so that tool schemas print with their keys in the caller's order, as
// transformers prints them; a nlohmann::json assigned here converts implicitly (keys sorted).
struct ChatTemplateOptions {
  bool add_generation_prompt = true;
  nlohmann::ordered_json tools = nullptr;  // list of tool schemas, or null
  nlohmann::ordered_json extra_context = nlohmann::ordered_json::object();  // {"enable_thinking": false}
};

// The chat template of a model directory: tokenizer_config.json's `chat_template` (a string, or a
// list of {name, template} where "default" is used), or a `chat_template.jinja` file beside it,
// with its bos_token/eos_token strings.
class ChatTemplate {
 public:
  static ChatTemplate load(const std::filesystem::path& dir);
  ChatTemplate(std::string source, std::string bos_token, std::string eos_token);

  // messages: a JSON array of {role, content, ...}. Returns the prompt text exactly as
  // transformers' apply_chat_template(messages, tokenize=False, ...) would.
  // Parse request bodies with nlohmann::ordered_json to keep key order byte-identical.
  std::string apply(const nlohmann::json& messages, const ChatTemplateOptions& options) const;
  std::string apply(const nlohmann::ordered_json& messages, const ChatTemplateOptions& options) const;

 private:
  std::shared_ptr<const JinjaTemplate> template_;
  std::string bos_token_;
  std::string eos_token_;
};

}  // namespace vortex
