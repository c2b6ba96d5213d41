// CUDA code generation for flows: one fused indexer kernel per (flow, IndexerShape), as CUDA C++
// source for NVRTC (flow_kernel.h compiles, caches and launches it). Host-only: no CUDA headers.
//
// Letters: R query rows (decode tokens), G KV heads, Hg query heads per KV head (H = G·Hg), D head
// dim, P page size, N candidate pages of one (r, g), S and W a field's sub-rows and width.
//
// What the kernel computes: for every (r, g) and every candidate page of its list, the flow's score,
// exactly as evaluate_flow (src/sparse/flow_interpreter.h) does: same per-page values, softmax over
// the (r, g)'s candidate pages, load() seeing the state from before the launch, saves written for
// every candidate. The selection (top-k, threshold) is not part of it: it writes scores only.
//
// Design (generated per flow; Hg, D, P and every field's (S, W) are compile-time constants):
//   grid (tiles, G, R), block = `warps` warps. One warp evaluates one page at a time; lanes split
//   the feature dimension (feature reductions and dot products end in a warp shuffle reduction,
//   reductions over heads or sub-rows give each lane its own output elements).
//   - q of (r, g) is converted to fp32 in shared memory once per block; page-invariant values
//     (abs(q), sum(q, feat), constants ...) are computed once per block into shared memory.
//   - Elementwise ops are inlined into their consumers (no storage); dot products, reductions and
//     elementwise values read more than once are materialised per warp in shared memory.
//   - A dot product of q (or another page-invariant value) with a field whose sub-rows are whole
//     32-bit words reads the record itself ("field dot", the per-key q·k̂ of the key-proxy flows):
//     lanes own (sub-row, every L-th vector load of it), decode each stored element once for all
//     Hg heads into registers, and the L lanes of a row end in a shuffle reduction. One output per
//     lane walking f alone reads every element Hg times, a byte at a time, with the lanes of a warp
//     a row (64+ bytes) apart: 8x slower for proxy_rerank's int4 pass at Qwen3-8B's shape on an
//     H100 (1.16 ms against 0.135 ms a layer at 8 x 2048 candidates), 22x for its int8 pass.
//   - A flow without softmax is one pass: grid.x tiles the candidate list (`tile_pages` each).
//   - A flow with softmax runs one block per (r, g) (grid.x = 1) that loops over all its pages in
//     phases split at each softmax, like the interpreter: values a later phase reads are spilled to
//     a global workspace (`spill_floats` per candidate), softmax statistics (max, then Σ exp) are
//     block reductions between phases. Fine up to ~8K candidates per (r, g); beyond that, or for
//     small R·G, a split over several blocks with a second pass would be faster.
//   - Each page's score and saves are written by its warp after its last phase; every load of the
//     page happened before. Within one launch a page id must appear at most once per (r, g) list;
//     the same (page, g) in lists of two rows r makes the saved value one of the two (unspecified).
//
// Data types: q fp32 or bf16 (IndexerShape::q_type); each field one record per (page, KV head) in
// its storage type (src/sparse/field_storage.h: f32, bf16, fp8, int8 or int4 with per-sub-row
// scales), dequantised as it is read; state, scores and the spill workspace fp32.
// Numerics: fp32 throughout; sums are in a different order than the interpreter's (relative
// differences ~1e-6). NaN inside max/min reductions may differ: the kernel's lane-parallel order
// can drop a NaN that the interpreter's sequential order keeps.
//
// Limits: at most kFlowMaxFields fields and kFlowMaxState state slots; the block's shared memory
// (q, page-invariant values, per-warp materialised values, softmax statistics) must fit in 48 KB;
// generation throws vortex::Error naming the flow and the limit otherwise. `select none` with no
// saves has nothing to compute: generation throws (check flow_needs_indexer first).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "vortex/flow.h"

namespace vortex::cuda {

inline constexpr int kFlowMaxFields = 8;
inline constexpr int kFlowMaxState = 4;

enum class FlowQueryType : uint8_t { kF32, kBF16 };

// What a generated kernel is specialised on.
struct IndexerShape {
  int32_t group = 0;      // Hg
  int32_t head_dim = 0;   // D
  int32_t page_size = 0;  // P
  FlowQueryType q_type = FlowQueryType::kBF16;
};

// The generated kernel's one argument, passed by value. The generated source declares the same
// struct and static_asserts its size and offsets, so host and device agree.
struct FlowKernelParams {
  const void* q = nullptr;                  // (R, H, D) fp32 or bf16; row r at q + r·q_row_stride elements
  const int32_t* pages = nullptr;           // (total) candidate page ids, (r, g)'s list at offsets[r·G + g]
  const int32_t* offsets = nullptr;         // (R, G) start of each list in pages / scores / spill
  const int32_t* counts = nullptr;          // (R, G) length of each list (N)
  const void* fields[kFlowMaxFields] = {};   // per flow field: the layer's (num_pages, G) records (field_storage.h)
  float* state[kFlowMaxState] = {};          // per state slot: the layer's (num_pages, G)
  float* scores = nullptr;                  // (total) one score per candidate, same layout as pages
  float* spill = nullptr;                   // (total, spill_floats) workspace; null when spill_floats == 0
  int64_t q_row_stride = 0;                 // elements between query rows (H·D when dense)
  int32_t rows = 0;                         // R
  int32_t kv_heads = 0;                     // G
};

// How to launch a generated kernel; fixed at generation time.
struct IndexerLayout {
  int32_t warps = 0;             // threads per block = 32·warps
  int32_t tile_pages = 0;        // candidates per block along grid.x; 0 = one block per (r, g)
  int64_t spill_floats = 0;      // workspace floats per candidate (0: no workspace)
  int64_t shared_bytes = 0;      // static shared memory of one block
  std::vector<int64_t> field_bytes{};   // per field: bytes of one (page, KV head) record
};

// Whether the flow computes anything per page (not `select none` without saves).
bool flow_needs_indexer(const Flow& flow);

// The launch layout of the kernel generate_indexer_source(flow, shape) emits. Throws vortex::Error
// for a shape the flow cannot take (sizes < 1, a field's sub-rows not dividing P) or past the limits.
IndexerLayout indexer_layout(const Flow& flow, const IndexerShape& shape);

// CUDA C++ source of the flow's fused indexer kernel, extern "C" __global__ vx_flow_indexer(FlowKernelParams);
// no #include, compiles with NVRTC alone. Deterministic: equal inputs give equal text (the cache key).
std::string generate_indexer_source(const Flow& flow, const IndexerShape& shape);

inline constexpr const char* kFlowKernelName = "vx_flow_indexer";

}  // namespace vortex::cuda
