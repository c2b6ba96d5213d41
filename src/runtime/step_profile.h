// Where a run's wall time went, step by step: a run loop times each BatchEngine::step() and adds
// it here; text() and json() report the steps by kind next to the backend's ForwardCounters.
// Kinds, the first that applies: "dense_pass" (a rollout's dense log-prob pass is among the
// chunks), "prefill" (prompt tokens among the chunks, alone or beside decode tokens), "draft"
// (self-speculation's draft tokens and no verify chunk), "verify" (verify chunks and no draft),
// "decode" (one token per sequence: the steps CUDA graphs replay), "other" (the rest: drafts and
// verify chunks together, recomputed tokens after a preemption). Per kind: steps, tokens through
// the forward, tokens generated (delivered to requests), wall ms, and the forward pass's share of
// it (the rest is the engine's host work: scheduling, sampling bookkeeping, callbacks). The
// decode-only total is every kind but prefill: the rate at which tokens come once prompts are in.
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
    int64_t steps = 0, tokens = 0, generated = 0;
    double wall_ms = 0.0, forward_ms = 0.0;
    void add(const Kind& other);
    nlohmann::json json() const;
  };
  static constexpr const char* kNames[] = {"decode", "draft", "verify", "dense_pass", "prefill", "other"};
  enum Index { kDecode, kDraft, kVerify, kDensePass, kPrefill, kOther, kKinds };
  Kind kinds_[kKinds];
  Kind decode_only() const;  // every kind but prefill
};

}  // namespace vortex
