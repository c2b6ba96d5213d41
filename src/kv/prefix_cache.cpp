#include "kv/prefix_cache.h"

#include <algorithm>

#include "core/error.h"

namespace vortex {

PrefixCache::PrefixCache(PageAllocator& allocator, int64_t page_size) : allocator_(allocator), page_size_(page_size) {
  check(page_size > 0, "internal: page size must be positive");
  allocator_.set_evict_hook([this](int32_t page) { forget(page); });
}

PrefixCache::~PrefixCache() {
  allocator_.set_evict_hook(nullptr);
  for (const auto& [page, hash] : by_page_) allocator_.unmark_cached(page);
}

uint64_t PrefixCache::block_hash(uint64_t parent, std::span<const int32_t> tokens) {
  // FNV-1a over the parent hash and the token ids, then a SplitMix64 finaliser to spread the bits.
  uint64_t h = 0xcbf29ce484222325ull ^ parent;
  for (int32_t t : tokens) {
    auto v = static_cast<uint32_t>(t);
    for (int byte = 0; byte < 4; ++byte, v >>= 8) h = (h ^ (v & 0xffu)) * 0x100000001b3ull;
  }
  h ^= h >> 30, h *= 0xbf58476d1ce4e5b9ull;
  h ^= h >> 27, h *= 0x94d049bb133111ebull;
  h ^= h >> 31;
  return h == 0 ? 1 : h;  // 0 stands for "no parent"
}

void PrefixCache::extend_hashes(std::span<const int32_t> tokens, std::vector<uint64_t>& hashes) const {
  const auto P = static_cast<size_t>(page_size_);
  for (size_t b = hashes.size(); (b + 1) * P <= tokens.size(); ++b)
    hashes.push_back(block_hash(b == 0 ? 0 : hashes[b - 1], tokens.subspan(b * P, P)));
}

int64_t PrefixCache::match(std::span<const int32_t> tokens, std::span<const uint64_t> hashes, int64_t max_blocks,
                           std::vector<int32_t>& pages) {
  const auto P = static_cast<size_t>(page_size_);
  const int64_t blocks = std::min<int64_t>(max_blocks, static_cast<int64_t>(hashes.size()));
  int64_t matched = 0;
  for (; matched < blocks; ++matched) {
    const auto b = static_cast<size_t>(matched);
    auto it = entries_.find(hashes[b]);
    if (it == entries_.end()) break;
    const Entry& e = it->second;
    if (e.parent != (b == 0 ? 0 : hashes[b - 1]) || !std::equal(e.tokens.begin(), e.tokens.end(), tokens.begin() + b * P)) break;
    allocator_.retain(e.page);
    pages.push_back(e.page);
  }
  return matched;
}

void PrefixCache::insert(std::span<const int32_t> tokens, std::span<const uint64_t> hashes, std::span<const int32_t> pages,
                         int64_t from, int64_t to) {
  const auto P = static_cast<size_t>(page_size_);
  for (int64_t i = from; i < to; ++i) {
    const auto b = static_cast<size_t>(i);
    if (entries_.count(hashes[b])) continue;
    const int32_t page = pages[b];
    if (allocator_.cached(page)) continue;  // already cached under another block (cannot happen: pages hold one block)
    allocator_.mark_cached(page);
    entries_.emplace(hashes[b], Entry{.page = page, .parent = b == 0 ? 0 : hashes[b - 1],
                                      .tokens = std::vector<int32_t>(tokens.begin() + b * P, tokens.begin() + (b + 1) * P)});
    by_page_.emplace(page, hashes[b]);
  }
}

void PrefixCache::forget(int32_t page) {
  auto it = by_page_.find(page);
  check(it != by_page_.end(), "internal: the allocator evicted page {}, which the prefix cache does not hold", page);
  entries_.erase(it->second);
  by_page_.erase(it);
}

}  // namespace vortex
