// The attention spec string: one grammar for the CLI, the server and benchmarks (DESIGN.md).
//
//   dense
//   quest:budget=2048,page=16,sink=16,window=64,skip_layers=0-1
//   streaming:sink=16,window=1024
//   flow:flows/my.flow,budget=1024
//   schedule:table=schedules/grow.json
//
// parse_attention_spec() checks the grammar, the method name and each key/value, and throws a
// vortex::Error naming what is wrong. Which methods the engine can run is a separate question:
// require_available_attention() answers it (today only `dense`), so the sparse-attention work
// extends that function and the struct, not the callers.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace vortex {

enum class AttentionMethod { kDense, kQuest, kStreaming, kFlow, kSchedule };

struct AttentionSpec {
  AttentionMethod method = AttentionMethod::kDense;
  std::string text = "dense";  // the spec as written, for messages and metrics
  int64_t budget = 0;          // tokens attended per (sequence, kv head); 0 = unset
  int64_t page = 0;            // selection granularity in tokens; 0 = the KV page size
  int64_t sink = 0;            // always-kept tokens at the start
  int64_t window = 0;          // always-kept most recent tokens
  int64_t skip_layers_first = -1;  // layers [first, last] stay dense; -1 = none
  int64_t skip_layers_last = -1;
  std::string flow_path;       // flow: the .flow file
  std::string table_path;      // schedule: the budget table
};

const char* attention_method_name(AttentionMethod method);  // "dense", "quest", ...

// Parses and validates a spec; throws vortex::Error naming the spec and the bad part.
AttentionSpec parse_attention_spec(std::string_view text);

// Throws vortex::Error ("attention 'quest' is not available yet") for methods the engine cannot
// run in this build.
void require_available_attention(const AttentionSpec& spec);

}  // namespace vortex
