// Greedy sampling on the GPU: ids (R) = argmax of logits (R, V), first maximum on ties.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace vortex::cuda {

struct ArgmaxParams {
  const float* logits = nullptr;  // (R, V)
  int32_t* ids = nullptr;         // (R)
  int64_t rows = 0;               // R
  int64_t vocab = 0;              // V
};

void launch_argmax(const ArgmaxParams& p, cudaStream_t stream);

}  // namespace vortex::cuda
