// libFuzzer target: the flow language's text form (parse_flow) on arbitrary text.
//
// Each input either parses or throws vortex::Error: no crash, sanitizer report, other exception,
// leak or hang. A flow that parses must print (to_text) as a text that parses to the same flow,
// and its scoring passes (flow_stage) must split without error.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "core/error.h"
#include "vortex/flow.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  vortex::Flow flow;
  try {
    flow = vortex::parse_flow(text, "fuzz");
  } catch (const vortex::Error&) {
    return 0;  // rejected: the expected outcome for most inputs
  }
  const std::string printed = vortex::to_text(flow);
  vortex::Flow again;
  try {
    again = vortex::parse_flow(printed, "fuzz");
  } catch (const vortex::Error& e) {
    std::fprintf(stderr, "fuzz_flow_text: to_text gave a text that does not parse: %s\n%s\n", e.what(), printed.c_str());
    std::abort();
  }
  if (!(again == flow)) {
    std::fprintf(stderr, "fuzz_flow_text: to_text does not round-trip:\n%s\n", printed.c_str());
    std::abort();
  }
  for (size_t stage = 0; stage <= flow.stages.size(); ++stage) (void)vortex::flow_stage(flow, stage);
  return 0;
}
