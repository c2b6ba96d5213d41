// Where a run's wall time went, step by step: a run loop times each BatchEngine::step() and adds
// it here; text() and json() report the steps by kind next to the backend's ForwardCounters.
// Kinds: "decode" (one token per sequence, the steps CUDA graphs replay), "dense_pass" (a rollout's
// dense log-prob pass is among the chunks) and "prefill" (every other step: prompt chunks, alone
// or beside decode tokens). Per kind: steps, tokens, wall ms, and the forward pass's share of it
// (the rest is the engine's host work: scheduling, sampling bookkeeping, callbacks).
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "backend/backend.h"
#include "runtime/batch_engine.h"

namespace vortex {

class StepProfile {
 public:
  void add(const StepStats& step, double wall_ms);
  nlohmann::json json(const ForwardCounters& backend) const;
  std::string text(const ForwardCounters& backend) const;  // a few lines for stderr

 private:
  struct Kind {
    int64_t steps = 0, tokens = 0;
    double wall_ms = 0.0, forward_ms = 0.0;
  };
  Kind decode_, dense_pass_, prefill_;
};

}  // namespace vortex
