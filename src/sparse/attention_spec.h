// The attention spec string: one grammar for the CLI, the server and benchmarks (DESIGN.md).
//
//   dense
//   quest:budget=2048,page=16,sink=16,window=64,skip_layers=0-1
//   streaming:sink=16,window=1024
//   centroid:budget=25%           (a fraction of the sequence length; also budget=0.25)
//   flow:flows/my.flow,budget=1024
//   schedule:table=schedules/grow.json
//   auto:budget=1024              (the recommended sparse attention; see expand_auto)
//   lsh:k=10,l=150,sink=4,window=64  (MagicPIG's LSH-sampled attention, CPU backend; sparse/lsh.h)
//
// Methods: `dense`, every built-in flow by name (streaming, quest, quest_gqa, centroid,
// centroid_gqa, meanstd, h2o, oracle — src/sparse/builtin_flows.h), `flow:PATH` (a .flow file),
// and `schedule:table=PATH` (a JSON budget table by 2K-token position bins, which names the flow;
// see src/sparse/sparse_attention.h), and `auto:budget=N` (the recommended sparse attention: a
// built-in flow with the sink, window and dense layers the accuracy sweeps chose, docs/accuracy.md).
// parse_attention_spec() checks the grammar and each key/value
// and throws a vortex::Error naming the spec and the bad part; resolving it for running (loading
// the flow file or table, checking the page size) is resolve_attention()'s job.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace vortex {

enum class AttentionMethod { kDense, kFlow, kSchedule };

// What the pages a sparse query does not attend contribute (`rest=`, docs/accuracy.md): nothing
// (kDrop, the default: the softmax renormalises over the attended keys), or each such page's
// estimated softmax mass, carrying the page's mean value, added to the softmax's numerator and
// denominator. The mass: P·exp(q·k̄) with k̄ the page's mean key (kMean), Σ_t exp(q·k̂_t) over its
// keys in int4 (kProxy: the keys `auto` ranks with), or Σ_t exp(q·k_t) over its exact keys (kExact:
// reads every key, a reference for the estimates). CPU backend.
enum class RestEstimate { kDrop, kMean, kProxy, kExact };
std::string_view rest_name(RestEstimate rest);

// MagicPIG's LSH sampling (`lsh:k=10,l=150,sink=4,window=64`, sparse/lsh.h): SimHash with `bits`
// (K) bits in each of `tables` (L) tables; off when bits is 0.
struct LshParams {
  int32_t bits = 0;
  int32_t tables = 0;
  uint64_t seed = 0;  // the hyperplanes' seed
  bool on() const { return bits > 0; }
};

struct AttentionSpec {
  AttentionMethod method = AttentionMethod::kDense;
  std::string text = "dense";  // the spec as written, for messages and metrics
  std::string name = "dense";  // the method as written: dense, quest, …, flow, schedule
  std::string flow_name;       // kFlow: a built-in flow's name, or empty with flow_path
  std::string flow_path;       // kFlow: the .flow file of flow:PATH
  std::string table_path;      // kSchedule: the budget table
  int64_t budget = -1;           // tokens selected per (sequence, kv head) beyond sink and window; -1 = unset
  double budget_fraction = 0.0;  // > 0: the budget is this fraction of the sequence length instead
  int64_t page = 0;              // selection granularity in tokens; 0 = the KV page size
  int64_t sink = 0;              // always-kept tokens at the start
  int64_t window = 0;            // always-kept most recent tokens
  int64_t skip_layers_first = -1;  // layers [first, last] stay dense; -1 = none
  int64_t skip_layers_last = -1;
  bool budget_set() const { return budget >= 0 || budget_fraction > 0.0; }
  LshParams lsh;                   // lsh: the estimator's parameters (the flow is streaming's: sink and window)
  RestEstimate rest = RestEstimate::kDrop;
  // dense_below=F: a sparse query (token, layer, kv head) whose attended pages hold less than F of
  // its estimated softmax mass, for any of the group's query heads, attends every page instead.
  // The mass of the pages left out is estimated as `rest` does (int4 key proxies when rest is
  // drop). 0 = never. CPU backend.
  double dense_below = 0.0;
  // cover=F: where the attended pages hold less than F of a sparse query's estimated mass (for any
  // query head of the group), the left-out pages with the largest estimated masses are added until
  // they hold F (estimated as dense_below does); dense_below's all-or-nothing made gradual. 0 =
  // never; not with dense_below. CPU backend.
  double cover = 0.0;
  // `auto`: the spec it expanded to (e.g. "proxy:budget=512,sink=16,window=64"); empty otherwise.
  std::string expanded;
};

// What `auto` expands to: the flow and settings docs/accuracy.md's sweeps chose, for this budget.
struct AutoChoice {
  std::string flow;             // a built-in flow
  int64_t sink = 0, window = 0;
  int64_t skip_layers_first = -1, skip_layers_last = -1;
};
AutoChoice auto_choice(const AttentionSpec& budget_only);

// Parses and validates a spec; throws vortex::Error naming the spec and the bad part.
AttentionSpec parse_attention_spec(std::string_view text);

}  // namespace vortex
