// ChatTemplate: finds a model's chat template and renders conversations with the context
// transformers' apply_chat_template builds: messages, tools, documents (always None here),
// add_generation_prompt, the special tokens that are set (bos_token, eos_token), then the caller's
// extra keyword arguments, which override the rest.
//
// Not provided: the other special tokens of special_tokens_map (pad_token, unk_token,
// additional_special_tokens); no common template reads them.
#include "io/chat_template.h"

#include <fstream>
#include <sstream>

#include "core/error.h"

namespace vortex {
namespace {

std::string read_text(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  check(static_cast<bool>(in), "cannot open {}", path.string());
  std::ostringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

// bos_token/eos_token are strings, AddedToken objects {"content": ...}, or null/absent ("").
std::string special_token(const nlohmann::json& config, const char* key,
                          const std::filesystem::path& path) {
  auto it = config.find(key);
  if (it == config.end() || it->is_null()) return "";
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) {
    return (*it)["content"].get<std::string>();
  }
  fail("{}: \"{}\" must be a string, null or an object with a string \"content\"", path.string(), key);
}

// chat_template is a string, or a list of {"name", "template"} of which "default" is used.
std::string pick_template(const nlohmann::json& value, const std::filesystem::path& path) {
  if (value.is_string()) return value.get<std::string>();
  check(value.is_array(), "{}: \"chat_template\" must be a string or a list of {{name, template}}",
        path.string());
  std::string names;
  for (const auto& entry : value) {
    check(entry.is_object() && entry.contains("name") && entry["name"].is_string() &&
              entry.contains("template") && entry["template"].is_string(),
          "{}: every \"chat_template\" entry needs string \"name\" and \"template\"", path.string());
    if (entry["name"] == "default") return entry["template"].get<std::string>();
    names += (names.empty() ? "" : ", ") + entry["name"].get<std::string>();
  }
  fail("{}: \"chat_template\" has no template named \"default\" (has: {})", path.string(), names);
}

template <typename Json>
std::string apply_template(const JinjaTemplate& tmpl, const Json& messages,
                           const ChatTemplateOptions& options, const std::string& bos,
                           const std::string& eos) {
  check(messages.is_array(), "chat template: messages must be a JSON array");
  check(options.extra_context.is_object(), "chat template: extra context must be a JSON object");
  nlohmann::ordered_json context = nlohmann::ordered_json::object();
  context["messages"] = messages;
  context["tools"] = options.tools;
  context["documents"] = nullptr;
  context["add_generation_prompt"] = options.add_generation_prompt;
  if (!bos.empty()) context["bos_token"] = bos;
  if (!eos.empty()) context["eos_token"] = eos;
  for (const auto& [key, value] : options.extra_context.items()) context[key] = value;
  return tmpl.render(context);
}

}  // namespace

ChatTemplate ChatTemplate::load(const std::filesystem::path& dir) {
  const auto config_path = dir / "tokenizer_config.json";
  const auto jinja_path = dir / "chat_template.jinja";
  nlohmann::json config = nlohmann::json::object();
  if (std::filesystem::exists(config_path)) {
    try {
      config = nlohmann::json::parse(read_text(config_path));
    } catch (const nlohmann::json::exception& e) {
      fail("{}: invalid JSON: {}", config_path.string(), e.what());
    }
    check(config.is_object(), "{}: expected a JSON object", config_path.string());
  }
  std::string source;
  if (std::filesystem::exists(jinja_path)) {
    source = read_text(jinja_path);  // transformers prefers the separate file when both exist
  } else if (config.contains("chat_template") && !config["chat_template"].is_null()) {
    source = pick_template(config["chat_template"], config_path);
  } else {
    fail("{}: no chat template: neither tokenizer_config.json \"chat_template\" nor "
         "chat_template.jinja", dir.string());
  }
  return ChatTemplate(std::move(source), special_token(config, "bos_token", config_path),
                      special_token(config, "eos_token", config_path));
}

ChatTemplate::ChatTemplate(std::string source, std::string bos_token, std::string eos_token)
    : template_(std::make_shared<const JinjaTemplate>(source)),
      bos_token_(std::move(bos_token)),
      eos_token_(std::move(eos_token)) {}

std::string ChatTemplate::apply(const nlohmann::json& messages,
                                const ChatTemplateOptions& options) const {
  return apply_template(*template_, messages, options, bos_token_, eos_token_);
}

std::string ChatTemplate::apply(const nlohmann::ordered_json& messages,
                                const ChatTemplateOptions& options) const {
  return apply_template(*template_, messages, options, bos_token_, eos_token_);
}

}  // namespace vortex
