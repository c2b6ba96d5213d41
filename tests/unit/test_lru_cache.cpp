// LruCache: a bounded map that forgets the least recently used entry.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core/error.h"
#include "core/lru_cache.h"

namespace vortex {
namespace {

TEST(LruCache, EvictsTheLeastRecentlyUsed) {
  LruCache<std::string, int> cache(2);
  EXPECT_FALSE(cache.put("a", 1));
  EXPECT_FALSE(cache.put("b", 2));
  ASSERT_NE(cache.find("a"), nullptr);  // "a" is now the most recent
  auto evicted = cache.put("c", 3);
  ASSERT_TRUE(evicted);
  EXPECT_EQ(evicted->first, "b");
  EXPECT_EQ(evicted->second, 2);
  EXPECT_EQ(cache.size(), 2u);
  EXPECT_EQ(cache.find("b"), nullptr);
  EXPECT_EQ(*cache.find("a"), 1);
  EXPECT_EQ(*cache.find("c"), 3);
}

TEST(LruCache, PutReplacesWithoutEvicting) {
  LruCache<int, int> cache(2);
  cache.put(1, 10);
  cache.put(2, 20);
  EXPECT_FALSE(cache.put(1, 11));  // replaced, and now the most recent
  EXPECT_EQ(*cache.find(1), 11);
  auto evicted = cache.put(3, 30);
  ASSERT_TRUE(evicted);
  EXPECT_EQ(evicted->first, 2);
  EXPECT_TRUE(cache.contains(1) && cache.contains(3));
}

TEST(LruCache, StaysWithinItsCapacityAndClearsThroughRelease) {
  LruCache<int, int> cache(16);
  int evictions = 0;
  for (int i = 0; i < 1000; ++i) {
    if (cache.put(i, i)) ++evictions;
    ASSERT_LE(cache.size(), 16u);
  }
  EXPECT_EQ(evictions, 1000 - 16);
  std::vector<int> released;
  cache.clear([&](int key, int value) { released.push_back(key + value); });
  EXPECT_EQ(released.size(), 16u);
  EXPECT_EQ(cache.size(), 0u);
  EXPECT_EQ(cache.find(999), nullptr);
}

TEST(LruCache, NeedsACapacity) { EXPECT_THROW((LruCache<int, int>(0)), Error); }

}  // namespace
}  // namespace vortex
