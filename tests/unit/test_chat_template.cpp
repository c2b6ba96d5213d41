// Chat templates end to end: the real Qwen3 template (.deps/tokenizers/qwen3, fetched by
// scripts/setup) and Meta's Llama-3.1 template, against transformers.
// tests/data/templates/llama31_chat_template.jinja is the chat_template of
// meta-llama/Llama-3.1-8B-Instruct's tokenizer_config.json (the revision with builtin_tools and
// `tool_call.arguments | items`), byte for byte.
//
// chat_golden.json holds transformers' apply_chat_template output for every case of
// tools/golden/template_cases.json; the pinned strings below were rendered for the same cases by
// Python jinja2 set up as transformers sets it up, so they check the engine before goldens exist.
#include <fstream>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "common/test_util.h"
#include "core/error.h"
#include "io/chat_template.h"

namespace vortex {
namespace {

using nlohmann::ordered_json;

constexpr char kQwen3SystemUser[] = R"j(<|im_start|>system
You are a helpful assistant.<|im_end|>
<|im_start|>user
What is 2+2?<|im_end|>
<|im_start|>assistant
)j";
constexpr char kQwen3ThinkingFalse[] = R"j(<|im_start|>user
Quick: capital of France?<|im_end|>
<|im_start|>assistant
<think>

</think>

)j";
constexpr char kQwen3ToolCall[] = R"j(<|im_start|>system
# Tools

You may call one or more functions to assist with the user query.

You are provided with function signatures within <tools></tools> XML tags:
<tools>
{"type": "function", "function": {"name": "get_weather", "description": "Get the current weather for a city.", "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City name, e.g. Paris"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, "required": ["city"]}}}
</tools>

For each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:
<tool_call>
{"name": <function-name>, "arguments": <args-json-object>}
</tool_call><|im_end|>
<|im_start|>user
Weather in Paris?<|im_end|>
<|im_start|>assistant
<tool_call>
{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}
</tool_call><|im_end|>
<|im_start|>user
<tool_response>
{"temperature": 21, "condition": "sunny"}
</tool_response><|im_end|>
<|im_start|>assistant
)j";
constexpr char kQwen3MultiStep[] = R"j(<|im_start|>system
# Tools

You may call one or more functions to assist with the user query.

You are provided with function signatures within <tools></tools> XML tags:
<tools>
{"type": "function", "function": {"name": "get_weather", "description": "Get the current weather for a city.", "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City name, e.g. Paris"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, "required": ["city"]}}}
</tools>

For each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:
<tool_call>
{"name": <function-name>, "arguments": <args-json-object>}
</tool_call><|im_end|>
<|im_start|>user
Is it warmer in Paris or Rome?<|im_end|>
<|im_start|>assistant
<think>
I need both temperatures.
</think>

<tool_call>
{"name": "get_weather", "arguments": {"city": "Paris"}}
</tool_call><|im_end|>
<|im_start|>user
<tool_response>
21C
</tool_response><|im_end|>
<|im_start|>assistant
<think>
Now Rome.
</think>

<tool_call>
{"name": "get_weather", "arguments": {"city": "Rome"}}
</tool_call><|im_end|>
<|im_start|>user
<tool_response>
25C
</tool_response><|im_end|>
<|im_start|>assistant
<think>
25 > 21.
</think>

Rome is warmer (25C vs 21C).<|im_end|>
)j";
constexpr char kLlama31ToolCall[] = R"j(<|begin_of_text|><|start_header_id|>system<|end_header_id|>

Environment: ipython
Cutting Knowledge Date: December 2023
Today Date: 26 Jul 2024

You are a helpful assistant.<|eot_id|><|start_header_id|>user<|end_header_id|>

Given the following functions, please respond with a JSON for a function call with its proper arguments that best answers the given prompt.

Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.Do not use variables.

{
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {
                    "type": "string",
                    "description": "City name, e.g. Paris"
                },
                "unit": {
                    "type": "string",
                    "enum": [
                        "celsius",
                        "fahrenheit"
                    ]
                }
            },
            "required": [
                "city"
            ]
        }
    }
}

Weather in Paris?<|eot_id|><|start_header_id|>assistant<|end_header_id|>

{"name": "get_weather", "parameters": {"city": "Paris", "unit": "celsius"}}<|eot_id|><|start_header_id|>ipython<|end_header_id|>

"21C, sunny"<|eot_id|><|start_header_id|>assistant<|end_header_id|>

)j";
constexpr char kLlama31BuiltinTools[] = R"j(<|begin_of_text|><|start_header_id|>system<|end_header_id|>

Environment: ipython
Tools: brave_search, wolfram_alpha

Cutting Knowledge Date: December 2023
Today Date: 26 Jul 2024

You are a helpful assistant.<|eot_id|><|start_header_id|>user<|end_header_id|>

Search for the tallest building.<|eot_id|><|start_header_id|>assistant<|end_header_id|>

<|python_tag|>brave_search.call(query="tallest building")<|eom_id|><|start_header_id|>ipython<|end_header_id|>

"Burj Khalifa, 828 m"<|eot_id|><|start_header_id|>assistant<|end_header_id|>

)j";

const ChatTemplate& qwen3() {
  static const ChatTemplate tmpl = ChatTemplate::load(test::deps_dir() / "tokenizers" / "qwen3");
  return tmpl;
}

const ChatTemplate& llama31() {
  static const ChatTemplate tmpl(
      test::read_file(test::data_dir() / "templates" / "llama31_chat_template.jinja"),
      "<|begin_of_text|>", "<|eot_id|>");
  return tmpl;
}

// ordered_json throughout: tool schemas must keep their key order, as Python dicts do.
std::string apply_case(const ordered_json& c) {
  ChatTemplateOptions options;
  options.add_generation_prompt = c.at("add_generation_prompt").get<bool>();
  options.tools = c.at("tools");
  options.extra_context = c.at("extra");
  const ChatTemplate& tmpl = c.at("template") == "qwen3" ? qwen3() : llama31();
  return tmpl.apply(c.at("messages"), options);
}

const ordered_json& case_inputs() {
  static const ordered_json cases =
      ordered_json::parse(test::read_file(test::source_dir() / "tools" / "golden" / "template_cases.json"))
          .at("cases");
  return cases;
}

const ordered_json& find_case(const std::string& name) {
  for (const auto& c : case_inputs()) {
    if (c.at("name") == name) return c;
  }
  throw std::runtime_error("no case named " + name);
}

TEST(ChatTemplate, PinnedOutputsOfJinja2) {
  struct {
    const char* name;
    const char* want;
  } cases[] = {
      {"qwen3_system_user", kQwen3SystemUser},
      {"qwen3_thinking_false", kQwen3ThinkingFalse},
      {"qwen3_tool_call_dict_args", kQwen3ToolCall},
      {"qwen3_multi_step_tools", kQwen3MultiStep},
      {"llama31_tool_call_and_ipython", kLlama31ToolCall},
      {"llama31_builtin_tools", kLlama31BuiltinTools},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    EXPECT_EQ(apply_case(find_case(c.name)), c.want);
  }
}

// Fails, rather than skips, without the golden file: it is what proves byte identity with
// transformers.
TEST(ChatTemplate, MatchesTransformersGoldens) {
  const auto path = test::data_dir() / "templates" / "chat_golden.json";
  ASSERT_TRUE(std::filesystem::exists(path))
      << path << " is missing: render tools/golden/template_cases.json with transformers' "
      << "apply_chat_template (tokenize=False) into {\"cases\": [{...case, \"expected\"}]}";
  const ordered_json golden = ordered_json::parse(test::read_file(path)).at("cases");
  ASSERT_EQ(golden.size(), case_inputs().size()) << "goldens are stale: re-generate them";
  for (size_t i = 0; i < golden.size(); ++i) {
    const ordered_json& c = golden[i];
    SCOPED_TRACE(c.value("name", std::to_string(i)));
    for (const char* key : {"template", "messages", "tools", "add_generation_prompt", "extra"}) {
      EXPECT_EQ(c.at(key), case_inputs()[i].at(key)) << "goldens are stale: " << key << " differs";
    }
    EXPECT_EQ(apply_case(c), c.at("expected").get<std::string>());
  }
}

TEST(ChatTemplate, ToolSchemaKeysKeepTheirOrder) {
  ChatTemplateOptions options;
  options.tools = ordered_json::parse(
      R"([{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}])");
  std::string out = qwen3().apply(ordered_json::parse(R"([{"role": "user", "content": "hi"}])"), options);
  EXPECT_NE(out.find(R"({"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}})"),
            std::string::npos)
      << out;
}

TEST(ChatTemplate, AcceptsSortedJsonToo) {
  ChatTemplateOptions options;
  options.add_generation_prompt = false;
  options.extra_context = nlohmann::json{{"enable_thinking", false}};
  auto messages = nlohmann::json::parse(R"([{"role": "user", "content": "hi"}])");
  EXPECT_EQ(qwen3().apply(messages, options), "<|im_start|>user\nhi<|im_end|>\n");
}

TEST(ChatTemplate, TemplateErrorsSurfaceTheirMessage) {
  ChatTemplateOptions options;
  options.tools = ordered_json::parse(R"([{"type": "function", "function": {"name": "f"}}])");
  auto only_system = ordered_json::parse(R"([{"role": "system", "content": "s"}])");
  try {
    llama31().apply(only_system, options);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("Cannot put tools in the first user message"),
              std::string::npos) << e.what();
  }
  auto two_calls = ordered_json::parse(R"([{"role": "user", "content": "u"},
      {"role": "assistant", "tool_calls": [{"function": {"name": "a", "arguments": {}}},
                                           {"function": {"name": "b", "arguments": {}}}]}])");
  EXPECT_THROW(llama31().apply(two_calls, ChatTemplateOptions{}), Error);
  EXPECT_THROW(qwen3().apply(ordered_json::object(), ChatTemplateOptions{}), Error);
}

// ---- loading -----------------------------------------------------------------------------------

void write(const std::filesystem::path& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

std::string render_loaded(const std::filesystem::path& dir) {
  return ChatTemplate::load(dir).apply(ordered_json::parse(R"([{"role": "user", "content": "x"}])"),
                                       ChatTemplateOptions{});
}

TEST(ChatTemplateLoad, TemplateListPicksDefaultAndTokensMayBeObjects) {
  auto dir = test::scratch_dir("chat_template_list");
  write(dir / "tokenizer_config.json", R"({
    "bos_token": {"__type": "AddedToken", "content": "<s>", "lstrip": false},
    "eos_token": null,
    "chat_template": [{"name": "tool_use", "template": "tools!"},
                      {"name": "default", "template": "{{ bos_token }}|{{ eos_token is defined }}|{{ messages[0].content }}"}]
  })");
  EXPECT_EQ(render_loaded(dir), "<s>|False|x");
}

TEST(ChatTemplateLoad, JinjaFileTakesPrecedence) {
  auto dir = test::scratch_dir("chat_template_file");
  write(dir / "tokenizer_config.json", R"({"eos_token": "</s>", "chat_template": "from config"})");
  write(dir / "chat_template.jinja", "from file {{ eos_token }}\n");
  EXPECT_EQ(render_loaded(dir), "from file </s>");
}

TEST(ChatTemplateLoad, Qwen3HasNoBosToken) {
  // tokenizer_config.json's bos_token is null, so, as in transformers, it is undefined.
  EXPECT_EQ(ChatTemplate(std::string("{{ bos_token is defined }}"), "", "<|im_end|>")
                .apply(ordered_json::array(), ChatTemplateOptions{}),
            "False");
  EXPECT_EQ(qwen3().apply(ordered_json::parse(R"([{"role": "user", "content": "q"}])"), ChatTemplateOptions{}),
            "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n");
}

TEST(ChatTemplateLoad, ErrorsNameTheFile) {
  auto dir = test::scratch_dir("chat_template_errors");
  auto expect_error = [&](const std::string& config, const std::string& text) {
    write(dir / "tokenizer_config.json", config);
    try {
      ChatTemplate::load(dir);
      ADD_FAILURE() << "no error for " << config;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(text), std::string::npos) << e.what();
    }
  };
  expect_error(R"({"eos_token": "x"})", "no chat template");
  expect_error(R"({"chat_template": [{"name": "rag", "template": "r"}]})", "no template named \"default\" (has: rag)");
  expect_error(R"({"chat_template": 3})", "must be a string or a list");
  expect_error(R"({"chat_template": "x", "bos_token": 5})", "\"bos_token\" must be a string");
  expect_error("{not json", "tokenizer_config.json: invalid JSON");
  expect_error(R"({"chat_template": "{% if x %}"})", "unclosed 'if'");
}

}  // namespace
}  // namespace vortex
