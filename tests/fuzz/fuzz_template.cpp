// libFuzzer target: the Jinja interpreter behind chat templates on arbitrary template text.
//
// Every input is parsed and, when it parses, rendered with a small fixed chat context. Each must
// either succeed or throw vortex::Error: no crash, sanitizer report, other exception, leak or
// hang. Hostile templates (deep nesting, recursion, huge loops or strings) must hit the
// interpreter's limits (see src/io/jinja_internal.h) and fail with an Error quickly.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/chat_template.h"

namespace {

const nlohmann::ordered_json& context() {
  static const nlohmann::ordered_json ctx = nlohmann::ordered_json::parse(R"({
    "messages": [
      {"role": "system", "content": "You are helpful."},
      {"role": "user", "content": "What's the weather in Paris? é😀"},
      {"role": "assistant", "content": "<think>\nplan\n</think>\n\nchecking",
       "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
      {"role": "tool", "content": "{\"temp\": 21}"},
      {"role": "assistant", "content": "21C", "reasoning_content": "done"}
    ],
    "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather.",
               "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}],
    "documents": null, "add_generation_prompt": true, "bos_token": "<s>", "eos_token": "</s>",
    "n": 3, "f": 2.5, "s": "  text  ", "b": false, "l": [1, "a", null, [2]], "d": {"k": "v", "n": {"x": 1}}
  })");
  return ctx;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string source(reinterpret_cast<const char*>(data), size);
  try {
    vortex::JinjaTemplate tmpl(source);
    std::string out = tmpl.render(context());
    if (out.size() > (16u << 20)) {
      std::fprintf(stderr, "fuzz_template: output of %zu bytes passed the limit\n", out.size());
      std::abort();
    }
  } catch (const vortex::Error&) {
    // Rejected input: the expected outcome for most of the fuzzer's templates.
  }
  return 0;
}
