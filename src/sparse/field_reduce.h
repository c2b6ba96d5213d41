// Page summaries: the reduction of one (page, KV head)'s keys into a flow field's (S, W) values.
// The KV cache calls it when a page fills and after prefill; the CPU interpreter and the CUDA
// indexer read the result. Letters: P page size, D head dim, S field sub-rows, W field width.
#pragma once

#include <cstdint>

#include "vortex/flow.h"

namespace vortex {

// Reduces `rows` keys (the valid key slots 0..rows-1 of a page, rows ≤ P) into out: key slot r goes
// to sub-row r % S. max/min/mean/std (population) are per feature; norm is the largest L2 norm of
// the sub-row's keys (W = 1). A sub-row without a valid key is 0.
//   keys: (rows, D)   out: (S, W)
void reduce_page(const FlowField& field, const float* keys, int64_t rows, int64_t page_size, int64_t head_dim,
                 float* out);

}  // namespace vortex
