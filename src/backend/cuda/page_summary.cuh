// Page summaries on the GPU: one flow field kind (a reduction, S interleaved sub-rows, a storage
// type) of the keys of every kv head of the listed pages, written beside the KV pages with the same
// page ids, one record per (page, kv head) in the layout of src/sparse/field_storage.h.
//
// The CUDA mirror of reduce_page (src/sparse/field_reduce.h) for full pages: key slot r of a page
// goes to sub-row r % S; max/min/mean/std (population) per feature, norm the largest L2 norm of the
// sub-row's keys (W = 1). max and min equal reduce_page bit for bit (the same comparisons in the
// same order); mean and std add in the same order as the CPU; norm sums each key's squares in a
// different order (within 1e-5 relative). Below f32 the values are then stored with
// field_storage.h's rounding (the CPU store's, bit for bit given the same f32 values).
// Called for the pages that just filled, and for every full page after prefill; a partly filled
// page is never summarised (the planner never makes the query's own page a candidate). A negative
// page id is skipped, so that a CUDA graph can pass a fixed-size list (one slot per batch row).
// Letters: N pages to summarise, G kv heads, P page size, D head dim, S sub-rows, W width (D or 1).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "vortex/flow.h"

namespace vortex::cuda {

template <typename T>
struct PageSummaryParams {
  const T* k_cache = nullptr;      // (num_pages, G, P, D) one layer's keys, bf16, fp32 or the fp8 cache's int8
  const float* k_scale = nullptr;  // (num_pages, G, P) fp8 keys' row scales (kv_fp8.cuh): summaries of the keys as read
  bool keys_rotated = false;       // fp8 keys stored as H·k (kv_fp8.cuh): summaries of the keys rotated back, H·row / D
  const int32_t* pages = nullptr;  // (N) page ids to summarise; each page full
  void* summary = nullptr;         // (num_pages, G) records of record_bytes: this kind's values for the layer
  int64_t record_bytes = 0;        // field_record_bytes(storage, S, W)
  int64_t count = 0;               // N
  int num_kv_heads = 0;            // G
  int page_size = 0;               // P
  int head_dim = 0;                // D
  int sub = 1;                     // S: divides P (kFlowDimPage is resolved to P by the caller)
  FieldReduce reduce = FieldReduce::kMax;
  FieldStorage storage = FieldStorage::kF32;
};

template <typename T>
void launch_page_summary(const PageSummaryParams<T>& p, cudaStream_t stream);

// Flow state of restarted pages (slot 0 written again: the page was freed and reused) back to zero,
// as the CPU store does: every slot's (page, every kv head) of one layer. Negative ids are skipped.
constexpr int kPageStateMaxSlots = 4;
struct PageStateResetParams {
  float* state[kPageStateMaxSlots] = {};  // per slot: one layer's (num_pages, G)
  const int32_t* pages = nullptr;         // (N)
  int64_t count = 0;                      // N
  int slots = 0;
  int num_kv_heads = 0;                   // G
};
void launch_page_state_reset(const PageStateResetParams& p, cudaStream_t stream);

}  // namespace vortex::cuda
