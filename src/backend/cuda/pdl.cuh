// Programmatic dependent launch (Hopper): a kernel launched with launch_pdl may be scheduled while
// the kernel before it on the stream is still finishing, so its launch latency and ramp-up overlap
// that kernel's tail (a decode step is ~10 small kernels per layer). Captured into CUDA graphs as
// programmatic edges. Measured on an H200: ~1% at Qwen3-8B batch 1, 3% on the embedded model's
// sparse step (docs/benchmarks.md); replayed graphs had already hidden most launch gaps.
//
// The contract every kernel launched this way keeps:
//   - pdl_wait() before it reads or writes any memory an earlier kernel may touch (everything but
//     the weights): it returns once every earlier kernel has completed and its writes are visible;
//   - pdl_wait() on every thread that touches such memory, before any early return of a block that
//     might be the only one to wait: the next kernel's pdl_wait() waits for this whole grid, which
//     must itself have waited for the one before, or a kernel two back could still be running;
//   - pdl_release() (optional) once the kernel no longer needs launch priority: the next kernel's
//     blocks may then take free SM slots and wait there.
// A kernel launched the ordinary way after one of these waits for it to complete, as always.
#pragma once

#include <cuda_runtime.h>

#include <utility>

#include "backend/cuda/cuda_check.h"

namespace vortex::cuda {

__device__ __forceinline__ void pdl_wait() { asm volatile("griddepcontrol.wait;" ::: "memory"); }
__device__ __forceinline__ void pdl_release() { asm volatile("griddepcontrol.launch_dependents;" :::); }

// kernel<<<grid, block, smem, stream>>>(args...), allowed to overlap the previous kernel's tail.
template <typename... Params, typename... Args>
void launch_pdl(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream, Args&&... args) {
  cudaLaunchAttribute attribute{};
  attribute.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute.val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t config{};
  config.gridDim = grid, config.blockDim = block, config.dynamicSmemBytes = smem, config.stream = stream;
  config.attrs = &attribute, config.numAttrs = 1;
  VX_CUDA(cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...));
}

}  // namespace vortex::cuda
