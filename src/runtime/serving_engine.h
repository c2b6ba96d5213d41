// Many threads, one engine: HTTP threads submit requests and read their token streams; one engine
// thread owns the BatchEngine and steps it. Requests enter through a locked inbox and join the
// running batch at the next step boundary; a cancelled stream's sequences leave it there too (their
// pages return to the pool before the next forward).
//
// Threading contract: submit(), cancel(), load() and RequestStream::next() are safe from any
// thread; everything that touches the BatchEngine runs on the engine thread. Nothing the engine
// thread does blocks on an HTTP client: events go into per-stream queues.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/error.h"
#include "runtime/batch_engine.h"

namespace vortex {

struct StreamEvent {
  enum class Kind { kToken, kFinish };
  Kind kind = Kind::kToken;
  int32_t choice = 0;         // which of the stream's sequences
  TokenOutput token;          // kToken
  std::string text;           // kFinish: text released at the end
  FinishReason finish_reason = FinishReason::kLength;  // kFinish
  int64_t prompt_tokens = 0, generated_tokens = 0;     // kFinish
  int64_t cached_tokens = 0;  // kFinish: prompt tokens taken from the prefix cache
  std::string error;          // kFinish: non-empty after an internal failure
};

// The events of one request (its n choices), in the order the engine produced them.
class RequestStream {
 public:
  explicit RequestStream(int32_t choices) : choices_(choices) {}
  // Waits up to `timeout` for the next event; false when none came (check done()).
  bool next(StreamEvent& out, std::chrono::milliseconds timeout);
  bool done() const;  // every choice finished and every event taken
  int32_t choices() const { return choices_; }

 private:
  friend class ServingEngine;
  void push(StreamEvent event);

  mutable std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<StreamEvent> events_;
  const int32_t choices_;
  int32_t finished_ = 0;
  std::atomic<bool> cancelled_{false};
  std::vector<SequenceId> ids_;  // engine thread only
};

// Receives engine statistics on the engine thread (metrics); must not block.
class ServingObserver {
 public:
  virtual ~ServingObserver() = default;
  virtual void on_step(const StepStats& stats) = 0;
  virtual void on_load(const BatchLoad& load) = 0;
};

// submit() after shutdown() began: the request was fine, the server is going away (HTTP 503).
class ShuttingDownError : public Error {
 public:
  ShuttingDownError() : Error("the server is shutting down") {}
};

class ServingEngine {
 public:
  ServingEngine(BatchEngine& batch, ServingObserver* observer);
  ~ServingEngine();  // shutdown()

  // Validates every request on the calling thread (throws vortex::Error naming the field), then
  // queues them as one stream whose choice i is requests[i].
  std::shared_ptr<RequestStream> submit(std::vector<GenerateRequest> requests);
  // Idempotent. The stream's sequences leave the batch and free their pages at the next step boundary.
  void cancel(const std::shared_ptr<RequestStream>& stream);
  // Lets every queued and running request finish, then stops the engine thread. Later submits throw.
  void shutdown();
  BatchLoad load() const;

 private:
  struct Submission {
    std::shared_ptr<RequestStream> stream;
    std::vector<GenerateRequest> requests;
    Clock::time_point arrival;
  };
  void run();
  bool take_inbox(std::vector<Submission>& submissions, std::vector<std::shared_ptr<RequestStream>>& cancels);
  void admit(Submission& submission);
  void step_once();
  SequenceCallbacks callbacks_for(const std::shared_ptr<RequestStream>& stream, int32_t choice);
  void publish_load();

  BatchEngine& batch_;
  BatchEngine::Lease lease_;  // for the server's life: Engine::generate and score are refused meanwhile
  ServingObserver* observer_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::vector<Submission> inbox_;
  std::vector<std::shared_ptr<RequestStream>> cancels_;
  bool stopping_ = false;
  BatchLoad load_;
  std::thread thread_;  // last: starts after every member above exists
};

}  // namespace vortex
