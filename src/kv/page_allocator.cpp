#include "kv/page_allocator.h"

#include "core/error.h"

namespace vortex {

PageAllocator::PageAllocator(int32_t num_pages) {
  check(num_pages > 0, "the KV cache needs at least one page, got {}", num_pages);
  refcounts_.assign(static_cast<size_t>(num_pages), 0);
  cached_.assign(static_cast<size_t>(num_pages), 0);
  prev_.assign(static_cast<size_t>(num_pages), -1);
  next_.assign(static_cast<size_t>(num_pages), -1);
  free_.reserve(static_cast<size_t>(num_pages));
  for (int32_t page = num_pages - 1; page >= 0; --page) free_.push_back(page);
}

bool PageAllocator::allocate(int32_t count, std::vector<int32_t>& pages) {
  if (count < 0 || count > num_available()) return false;
  if (count > num_free()) evict(count - num_free());
  for (int32_t i = 0; i < count; ++i) {
    int32_t page = free_.back();
    free_.pop_back();
    refcounts_[static_cast<size_t>(page)] = 1;
    pages.push_back(page);
  }
  return true;
}

void PageAllocator::check_owned(int32_t page, const char* what) const {
  check(page >= 0 && page < num_pages() && refcounts_[static_cast<size_t>(page)] > 0, "internal: {} of page {} that is not owned",
        what, page);
}

void PageAllocator::retain(int32_t page) {
  check_owned(page, "retain");
  auto& count = refcounts_[static_cast<size_t>(page)];
  if (count == 1 && cached_[static_cast<size_t>(page)]) unlink_evictable(page);  // in use again
  ++count;
}

void PageAllocator::release(int32_t page) {
  check_owned(page, "release");
  auto& count = refcounts_[static_cast<size_t>(page)];
  if (--count == 0) free_.push_back(page);
  else if (count == 1 && cached_[static_cast<size_t>(page)]) link_evictable(page);
}

void PageAllocator::release_all(std::vector<int32_t>& pages) {
  // Last page first: a sequence's deeper pages become evictable before its first ones, so the
  // cache loses a prefix's tail before the pages that lead to it.
  for (auto it = pages.rbegin(); it != pages.rend(); ++it) release(*it);
  pages.clear();
}

void PageAllocator::mark_cached(int32_t page) {
  check_owned(page, "caching");
  check(!cached_[static_cast<size_t>(page)], "internal: page {} is cached twice", page);
  cached_[static_cast<size_t>(page)] = 1;
  ++cached_count_;
  ++refcounts_[static_cast<size_t>(page)];  // the cache's reference: never 1 here, so not evictable yet
}

void PageAllocator::unmark_cached(int32_t page) {
  check_owned(page, "uncaching");
  check(cached_[static_cast<size_t>(page)], "internal: page {} is not cached", page);
  if (refcounts_[static_cast<size_t>(page)] == 1) unlink_evictable(page);
  cached_[static_cast<size_t>(page)] = 0;
  --cached_count_;
  release(page);
}

void PageAllocator::link_evictable(int32_t page) {
  prev_[static_cast<size_t>(page)] = tail_;
  next_[static_cast<size_t>(page)] = -1;
  if (tail_ >= 0) next_[static_cast<size_t>(tail_)] = page;
  else head_ = page;
  tail_ = page;
  ++evictable_count_;
}

void PageAllocator::unlink_evictable(int32_t page) {
  const int32_t p = prev_[static_cast<size_t>(page)], n = next_[static_cast<size_t>(page)];
  if (p >= 0) next_[static_cast<size_t>(p)] = n;
  else head_ = n;
  if (n >= 0) prev_[static_cast<size_t>(n)] = p;
  else tail_ = p;
  prev_[static_cast<size_t>(page)] = next_[static_cast<size_t>(page)] = -1;
  --evictable_count_;
}

void PageAllocator::evict(int32_t count) {
  for (int32_t i = 0; i < count && head_ >= 0; ++i) {
    const int32_t page = head_;
    if (evict_hook_) evict_hook_(page);  // the cache forgets the page's tokens
    unmark_cached(page);                 // refcount 1 -> 0: free
  }
}

}  // namespace vortex
