#include <cuda_bf16.h>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/pdl.cuh"
#include "backend/cuda/merge_states.cuh"
#include "backend/cuda/types.cuh"

namespace vortex::cuda {
namespace {

constexpr int kWarps = 16;
constexpr int kMaxHeadDim = 256;

// One block per (row, head). Every warp finds the largest lse; warp w then sums splits w, w + 16, …
// with each lane owning D/32 output dims (float4 loads when D % 4 == 0), eight splits' loads in
// flight at once; the warps' sums add up through shared memory. Long contexts have 128–512
// splits, and at batch 1 there are only H blocks: one warp walking a row's splits one after
// another was latency-bound (0.7 TB/s at 16 × 32K, ~7 ms per step at 1 × 128K).
template <typename To>
__global__ void __launch_bounds__(kWarps * 32) merge_states_kernel(MergeStatesParams<To> p) {
  __shared__ float partial[kWarps][kMaxHeadDim];
  pdl_wait(), pdl_release();  // (pdl.cuh)
  const int64_t rh = blockIdx.x;  // row * H + head
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, S = p.num_splits, D = p.head_dim;
  const float* lse = p.partial_lse + rh * S;
  float max_lse = -INFINITY;
  for (int s = lane; s < S; s += 32) max_lse = fmaxf(max_lse, lse[s]);
  max_lse = warp_max(max_lse);
  float total = 0.0f;
  for (int s = lane; s < S; s += 32) total += lse[s] == -INFINITY ? 0.0f : expf(lse[s] - max_lse);
  total = warp_sum(total);
  const float* o = p.partial_o + rh * S * D;
  auto weight = [&](int s) { return lse[s] == -INFINITY ? 0.0f : expf(lse[s] - max_lse); };
  if (D % 4 == 0) {
    for (int d = lane * 4; d < D; d += 128) {
      float4 acc = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll 8
      for (int s = warp; s < S; s += kWarps) {
        const float w = weight(s);
        const float4 v = *reinterpret_cast<const float4*>(o + static_cast<int64_t>(s) * D + d);
        acc.x += w * v.x, acc.y += w * v.y, acc.z += w * v.z, acc.w += w * v.w;
      }
      partial[warp][d] = acc.x, partial[warp][d + 1] = acc.y, partial[warp][d + 2] = acc.z, partial[warp][d + 3] = acc.w;
    }
  } else {
    for (int d = lane; d < D; d += 32) {
      float acc = 0.0f;
      for (int s = warp; s < S; s += kWarps) acc += weight(s) * o[static_cast<int64_t>(s) * D + d];
      partial[warp][d] = acc;
    }
  }
  __syncthreads();
  const float inv_total = 1.0f / total;
  for (int d = threadIdx.x; d < D; d += kWarps * 32) {
    float sum = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) sum += partial[w][d];
    p.out[rh * D + d] = from_float<To>(sum * inv_total);
  }
  if (p.out_lse && threadIdx.x == 0) p.out_lse[rh] = max_lse + logf(total);
}

}  // namespace

template <typename To>
void launch_merge_states(const MergeStatesParams<To>& p, cudaStream_t stream) {
  check(p.head_dim <= kMaxHeadDim, "merge_states: head_dim {} > {} is not supported", p.head_dim, kMaxHeadDim);
  if (p.rows == 0) return;
  launch_pdl(merge_states_kernel<To>, dim3(static_cast<unsigned>(p.rows * p.num_heads)), dim3(kWarps * 32), 0, stream, p);
  VX_CUDA_LAUNCH();
}

template void launch_merge_states<float>(const MergeStatesParams<float>&, cudaStream_t);
template void launch_merge_states<__nv_bfloat16>(const MergeStatesParams<__nv_bfloat16>&, cudaStream_t);

}  // namespace vortex::cuda
