// Checked CUDA and cuBLASLt calls: a failure throws vortex::Error naming the call, file and line.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <mutex>

#include "core/error.h"

namespace vortex::cuda {

inline void check_cuda(cudaError_t status, const char* call, const char* file, int line) {
  if (status != cudaSuccess) fail("CUDA error {} ({}) in {} at {}:{}", cudaGetErrorName(status), cudaGetErrorString(status), call, file, line);
}
inline void check_cublas(cublasStatus_t status, const char* call, const char* file, int line) {
  if (status != CUBLAS_STATUS_SUCCESS) fail("cuBLASLt error {} in {} at {}:{}", static_cast<int>(status), call, file, line);
}

// A kernel's dynamic shared-memory limit (cudaFuncAttributeMaxDynamicSharedMemorySize) is per
// kernel, not per launch. raise_smem_limit only ever raises it, so that a CUDA graph captured with a
// larger launch stays valid after smaller eager launches. One SmemLimit per kernel (a function-local
// static beside the launch). Without the attribute a kernel's static plus dynamic shared memory
// must fit in 48 KB, so the dynamic bytes allowed start at 48 KB less the kernel's static part.
struct SmemLimit {
  std::mutex mutex;
  size_t allowed = 0;
  bool known = false;  // allowed has been set from the kernel's static shared memory
};
template <typename Kernel>
void raise_smem_limit(Kernel* kernel, size_t bytes, SmemLimit& limit) {
  const std::lock_guard<std::mutex> lock(limit.mutex);
  if (!limit.known) {
    cudaFuncAttributes attributes{};
    check_cuda(cudaFuncGetAttributes(&attributes, kernel), "cudaFuncGetAttributes", __FILE__, __LINE__);
    limit.allowed = 48 * 1024 - attributes.sharedSizeBytes;
    limit.known = true;
  }
  if (bytes <= limit.allowed) return;
  check_cuda(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)), "cudaFuncSetAttribute",
             __FILE__, __LINE__);
  limit.allowed = bytes;
}

}  // namespace vortex::cuda

// The one macro of the backend: it records the call text, file and line of each check.
#define VX_CUDA(call) ::vortex::cuda::check_cuda((call), #call, __FILE__, __LINE__)
#define VX_CUBLAS(call) ::vortex::cuda::check_cublas((call), #call, __FILE__, __LINE__)
#define VX_CUDA_LAUNCH() ::vortex::cuda::check_cuda(cudaGetLastError(), "kernel launch", __FILE__, __LINE__)
