#include "server/openai_protocol.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/error.h"
#include "io/chat_template.h"
#include "io/tokenizer.h"
#include "runtime/batch_engine.h"
#include "sparse/attention_spec.h"

namespace vortex::server {
namespace {

using json = nlohmann::ordered_json;

constexpr int64_t kMaxChoices = 16;         // n at most
constexpr int64_t kMaxSequences = 128;      // prompts × n at most, per request
constexpr int64_t kMaxStopStrings = 16;
constexpr int64_t kMaxTopLogprobs = 20;
constexpr int64_t kDefaultCompletionTokens = 16;  // /v1/completions without max_tokens, as OpenAI

ApiError bad(const std::string& param, const std::string& message) { return ApiError(400, message, param); }

const char* type_name(const json& value) {
  if (value.is_string()) return "a string";
  if (value.is_boolean()) return "a boolean";
  if (value.is_number_integer()) return "an integer";
  if (value.is_number()) return "a number";
  if (value.is_array()) return "an array";
  if (value.is_object()) return "an object";
  return "null";
}

ApiError wrong_type(const std::string& param, const char* expected, const json& got) {
  return bad(param, fmt::format("Invalid type for '{}': expected {}, but got {} instead.", param, expected, type_name(got)));
}

// The field's value, or null when absent or JSON null (OpenAI treats both as "not given").
const json* field(const json& doc, const char* key) {
  auto it = doc.find(key);
  return it == doc.end() || it->is_null() ? nullptr : &*it;
}

std::optional<double> get_number(const json& doc, const char* key, double lo, double hi) {
  const json* v = field(doc, key);
  if (!v) return std::nullopt;
  if (!v->is_number()) throw wrong_type(key, "a number", *v);
  double x = v->get<double>();
  if (!std::isfinite(x) || x < lo || x > hi)
    throw bad(key, fmt::format("Invalid '{}': expected a value in [{}, {}], but got {} instead.", key, lo, hi, x));
  return x;
}

std::optional<int64_t> get_int(const json& doc, const char* key, int64_t lo, int64_t hi) {
  const json* v = field(doc, key);
  if (!v) return std::nullopt;
  if (v->is_number_unsigned() && v->get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
    throw bad(key, fmt::format("Invalid '{}': {} is too large (at most {}).", key, v->dump(), hi));
  if (!v->is_number_integer()) throw wrong_type(key, "an integer", *v);
  int64_t x = v->get<int64_t>();
  if (x < lo) throw bad(key, fmt::format("Invalid '{}': expected a value >= {}, but got {} instead.", key, lo, x));
  if (x > hi) throw bad(key, fmt::format("Invalid '{}': expected a value <= {}, but got {} instead.", key, hi, x));
  return x;
}

std::optional<bool> get_bool(const json& doc, const char* key) {
  const json* v = field(doc, key);
  if (!v) return std::nullopt;
  if (!v->is_boolean()) throw wrong_type(key, "a boolean", *v);
  return v->get<bool>();
}

json parse_body(std::string_view body) {
  json doc;
  try {
    doc = json::parse(body);
  } catch (const json::parse_error& e) {
    std::string what = e.what();
    if (what.find("UTF-8") != std::string::npos || what.find("surrogate") != std::string::npos)
      throw ApiError(400, "The request body is not valid UTF-8 JSON: " + what);
    throw ApiError(400, "The request body is not valid JSON: " + what);
  } catch (const json::exception& e) {  // a number beyond a double ("1e999"), found by fuzz_openai_request
    throw ApiError(400, std::string("The request body is not valid JSON: ") + e.what());
  }
  if (!doc.is_object()) throw ApiError(400, fmt::format("The request body must be a JSON object, not {}.", type_name(doc)));
  return doc;
}

void parse_model(const json& doc, const ServedModel& model, CompletionParams& out) {
  const json* v = field(doc, "model");
  if (!v) throw bad("model", "You must provide a model parameter.");
  if (!v->is_string()) throw wrong_type("model", "a string", *v);
  out.model = v->get<std::string>();
  if (std::find(model.names.begin(), model.names.end(), out.model) == model.names.end())
    throw ApiError(404, fmt::format("The model '{}' does not exist (this server serves '{}').", out.model, model.names.at(0)),
                   "model", "invalid_request_error", "model_not_found");
}

void check_token_ids(const std::vector<int32_t>& ids, const ServedModel& model) {
  if (ids.empty()) throw bad("prompt", "The prompt is empty.");
  if (const std::optional<int32_t> id = token_out_of_range(ids, model.vocab_size))
    throw bad("prompt", fmt::format("Token id {} in the prompt is out of range: the vocabulary has {} ids.", *id, model.vocab_size));
}

std::vector<int32_t> token_array(const json& array) {
  std::vector<int32_t> ids;
  for (const json& id : array) {
    if (!id.is_number_integer() || id.get<int64_t>() < std::numeric_limits<int32_t>::min() ||
        id.get<int64_t>() > std::numeric_limits<int32_t>::max())
      throw wrong_type("prompt", "a string, an array of strings, or token ids", id);
    ids.push_back(id.get<int32_t>());
  }
  return ids;
}

// prompt: "text" | ["text", ...] | [id, ...] | [[id, ...], ...]
void parse_prompt(const json& doc, const ServedModel& model, CompletionParams& out) {
  const json* v = field(doc, "prompt");
  if (!v) throw bad("prompt", "You must provide a prompt.");
  if (v->is_string()) { out.prompt_texts.push_back(v->get<std::string>()); return; }
  if (!v->is_array()) throw wrong_type("prompt", "a string, an array of strings, or token ids", *v);
  if (v->empty()) throw bad("prompt", "The prompt is empty.");
  const json& first = v->front();
  if (first.is_string()) {
    for (const json& p : *v) {
      if (!p.is_string()) throw wrong_type("prompt", "an array of strings", p);
      out.prompt_texts.push_back(p.get<std::string>());
    }
  } else if (first.is_number_integer()) {
    out.prompt_is_tokens = true;
    out.prompt_tokens.push_back(token_array(*v));
  } else if (first.is_array()) {
    out.prompt_is_tokens = true;
    for (const json& p : *v) {
      if (!p.is_array()) throw wrong_type("prompt", "an array of token-id arrays", p);
      out.prompt_tokens.push_back(token_array(p));
    }
  } else {
    throw wrong_type("prompt", "a string, an array of strings, or token ids", first);
  }
  for (const auto& ids : out.prompt_tokens) check_token_ids(ids, model);
}

// content: "text" | [{"type": "text", "text": "..."}, ...]; returns the text.
std::string message_text(const json& content, size_t i) {
  const std::string param = fmt::format("messages[{}].content", i);
  if (content.is_string()) return content.get<std::string>();
  if (!content.is_array()) throw wrong_type(param, "a string or an array of content parts", content);
  std::string text;
  for (size_t j = 0; j < content.size(); ++j) {
    const json& part = content[j];
    const json* type = part.is_object() ? field(part, "type") : nullptr;
    if (!type || !type->is_string()) throw bad(param, fmt::format("{}[{}] must be an object with a 'type'.", param, j));
    if (type->get<std::string>() != "text")
      throw bad(param, fmt::format("{}[{}]: content parts of type '{}' are not supported (only 'text').", param, j,
                                   type->get<std::string>()));
    const json* t = field(part, "text");
    if (!t || !t->is_string()) throw bad(param, fmt::format("{}[{}].text must be a string.", param, j));
    text += t->get<std::string>();
  }
  return text;
}

json parse_message(const json& message, size_t i) {
  const std::string where = fmt::format("messages[{}]", i);
  if (!message.is_object()) throw wrong_type(where, "an object", message);
  const json* role = field(message, "role");
  if (!role || !role->is_string()) throw bad(where + ".role", fmt::format("{}.role is required and must be a string.", where));
  std::string name = role->get<std::string>();
  static const std::vector<std::string> kRoles = {"system", "developer", "user", "assistant", "tool"};
  if (std::find(kRoles.begin(), kRoles.end(), name) == kRoles.end())
    throw bad(where + ".role", fmt::format("Invalid value for '{}.role': '{}' (expected system, developer, user, assistant or tool).",
                                           where, name));
  json out = message;
  out["role"] = name == "developer" ? "system" : name;  // chat templates know "system"
  const json* content = field(message, "content");
  if (content) out["content"] = message_text(*content, i);
  else if (name == "assistant") out["content"] = "";  // an assistant turn may carry only tool calls
  else throw bad(where + ".content", fmt::format("{}.content is required for role '{}'.", where, name));
  return out;
}

void parse_messages(const json& doc, CompletionParams& out) {
  const json* v = field(doc, "messages");
  if (!v) throw bad("messages", "You must provide messages.");
  if (!v->is_array()) throw wrong_type("messages", "an array", *v);
  if (v->empty()) throw bad("messages", "messages must contain at least one message.");
  out.messages = json::array();
  for (size_t i = 0; i < v->size(); ++i) out.messages.push_back(parse_message((*v)[i], i));
  if (const json* kwargs = field(doc, "chat_template_kwargs")) {
    if (!kwargs->is_object()) throw wrong_type("chat_template_kwargs", "an object", *kwargs);
    out.template_kwargs = *kwargs;
  }
}

void parse_stop(const json& doc, CompletionParams& out) {
  const json* v = field(doc, "stop");
  if (!v) return;
  if (v->is_string()) out.stop.push_back(v->get<std::string>());
  else if (v->is_array()) {
    for (const json& s : *v) {
      if (!s.is_string()) throw wrong_type("stop", "a string or an array of strings", s);
      out.stop.push_back(s.get<std::string>());
    }
  } else {
    throw wrong_type("stop", "a string or an array of strings", *v);
  }
  if (static_cast<int64_t>(out.stop.size()) > kMaxStopStrings)
    throw bad("stop", fmt::format("At most {} stop strings, got {}.", kMaxStopStrings, out.stop.size()));
  for (const auto& s : out.stop)
    if (s.empty()) throw bad("stop", "Stop strings must not be empty.");
}

void parse_sampling(const json& doc, CompletionParams& out) {
  out.sampling.temperature = static_cast<float>(get_number(doc, "temperature", 0.0, 2.0).value_or(1.0));
  out.sampling.top_p = static_cast<float>(get_number(doc, "top_p", 0.0, 1.0).value_or(1.0));
  if (out.sampling.top_p <= 0.0f) throw bad("top_p", "Invalid 'top_p': expected a value in (0, 1], but got 0 instead.");
  out.sampling.top_k = static_cast<int32_t>(std::max<int64_t>(0, get_int(doc, "top_k", -1, 1 << 30).value_or(0)));
  out.sampling.min_p = static_cast<float>(get_number(doc, "min_p", 0.0, 1.0).value_or(0.0));
  if (auto seed = get_int(doc, "seed", std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max())) {
    out.sampling.seed = static_cast<uint64_t>(*seed);
    out.seed_given = true;
  }
}

void parse_logprobs(const json& doc, CompletionParams& out) {
  if (out.endpoint == Endpoint::kCompletions) {
    out.logprobs = static_cast<int32_t>(get_int(doc, "logprobs", 0, kMaxTopLogprobs).value_or(-1));
    return;
  }
  bool on = get_bool(doc, "logprobs").value_or(false);
  auto top = get_int(doc, "top_logprobs", 0, kMaxTopLogprobs);
  if (top && !on) throw bad("top_logprobs", "top_logprobs needs logprobs set to true.");
  out.logprobs = on ? static_cast<int32_t>(top.value_or(0)) : -1;
}

void parse_streaming(const json& doc, CompletionParams& out) {
  out.stream = get_bool(doc, "stream").value_or(false);
  const json* options = field(doc, "stream_options");
  if (!options) return;
  if (!options->is_object()) throw wrong_type("stream_options", "an object", *options);
  if (!out.stream) throw bad("stream_options", "stream_options is only allowed when stream is true.");
  out.include_usage = get_bool(*options, "include_usage").value_or(false);
}

// Known OpenAI fields this engine cannot honour: refused by name instead of silently ignored.
void refuse_unsupported(const json& doc) {
  if (get_bool(doc, "echo").value_or(false)) throw bad("echo", "echo is not supported by this server.");
  if (get_int(doc, "best_of", 1, kMaxChoices).value_or(1) > 1) throw bad("best_of", "best_of > 1 is not supported by this server.");
  for (const char* key : {"presence_penalty", "frequency_penalty"})
    if (get_number(doc, key, -2.0, 2.0).value_or(0.0) != 0.0) throw bad(key, fmt::format("{} is not supported by this server.", key));
  if (const json* bias = field(doc, "logit_bias"); bias && !bias->empty())
    throw bad("logit_bias", "logit_bias is not supported by this server.");
  if (const json* tools = field(doc, "tools"); tools && !tools->empty()) throw bad("tools", "tools are not supported by this server yet.");
  if (const json* suffix = field(doc, "suffix"); suffix && !(suffix->is_string() && suffix->get<std::string>().empty()))
    throw bad("suffix", "suffix is not supported by this server.");
}

// A client-chosen spec: the grammar, and no files (flow files and budget tables come only from
// the server's own --attention / --speculate, so a client cannot make it read files).
std::string client_spec(const json& v, const char* key, const char* param, const std::string& server_spec) {
  const json* value = field(v, key);
  if (!value->is_string()) throw wrong_type(param, "a string", *value);
  const std::string text = value->get<std::string>();
  if (text.empty()) return text;
  AttentionSpec spec;
  try {
    spec = parse_attention_spec(text);
  } catch (const Error& e) {
    throw bad(param, e.what());
  }
  if ((!spec.flow_path.empty() || !spec.table_path.empty()) && spec.text != server_spec)
    throw bad(param, fmt::format("attention '{}': specs that read files (flow:PATH, schedule:table=PATH) are "
                                 "accepted only as the server's own", spec.text));
  return spec.text;
}

void parse_vortex(const json& doc, const ServedModel& model, CompletionParams& out) {
  out.ignore_eos = get_bool(doc, "ignore_eos").value_or(false);  // vLLM's top-level extension
  out.attention = model.default_attention;
  out.speculate = model.default_speculate;
  out.gamma = model.default_gamma;
  const json* v = field(doc, "vortex");
  if (!v) return;
  if (!v->is_object()) throw wrong_type("vortex", "an object", *v);
  out.ignore_eos = get_bool(*v, "ignore_eos").value_or(out.ignore_eos);
  if (field(*v, "attention")) {
    out.attention = client_spec(*v, "attention", "vortex.attention", model.default_attention);
    if (out.attention.empty()) throw bad("vortex.attention", "the attention spec is empty (give e.g. 'dense')");
    // A request that chooses sparse attention leaves the server's default speculation (a draft
    // for dense attention) unless it asks for speculation itself.
    if (out.attention != "dense") out.speculate.clear(), out.gamma = 0;
  }
  if (field(*v, "speculate")) {
    out.speculate = client_spec(*v, "speculate", "vortex.speculate", model.default_speculate);
    out.gamma = 0;
  }
  if (const json* gamma = field(*v, "gamma")) {
    if (gamma->is_string() && gamma->get<std::string>() == "auto") out.gamma = 0;
    else if (gamma->is_number_integer() && gamma->get<int64_t>() >= 1 && gamma->get<int64_t>() <= BatchEngine::kMaxGamma)
      out.gamma = static_cast<int32_t>(gamma->get<int64_t>());
    else throw bad("vortex.gamma", fmt::format("vortex.gamma must be an integer in 1..{} or \"auto\", got {}",
                                               BatchEngine::kMaxGamma, gamma->dump()));
    if (out.speculate.empty()) throw bad("vortex.gamma", "vortex.gamma needs vortex.speculate (the draft's attention spec)");
  }
}

}  // namespace

nlohmann::ordered_json error_json(const ApiError& error) {
  json body = {{"message", error.what()}, {"type", error.type}, {"param", nullptr}, {"code", nullptr}};
  if (!error.param.empty()) body["param"] = error.param;
  if (!error.code.empty()) body["code"] = error.code;
  return {{"error", body}};
}

CompletionParams parse_request(Endpoint endpoint, std::string_view body, const ServedModel& model) {
  json doc = parse_body(body);
  CompletionParams out;
  out.endpoint = endpoint;
  parse_model(doc, model, out);
  if (endpoint == Endpoint::kCompletions) parse_prompt(doc, model, out);
  else parse_messages(doc, out);
  const int64_t max_tokens_limit = std::numeric_limits<int32_t>::max();
  out.max_tokens = get_int(doc, "max_tokens", 1, max_tokens_limit);
  if (endpoint == Endpoint::kChatCompletions)
    if (auto m = get_int(doc, "max_completion_tokens", 1, max_tokens_limit)) {
      out.max_tokens = m;
      out.max_tokens_field = "max_completion_tokens";
    }
  parse_sampling(doc, out);
  parse_stop(doc, out);
  out.n = static_cast<int32_t>(get_int(doc, "n", 1, kMaxChoices).value_or(1));
  parse_logprobs(doc, out);
  parse_streaming(doc, out);
  refuse_unsupported(doc);
  parse_vortex(doc, model, out);
  const int64_t prompts = endpoint == Endpoint::kChatCompletions ? 1
                          : out.prompt_is_tokens                 ? static_cast<int64_t>(out.prompt_tokens.size())
                                                                 : static_cast<int64_t>(out.prompt_texts.size());
  if (prompts * out.n > kMaxSequences)
    throw bad("n", fmt::format("{} prompts × n = {} exceeds {} sequences per request.", prompts, out.n, kMaxSequences));
  return out;
}

std::vector<std::vector<int32_t>> tokenize_prompts(const CompletionParams& params, const Tokenizer* tokenizer,
                                                    const ChatTemplate* chat_template, const ServedModel& model) {
  if (params.endpoint == Endpoint::kCompletions && params.prompt_is_tokens) return params.prompt_tokens;
  if (!tokenizer) throw bad("prompt", "This model has no tokenizer.json: send the prompt as token ids to /v1/completions.");
  std::vector<std::vector<int32_t>> prompts;
  if (params.endpoint == Endpoint::kChatCompletions) {
    if (!chat_template) throw bad("messages", "This model has no chat template: use /v1/completions.");
    ChatTemplateOptions options;
    options.extra_context = params.template_kwargs;
    std::string text;
    try {
      text = chat_template->apply(params.messages, options);
    } catch (const Error& e) {  // the template's own raise_exception, e.g. roles that do not alternate
      throw bad("messages", std::string("The chat template rejected the messages: ") + e.what());
    }
    prompts.push_back(tokenizer->encode(text));
  } else {
    for (const auto& text : params.prompt_texts) prompts.push_back(tokenizer->encode(text));
  }
  for (const auto& ids : prompts) check_token_ids(ids, model);
  return prompts;
}

std::vector<GenerateRequest> build_requests(const CompletionParams& params, const std::vector<std::vector<int32_t>>& prompts,
                                            const ServedModel& model, uint64_t random_seed) {
  const bool chat = params.endpoint == Endpoint::kChatCompletions;
  const std::string prompt_param = chat ? "messages" : "prompt";
  const std::string& max_param = params.max_tokens_field;
  std::vector<GenerateRequest> requests;
  for (const auto& prompt : prompts) {
    const auto length = static_cast<int64_t>(prompt.size());
    if (length >= model.max_context)
      throw ApiError(400, fmt::format("This model's maximum context length is {} tokens. However, your {} resulted in {} tokens.",
                                      model.max_context, chat ? "messages" : "prompt", length),
                     prompt_param, "invalid_request_error", "context_length_exceeded");
    const int64_t room = model.max_context - length;
    if (params.max_tokens && *params.max_tokens > room)
      throw ApiError(400, fmt::format("{} is too large: the prompt has {} tokens and the context is {}, so at most {} can be "
                                      "generated, but {} were requested.", max_param, length, model.max_context, room, *params.max_tokens),
                     max_param, "invalid_request_error", "context_length_exceeded");
    for (int32_t choice = 0; choice < params.n; ++choice) {
      GenerateRequest r;
      r.prompt = prompt;
      r.sampling = params.sampling;
      r.sampling.seed = (params.seed_given ? params.sampling.seed : random_seed) + requests.size();
      r.max_tokens = params.max_tokens.value_or(chat ? room : std::min(kDefaultCompletionTokens, room));
      r.stop_strings = params.stop;
      r.ignore_eos = params.ignore_eos;
      r.logprobs = params.logprobs;
      r.attention = params.attention;
      r.speculate = params.speculate;
      r.gamma = params.gamma;
      requests.push_back(std::move(r));
    }
  }
  return requests;
}

}  // namespace vortex::server
