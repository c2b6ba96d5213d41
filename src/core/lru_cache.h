// A map that holds at most `capacity` entries and forgets the least recently used one to make room.
//
// Every cache whose keys a client chooses (an attention spec's text, a decode step's shape) is one
// of these, so no sequence of requests grows the process without bound. put() hands back what it
// evicted, for caches whose values need releasing (a CUDA graph); values that are shared_ptrs stay
// alive for whoever still holds them. Not thread-safe: the owner locks.
#pragma once

#include <cstddef>
#include <list>
#include <optional>
#include <unordered_map>
#include <utility>

#include "core/error.h"

namespace vortex {

template <typename Key, typename Value, typename Hash = std::hash<Key>>
class LruCache {
 public:
  explicit LruCache(size_t capacity) : capacity_(capacity) { check(capacity > 0, "internal: an LRU cache needs a capacity > 0"); }

  // The value of `key`, now the most recently used; null when absent. Valid until the next put().
  Value* find(const Key& key) {
    auto it = index_.find(key);
    if (it == index_.end()) return nullptr;
    order_.splice(order_.begin(), order_, it->second);
    return &it->second->second;
  }

  bool contains(const Key& key) const { return index_.count(key) != 0; }

  // Inserts or replaces `key`'s value, now the most recently used. Returns the entry evicted to
  // stay within the capacity, if one was.
  std::optional<std::pair<Key, Value>> put(const Key& key, Value value) {
    if (Value* existing = find(key)) {
      *existing = std::move(value);
      return std::nullopt;
    }
    order_.emplace_front(key, std::move(value));
    index_.emplace(key, order_.begin());
    if (order_.size() <= capacity_) return std::nullopt;
    std::pair<Key, Value> evicted = std::move(order_.back());
    index_.erase(evicted.first);
    order_.pop_back();
    return evicted;
  }

  // Removes every entry, calling release(key, value) on each first.
  template <typename F>
  void clear(F&& release) {
    for (auto& [key, value] : order_) release(key, value);
    order_.clear();
    index_.clear();
  }

  size_t size() const { return order_.size(); }
  size_t capacity() const { return capacity_; }

 private:
  using Entry = std::pair<Key, Value>;
  size_t capacity_;
  std::list<Entry> order_;  // most recently used first
  std::unordered_map<Key, typename std::list<Entry>::iterator, Hash> index_;
};

}  // namespace vortex
