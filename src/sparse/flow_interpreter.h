// The CPU interpreter of flows: the reference every other flow backend is checked against.
//
// For one (sequence, KV head, layer) it evaluates a flow on N candidate pages and writes one score
// per page (and the pages' saved state); select_pages() then picks the pages. Letters: Hg query
// heads per KV head, D head dim, P page size, S a field's sub-rows, W a field's width (D or 1).
//
// Evaluation order: values that do not depend on the page (q, constants, abs(q), ...) once; then
// page after page, in phases split at each softmax (a softmax needs its input on every page
// first). load() reads the state as it was before the call; saves are written at the end.
// Not thread-safe per FlowScratch: give each thread its own.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "vortex/flow.h"

namespace vortex {

// Where a field's values live: page id p's (S, W) floats start at base + p * page_stride.
struct FlowPageView {
  const float* base = nullptr;
  int64_t page_stride = 0;
};

struct FlowInputs {
  const float* q = nullptr;         // (Hg, D): the group's query heads, after RoPE
  int64_t group = 0;                // Hg
  int64_t head_dim = 0;             // D
  int64_t page_size = 0;            // P
  std::span<const int32_t> pages{};    // (N) candidate page ids
  std::vector<FlowPageView> fields{};  // one per flow field, in declaration order
  std::vector<float*> state_base{};    // one per state slot: page p's value at base[p * state_page_stride]
  int64_t state_page_stride = 1;
};

// The interpreter's reusable buffers. reserve() sizes them for a flow and the largest call, after
// which evaluate_flow allocates nothing.
class FlowScratch {
 public:
  void reserve(const Flow& flow, int64_t group, int64_t head_dim, int64_t page_size, int64_t max_pages);

  // Per instruction, resolved for one call (internal to the interpreter).
  struct Slot {
    int64_t heads = 1, sub = 1, feat = 1;  // run-time shape (h, s, f)
    int64_t size = 1;                      // h * s * f
    int64_t offset = 0;                    // into values: this page's (h, s, f), or the page-invariant value
    int64_t spill = -1;                    // into spills: (N, h, s, f) when later phases read it; -1 = none
    int64_t stats = -1;                    // softmax: into values, (2, h, s, f) max and sum of exp
    int32_t phase = 0;                     // -1 = page-invariant, computed once
    bool keep = false;                     // read by a later phase or by the end of the call
  };
  std::vector<Slot> slots;     // (instrs)
  std::vector<float> values;   // per-page values of the current page, page-invariant values, softmax stats
  std::vector<float> spills;   // values kept for every page
};

// Evaluates `flow` on in.pages; scores: (N). Writes the saved state of every candidate page.
// Throws vortex::Error when the inputs do not match the flow (field or state count, page size).
void evaluate_flow(const Flow& flow, const FlowInputs& in, std::span<float> scores, FlowScratch& scratch);

// The selection of `flow` over the scores: indices into the candidates, best first, at most k;
// equal scores in candidate order; NaN never selected. select none gives nothing.
void select_pages(const Flow& flow, std::span<const float> scores, int64_t k, std::vector<int32_t>& selected);
std::vector<int32_t> select_pages(const Flow& flow, std::span<const float> scores, int64_t k);

}  // namespace vortex
