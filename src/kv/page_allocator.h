// The KV page allocator: hands out page ids from a fixed pool, with reference counts so that
// sequences can share prefix pages. Host-only logic (no CUDA headers), shared by every backend.
//
// Prefix caching (kv/prefix_cache.h) keeps pages after their sequences end: the cache holds one
// reference of each page it keeps ("cached"). A cached page that nobody else holds is evictable:
// it counts as available, and allocate() evicts such pages, least recently released first, when the
// free list is short, telling the cache through its evict hook so that it forgets the page.
//
// Invariant: a page is either free (refcount 0, in the free list) or owned (refcount ≥ 1, not in
// the free list); a page is in the evictable list iff it is cached with refcount 1. allocate()
// never throws on exhaustion: it returns false and allocates nothing, so the scheduler can queue
// or preempt instead of failing a request.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>

namespace vortex {

class PageAllocator {
 public:
  explicit PageAllocator(int32_t num_pages);

  // Appends `count` fresh pages (refcount 1) to `pages`; all or nothing. Evicts cached pages
  // nobody holds when the free list alone is too short.
  bool allocate(int32_t count, std::vector<int32_t>& pages);
  void retain(int32_t page);   // one more owner (prefix sharing)
  void release(int32_t page);  // one owner fewer; freed at zero
  void release_all(std::vector<int32_t>& pages);  // releases, last page first, and clears

  // The prefix cache's side: `page` (owned) gains or loses the cache's reference. mark_cached
  // retains; unmark_cached releases. The hook runs for each page allocate() evicts, before the
  // page is freed.
  void mark_cached(int32_t page);
  void unmark_cached(int32_t page);
  void set_evict_hook(std::function<void(int32_t page)> hook) { evict_hook_ = std::move(hook); }

  int32_t num_pages() const { return static_cast<int32_t>(refcounts_.size()); }
  int32_t num_free() const { return static_cast<int32_t>(free_.size()); }
  int32_t num_used() const { return num_pages() - num_free(); }
  int32_t num_evictable() const { return evictable_count_; }
  int32_t num_available() const { return num_free() + num_evictable(); }  // what allocate() can hand out
  int32_t num_held() const { return num_used() - num_evictable(); }       // pages some sequence holds
  int32_t num_cached() const { return cached_count_; }
  int32_t refcount(int32_t page) const { return refcounts_.at(static_cast<size_t>(page)); }
  bool cached(int32_t page) const { return cached_.at(static_cast<size_t>(page)) != 0; }

 private:
  void check_owned(int32_t page, const char* what) const;
  void link_evictable(int32_t page);    // at the most recent end
  void unlink_evictable(int32_t page);
  void evict(int32_t count);

  std::vector<int32_t> refcounts_;  // (num_pages)
  std::vector<int32_t> free_;       // stack of free page ids; lowest ids handed out first
  std::vector<uint8_t> cached_;     // (num_pages) the prefix cache holds a reference
  // The evictable pages as a doubly linked list over page ids (-1 ends), least recent at head_.
  std::vector<int32_t> prev_, next_;
  int32_t head_ = -1, tail_ = -1;
  int32_t evictable_count_ = 0, cached_count_ = 0;
  std::function<void(int32_t)> evict_hook_;
};

}  // namespace vortex
