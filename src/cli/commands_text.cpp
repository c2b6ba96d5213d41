// vortex tokenize | detokenize | template — need only the tokenizer files of a model directory.
#include <fstream>
#include <iostream>
#include <sstream>
#include <memory>

#include "cli/cli.h"
#include "core/error.h"
#include "io/chat_template.h"
#include "io/hf_config.h"
#include "io/tokenizer.h"

namespace vortex::cli {
namespace {

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  check(static_cast<bool>(in), "cannot open {}", path);
  std::ostringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

struct TokenizeArgs { std::string model, text, text_file; bool json = false; bool has_text = false, has_file = false; };
struct DetokenizeArgs { std::string model, ids; bool skip_special = false; bool json = false; };
struct TemplateArgs { std::string model, messages_file, enable_thinking; bool no_generation_prompt = false; };

void run_tokenize(const TokenizeArgs& a) {
  check(a.has_text != a.has_file, "give exactly one of --text and --text-file");
  Tokenizer tokenizer = Tokenizer::load(a.model);
  std::string text = a.text_file.empty() ? a.text : read_text_file(a.text_file);
  std::vector<int32_t> ids = tokenizer.encode(text);
  if (a.json) {
    print_json({{"ids", ids}});
  } else {
    for (size_t i = 0; i < ids.size(); ++i) std::cout << (i ? "," : "") << ids[i];
    std::cout << std::endl;
  }
}

void run_detokenize(const DetokenizeArgs& a) {
  Tokenizer tokenizer = Tokenizer::load(a.model);
  std::vector<int32_t> ids = parse_id_list(a.ids, "--ids");
  for (int32_t id : ids)
    check(id >= 0 && id < tokenizer.vocab_size(), "--ids: token id {} is out of range: the tokenizer has {} ids", id,
          tokenizer.vocab_size());
  std::string text = tokenizer.decode(ids, a.skip_special);
  if (a.json) print_json({{"text", text}});
  else std::cout << text << std::flush;
}

void run_template(const TemplateArgs& a) {
  ChatTemplate chat = ChatTemplate::load(a.model);
  nlohmann::json input = read_json_file(a.messages_file);
  ChatTemplateOptions options;
  options.add_generation_prompt = !a.no_generation_prompt;
  nlohmann::json messages = input;
  if (input.is_object()) {
    check(input.contains("messages"), "{}: expected a list of messages or an object with \"messages\"", a.messages_file);
    messages = input["messages"];
    if (input.contains("tools")) options.tools = input["tools"];
  }
  check(messages.is_array() && !messages.empty(), "{}: messages must be a non-empty list", a.messages_file);
  if (!a.enable_thinking.empty()) {
    check(a.enable_thinking == "true" || a.enable_thinking == "false", "--enable-thinking takes true or false, got '{}'",
          a.enable_thinking);
    options.extra_context["enable_thinking"] = a.enable_thinking == "true";
  }
  std::cout << chat.apply(messages, options) << std::flush;
}

}  // namespace

void add_text_commands(CLI::App& app) {
  auto tok = std::make_shared<TokenizeArgs>();
  auto* t = app.add_subcommand("tokenize", "Text to token ids (special tokens written in the text are recognised)");
  t->add_option("--model", tok->model, "Model or tokenizer directory (tokenizer.json)")->required();
  auto* text = t->add_option("--text", tok->text, "Text to encode");
  auto* file = t->add_option("--text-file", tok->text_file, "File whose contents to encode");
  t->add_flag("--json", tok->json, "Print {\"ids\": [...]}");
  t->callback([tok, text, file] {
    tok->has_text = text->count() > 0;
    tok->has_file = file->count() > 0;
    run_tokenize(*tok);
  });

  auto det = std::make_shared<DetokenizeArgs>();
  auto* d = app.add_subcommand("detokenize", "Token ids to text");
  d->add_option("--model", det->model, "Model or tokenizer directory")->required();
  d->add_option("--ids", det->ids, "Comma-separated token ids")->required();
  d->add_flag("--skip-special", det->skip_special, "Drop special tokens");
  d->add_flag("--json", det->json, "Print {\"text\": ...}");
  d->callback([det] { run_detokenize(*det); });

  auto tpl = std::make_shared<TemplateArgs>();
  auto* p = app.add_subcommand("template", "Render the chat template for a conversation, exactly");
  p->add_option("--model", tpl->model, "Model or tokenizer directory (tokenizer_config.json)")->required();
  p->add_option("--messages-file", tpl->messages_file, "JSON list of messages, or {\"messages\": [...], \"tools\": [...]}")->required();
  p->add_flag("--no-generation-prompt", tpl->no_generation_prompt, "Do not open an assistant turn");
  p->add_option("--enable-thinking", tpl->enable_thinking, "true|false (Qwen3)");
  p->callback([tpl] { run_template(*tpl); });
}

}  // namespace vortex::cli
