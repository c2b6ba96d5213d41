#include <cuda_bf16.h>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/merge_states.cuh"
#include "backend/cuda/types.cuh"

namespace vortex::cuda {

// One block per (row, head); threads over D.
template <typename To>
__global__ void merge_states_kernel(MergeStatesParams<To> p) {
  const int64_t rh = blockIdx.x;  // row * H + head
  const float* lse = p.partial_lse + rh * p.num_splits;
  float max_lse = -INFINITY;
  for (int s = 0; s < p.num_splits; ++s) max_lse = fmaxf(max_lse, lse[s]);
  float total = 0.0f;
  for (int s = 0; s < p.num_splits; ++s) total += lse[s] == -INFINITY ? 0.0f : expf(lse[s] - max_lse);
  for (int d = threadIdx.x; d < p.head_dim; d += blockDim.x) {
    float acc = 0.0f;
    for (int s = 0; s < p.num_splits; ++s) {
      if (lse[s] == -INFINITY) continue;
      acc += expf(lse[s] - max_lse) * p.partial_o[(rh * p.num_splits + s) * p.head_dim + d];
    }
    p.out[rh * p.head_dim + d] = from_float<To>(acc / total);
  }
  if (p.out_lse && threadIdx.x == 0) p.out_lse[rh] = max_lse + logf(total);
}

template <typename To>
void launch_merge_states(const MergeStatesParams<To>& p, cudaStream_t stream) {
  if (p.rows == 0) return;
  merge_states_kernel<<<static_cast<unsigned>(p.rows * p.num_heads), 128, 0, stream>>>(p);
  VX_CUDA_LAUNCH();
}

template void launch_merge_states<float>(const MergeStatesParams<float>&, cudaStream_t);
template void launch_merge_states<__nv_bfloat16>(const MergeStatesParams<__nv_bfloat16>&, cudaStream_t);

}  // namespace vortex::cuda
