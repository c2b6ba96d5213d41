#include "runtime/batch_engine.h"

#include <algorithm>
#include <mutex>
#include <optional>

#include "core/error.h"
#include "io/hf_config.h"
#include "sparse/attention_spec.h"
#include "sparse/page_selection.h"
#include "sparse/sparse_attention.h"

namespace vortex {

BatchEngine::BatchEngine(ModelBackend& model, const ModelConfig& config, const Tokenizer* tokenizer, int64_t max_context,
                         int64_t max_running)
    : model_(model),
      config_(config),
      tokenizer_(tokenizer),
      max_context_(max_context),
      scheduler_({.max_running = max_running, .max_step_tokens = model.max_tokens(), .page_size = model.page_size()},
                 model.allocator()) {
  check(max_context <= model.allocator().num_pages() * model.page_size(),
        "internal: a context of {} tokens does not fit the KV cache", max_context);
}

void BatchEngine::validate(const GenerateRequest& request) const {
  check(request.max_tokens >= 0, "max_tokens must be >= 0, got {}", request.max_tokens);
  const auto& prompt = request.prompt;
  check(!prompt.empty(), "the prompt is empty: give at least one token");
  const int64_t vocab = config_.vocab_size;
  for (int32_t id : prompt) check(id >= 0 && id < vocab, "token id {} is out of range: the vocabulary has {} ids", id, vocab);
  check(static_cast<int64_t>(prompt.size()) <= max_context_, "the prompt has {} tokens, which exceeds the context of {} tokens",
        prompt.size(), max_context_);
  check(static_cast<int64_t>(prompt.size()) < max_context_,
        "the prompt has {} tokens and fills the context of {} tokens: no room to generate", prompt.size(), max_context_);
  validate_sampling(request.sampling);
  for (const auto& s : request.stop_strings) check(!s.empty(), "stop strings must not be empty");
  check(request.logprobs >= -1, "logprobs must be >= 0, got {}", request.logprobs);
  resolve_checked(request.attention);
}

std::shared_ptr<const SparseAttention> BatchEngine::resolve_checked(const std::string& spec) const {
  if (spec.empty()) return nullptr;
  auto cached = [&]() -> std::optional<std::shared_ptr<const SparseAttention>> {
    std::lock_guard lock(resolved_mutex_);
    if (auto* hit = resolved_.find(spec)) return *hit;
    return std::nullopt;
  };
  if (auto hit = cached()) return *hit;
  std::lock_guard first_use(first_use_mutex_);  // one first use at a time, so a spec is prepared once
  if (auto hit = cached()) return *hit;
  std::shared_ptr<const SparseAttention> attention = resolve_attention(spec, model_.page_size());
  if (attention) {
    check(model_.supports_sparse(), "attention '{}': sparse attention is not available on this device yet (only 'dense')", spec);
    check_attention_fits(*attention, config_.num_layers);
    model_.compile_sparse(*attention);   // the slow part (NVRTC), while running sequences step on
    std::lock_guard lock(model_mutex_);  // never while a forward pass uses the model's sparse state
    model_.prepare_sparse(*attention);
  }
  std::lock_guard lock(resolved_mutex_);
  resolved_.put(spec, attention);  // an evicted spec stays alive in the sequences that use it
  return attention;
}

size_t BatchEngine::resolved_specs() const {
  std::lock_guard lock(resolved_mutex_);
  return resolved_.size();
}

SequenceId BatchEngine::submit(const GenerateRequest& request, SequenceCallbacks callbacks, Clock::time_point arrival) {
  validate(request);
  GenerationLimits limits{.max_context = max_context_, .eos_token_ids = {}};
  if (!request.ignore_eos) limits.eos_token_ids = config_.eos_token_ids;
  const SequenceId id = next_id_++;
  auto [it, inserted] = generations_.try_emplace(id, request, limits, tokenizer_, std::move(callbacks), arrival);
  if (request.max_tokens == 0) {  // nothing to generate: finish without touching the model
    it->second.finish(FinishReason::kLength);
    generations_.erase(it);
    return id;
  }
  if (!request.attention.empty())
    if (auto attention = resolve_checked(request.attention))
      attention_[id] = {.attention = std::move(attention), .sparse_from = static_cast<int64_t>(request.prompt.size())};
  scheduler_.add(id, request.prompt);
  return id;
}

bool BatchEngine::cancel(SequenceId id) {
  if (!scheduler_.contains(id)) return false;
  drop(id);
  return true;
}

void BatchEngine::drop(SequenceId id) {
  scheduler_.remove(id);
  generations_.erase(id);
  attention_.erase(id);
}

BatchLoad BatchEngine::load() const {
  const PageAllocator& pages = model_.allocator();
  return {.running = scheduler_.num_running(), .waiting = scheduler_.num_waiting(),
          .pages_used = pages.num_used(), .pages_free = pages.num_free()};
}

StepStats BatchEngine::step() {
  StepStats stats;
  StepPlan plan = scheduler_.schedule();
  stats.preempted = static_cast<int64_t>(plan.preempted.size());
  for (const ScheduledChunk& c : plan.chunks) stats.pages_attended += pages_attended(c);
  stats.tokens = plan.tokens;
  stats.chunks = static_cast<int64_t>(plan.chunks.size());
  if (plan.chunks.empty()) return stats;
  try {
    run_forward(plan, stats);
  } catch (const std::exception& e) {  // an internal failure ends the sequences it touched, not the process
    fail(plan, e.what());
    stats.finished = stats.chunks;
    return stats;
  }
  scheduler_.complete(plan);
  sample(plan, stats);
  return stats;
}

int64_t BatchEngine::pages_attended(const ScheduledChunk& chunk) const {
  const int64_t P = model_.page_size(), position = chunk.start + chunk.count - 1, all = position / P + 1;
  auto it = attention_.find(chunk.id);
  if (it == attention_.end() || chunk.count != 1 || position < it->second.sparse_from) return all;
  const SparseAttention& a = *it->second.attention;
  QueryPages query;
  plan_query_pages(a, position, query);
  const int64_t sparse = static_cast<int64_t>(query.always.size()) +
                         std::min(query.k, static_cast<int64_t>(query.candidates.size()));
  int64_t total = 0;  // over layers
  for (int64_t layer = 0; layer < config_.num_layers; ++layer) total += a.dense_layer(layer) ? all : sparse;
  return (total + config_.num_layers / 2) / config_.num_layers;
}

void BatchEngine::run_forward(const StepPlan& plan, StepStats& stats) {
  chunks_.clear();
  for (const ScheduledChunk& c : plan.chunks) {
    ScheduledSequence& seq = scheduler_.sequence(c.id);
    auto sparse = attention_.find(c.id);
    chunks_.push_back({.tokens = seq.tokens.data() + c.start, .count = c.count, .start = c.start,
                       .page_table = &seq.pages, .all_logits = false,
                       .attention = sparse == attention_.end() ? nullptr : sparse->second.attention.get(),
                       .sparse_from = sparse == attention_.end() ? 0 : sparse->second.sparse_from});
  }
  // Device sampling when every sampled sequence can do without logits. Draws are taken only then,
  // so each sequence's random stream advances exactly once per sampled token either way.
  device_sampled_ = model_.samples_on_device() &&
                    std::none_of(plan.chunks.begin(), plan.chunks.end(),
                                 [&](const ScheduledChunk& c) { return c.samples && generations_.at(c.id).needs_logits(); });
  auto t0 = Clock::now();
  std::lock_guard lock(model_mutex_);
  if (device_sampled_) {
    draws_.clear();
    for (const ScheduledChunk& c : plan.chunks) draws_.push_back(c.samples ? generations_.at(c.id).next_draw() : TokenDraw{});
    model_.forward_sample(chunks_, draws_, tokens_);
  } else {
    model_.forward(chunks_, logits_);
  }
  stats.forward_ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

void BatchEngine::sample(const StepPlan& plan, StepStats& stats) {
  const size_t vocab = static_cast<size_t>(config_.vocab_size);
  const auto now = Clock::now();
  for (size_t i = 0; i < plan.chunks.size(); ++i) {
    const ScheduledChunk& c = plan.chunks[i];
    if (!c.samples) continue;
    Generation& gen = generations_.at(c.id);
    Generation::Step step = device_sampled_ ? gen.advance(tokens_[i], now) : gen.advance({logits_.data() + i * vocab, vocab}, now);
    ++stats.sampled;
    if (step.first_token_s >= 0) stats.first_token_s.push_back(step.first_token_s);
    if (step.inter_token_s >= 0) stats.inter_token_s.push_back(step.inter_token_s);
    if (step.finished) {
      drop(c.id);
      ++stats.finished;
    } else {
      scheduler_.append(c.id, step.token);
    }
  }
}

void BatchEngine::fail(const StepPlan& plan, const std::string& message) {
  for (const ScheduledChunk& c : plan.chunks) {
    if (!scheduler_.contains(c.id)) continue;
    generations_.at(c.id).finish(FinishReason::kStop, "internal: " + message);
    drop(c.id);
  }
}

}  // namespace vortex
