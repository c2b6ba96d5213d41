#include "kv/kv_cache.h"

#include "core/error.h"

namespace vortex {

KvCache::KvCache(const KvCacheShape& shape) : shape_(shape), allocator_(static_cast<int32_t>(shape.num_pages)) {
  check(shape.page_size == 8 || shape.page_size == 16 || shape.page_size == 32 || shape.page_size == 64,
        "page size must be 8, 16, 32 or 64, got {}", shape.page_size);
  size_t layer_elements = static_cast<size_t>(shape.num_pages * shape.page_elements());
  for (int64_t layer = 0; layer < shape.num_layers; ++layer) {
    k_.emplace_back(new float[layer_elements]);
    v_.emplace_back(new float[layer_elements]);
  }
}

bool KvCache::reserve(std::vector<int32_t>& page_table, int64_t tokens) {
  int64_t needed = pages_for(tokens) - static_cast<int64_t>(page_table.size());
  if (needed <= 0) return true;
  return allocator_.allocate(static_cast<int32_t>(needed), page_table);
}

}  // namespace vortex
