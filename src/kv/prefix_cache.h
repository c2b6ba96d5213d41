// Prefix caching: a full KV page is shared by every sequence whose tokens up to the end of that
// page are the same — the samples of one prompt, the server's `n`, a chat's earlier turns, a common
// system prompt. Host-only (no CUDA headers, no model), used by the Scheduler on every backend.
//
// A full page is keyed by its block hash: a 64-bit chain hash of the page's tokens and the hash of
// the block before it, so equal hashes mean equal prefixes (entries also keep the tokens and the
// parent hash, and a lookup compares them: a hash collision cannot share wrong K/V). The cache
// holds one reference of each page it keeps (PageAllocator::mark_cached); when no sequence holds
// it any more the page is evictable, and the allocator evicts such pages, least recently
// released first, when it needs pages — the cache forgets them through the allocator's hook.
//
// What may be shared is the caller's decision (Scheduler: pages whose K/V do not depend on the
// sequence's attention spec or its drafts, i.e. computed by dense attention, and never for flows
// that keep per-page state). Only full pages are shared: the partial last page of a prompt is
// recomputed by each sequence (at most page_size − 1 tokens), so no page is ever written while
// shared and copy-on-write is never needed. Page summaries live beside their pages and are shared
// with them (they are a function of the page's keys).
#pragma once

#include <cstdint>
#include <span>
#include <unordered_map>
#include <vector>

#include "kv/page_allocator.h"

namespace vortex {

struct PrefixCacheStats {
  int64_t lookup_tokens = 0;  // tokens of sequences admitted with the cache on
  int64_t hit_tokens = 0;     // of which came from cached pages (not computed)
};

class PrefixCache {
 public:
  PrefixCache(PageAllocator& allocator, int64_t page_size);
  ~PrefixCache();  // gives every cached page back to the allocator
  PrefixCache(const PrefixCache&) = delete;
  PrefixCache& operator=(const PrefixCache&) = delete;

  // The chain hash of the block `tokens` (page_size ids) after the block hashed `parent` (0 for
  // the first block).
  static uint64_t block_hash(uint64_t parent, std::span<const int32_t> tokens);
  // Appends to `hashes` the hashes of the full blocks of `tokens` it lacks (the sequence's running list).
  void extend_hashes(std::span<const int32_t> tokens, std::vector<uint64_t>& hashes) const;

  // The cached pages that begin a sequence: blocks 0.. of `tokens` (hashes from extend_hashes), at
  // most `max_blocks`. Appends their pages to `pages`, retained for the caller; returns how many.
  int64_t match(std::span<const int32_t> tokens, std::span<const uint64_t> hashes, int64_t max_blocks,
                std::vector<int32_t>& pages);
  // Offers blocks [from, to) of a sequence, whose page i holds tokens [i·P, (i+1)·P) and was
  // computed; a block already cached keeps its page (the sequence's copy stays its own).
  void insert(std::span<const int32_t> tokens, std::span<const uint64_t> hashes, std::span<const int32_t> pages,
              int64_t from, int64_t to);
  bool contains(uint64_t hash) const { return entries_.count(hash) > 0; }

  int64_t cached_pages() const { return static_cast<int64_t>(entries_.size()); }
  const PrefixCacheStats& stats() const { return stats_; }
  void count_lookup(int64_t tokens, int64_t hits) { stats_.lookup_tokens += tokens, stats_.hit_tokens += hits; }

 private:
  struct Entry {
    int32_t page = -1;
    uint64_t parent = 0;
    std::vector<int32_t> tokens;  // (page_size)
  };
  void forget(int32_t page);  // the allocator evicted it

  PageAllocator& allocator_;
  int64_t page_size_;
  std::unordered_map<uint64_t, Entry> entries_;     // block hash -> entry
  std::unordered_map<int32_t, uint64_t> by_page_;   // cached page -> its block hash
  PrefixCacheStats stats_;
};

}  // namespace vortex
