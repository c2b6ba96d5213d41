// The continuous-batching scheduler as pure policy: no model, a PageAllocator of a few pages.
// Each test drives schedule() → complete() → append() the way the batch engine does.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <numeric>

#include "core/error.h"
#include "kv/page_allocator.h"
#include "runtime/scheduler.h"

namespace vortex {
namespace {

std::vector<int32_t> tokens(int64_t n) {
  std::vector<int32_t> t(static_cast<size_t>(n));
  std::iota(t.begin(), t.end(), 1);
  return t;
}

// Runs the plan as the engine would: every sampling chunk gets a new token.
void run(Scheduler& s, const StepPlan& plan) {
  s.complete(plan);
  for (const auto& c : plan.chunks)
    if (c.samples) s.append(c.id, 7);
}

const ScheduledChunk* find(const StepPlan& plan, SequenceId id) {
  for (const auto& c : plan.chunks)
    if (c.id == id) return &c;
  return nullptr;
}

TEST(Scheduler, AdmitsWithinTheTokenBudgetAndChunksTheRest) {
  PageAllocator pages(64);
  Scheduler s({.max_running = 8, .max_step_tokens = 10, .page_size = 4}, pages);
  s.add(1, tokens(6));
  s.add(2, tokens(7));
  StepPlan p = s.schedule();
  ASSERT_EQ(p.chunks.size(), 2u);
  EXPECT_EQ(p.tokens, 10);
  EXPECT_EQ(p.chunks[0].count, 6);
  EXPECT_TRUE(p.chunks[0].samples);   // whole prompt: its last logits give the first token
  EXPECT_EQ(p.chunks[1].count, 4);    // the budget's remainder: a partial prefill
  EXPECT_FALSE(p.chunks[1].samples);
  run(s, p);
  p = s.schedule();  // decode of 1 first, then the rest of 2's prompt
  ASSERT_EQ(p.chunks.size(), 2u);
  EXPECT_EQ(p.chunks[0].id, 1u);
  EXPECT_EQ(p.chunks[0].start, 6);
  EXPECT_EQ(p.chunks[0].count, 1);
  EXPECT_EQ(p.chunks[1].id, 2u);
  EXPECT_EQ(p.chunks[1].start, 4);
  EXPECT_EQ(p.chunks[1].count, 3);
  EXPECT_TRUE(p.chunks[1].samples);
  EXPECT_EQ(p.pages_attended, s.pages_for(7) + s.pages_for(7));
}

TEST(Scheduler, DecodeTokensAreNeverStarvedByPrefill) {
  PageAllocator pages(256);
  Scheduler s({.max_running = 4, .max_step_tokens = 8, .page_size = 16}, pages);
  s.add(1, tokens(3));
  run(s, s.schedule());
  s.add(2, tokens(100));  // a long prompt arrives while 1 decodes
  for (int step = 0; step < 20; ++step) {
    StepPlan p = s.schedule();
    const ScheduledChunk* decode = find(p, 1);
    ASSERT_NE(decode, nullptr) << "step " << step;
    EXPECT_EQ(decode->count, 1);
    EXPECT_LE(p.tokens, 8);
    run(s, p);
  }
}

// prefill_first: while a prompt has tokens left or a waiting one can be admitted, steps carry
// prompt chunks only; decode tokens resume when every prompt is in, all of them in one step.
TEST(Scheduler, PrefillFirstComputesPromptsBeforeDecodeTokens) {
  PageAllocator pages(256);
  Scheduler s({.max_running = 4, .max_step_tokens = 8, .page_size = 16, .prefill_first = true}, pages);
  const std::map<SequenceId, int64_t> prompt = {{1, 3}, {2, 30}, {3, 20}};
  for (const auto& [id, length] : prompt) s.add(id, tokens(length));
  int decode_steps = 0;
  bool prompts_done = false;
  for (int step = 0; step < 40; ++step) {
    StepPlan p = s.schedule();
    // A prompt's last token goes with the decode tokens (the scheduler sees one token to compute).
    const auto decoding = [&](const ScheduledChunk& c) { return c.start >= prompt.at(c.id); };
    const auto one_token = [](const ScheduledChunk& c) { return c.count == 1; };
    if (!prompts_done) prompts_done = std::any_of(p.chunks.begin(), p.chunks.end(), decoding);
    if (prompts_done) {
      EXPECT_EQ(p.chunks.size(), 3u) << "step " << step << ": decode steps hold every sequence";
      EXPECT_TRUE(std::all_of(p.chunks.begin(), p.chunks.end(), one_token)) << "step " << step;
      ++decode_steps;
    }
    EXPECT_LE(p.tokens, 8);
    run(s, p);
  }
  EXPECT_TRUE(prompts_done);
  EXPECT_GT(decode_steps, 20);
  // The same sequences without it: sequence 1 decodes from its second step on.
  PageAllocator pages2(256);
  Scheduler plain({.max_running = 4, .max_step_tokens = 8, .page_size = 16}, pages2);
  plain.add(1, tokens(3));
  plain.add(2, tokens(30));
  run(plain, plain.schedule());
  const StepPlan second = plain.schedule();
  ASSERT_NE(find(second, 1), nullptr);
  EXPECT_EQ(find(second, 1)->count, 1);
}

TEST(Scheduler, RespectsMaxRunningAndServesInArrivalOrder) {
  PageAllocator pages(64);
  Scheduler s({.max_running = 2, .max_step_tokens = 64, .page_size = 4}, pages);
  for (SequenceId id = 1; id <= 4; ++id) s.add(id, tokens(3));
  StepPlan p = s.schedule();
  ASSERT_EQ(p.chunks.size(), 2u);
  EXPECT_EQ(p.chunks[0].id, 1u);
  EXPECT_EQ(p.chunks[1].id, 2u);
  EXPECT_EQ(s.num_waiting(), 2);
  run(s, p);
  s.remove(1);  // finished: 3 takes its place, not 4
  p = s.schedule();
  EXPECT_NE(find(p, 3), nullptr);
  EXPECT_EQ(find(p, 4), nullptr);
}

TEST(Scheduler, HeadOfLineWaitsForPagesInsteadOfBeingOvertaken) {
  PageAllocator pages(8);
  Scheduler s({.max_running = 8, .max_step_tokens = 64, .page_size = 4}, pages);
  s.add(1, tokens(20));  // 5 pages
  run(s, s.schedule());
  s.add(2, tokens(16));  // 4 pages: does not fit next to 1
  s.add(3, tokens(2));   // would fit, but must not overtake 2 (FCFS: no starvation of long prompts)
  StepPlan p = s.schedule();
  EXPECT_EQ(find(p, 2), nullptr);
  EXPECT_EQ(find(p, 3), nullptr);
  run(s, p);
  s.remove(1);
  p = s.schedule();
  EXPECT_NE(find(p, 2), nullptr);
}

TEST(Scheduler, PreemptsTheNewestWhenPagesRunOutAndRecomputesIt) {
  PageAllocator pages(4);
  Scheduler s({.max_running = 4, .max_step_tokens = 64, .page_size = 4}, pages);
  s.add(1, tokens(4));
  s.add(2, tokens(3));
  StepPlan p = s.schedule();
  ASSERT_EQ(p.chunks.size(), 2u);  // 1 page each, 2 free: headroom for both
  run(s, p);
  for (int step = 0; step < 8 && s.sequence(2).preemptions == 0; ++step) run(s, s.schedule());
  const ScheduledSequence& victim = s.sequence(2);
  ASSERT_EQ(victim.preemptions, 1);   // 2 was admitted last, so it gave its pages to 1
  EXPECT_EQ(s.sequence(1).preemptions, 0);
  EXPECT_FALSE(victim.running);
  EXPECT_TRUE(victim.pages.empty());
  EXPECT_EQ(victim.computed, 0);
  EXPECT_GT(victim.tokens.size(), 3u);  // its generated tokens stay: re-admission recomputes them
  s.remove(1);
  p = s.schedule();
  const ScheduledChunk* again = find(p, 2);
  ASSERT_NE(again, nullptr);
  EXPECT_EQ(again->start, 0);
  EXPECT_EQ(again->count, static_cast<int64_t>(victim.tokens.size()));
  EXPECT_TRUE(again->samples);  // the recompute's last logits continue the generation
}

TEST(Scheduler, PreemptedSequenceReturnsToTheHeadOfTheQueue) {
  PageAllocator pages(4);
  Scheduler s({.max_running = 4, .max_step_tokens = 64, .page_size = 4}, pages);
  s.add(1, tokens(4));
  s.add(2, tokens(3));
  run(s, s.schedule());
  s.add(3, tokens(1));  // arrives later than 2
  for (int step = 0; step < 8 && s.sequence(2).preemptions == 0; ++step) run(s, s.schedule());
  ASSERT_EQ(s.sequence(2).preemptions, 1);
  s.remove(1);
  StepPlan p = s.schedule();
  ASSERT_FALSE(p.chunks.empty());
  EXPECT_EQ(p.chunks[0].id, 2u);  // before 3, which came after it
}

TEST(Scheduler, RemovingASequenceFreesItsPages) {
  PageAllocator pages(16);
  Scheduler s({.max_running = 4, .max_step_tokens = 64, .page_size = 4}, pages);
  s.add(1, tokens(10));
  s.add(2, tokens(5));
  run(s, s.schedule());
  EXPECT_EQ(pages.num_used(), 3 + 2);
  EXPECT_TRUE(s.remove(1));
  EXPECT_EQ(pages.num_used(), 2);
  EXPECT_TRUE(s.remove(2));
  EXPECT_EQ(pages.num_used(), 0);
  EXPECT_FALSE(s.remove(2));
  s.add(3, tokens(5));
  EXPECT_TRUE(s.remove(3));  // a waiting sequence leaves the queue too
  EXPECT_TRUE(s.empty());
}

// Many sequences through a tight pool: every one finishes (no starvation, no deadlock), pages
// never leak, and the token budget is never exceeded.
TEST(Scheduler, EverySequenceFinishesUnderPagePressure) {
  PageAllocator pages(12);
  Scheduler s({.max_running = 6, .max_step_tokens = 16, .page_size = 4}, pages);
  const int64_t kTarget = 24;  // a sequence finishes at 24 tokens (fits the pool alone: 6 pages)
  for (SequenceId id = 1; id <= 10; ++id) s.add(id, tokens(3 + static_cast<int64_t>(id % 5)));
  int finished = 0, preemptions = 0;
  for (int step = 0; step < 2000 && !s.empty(); ++step) {
    StepPlan p = s.schedule();
    ASSERT_LE(p.tokens, 16);
    ASSERT_FALSE(p.chunks.empty()) << "no progress at step " << step;
    preemptions += static_cast<int>(p.preempted.size());
    s.complete(p);
    for (const auto& c : p.chunks) {
      if (!c.samples) continue;
      if (static_cast<int64_t>(s.sequence(c.id).tokens.size()) + 1 >= kTarget) { s.remove(c.id); ++finished; }
      else s.append(c.id, 7);
    }
  }
  EXPECT_EQ(finished, 10);
  EXPECT_GT(preemptions, 0);  // the pool is small enough that preemption happened
  EXPECT_EQ(pages.num_used(), 0);
}

// Self-speculation's rollback: rewind makes drafted tokens a chunk to compute again; truncate drops
// rejected ones. Pages follow `computed`, and none leaks.
TEST(Scheduler, RewindAndTruncateReleaseThePagesPastTheKeptTokens) {
  PageAllocator pages(32);
  Scheduler s({.max_running = 4, .max_step_tokens = 64, .page_size = 4}, pages);
  s.add(1, tokens(7));
  run(s, s.schedule());  // prefill 7 tokens (2 pages), a first token appended
  for (int i = 0; i < 4; ++i) run(s, s.schedule());  // four draft steps: 12 tokens, 11 computed
  EXPECT_EQ(s.sequence(1).tokens.size(), 12u);
  EXPECT_EQ(s.sequence(1).computed, 11);
  EXPECT_EQ(pages.num_used(), 3);
  s.rewind(1, 7);  // verify from the last committed token
  EXPECT_EQ(s.sequence(1).computed, 7);
  EXPECT_EQ(pages.num_used(), 2);
  StepPlan verify = s.schedule();
  ASSERT_EQ(verify.chunks.size(), 1u);
  EXPECT_EQ(verify.chunks[0].start, 7);
  EXPECT_EQ(verify.chunks[0].count, 5);
  EXPECT_TRUE(verify.chunks[0].samples);
  s.complete(verify);
  s.truncate(1, 9);  // two drafts kept
  EXPECT_EQ(s.sequence(1).tokens.size(), 9u);
  EXPECT_EQ(s.sequence(1).computed, 9);
  EXPECT_EQ(pages.num_used(), 3);
  s.append(1, 5);
  StepPlan next = s.schedule();
  ASSERT_EQ(next.chunks.size(), 1u);
  EXPECT_EQ(next.chunks[0].start, 9);
  EXPECT_EQ(next.chunks[0].count, 1);
  s.truncate(1, 8);  // a waiting or running sequence keeps no page past its computed tokens
  EXPECT_EQ(pages.num_used(), 2);
  EXPECT_THROW(s.truncate(1, 0), Error);
  EXPECT_THROW(s.rewind(1, 9), Error);
  s.remove(1);
  EXPECT_EQ(pages.num_used(), 0);
}

}  // namespace
}  // namespace vortex
