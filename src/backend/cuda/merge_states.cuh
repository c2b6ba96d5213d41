// The one merge primitive: partial attention results over disjoint key sets combine as
// (o, lse) states — o normalised within its part, lse = log Σ exp(scores) of its part:
//   lse = log Σ_s exp(lse_s),   o = Σ_s exp(lse_s − lse) · o_s.
// Split-K decode uses it here; sparse + window and CPU + GPU merges reuse the same formula.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace vortex::cuda {

template <typename To>
struct MergeStatesParams {
  const float* partial_o = nullptr;    // (R, H, S, D)
  const float* partial_lse = nullptr;  // (R, H, S); -inf for an empty part
  To* out = nullptr;                   // (R, H, D)
  float* out_lse = nullptr;            // (R, H) or null
  int64_t rows = 0;                    // R
  int num_heads = 0;                   // H
  int num_splits = 0;                  // S
  int head_dim = 0;                    // D
};

template <typename To>
void launch_merge_states(const MergeStatesParams<To>& p, cudaStream_t stream);

}  // namespace vortex::cuda
