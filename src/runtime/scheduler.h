// The continuous-batching scheduler: which tokens of which sequences run in the next forward.
// Host-only policy (no CUDA headers, no model): it sees sequences as token lists plus page
// tables, and the KV cache as a PageAllocator, so every backend shares it and tests need no model.
//
// A sequence is `tokens` (prompt, then every generated token) of which the first `computed` have
// K/V in the cache. Each step, schedule() picks, within `max_step_tokens`:
//   1. one decode token for every running sequence whose tokens are all computed but the last,
//   2. the next prefill chunk of running sequences still prefilling, oldest admission first,
//   3. new sequences from the waiting queue (FCFS, head of line blocks: no overtaking, so no
//      starvation) while the batch has room, no sequence was preempted this step, and the free
//      pages keep one page of headroom per running sequence.
// A sequence that cannot get pages preempts the most recently admitted running sequence: its pages
// are released, `computed` drops to 0, and it goes back to the HEAD of the waiting queue with its
// generated tokens still in `tokens`, so re-admission recomputes them as a prefill (recompute
// preemption) and generation continues where it stopped.
//
// With a prefix cache (kv/prefix_cache.h), admission first takes the cached full pages that begin
// the sequence (its `computed` starts past them), and complete() offers every page that filled
// within the sequence's `shareable` tokens to the cache. A waiting sequence whose next block is
// being prefilled by a running one waits for it (admission stops for this step), so K samples
// of one prompt submitted together prefill it once.
//
// Invariants: a sequence is in exactly one of waiting/running; a waiting sequence owns no pages;
// a running sequence owns exactly pages_for(computed) pages between steps (plus those reserved
// for the chunk of the current plan until complete()); a page it shares with the cache lies
// wholly below its `shareable` mark and is never written again.
#pragma once

#include <cstdint>
#include <deque>
#include <unordered_map>
#include <vector>

#include "kv/page_allocator.h"
#include "kv/prefix_cache.h"

namespace vortex {

using SequenceId = uint64_t;

struct SchedulerOptions {
  int64_t max_running = 64;       // sequences in the running batch at most
  int64_t max_step_tokens = 256;  // tokens per forward: decode tokens + prefill chunks
  int64_t page_size = 16;         // tokens per KV page
  // Prompts before decode tokens: a step schedules decode tokens (and verify chunks) only when no
  // running sequence has prompt left to compute and no waiting one can be admitted, so decode runs at the
  // fullest batch (offline throughput; self-speculation measured at its batch) at the price of
  // pausing every decode while a prompt is computed. Off: decode tokens first, never starved.
  bool prefill_first = false;
};

struct ScheduledSequence {
  SequenceId id = 0;
  std::vector<int32_t> tokens;  // (N) prompt + generated tokens
  int64_t prompt = 0;           // tokens it was added with
  std::vector<int32_t> pages;   // page table: token t lives in pages[t / page_size]
  int64_t computed = 0;         // tokens[0, computed) have K/V in the cache
  int64_t admitted = 0;         // admission stamp; preemption takes the largest
  int64_t preemptions = 0;      // times this sequence was sent back to the queue
  bool running = false;         // in the running batch (else in the waiting queue)
  // Prefix caching: tokens [0, shareable) have K/V that any sequence with the same tokens would
  // compute (dense attention); block hashes of the full blocks so far; blocks offered to the cache;
  // the pending range of blocks this sequence's prefill will compute (others wait for them); the
  // tokens its first admission took from the cache.
  int64_t shareable = 0;
  std::vector<uint64_t> block_hashes;
  int64_t offered_blocks = 0;
  int64_t pending_from = 0, pending_to = 0;
  int64_t cached_tokens = 0;
};

struct ScheduledChunk {
  SequenceId id = 0;
  int64_t start = 0;     // position of the first token computed this step
  int64_t count = 0;     // tokens computed this step
  bool samples = false;  // the chunk ends at the sequence's last token: its logits give the next token
};

struct StepPlan {
  std::vector<ScheduledChunk> chunks;   // decode tokens first, then prefill chunks
  std::vector<SequenceId> preempted;    // sent back to the waiting queue during this schedule()
  int64_t tokens = 0;                   // Σ chunk counts (≤ max_step_tokens)
  int64_t pages_attended = 0;           // Σ pages covering 0..start+count-1 (dense attention)
};

class Scheduler {
 public:
  // `cache`: prefix caching, or null for none.
  Scheduler(const SchedulerOptions& options, PageAllocator& allocator, PrefixCache* cache = nullptr);

  // Joins the tail of the waiting queue. `tokens` must be non-empty and fit the page pool.
  // `shareable`: its first tokens whose pages may come from and go to the prefix cache.
  void add(SequenceId id, std::vector<int32_t> tokens, int64_t shareable = 0);
  // Removes a waiting or running sequence and frees its pages; false when the id is unknown.
  bool remove(SequenceId id);

  StepPlan schedule();
  // The forward of `plan` ran: every chunk's tokens are now computed.
  void complete(const StepPlan& plan);
  // A sampled token joins a running sequence (it is computed by the next step's decode).
  void append(SequenceId id, int32_t token);
  // Self-speculation (runtime/speculation.h). truncate: the sequence keeps its first `length`
  // tokens (rejected drafts go); `computed` and the pages follow. rewind: tokens from `position`
  // on are computed again (the verify chunk recomputes drafted tokens densely); pages past the
  // computed ones are released, so between steps a running sequence owns pages_for(computed).
  void truncate(SequenceId id, int64_t length);
  void rewind(SequenceId id, int64_t position);

  const ScheduledSequence& sequence(SequenceId id) const;
  ScheduledSequence& sequence(SequenceId id);
  bool contains(SequenceId id) const { return sequences_.count(id) > 0; }
  int64_t num_running() const { return static_cast<int64_t>(running_.size()); }
  int64_t num_waiting() const { return static_cast<int64_t>(waiting_.size()); }
  bool empty() const { return sequences_.empty(); }
  const SchedulerOptions& options() const { return options_; }
  void set_prefill_first(bool on) { options_.prefill_first = on; }
  int64_t pages_for(int64_t tokens) const { return (tokens + options_.page_size - 1) / options_.page_size; }

 private:
  bool reserve(ScheduledSequence& seq, int64_t tokens);
  void release_past(ScheduledSequence& seq, int64_t tokens);  // pages beyond pages_for(tokens)
  void preempt(SequenceId victim, StepPlan& plan, int64_t& budget);
  // Schedules `count` tokens of a running sequence, preempting newer ones for pages; false when
  // the sequence itself had to be preempted.
  bool schedule_running(ScheduledSequence& seq, int64_t count, StepPlan& plan, int64_t& budget);
  void schedule_decodes(StepPlan& plan, int64_t& budget);
  // Chunks of every running sequence with more than one token to compute (prompts, verify
  // chunks, recomputation after preemption), or with `prompts_only` of those still in their prompt.
  void schedule_prefills(StepPlan& plan, int64_t& budget, bool prompts_only = false);
  void admit_waiting(StepPlan& plan, int64_t& budget);
  void push_chunk(const ScheduledSequence& seq, int64_t count, StepPlan& plan, int64_t& budget);
  // Prefix caching: takes the cached pages that begin `seq`; false (nothing taken) when its next
  // block is being computed by a running sequence.
  bool take_cached_prefix(ScheduledSequence& seq);
  void offer_computed(ScheduledSequence& seq);
  void mark_pending(ScheduledSequence& seq, int64_t to);
  void clear_pending(ScheduledSequence& seq);

  SchedulerOptions options_;
  PageAllocator& allocator_;
  PrefixCache* cache_;
  std::unordered_map<uint64_t, int32_t> pending_;  // block hash -> running sequences about to compute it
  std::unordered_map<SequenceId, ScheduledSequence> sequences_;
  std::deque<SequenceId> waiting_;   // FCFS; preempted sequences go back to the head
  std::vector<SequenceId> running_;  // admission order, oldest first
  int64_t next_admission_ = 0;
};

}  // namespace vortex
