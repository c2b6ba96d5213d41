#include "runtime/serving_engine.h"

#include <cstdio>

#include "core/error.h"

namespace vortex {

bool RequestStream::next(StreamEvent& out, std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  if (!ready_.wait_for(lock, timeout, [&] { return !events_.empty(); })) return false;
  out = std::move(events_.front());
  events_.pop_front();
  return true;
}

bool RequestStream::done() const {
  std::lock_guard lock(mutex_);
  return finished_ == choices_ && events_.empty();
}

void RequestStream::push(StreamEvent event) {
  {
    std::lock_guard lock(mutex_);
    if (event.kind == StreamEvent::Kind::kFinish) ++finished_;
    events_.push_back(std::move(event));
  }
  ready_.notify_all();
}

ServingEngine::ServingEngine(BatchEngine& batch, ServingObserver* observer)
    : batch_(batch), lease_(batch, "a ServingEngine (a server)"), observer_(observer), load_(batch.load()), thread_([this] { run(); }) {}

ServingEngine::~ServingEngine() { shutdown(); }

std::shared_ptr<RequestStream> ServingEngine::submit(std::vector<GenerateRequest> requests) {
  check(!requests.empty(), "internal: a request needs at least one sequence");
  for (const GenerateRequest& request : requests) batch_.validate(request);
  auto stream = std::make_shared<RequestStream>(static_cast<int32_t>(requests.size()));
  {
    std::lock_guard lock(mutex_);
    if (stopping_) throw ShuttingDownError();
    inbox_.push_back({.stream = stream, .requests = std::move(requests), .arrival = Clock::now()});
  }
  wake_.notify_one();
  return stream;
}

void ServingEngine::cancel(const std::shared_ptr<RequestStream>& stream) {
  if (stream->cancelled_.exchange(true)) return;
  {
    std::lock_guard lock(mutex_);
    cancels_.push_back(stream);
  }
  wake_.notify_one();
}

void ServingEngine::shutdown() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_one();
  if (thread_.joinable()) thread_.join();
}

BatchLoad ServingEngine::load() const {
  std::lock_guard lock(mutex_);
  return load_;
}

void ServingEngine::publish_load() {
  BatchLoad load = batch_.load();
  {
    std::lock_guard lock(mutex_);
    load_ = load;
  }
  if (observer_) observer_->on_load(load);
}

// Waits for work; false when the engine should stop (stopping, and nothing left anywhere).
bool ServingEngine::take_inbox(std::vector<Submission>& submissions, std::vector<std::shared_ptr<RequestStream>>& cancels) {
  const bool busy = batch_.has_work();
  std::unique_lock lock(mutex_);
  wake_.wait(lock, [&] { return busy || stopping_ || !inbox_.empty() || !cancels_.empty(); });
  if (stopping_ && !busy && inbox_.empty() && cancels_.empty()) return false;
  submissions.swap(inbox_);
  cancels.swap(cancels_);
  return true;
}

void ServingEngine::run() {
  std::vector<Submission> submissions;
  std::vector<std::shared_ptr<RequestStream>> cancels;
  while (take_inbox(submissions, cancels)) {
    for (const auto& stream : cancels)
      for (SequenceId id : stream->ids_) batch_.cancel(id);
    for (Submission& submission : submissions) admit(submission);
    submissions.clear();
    cancels.clear();
    if (batch_.has_work()) step_once();
    publish_load();
  }
}

// BatchEngine::step() already turns a failed forward into errors for the sequences it touched;
// anything else escaping it must not end the engine thread (std::terminate would take every
// request with it), so it is reported and the loop goes on.
void ServingEngine::step_once() {
  try {
    StepStats stats = batch_.step();
    if (observer_) observer_->on_step(stats);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "vortex: internal error in an engine step: %s\n", e.what());
  }
}

SequenceCallbacks ServingEngine::callbacks_for(const std::shared_ptr<RequestStream>& stream, int32_t choice) {
  return {
      .on_token = [stream, choice](const TokenOutput& token) {
        StreamEvent event;
        event.choice = choice;
        event.token = token;
        stream->push(std::move(event));
      },
      .on_finish = [stream, choice](const SequenceFinish& finish) {
        StreamEvent event;
        event.kind = StreamEvent::Kind::kFinish;
        event.choice = choice;
        event.text = finish.text;
        event.finish_reason = finish.result.finish_reason;
        event.prompt_tokens = finish.result.timing.prompt_tokens;
        event.generated_tokens = finish.result.timing.generated_tokens;
        event.cached_tokens = finish.result.timing.cached_tokens;
        event.error = finish.error;
        stream->push(std::move(event));
      }};
}

void ServingEngine::admit(Submission& submission) {
  const auto& stream = submission.stream;
  if (stream->cancelled_) return;  // the client left before its request reached the batch
  for (size_t i = 0; i < submission.requests.size(); ++i) {
    auto choice = static_cast<int32_t>(i);
    try {
      stream->ids_.push_back(batch_.submit(submission.requests[i], callbacks_for(stream, choice), submission.arrival));
    } catch (const std::exception& e) {  // validated already: only an internal failure lands here
      StreamEvent event;
      event.kind = StreamEvent::Kind::kFinish;
      event.choice = choice;
      event.finish_reason = FinishReason::kStop;
      event.error = std::string("internal: ") + e.what();
      stream->push(std::move(event));
    }
  }
}

}  // namespace vortex
