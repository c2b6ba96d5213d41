#include "kv/page_allocator.h"

#include "core/error.h"

namespace vortex {

PageAllocator::PageAllocator(int32_t num_pages) {
  check(num_pages > 0, "the KV cache needs at least one page, got {}", num_pages);
  refcounts_.assign(static_cast<size_t>(num_pages), 0);
  free_.reserve(static_cast<size_t>(num_pages));
  for (int32_t page = num_pages - 1; page >= 0; --page) free_.push_back(page);
}

bool PageAllocator::allocate(int32_t count, std::vector<int32_t>& pages) {
  if (count < 0 || count > num_free()) return false;
  for (int32_t i = 0; i < count; ++i) {
    int32_t page = free_.back();
    free_.pop_back();
    refcounts_[static_cast<size_t>(page)] = 1;
    pages.push_back(page);
  }
  return true;
}

void PageAllocator::retain(int32_t page) {
  check(page >= 0 && page < num_pages() && refcounts_[static_cast<size_t>(page)] > 0,
        "internal: retain of page {} that is not owned", page);
  ++refcounts_[static_cast<size_t>(page)];
}

void PageAllocator::release(int32_t page) {
  check(page >= 0 && page < num_pages() && refcounts_[static_cast<size_t>(page)] > 0,
        "internal: release of page {} that is not owned", page);
  if (--refcounts_[static_cast<size_t>(page)] == 0) free_.push_back(page);
}

void PageAllocator::release_all(std::vector<int32_t>& pages) {
  for (int32_t page : pages) release(page);
  pages.clear();
}

}  // namespace vortex
