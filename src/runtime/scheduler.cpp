#include "runtime/scheduler.h"

#include <algorithm>

#include "core/error.h"

namespace vortex {

Scheduler::Scheduler(const SchedulerOptions& options, PageAllocator& allocator, PrefixCache* cache)
    : options_(options), allocator_(allocator), cache_(cache) {
  check(options.max_running > 0, "max batch must be positive, got {}", options.max_running);
  check(options.max_step_tokens > 0, "tokens per step must be positive, got {}", options.max_step_tokens);
  check(options.page_size > 0, "internal: page size must be positive");
}

void Scheduler::add(SequenceId id, std::vector<int32_t> tokens, int64_t shareable) {
  check(!tokens.empty(), "internal: a sequence needs at least one token");
  check(!contains(id), "internal: sequence {} is already scheduled", id);
  // A sequence larger than the whole pool could never run, even alone: callers cap the context.
  check(pages_for(static_cast<int64_t>(tokens.size())) <= allocator_.num_pages(),
        "internal: {} tokens exceed the KV cache of {} pages", tokens.size(), allocator_.num_pages());
  ScheduledSequence& seq = sequences_[id];
  seq.id = id;
  seq.tokens = std::move(tokens);
  seq.prompt = static_cast<int64_t>(seq.tokens.size());
  seq.shareable = cache_ ? std::max<int64_t>(shareable, 0) : 0;
  waiting_.push_back(id);
}

bool Scheduler::remove(SequenceId id) {
  auto it = sequences_.find(id);
  if (it == sequences_.end()) return false;
  if (it->second.running) running_.erase(std::find(running_.begin(), running_.end(), id));
  else waiting_.erase(std::find(waiting_.begin(), waiting_.end(), id));
  clear_pending(it->second);
  allocator_.release_all(it->second.pages);
  sequences_.erase(it);
  return true;
}

const ScheduledSequence& Scheduler::sequence(SequenceId id) const {
  auto it = sequences_.find(id);
  check(it != sequences_.end(), "internal: unknown sequence {}", id);
  return it->second;
}

ScheduledSequence& Scheduler::sequence(SequenceId id) {
  return const_cast<ScheduledSequence&>(static_cast<const Scheduler&>(*this).sequence(id));
}

bool Scheduler::reserve(ScheduledSequence& seq, int64_t tokens) {
  int64_t needed = pages_for(tokens) - static_cast<int64_t>(seq.pages.size());
  return needed <= 0 || allocator_.allocate(static_cast<int32_t>(needed), seq.pages);
}

void Scheduler::push_chunk(const ScheduledSequence& seq, int64_t count, StepPlan& plan, int64_t& budget) {
  bool samples = seq.computed + count == static_cast<int64_t>(seq.tokens.size());
  plan.chunks.push_back({.id = seq.id, .start = seq.computed, .count = count, .samples = samples});
  plan.tokens += count;
  budget -= count;
}

void Scheduler::preempt(SequenceId victim, StepPlan& plan, int64_t& budget) {
  ScheduledSequence& seq = sequence(victim);
  // A victim scheduled earlier in this plan gives its tokens back to the budget.
  for (auto it = plan.chunks.begin(); it != plan.chunks.end();) {
    if (it->id != victim) { ++it; continue; }
    budget += it->count;
    plan.tokens -= it->count;
    it = plan.chunks.erase(it);
  }
  clear_pending(seq);
  allocator_.release_all(seq.pages);
  seq.computed = 0;
  seq.offered_blocks = 0;  // re-admission takes what is still cached and offers the rest again
  seq.running = false;
  ++seq.preemptions;
  running_.erase(std::find(running_.begin(), running_.end(), victim));
  waiting_.push_front(victim);
  plan.preempted.push_back(victim);
}

bool Scheduler::schedule_running(ScheduledSequence& seq, int64_t count, StepPlan& plan, int64_t& budget) {
  while (!reserve(seq, seq.computed + count)) {
    SequenceId victim = running_.back();  // the most recently admitted; `seq` itself at worst
    preempt(victim, plan, budget);
    if (victim == seq.id) return false;
  }
  push_chunk(seq, count, plan, budget);
  return true;
}

void Scheduler::schedule_decodes(StepPlan& plan, int64_t& budget) {
  const std::vector<SequenceId> order = running_;  // preemption edits running_
  for (SequenceId id : order) {
    ScheduledSequence& seq = sequence(id);
    if (!seq.running || static_cast<int64_t>(seq.tokens.size()) - seq.computed != 1) continue;
    if (budget == 0) return;
    schedule_running(seq, 1, plan, budget);
  }
}

void Scheduler::schedule_prefills(StepPlan& plan, int64_t& budget, bool prompts_only) {
  const std::vector<SequenceId> order = running_;
  for (SequenceId id : order) {
    ScheduledSequence& seq = sequence(id);
    int64_t remaining = static_cast<int64_t>(seq.tokens.size()) - seq.computed;
    if (!seq.running || remaining <= 1 || (prompts_only && seq.computed >= seq.prompt)) continue;
    if (budget == 0) return;
    schedule_running(seq, std::min(remaining, budget), plan, budget);
  }
}

void Scheduler::admit_waiting(StepPlan& plan, int64_t& budget) {
  while (!waiting_.empty() && num_running() < options_.max_running && budget > 0) {
    ScheduledSequence& seq = sequence(waiting_.front());
    if (!take_cached_prefix(seq)) return;  // its next block is being computed: wait for it
    const auto length = static_cast<int64_t>(seq.tokens.size());
    const int64_t count = std::min(length - seq.computed, budget);
    // Headroom: each running sequence may need one more page next step; admitting into the last
    // free pages would only preempt this sequence again (thrashing).
    const int64_t needed = pages_for(seq.computed + count) - static_cast<int64_t>(seq.pages.size());
    if (allocator_.num_available() - needed < num_running()) {
      allocator_.release_all(seq.pages);  // the cached pages it took go back to the cache
      seq.computed = 0;
      return;
    }
    check(reserve(seq, seq.computed + count), "internal: reserve failed after the free-page check");
    if (cache_ && seq.shareable > 0) {
      cache_->count_lookup(length, seq.computed);
      if (seq.preemptions == 0) seq.cached_tokens = seq.computed;  // its first admission's
      mark_pending(seq, std::min(seq.shareable, length) / options_.page_size);
    }
    waiting_.pop_front();
    running_.push_back(seq.id);
    seq.running = true;
    seq.admitted = next_admission_++;
    push_chunk(seq, count, plan, budget);
  }
}

StepPlan Scheduler::schedule() {
  StepPlan plan;
  int64_t budget = options_.max_step_tokens;
  if (options_.prefill_first) {
    schedule_prefills(plan, budget, true);
    if (plan.preempted.empty()) admit_waiting(plan, budget);
  }
  if (plan.chunks.empty()) {
    schedule_decodes(plan, budget);
    schedule_prefills(plan, budget);
    if (plan.preempted.empty()) admit_waiting(plan, budget);
  }
  for (const ScheduledChunk& chunk : plan.chunks) plan.pages_attended += pages_for(chunk.start + chunk.count);
  return plan;
}

void Scheduler::complete(const StepPlan& plan) {
  for (const ScheduledChunk& chunk : plan.chunks) {
    ScheduledSequence& seq = sequence(chunk.id);
    check(seq.running && seq.computed == chunk.start, "internal: sequence {} changed between schedule and complete", chunk.id);
    seq.computed = chunk.start + chunk.count;
    offer_computed(seq);
  }
}

bool Scheduler::take_cached_prefix(ScheduledSequence& seq) {
  if (!cache_ || seq.shareable <= 0) return true;
  const auto length = static_cast<int64_t>(seq.tokens.size());
  // The last token is always computed: its logits give the next token.
  const int64_t blocks = std::min(seq.shareable, length - 1) / options_.page_size;
  cache_->extend_hashes(seq.tokens, seq.block_hashes);
  const int64_t matched = cache_->match(seq.tokens, seq.block_hashes, blocks, seq.pages);
  if (matched < blocks && pending_.count(seq.block_hashes[static_cast<size_t>(matched)])) {
    allocator_.release_all(seq.pages);
    return false;
  }
  seq.computed = matched * options_.page_size;
  seq.offered_blocks = matched;
  return true;
}

void Scheduler::mark_pending(ScheduledSequence& seq, int64_t to) {
  seq.pending_from = seq.offered_blocks, seq.pending_to = std::max(to, seq.offered_blocks);
  for (int64_t b = seq.pending_from; b < seq.pending_to; ++b) ++pending_[seq.block_hashes[static_cast<size_t>(b)]];
}

void Scheduler::clear_pending(ScheduledSequence& seq) {
  for (int64_t b = seq.pending_from; b < seq.pending_to; ++b) {
    auto it = pending_.find(seq.block_hashes[static_cast<size_t>(b)]);
    if (--it->second == 0) pending_.erase(it);
  }
  seq.pending_from = seq.pending_to = 0;
}

void Scheduler::offer_computed(ScheduledSequence& seq) {
  if (!cache_ || seq.shareable <= 0) return;
  const int64_t blocks = std::min(seq.computed, seq.shareable) / options_.page_size;
  if (blocks <= seq.offered_blocks) return;
  cache_->extend_hashes(seq.tokens, seq.block_hashes);  // generated tokens grow the list
  cache_->insert(seq.tokens, seq.block_hashes, seq.pages, seq.offered_blocks, blocks);
  seq.offered_blocks = blocks;
  const int64_t done = std::min(blocks, seq.pending_to);  // pending blocks now in the cache
  for (int64_t b = seq.pending_from; b < done; ++b) {
    auto it = pending_.find(seq.block_hashes[static_cast<size_t>(b)]);
    if (--it->second == 0) pending_.erase(it);
  }
  seq.pending_from = std::max(seq.pending_from, done);
}

void Scheduler::append(SequenceId id, int32_t token) {
  ScheduledSequence& seq = sequence(id);
  check(seq.running && seq.computed == static_cast<int64_t>(seq.tokens.size()),
        "internal: append to sequence {} before its tokens were computed", id);
  seq.tokens.push_back(token);
}

void Scheduler::release_past(ScheduledSequence& seq, int64_t tokens) {
  while (static_cast<int64_t>(seq.pages.size()) > pages_for(tokens)) {
    allocator_.release(seq.pages.back());
    seq.pages.pop_back();
  }
}

void Scheduler::truncate(SequenceId id, int64_t length) {
  ScheduledSequence& seq = sequence(id);
  check(length >= 1 && length <= static_cast<int64_t>(seq.tokens.size()), "internal: truncate sequence {} of {} tokens to {}",
        id, seq.tokens.size(), length);
  check(length >= seq.offered_blocks * options_.page_size, "internal: truncate of sequence {} into its shared pages", id);
  seq.tokens.resize(static_cast<size_t>(length));
  seq.block_hashes.resize(std::min(seq.block_hashes.size(), static_cast<size_t>(length / options_.page_size)));
  seq.computed = std::min(seq.computed, length);
  release_past(seq, seq.computed);
}

void Scheduler::rewind(SequenceId id, int64_t position) {
  ScheduledSequence& seq = sequence(id);
  check(position >= 0 && position <= seq.computed, "internal: rewind sequence {} with {} computed tokens to {}", id,
        seq.computed, position);
  check(position >= seq.offered_blocks * options_.page_size, "internal: rewind of sequence {} into its shared pages", id);
  seq.computed = position;
  release_past(seq, seq.computed);
}

}  // namespace vortex
