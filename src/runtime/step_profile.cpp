#include "runtime/step_profile.h"

#include <fmt/format.h>

namespace vortex {

void StepProfile::add(const StepStats& step, double wall_ms) {
  if (step.chunks == 0) return;
  Kind& kind = step.dense_pass_tokens > 0 ? dense_pass_ : step.tokens == step.chunks ? decode_ : prefill_;
  ++kind.steps;
  kind.tokens += step.tokens;
  kind.wall_ms += wall_ms;
  kind.forward_ms += step.forward_ms;
}

nlohmann::json StepProfile::json(const ForwardCounters& b) const {
  auto kind = [](const Kind& k) {
    return nlohmann::json{{"steps", k.steps}, {"tokens", k.tokens}, {"wall_ms", k.wall_ms}, {"forward_ms", k.forward_ms}};
  };
  return {{"decode", kind(decode_)},
          {"dense_pass", kind(dense_pass_)},
          {"prefill", kind(prefill_)},
          {"backend",
           {{"forwards", b.forwards}, {"replayed", b.replayed}, {"captured", b.captured}, {"eager", b.eager},
            {"graph_resets", b.graph_resets}, {"host_ms", b.host_ms}, {"launch_ms", b.launch_ms}, {"sample_ms", b.sample_ms}}}};
}

std::string StepProfile::text(const ForwardCounters& b) const {
  std::string out = "steps        count     tokens    wall ms  forward ms\n";
  auto line = [&out](const char* name, const Kind& k) {
    if (k.steps > 0) out += fmt::format("  {:<10} {:>6} {:>10} {:>10.1f} {:>11.1f}\n", name, k.steps, k.tokens, k.wall_ms, k.forward_ms);
  };
  line("decode", decode_);
  line("dense_pass", dense_pass_);
  line("prefill", prefill_);
  if (b.forwards > 0)
    out += fmt::format("forward passes: {} ({} graph replays, {} captures, {} eager, {} graph resets); host {:.1f} ms, "
                       "launch {:.1f} ms, launch to tokens {:.1f} ms\n",
                       b.forwards, b.replayed, b.captured, b.eager, b.graph_resets, b.host_ms, b.launch_ms, b.sample_ms);
  return out;
}

}  // namespace vortex
