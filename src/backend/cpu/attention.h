// Causal attention over the paged KV cache, and the KV append that fills it.
// Letters: T new tokens of one sequence, H query heads, G kv heads, D head dim, P page size.
#pragma once

#include <atomic>
#include <cstdint>
#include <vector>

#include "kv/kv_cache.h"
#include "sparse/attention_spec.h"
#include "sparse/page_summaries.h"

namespace vortex::cpu {

// Writes k, v (T, G, D) of tokens at positions start..start+T-1 into their pages.
void append_kv(KvCache& cache, int64_t layer, const std::vector<int32_t>& page_table, int64_t start, int64_t tokens,
               const float* k, const float* v);

// Sparse (token, layer, kv head) attentions: how many, how many of them dense_below made dense,
// the pages their lists held, and how many of them cover grew, by how many pages.
struct SparseHeadCounts {
  std::atomic<int64_t> sparse{0}, dense{0}, pages{0}, covered{0}, cover_pages{0};
};

struct AttentionChunk {
  const float* q = nullptr;                       // (T, H, D), RoPE applied
  int64_t tokens = 0;                             // T
  int64_t start = 0;                              // position of the first of the T tokens
  const std::vector<int32_t>* page_table = nullptr;  // pages of positions 0..start+T-1
  float* out = nullptr;                           // (T, H, D)
  // Sparse attention: page_lists[(t - first_sparse) * G + g] = the page indices (into page_table,
  // ascending) that token t attends in kv head g, for t >= first_sparse; null: every token dense.
  const std::vector<std::vector<int32_t>>* page_lists = nullptr;
  int64_t first_sparse = 0;
  // What the pages a sparse token's list leaves out (those before its last page) contribute: with
  // an estimate, each adds its estimated mass exp(lse) with its mean value to the token's softmax,
  // read from `summaries` (PageSummaryStore::ensure_rest has summarised them).
  RestEstimate rest = RestEstimate::kDrop;
  // dense_below (attention_spec.h): a sparse (token, kv head) whose list holds less than this share
  // of the estimated softmax mass, for any query head of the group, attends every page instead. The
  // mass of the pages left out is estimated as `estimate` says (a kind `summaries` holds).
  double dense_below = 0.0;
  // cover (attention_spec.h): such a (token, kv head) attends its list and the left-out pages of
  // largest estimated mass (for the group, each head's share summed) until each head's attended
  // pages hold this share; 0: never. Not with dense_below.
  double cover = 0.0;
  RestEstimate estimate = RestEstimate::kDrop;  // the estimate dense_below and cover read; kDrop: rest's
  const PageSummaryStore* summaries = nullptr;
  SparseHeadCounts* counts = nullptr;  // non-null: sparse (token, kv head) attentions are counted here
};

// Token t attends to positions 0..start+t (causal), or to those of its page list, softmax(q·k ·
// scale) · v in fp32. Pages are visited in ascending order either way, so a list holding every
// page gives exactly the dense result.
void paged_attention(const KvCache& cache, int64_t layer, const AttentionChunk& chunk, int64_t num_heads, float scale);

}  // namespace vortex::cpu
