// The library's own way into an Engine, beside the public API (include/vortex/engine.h): the
// continuous-batching core that generate() runs on, which the CLI's batch, rollout, calibrate and
// serve commands, the Python module and the tests drive step by step, and engines over given
// weights (random-weight benchmarks, tests). Not installed, not for users.
#pragma once

#include <memory>

#include "vortex/engine.h"

namespace vortex {

class BatchEngine;
struct ModelWeights;

struct EngineAccess {
  // One thread at a time may use it (and generate); the server's ServingEngine owns such a thread.
  static BatchEngine& batch(Engine& engine);
  // An engine over given weights, without tokenizer.
  static std::unique_ptr<Engine> from_weights(std::shared_ptr<const ModelWeights> weights, const EngineOptions& options = {});
};

inline BatchEngine& batch_engine(Engine& engine) { return EngineAccess::batch(engine); }

}  // namespace vortex
