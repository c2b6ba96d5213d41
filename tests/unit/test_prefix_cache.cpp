// Prefix caching as pure policy: the allocator's evictable pages, the cache's block hashes and
// lookups, and the scheduler admitting sequences onto cached pages. No model (test_batch_engine.cpp
// checks that outputs do not change).
#include <gtest/gtest.h>

#include <numeric>

#include "core/error.h"
#include "kv/page_allocator.h"
#include "kv/prefix_cache.h"
#include "runtime/scheduler.h"

namespace vortex {
namespace {

std::vector<int32_t> tokens(int64_t n, int32_t first = 1) {
  std::vector<int32_t> t(static_cast<size_t>(n));
  std::iota(t.begin(), t.end(), first);
  return t;
}

TEST(PageAllocator, CachedPagesNobodyHoldsAreEvictedLeastRecentFirst) {
  PageAllocator allocator(4);
  std::vector<int32_t> evicted;
  allocator.set_evict_hook([&](int32_t page) { evicted.push_back(page); });
  std::vector<int32_t> a;
  ASSERT_TRUE(allocator.allocate(3, a));
  for (int32_t page : a) allocator.mark_cached(page);
  EXPECT_EQ(allocator.num_evictable(), 0);  // the sequence still holds them
  const std::vector<int32_t> held = a;
  allocator.release_all(a);  // last page first
  EXPECT_EQ(allocator.num_evictable(), 3);
  EXPECT_EQ(allocator.num_available(), 4);
  EXPECT_EQ(allocator.num_held(), 0);
  allocator.retain(held[0]);  // a sequence takes the first page from the cache again
  EXPECT_EQ(allocator.num_evictable(), 2);
  std::vector<int32_t> b;
  ASSERT_TRUE(allocator.allocate(3, b));  // one free page and the two evictable ones
  EXPECT_EQ(evicted, (std::vector<int32_t>{held[2], held[1]}));  // released first, evicted first
  EXPECT_EQ(allocator.num_cached(), 1);
  EXPECT_FALSE(allocator.allocate(1, b));  // held[0] is in use: not evictable
  allocator.release(held[0]);
  EXPECT_EQ(allocator.num_evictable(), 1);
  allocator.unmark_cached(held[0]);
  EXPECT_EQ(allocator.num_free(), 1);
  EXPECT_THROW(allocator.unmark_cached(held[0]), Error);
}

TEST(PrefixCache, MatchesWholeBlocksOfTheSamePrefixOnly) {
  PageAllocator allocator(16);
  PrefixCache cache(allocator, 4);
  std::vector<int32_t> a = tokens(10), pages;
  std::vector<uint64_t> hashes;
  cache.extend_hashes(a, hashes);
  ASSERT_EQ(hashes.size(), 2u);  // two full blocks of 4; the last 2 tokens are no block
  ASSERT_TRUE(allocator.allocate(3, pages));
  cache.insert(a, hashes, pages, 0, 2);
  EXPECT_EQ(cache.cached_pages(), 2);

  std::vector<int32_t> b = a, got;
  std::vector<uint64_t> b_hashes;
  cache.extend_hashes(b, b_hashes);
  EXPECT_EQ(cache.match(b, b_hashes, 10, got), 2);
  EXPECT_EQ(got, (std::vector<int32_t>{pages[0], pages[1]}));
  EXPECT_EQ(allocator.refcount(pages[0]), 3);  // a, the cache and b
  allocator.release_all(got);

  b[5] = 99;  // differs in the second block: only the first matches
  b_hashes.clear();
  cache.extend_hashes(b, b_hashes);
  EXPECT_EQ(cache.match(b, b_hashes, 10, got), 1);
  allocator.release_all(got);
  EXPECT_EQ(cache.match(b, b_hashes, 0, got), 0);  // the caller's limit
  // The same second block after a different first block is another prefix.
  std::vector<int32_t> c = a;
  c[0] = 77;
  std::vector<uint64_t> c_hashes;
  cache.extend_hashes(c, c_hashes);
  EXPECT_EQ(cache.match(c, c_hashes, 10, got), 0);
  EXPECT_NE(c_hashes[1], hashes[1]);
  // A forged hash (a collision) never shares pages of other tokens: entries compare tokens.
  std::vector<int32_t> d = tokens(8, 50);
  std::vector<uint64_t> forged = hashes;
  EXPECT_EQ(cache.match(d, forged, 10, got), 0);
  EXPECT_TRUE(got.empty());
  allocator.release_all(pages);
  EXPECT_EQ(allocator.num_evictable(), 2);
}

TEST(PrefixCache, EvictionForgetsThePagesAndTheCacheGivesAllBack) {
  PageAllocator allocator(4);
  {
    PrefixCache cache(allocator, 2);
    std::vector<int32_t> a = tokens(8), pages;
    std::vector<uint64_t> hashes;
    cache.extend_hashes(a, hashes);
    ASSERT_TRUE(allocator.allocate(4, pages));
    cache.insert(a, hashes, pages, 0, 4);
    allocator.release_all(pages);
    EXPECT_EQ(allocator.num_free(), 0);
    EXPECT_EQ(allocator.num_evictable(), 4);
    std::vector<int32_t> fresh;
    ASSERT_TRUE(allocator.allocate(2, fresh));  // evicts the last two blocks
    EXPECT_EQ(cache.cached_pages(), 2);
    std::vector<int32_t> got;
    EXPECT_EQ(cache.match(a, hashes, 4, got), 2);
    allocator.release_all(got);
    allocator.release_all(fresh);
  }
  EXPECT_EQ(allocator.num_free(), 4);  // the cache's destructor released its pages
  EXPECT_EQ(allocator.num_cached(), 0);
}

// Runs a plan as the engine would: every sampling chunk gets a new token.
void run(Scheduler& s, const StepPlan& plan) {
  s.complete(plan);
  for (const auto& c : plan.chunks)
    if (c.samples) s.append(c.id, 7);
}

// K samples of one prompt submitted together: the first prefills it, the others wait one step for
// its pages and then compute only the partial last page.
TEST(SchedulerPrefixCache, SamplesOfOnePromptPrefillItOnce) {
  PageAllocator pages(64);
  PrefixCache cache(pages, 4);
  Scheduler s({.max_running = 8, .max_step_tokens = 64, .page_size = 4}, pages, &cache);
  const int64_t max = std::numeric_limits<int64_t>::max();
  for (SequenceId id = 1; id <= 4; ++id) s.add(id, tokens(18), max);
  StepPlan first = s.schedule();
  ASSERT_EQ(first.chunks.size(), 1u);  // the others wait for the first one's blocks
  EXPECT_EQ(first.chunks[0].count, 18);
  run(s, first);
  StepPlan second = s.schedule();
  int64_t prefill_tokens = 0;
  for (const auto& c : second.chunks) {
    if (c.id == 1) continue;
    EXPECT_EQ(c.start, 16);  // 4 cached pages
    EXPECT_EQ(c.count, 2);
    EXPECT_EQ(s.sequence(c.id).cached_tokens, 16);
    prefill_tokens += c.count;
  }
  EXPECT_EQ(prefill_tokens, 3 * 2);
  EXPECT_EQ(cache.stats().hit_tokens, 3 * 16);
  EXPECT_EQ(cache.stats().lookup_tokens, 4 * 18);
  run(s, second);
  EXPECT_EQ(s.sequence(2).pages[0], s.sequence(1).pages[0]);  // shared
  EXPECT_NE(s.sequence(2).pages[4], s.sequence(1).pages[4]);  // the partial page is each one's own
  for (SequenceId id = 1; id <= 4; ++id) s.remove(id);
  EXPECT_EQ(pages.num_held(), 0);
  EXPECT_EQ(pages.num_available(), 64);
}

// Only the shareable prefix is offered and matched: a sequence whose generated tokens depend on
// its attention spec shares its prompt only; shareable 0 shares nothing.
TEST(SchedulerPrefixCache, OnlyTheShareableTokensAreOfferedAndMatched) {
  PageAllocator pages(64);
  PrefixCache cache(pages, 4);
  Scheduler s({.max_running = 8, .max_step_tokens = 64, .page_size = 4}, pages, &cache);
  s.add(1, tokens(10), 10);
  run(s, s.schedule());                         // 10 computed, a token appended
  for (int i = 0; i < 8; ++i) run(s, s.schedule());  // 19 computed
  EXPECT_EQ(cache.cached_pages(), 2);           // blocks within the first 10 tokens
  s.add(2, tokens(20), 0);                      // e.g. a stateful flow: nothing shared
  StepPlan p = s.schedule();
  const ScheduledChunk* c2 = nullptr;
  for (const auto& c : p.chunks)
    if (c.id == 2) c2 = &c;
  ASSERT_NE(c2, nullptr);
  EXPECT_EQ(c2->start, 0);
  run(s, p);
  EXPECT_EQ(cache.cached_pages(), 2);
  s.remove(1), s.remove(2);
  EXPECT_EQ(pages.num_held(), 0);
}

// Many sequences with common prefixes through a tight pool: preemption and eviction interleave,
// every sequence finishes, nothing leaks, and a rewind never reaches a shared page.
TEST(SchedulerPrefixCache, EverySequenceFinishesUnderPagePressureWithSharing) {
  PageAllocator pages(14);
  PrefixCache cache(pages, 4);
  Scheduler s({.max_running = 6, .max_step_tokens = 16, .page_size = 4}, pages, &cache);
  const int64_t kTarget = 24;
  for (SequenceId id = 1; id <= 12; ++id) {
    std::vector<int32_t> t = tokens(9);
    t.push_back(static_cast<int32_t>(100 + id % 3));  // three prompts sharing 2 blocks
    s.add(id, t, std::numeric_limits<int64_t>::max());
  }
  int finished = 0, preemptions = 0;
  for (int step = 0; step < 4000 && !s.empty(); ++step) {
    StepPlan p = s.schedule();
    ASSERT_LE(p.tokens, 16);
    ASSERT_FALSE(p.chunks.empty()) << "no progress at step " << step;
    preemptions += static_cast<int>(p.preempted.size());
    s.complete(p);
    for (const auto& c : p.chunks) {
      if (!c.samples) continue;
      if (static_cast<int64_t>(s.sequence(c.id).tokens.size()) + 1 >= kTarget) { s.remove(c.id); ++finished; }
      else s.append(c.id, static_cast<int32_t>(c.id % 2));
    }
  }
  EXPECT_EQ(finished, 12);
  EXPECT_GT(preemptions, 0);
  EXPECT_GT(cache.stats().hit_tokens, 0);
  EXPECT_EQ(pages.num_held(), 0);
  EXPECT_EQ(pages.num_cached(), cache.cached_pages());
}

}  // namespace
}  // namespace vortex
