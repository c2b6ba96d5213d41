#include "backend/cuda/gemv.cuh"

#include <cuda_bf16.h>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/pdl.cuh"
#include "backend/cuda/types.cuh"

namespace vortex::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kRowsPerWarp = 4;  // rows of W (outputs) per warp: each x vector loaded serves four
constexpr int kUnroll = 4;       // 16-byte vectors of each W row in flight per lane

__device__ __forceinline__ void bf16x8_to_float(const uint4& v, float (&out)[8]) {
  const uint32_t words[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) out[2 * i] = __uint_as_float(words[i] << 16), out[2 * i + 1] = __uint_as_float(words[i] & 0xffff0000u);
}

// Warp w of block b computes outputs n0..n0+3, n0 = 4·(4b + w), for every row of x: lane l reads
// 16-byte vectors l, l + 32, … of each W row (coalesced, streamed past L1), and the matching x
// vectors (cached: every warp reads the same x); a warp reduction finishes each dot product.
// Warps past N return before waiting for the previous kernel: warp 0 of block 0 always waits, so
// the grid still completes after that kernel (pdl.cuh).
template <int M>
__global__ void __launch_bounds__(kWarps * 32) gemv_kernel(GemmArgs g) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t n0 = (static_cast<int64_t>(blockIdx.x) * kWarps + warp) * kRowsPerWarp;
  if (n0 >= g.n) return;
  const int64_t vectors = g.k / 8;
  const uint4* w[kRowsPerWarp];
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) w[r] = static_cast<const uint4*>(g.w) + min(n0 + r, g.n - 1) * vectors;  // past N: a repeated row, not written
  const uint4* x = static_cast<const uint4*>(g.x);
  float acc[kRowsPerWarp][M] = {};
  for (int64_t base = lane; base < vectors; base += 32 * kUnroll) {
    uint4 wv[kUnroll][kRowsPerWarp];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u)
#pragma unroll
      for (int r = 0; r < kRowsPerWarp; ++r)
        wv[u][r] = base + 32 * u < vectors ? __ldcs(w[r] + base + 32 * u) : make_uint4(0, 0, 0, 0);
    // The weights never change: the first ones are in flight before waiting for the kernel that
    // writes x (pdl.cuh). Lane 0, which writes y, always gets here; other lanes touch only W and x.
    if (base == lane) pdl_wait(), pdl_release();
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t c = base + 32 * u;
      if (c >= vectors) break;
      float xf[M][8];
#pragma unroll
      for (int m = 0; m < M; ++m) bf16x8_to_float(x[m * vectors + c], xf[m]);
#pragma unroll
      for (int r = 0; r < kRowsPerWarp; ++r) {
        float wf[8];
        bf16x8_to_float(wv[u][r], wf);
#pragma unroll
        for (int m = 0; m < M; ++m)
#pragma unroll
          for (int i = 0; i < 8; ++i) acc[r][m] += wf[i] * xf[m][i];
      }
    }
  }
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r)
#pragma unroll
    for (int m = 0; m < M; ++m) acc[r][m] = warp_sum(acc[r][m]);
  if (lane != 0) return;
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    if (n0 + r >= g.n) break;
#pragma unroll
    for (int m = 0; m < M; ++m) {
      float* y = g.y + m * g.n + n0 + r;
      *y = g.accumulate ? *y + acc[r][m] : acc[r][m];
    }
  }
}

}  // namespace

bool gemv_fits(const GemmArgs& g) {
  return g.dtype == DType::kBF16 && g.m >= 1 && g.m <= kGemvMaxRows && g.k % 8 == 0 && g.n * g.k <= kGemvMaxWeights;
}

void launch_gemv(const GemmArgs& g, cudaStream_t stream) {
  check(gemv_fits(g), "internal: gemv called with M={} K={} {}", g.m, g.k, dtype_name(g.dtype));
  const int64_t per_block = kWarps * kRowsPerWarp;
  const unsigned blocks = static_cast<unsigned>((g.n + per_block - 1) / per_block);
  switch (g.m) {
    case 1: launch_pdl(gemv_kernel<1>, dim3(blocks), dim3(kWarps * 32), 0, stream, g); break;
    case 2: launch_pdl(gemv_kernel<2>, dim3(blocks), dim3(kWarps * 32), 0, stream, g); break;
    case 3: launch_pdl(gemv_kernel<3>, dim3(blocks), dim3(kWarps * 32), 0, stream, g); break;
    default: launch_pdl(gemv_kernel<4>, dim3(blocks), dim3(kWarps * 32), 0, stream, g); break;
  }
  VX_CUDA_LAUNCH();
}

}  // namespace vortex::cuda
