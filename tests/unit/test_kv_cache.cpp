#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <set>

#include "core/error.h"
#include "kv/kv_cache.h"
#include "kv/page_allocator.h"

namespace vortex {
namespace {

TEST(PageAllocator, AllocatesAllOrNothingAndFreesAtZeroRefs) {
  PageAllocator allocator(5);
  std::vector<int32_t> a, b;
  ASSERT_TRUE(allocator.allocate(3, a));
  EXPECT_EQ(allocator.num_free(), 2);
  EXPECT_FALSE(allocator.allocate(3, b));  // exhaustion is reported, nothing is taken
  EXPECT_TRUE(b.empty());
  EXPECT_EQ(allocator.num_free(), 2);
  std::set<int32_t> distinct(a.begin(), a.end());
  EXPECT_EQ(distinct.size(), 3u);
  int32_t shared = a[0];
  allocator.retain(shared);  // a second owner, as a shared prefix page has
  allocator.release_all(a);
  EXPECT_TRUE(a.empty());
  EXPECT_EQ(allocator.num_free(), 4);
  EXPECT_EQ(allocator.refcount(shared), 1);
  allocator.release(shared);
  EXPECT_EQ(allocator.num_free(), 5);
  ASSERT_TRUE(allocator.allocate(5, b));
  EXPECT_EQ(allocator.num_free(), 0);
}

TEST(PageAllocator, MisuseIsAnInternalError) {
  PageAllocator allocator(2);
  EXPECT_THROW(allocator.release(0), Error);
  EXPECT_THROW(allocator.retain(7), Error);
  EXPECT_THROW(PageAllocator(0), Error);
}

TEST(KvCache, ReserveGrowsPageTablesAndReportsExhaustion) {
  KvCache cache({.num_layers = 2, .num_pages = 4, .num_kv_heads = 2, .page_size = 16, .head_dim = 8});
  std::vector<int32_t> table;
  EXPECT_TRUE(cache.reserve(table, 17));
  EXPECT_EQ(table.size(), 2u);
  EXPECT_TRUE(cache.reserve(table, 32));
  EXPECT_EQ(table.size(), 2u);
  std::vector<int32_t> other;
  EXPECT_FALSE(cache.reserve(other, 49));  // needs 4 pages, 2 left
  EXPECT_TRUE(other.empty());
  EXPECT_EQ(cache.offset(1, 1, 3), ((1 * 2 + 1) * 16 + 3) * 8);
}

TEST(KvCache, RejectsUnsupportedPageSize) {
  EXPECT_THROW(KvCache({.num_layers = 1, .num_pages = 1, .num_kv_heads = 1, .page_size = 12, .head_dim = 8}), Error);
}

}  // namespace
}  // namespace vortex
