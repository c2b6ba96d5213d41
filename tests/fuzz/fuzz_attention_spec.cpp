// libFuzzer target: the attention spec grammar (parse_attention_spec) on arbitrary text, the string
// every command, the server and the Python module take from users.
//
// Each input either parses or throws vortex::Error: no crash, sanitizer report, other exception,
// leak or hang. A spec that parses has sane fields, and its text parses again to the same fields
// (nothing here resolves specs, which would read the files that flow:PATH names).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "core/error.h"
#include "sparse/attention_spec.h"

namespace {

[[noreturn]] void fault(const char* what, const std::string& text) {
  std::fprintf(stderr, "fuzz_attention_spec: %s for '%s'\n", what, text.c_str());
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  vortex::AttentionSpec spec;
  try {
    spec = vortex::parse_attention_spec(text);
  } catch (const vortex::Error&) {
    return 0;  // rejected: the expected outcome for most inputs
  }
  if (spec.budget < -1 || spec.budget_fraction < 0.0 || spec.budget_fraction > 1.0) fault("a budget out of range", text);
  if (spec.sink < 0 || spec.window < 0 || spec.page < 0) fault("a negative sink, window or page", text);
  if (spec.skip_layers_first > spec.skip_layers_last) fault("skip_layers first after last", text);
  if (!(spec.dense_below >= 0.0 && spec.dense_below <= 1.0)) fault("dense_below outside [0, 1]", text);
  if (!(spec.cover >= 0.0 && spec.cover <= 1.0)) fault("cover outside [0, 1]", text);
  if (spec.cover > 0.0 && spec.dense_below > 0.0) fault("both cover and dense_below", text);
  vortex::AttentionSpec again;
  try {
    again = vortex::parse_attention_spec(spec.text);
  } catch (const vortex::Error&) {
    fault("its own text does not parse", text);
  }
  if (again.method != spec.method || again.budget != spec.budget || again.sink != spec.sink || again.window != spec.window ||
      again.flow_name != spec.flow_name || again.expanded != spec.expanded || again.dense_below != spec.dense_below ||
      again.cover != spec.cover || again.rest != spec.rest)
    fault("its text parses to another spec", text);
  return 0;
}
