// Paged attention for query rows over the paged KV cache, split-K over each row's keys.
//
// A row is one query token (H heads) with its own key count: a decode token, or one token of a
// prefill chunk (its causal prefix). Each block takes one (row, kv head, split) and computes all
// H/G query heads of that kv head, so each K and V element is loaded once for the whole group
// (bf16: and, with rows_per_block, for several consecutive rows of one chunk).
// Parts are merged with merge_states (the (o, lse) primitive).
//
// Sparse attention uses the same kernels with one page list per (row, kv head): the list holds the
// selected pages in ascending order, the query's own (partly filled) page last, so the row attends
// to the first kv_len keys of that compact list exactly as a dense row attends to its page table.
// Letters: R rows, H query heads, G kv heads, D head dim, P page size, S splits.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace vortex::cuda {

constexpr int kAttentionSplitTokens = 256;  // keys per split (multiple of every page size)

template <typename Tq, typename Tkv>
struct PagedAttentionParams {
  const Tq* q = nullptr;                   // (R, H, D)
  const Tkv* k_cache = nullptr;            // (num_pages, G, P, D)
  const Tkv* v_cache = nullptr;            // (num_pages, G, P, D)
  const float* k_scale = nullptr;          // (num_pages, G, P): an fp8 cache's row scales (kv_fp8.cuh)
  const float* v_scale = nullptr;          // (num_pages, G, P)
  const int32_t* page_table = nullptr;     // flat page ids of all sequences
  const int64_t* page_offset = nullptr;    // (R), or (R, G) with per_head_pages: where a list starts in page_table
  const int32_t* kv_len = nullptr;         // (R), or (R, G): keys attended (the first kv_len of the list's pages)
  float* partial_o = nullptr;              // (R, H, S, D)
  float* partial_lse = nullptr;            // (R, H, S)
  int64_t rows = 0;                        // R
  int num_heads = 0;                       // H
  int num_kv_heads = 0;                    // G
  int head_dim = 0;                        // D
  int page_size = 0;                       // P
  int num_splits = 0;                      // S ≥ ceil(max kv_len / kAttentionSplitTokens)
  float scale = 1.0f;                      // softmax scale, 1/sqrt(D)
  bool per_head_pages = false;             // sparse: one page list per (row, kv head)
  // Consecutive rows that one block takes together (bf16 tensor-core path, dense lists): the rows
  // of one chunk share its page table, so a verify chunk's γ+1 tokens × the group's heads fill one
  // 16-row tile and read each K/V tile once. Each row's result is bit-identical to rows_per_block 1.
  // R must be a multiple; rows_per_block × (H/G) ≤ 16.
  int rows_per_block = 1;
};

// Index of (row, kv head)'s page list and key count in page_offset / kv_len.
template <typename Tq, typename Tkv>
__host__ __device__ inline int64_t list_index(const PagedAttentionParams<Tq, Tkv>& p, int64_t row, int g) {
  return p.per_head_pages ? row * p.num_kv_heads + g : row;
}

template <typename Tq, typename Tkv>
void launch_paged_attention(const PagedAttentionParams<Tq, Tkv>& p, cudaStream_t stream);

}  // namespace vortex::cuda
