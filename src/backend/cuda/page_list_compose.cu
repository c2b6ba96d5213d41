#include <algorithm>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/page_list_compose.cuh"
#include "backend/cuda/types.cuh"

namespace vortex::cuda {
namespace {

constexpr int kThreads = 256;

// Writes the table's pages [first, first + n) to out[0, n).
__device__ void copy_pages(const int32_t* table, int first, int n, int32_t* out) {
  for (int i = threadIdx.x; i < n; i += blockDim.x) out[i] = table[first + i];
}

// Writes the marked candidates' pages, ascending, to out; returns how many (on every thread).
// Thread t takes a contiguous run of candidates; one block-wide scan of the runs' mark counts
// places every thread's writes.   marked: (N) shared, 1 = selected   scratch: (32) shared
__device__ int compact_marked(const uint8_t* marked, int n, const int32_t* table, int first, int32_t* out, int* scratch) {
  const int per_thread = (n + blockDim.x - 1) / blockDim.x;
  const int lo = ::min(n, static_cast<int>(threadIdx.x) * per_thread), hi = ::min(n, lo + per_thread);
  int mine = 0;
  for (int i = lo; i < hi; ++i) mine += marked[i];
  int total = 0;
  int at = block_exclusive_sum(mine, scratch, total);
  for (int i = lo; i < hi; ++i)
    if (marked[i]) out[at++] = table[first + i];
  return total;
}

// Block (r, g). Shared: marked (list_stride) bytes for the selected candidates.
__global__ void __launch_bounds__(kThreads) page_list_compose_kernel(PageListComposeParams p) {
  static_assert(kThreads % 32 == 0 && kThreads <= 1024, "whole warps, one block");
  extern __shared__ uint8_t marked[];  // (N ≤ list_stride)
  __shared__ int scratch[32];
  const int64_t r = blockIdx.x;
  const int g = blockIdx.y, G = p.num_kv_heads;
  const int64_t list = r * G + g;                                     // in list_pages
  const int64_t seg = (p.batch_row ? p.batch_row[r] : r) * G + g;     // in selected and the outputs
  const SparseRow row = p.rows[r];
  const SparseRowPlan plan = plan_sparse_row(row, p.page_size);
  if (plan.own + 1 > p.list_stride) __trap();  // buffers were sized for shorter sequences
  const int32_t* table = p.page_table + row.table_offset;
  int32_t* out = p.list_pages + list * p.list_stride;
  const int N = plan.candidates;
  copy_pages(table, 0, plan.sink_pages, out);
  int picked = 0;
  if (row.select_kind == FlowSelectKind::kTopK && row.k >= N) {  // the budget covers every candidate
    copy_pages(table, plan.sink_pages, N, out + plan.sink_pages);
    picked = N;
  } else if (row.select_kind != FlowSelectKind::kNone && row.k > 0) {
    const int count = p.selected_count[seg];
    if (count < 0 || count > p.selected_stride) __trap();
    const int32_t* selected = p.selected + seg * p.selected_stride;
    for (int i = threadIdx.x; i < N; i += blockDim.x) marked[i] = 0;
    __syncthreads();
    for (int j = threadIdx.x; j < count; j += blockDim.x) {
      const int c = selected[j];
      if (c < 0 || c >= N) __trap();  // page_topk ran on a different candidate count
      marked[c] = 1;
    }
    __syncthreads();
    picked = compact_marked(marked, N, table, plan.sink_pages, out + plan.sink_pages, scratch);
  }
  const int window_pages = plan.own - plan.window_first + 1;
  copy_pages(table, plan.window_first, window_pages, out + plan.sink_pages + picked);
  if (threadIdx.x == 0) {
    const int length = plan.sink_pages + picked + window_pages;
    p.list_offset[seg] = p.list_base + list * p.list_stride;
    p.kv_len[seg] = (length - 1) * p.page_size + (row.position - plan.own * p.page_size + 1);
  }
}

// Block (r, g).
__global__ void __launch_bounds__(kThreads) sparse_candidates_kernel(SparseCandidatesParams p) {
  const int64_t r = blockIdx.x;
  const int g = blockIdx.y;
  const SparseRow row = p.rows[r];
  const SparseRowPlan plan = plan_sparse_row(row, p.page_size);
  const int N = plan.candidates;
  if (N > p.stride) __trap();  // buffers were sized for shorter sequences
  const int64_t seg = static_cast<int64_t>(p.batch_row[r]) * p.num_kv_heads + g;
  copy_pages(p.page_table + row.table_offset, plan.sink_pages, N, p.pages + seg * p.stride);
  if (threadIdx.x == 0) {
    p.offsets[seg] = static_cast<int32_t>(seg * p.stride);
    p.score_offset[seg] = seg * p.stride;
    // As select_head on the CPU: a top-k whose budget covers every candidate, no budget, or no
    // selection takes no top-k (page_list_compose knows which); the flow still runs when it saves.
    const bool selects = row.select_kind == FlowSelectKind::kThreshold ? row.k > 0
                         : row.select_kind == FlowSelectKind::kTopK  ? row.k > 0 && row.k < N
                                                                     : false;
    p.counts[seg] = selects ? N : 0;
    p.k[seg] = row.k;
    p.thresholds[seg] = p.threshold[r];
    if (p.group_counts && p.group[r] >= 0 && (selects || row.saves)) p.group_counts[p.group[r] * p.segments + seg] = N;
  }
}

}  // namespace

void launch_sparse_candidates(const SparseCandidatesParams& p, cudaStream_t stream) {
  check(p.rows_count >= 0 && p.rows_count <= 0x7fffffff, "internal: sparse_candidates of {} rows", p.rows_count);
  if (p.rows_count == 0) return;
  check(p.num_kv_heads >= 1 && p.num_kv_heads <= 65535 && p.page_size >= 1 && p.stride >= 0,
        "internal: sparse_candidates with G {}, P {}, stride {}", p.num_kv_heads, p.page_size, p.stride);
  check(p.segments * std::max<int64_t>(p.stride, 1) <= 0x7fffffff, "sparse_candidates: {} segments of {} candidates overflow the indexer's offsets",
        p.segments, p.stride);
  const dim3 grid(static_cast<unsigned>(p.rows_count), static_cast<unsigned>(p.num_kv_heads));
  sparse_candidates_kernel<<<grid, kThreads, 0, stream>>>(p);
  VX_CUDA_LAUNCH();
}

void launch_page_list_compose(const PageListComposeParams& p, cudaStream_t stream) {
  check(p.rows_count >= 0 && p.rows_count <= 0x7fffffff, "internal: page_list_compose of {} rows", p.rows_count);
  if (p.rows_count == 0) return;
  check(p.num_kv_heads >= 1 && p.num_kv_heads <= 65535, "internal: page_list_compose of {} kv heads", p.num_kv_heads);
  check(p.page_size >= 1, "internal: page_list_compose with page size {}", p.page_size);
  check(p.list_stride >= 1 && p.list_stride <= kPageListMaxPages, "page_list_compose: {} pages per list exceed the limit {}", p.list_stride,
        kPageListMaxPages);
  check(p.selected_stride >= 0, "internal: page_list_compose with selected stride {}", p.selected_stride);
  check(p.rows != nullptr && p.page_table != nullptr && p.selected != nullptr && p.selected_count != nullptr && p.list_pages != nullptr &&
            p.list_offset != nullptr && p.kv_len != nullptr, "internal: page_list_compose with a null pointer");
  const size_t smem = static_cast<size_t>(p.list_stride);
  static SmemLimit limit;
  raise_smem_limit(page_list_compose_kernel, smem, limit);
  const dim3 grid(static_cast<unsigned>(p.rows_count), static_cast<unsigned>(p.num_kv_heads));
  page_list_compose_kernel<<<grid, kThreads, smem, stream>>>(p);
  VX_CUDA_LAUNCH();
}

}  // namespace vortex::cuda
