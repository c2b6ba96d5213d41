// The KV page allocator: hands out page ids from a fixed pool, with reference counts so that
// sequences can share prefix pages. Host-only logic (no CUDA headers), shared by every backend.
//
// Invariant: a page is either free (refcount 0, in the free list) or owned (refcount ≥ 1, not in
// the free list). allocate() never throws on exhaustion: it returns false and allocates nothing,
// so the scheduler can queue or preempt instead of failing a request.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace vortex {

class PageAllocator {
 public:
  explicit PageAllocator(int32_t num_pages);

  // Appends `count` fresh pages (refcount 1) to `pages`; all or nothing.
  bool allocate(int32_t count, std::vector<int32_t>& pages);
  void retain(int32_t page);   // one more owner (prefix sharing)
  void release(int32_t page);  // one owner fewer; freed at zero
  void release_all(std::vector<int32_t>& pages);  // releases and clears

  int32_t num_pages() const { return static_cast<int32_t>(refcounts_.size()); }
  int32_t num_free() const { return static_cast<int32_t>(free_.size()); }
  int32_t num_used() const { return num_pages() - num_free(); }
  int32_t refcount(int32_t page) const { return refcounts_.at(static_cast<size_t>(page)); }

 private:
  std::vector<int32_t> refcounts_;  // (num_pages)
  std::vector<int32_t> free_;       // stack of free page ids; lowest ids handed out first
};

}  // namespace vortex
