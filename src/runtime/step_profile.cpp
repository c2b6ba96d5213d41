#include "runtime/step_profile.h"

#include <fmt/format.h>

namespace vortex {

void StepProfile::add(const StepStats& step, double wall_ms) {
  if (step.chunks == 0) return;
  const Index index = step.dense_pass_tokens > 0                  ? kDensePass
                      : step.prompt_tokens > 0                     ? kPrefill
                      : step.drafted > 0 && step.verifies == 0     ? kDraft
                      : step.verifies > 0 && step.drafted == 0     ? kVerify
                      : step.tokens == step.chunks                 ? kDecode
                                                                   : kOther;
  kinds_[index].add({.steps = 1, .tokens = step.tokens, .generated = step.sampled, .wall_ms = wall_ms, .forward_ms = step.forward_ms});
}

void StepProfile::Kind::add(const Kind& other) {
  steps += other.steps, tokens += other.tokens, generated += other.generated;
  wall_ms += other.wall_ms, forward_ms += other.forward_ms;
}

nlohmann::json StepProfile::Kind::json() const {
  return {{"steps", steps},
          {"tokens", tokens},
          {"generated", generated},
          {"wall_ms", wall_ms},
          {"forward_ms", forward_ms},
          {"ms_per_step", steps > 0 ? wall_ms / static_cast<double>(steps) : 0.0},
          {"generated_per_s", wall_ms > 0 ? 1e3 * static_cast<double>(generated) / wall_ms : 0.0}};
}

StepProfile::Kind StepProfile::decode_only() const {
  Kind total;
  for (int i = 0; i < kKinds; ++i)
    if (i != kPrefill) total.add(kinds_[i]);
  return total;
}

nlohmann::json StepProfile::json(const ForwardCounters& b) const {
  nlohmann::json j;
  for (int i = 0; i < kKinds; ++i) j[kNames[i]] = kinds_[i].json();
  j["decode_only"] = decode_only().json();
  j["backend"] = {{"forwards", b.forwards}, {"replayed", b.replayed}, {"captured", b.captured}, {"eager", b.eager},
                  {"graph_resets", b.graph_resets}, {"host_ms", b.host_ms}, {"launch_ms", b.launch_ms}, {"sample_ms", b.sample_ms}};
  return j;
}

std::string StepProfile::text(const ForwardCounters& b) const {
  std::string out = "steps        count     tokens  generated    wall ms  forward ms\n";
  auto line = [&out](const char* name, const Kind& k) {
    if (k.steps > 0)
      out += fmt::format("  {:<10} {:>6} {:>10} {:>10} {:>10.1f} {:>11.1f}\n", name, k.steps, k.tokens, k.generated, k.wall_ms, k.forward_ms);
  };
  for (int i = 0; i < kKinds; ++i) line(kNames[i], kinds_[i]);
  if (b.forwards > 0)
    out += fmt::format("forward passes: {} ({} graph replays, {} captures, {} eager, {} graph resets); host {:.1f} ms, "
                       "launch {:.1f} ms, launch to tokens {:.1f} ms\n",
                       b.forwards, b.replayed, b.captured, b.eager, b.graph_resets, b.host_ms, b.launch_ms, b.sample_ms);
  return out;
}

}  // namespace vortex
