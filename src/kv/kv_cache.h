// The paged KV cache of the CPU backend: fp32 K and V per layer in the layout of DESIGN.md (rows
// rounded on append to the storage type the shape names, as the GPU stores them),
//   k[layer], v[layer]: (num_pages, G, P, D)   G kv heads, P page size, D head dim
// so one (page, kv head) is contiguous and sparse selection can work per kv head.
// A sequence owns a page table; token t of the sequence lives in page_table[t / P], slot t % P.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "kv/kv_rounding.h"
#include "kv/page_allocator.h"

namespace vortex {

struct KvCacheShape {
  int64_t num_layers = 0;
  int64_t num_pages = 0;
  int64_t num_kv_heads = 0;  // G
  int64_t page_size = 16;    // P
  int64_t head_dim = 0;      // D
  KvStorage storage = KvStorage::kF32;  // what each appended row is rounded to (kept in fp32)
  int64_t page_elements() const { return num_kv_heads * page_size * head_dim; }
};

class KvCache {
 public:
  explicit KvCache(const KvCacheShape& shape);

  const KvCacheShape& shape() const { return shape_; }
  PageAllocator& allocator() { return allocator_; }
  const PageAllocator& allocator() const { return allocator_; }

  float* k(int64_t layer) { return k_[static_cast<size_t>(layer)].get(); }  // (num_pages, G, P, D)
  float* v(int64_t layer) { return v_[static_cast<size_t>(layer)].get(); }  // (num_pages, G, P, D)
  const float* k(int64_t layer) const { return k_[static_cast<size_t>(layer)].get(); }
  const float* v(int64_t layer) const { return v_[static_cast<size_t>(layer)].get(); }

  // Offset of (page, kv head, slot) in a layer's K or V array.
  int64_t offset(int32_t page, int64_t kv_head, int64_t slot) const {
    return ((page * shape_.num_kv_heads + kv_head) * shape_.page_size + slot) * shape_.head_dim;
  }
  // Pages needed to hold `tokens` tokens.
  int64_t pages_for(int64_t tokens) const { return (tokens + shape_.page_size - 1) / shape_.page_size; }
  // Grows `page_table` so it holds `tokens` tokens; false (nothing allocated) when pages run out.
  bool reserve(std::vector<int32_t>& page_table, int64_t tokens);

 private:
  KvCacheShape shape_;
  PageAllocator allocator_;
  // (L) of (num_pages * G * P * D), left uninitialised: the OS maps a page of memory only when a
  // KV page is first written, so a cache sized for the whole context costs nothing until used.
  std::vector<std::unique_ptr<float[]>> k_, v_;
};

}  // namespace vortex
