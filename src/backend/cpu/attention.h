// Causal attention over the paged KV cache, and the KV append that fills it.
// Letters: T new tokens of one sequence, H query heads, G kv heads, D head dim, P page size.
#pragma once

#include <cstdint>
#include <vector>

#include "kv/kv_cache.h"

namespace vortex::cpu {

// Writes k, v (T, G, D) of tokens at positions start..start+T-1 into their pages.
void append_kv(KvCache& cache, int64_t layer, const std::vector<int32_t>& page_table, int64_t start, int64_t tokens,
               const float* k, const float* v);

struct AttentionChunk {
  const float* q = nullptr;                       // (T, H, D), RoPE applied
  int64_t tokens = 0;                             // T
  int64_t start = 0;                              // position of the first of the T tokens
  const std::vector<int32_t>* page_table = nullptr;  // pages of positions 0..start+T-1
  float* out = nullptr;                           // (T, H, D)
};

// Token t attends to positions 0..start+t (causal), softmax(q·k · scale) · v in fp32.
void paged_attention(const KvCache& cache, int64_t layer, const AttentionChunk& chunk, int64_t num_heads, float scale);

}  // namespace vortex::cpu
