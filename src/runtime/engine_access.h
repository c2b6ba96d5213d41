// The library's own way into an Engine, beside the public API (include/vortex/engine.h): the
// continuous-batching core that generate() runs on, which the CLI's batch, rollout, calibrate and
// serve commands, the Python module and the tests drive step by step; the model config, tokenizer
// and chat template as the internal types (the server, the eval harness and the CLI need more of
// them than the public text API offers); and engines over given weights (random-weight serving and
// benchmarks, tests). Not installed, not for users.
#pragma once

#include <memory>

#include "vortex/engine.h"

namespace vortex {

class BatchEngine;
class ChatTemplate;
struct ModelConfig;
struct ModelWeights;
class Tokenizer;

struct EngineAccess {
  // One thread at a time may use it (and generate); the server's ServingEngine owns such a thread.
  static BatchEngine& batch(Engine& engine);
  static const ModelConfig& config(const Engine& engine);
  static const Tokenizer* tokenizer(const Engine& engine);         // null without tokenizer.json
  static const ChatTemplate* chat_template(const Engine& engine);  // null without a chat template
  // The chat template, or a vortex::Error saying why there is none (absent, or failed to parse).
  static const ChatTemplate& require_chat_template(const Engine& engine);
  static const Tokenizer& require_tokenizer(const Engine& engine);  // throws a clear Error when absent
  // An engine over given weights, without tokenizer.
  static std::unique_ptr<Engine> from_weights(std::shared_ptr<const ModelWeights> weights, const EngineOptions& options = {});
};

inline BatchEngine& batch_engine(Engine& engine) { return EngineAccess::batch(engine); }

}  // namespace vortex
