// Embedding gather: out (M, C) fp32 = table rows ids (M). Ids are validated on the host.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace vortex::cuda {

template <typename Tw>
struct EmbeddingParams {
  const Tw* table = nullptr;     // (V, C)
  const int32_t* ids = nullptr;  // (M)
  float* out = nullptr;          // (M, C)
  int64_t rows = 0;              // M
  int64_t dim = 0;               // C
};

template <typename Tw>
void launch_embedding(const EmbeddingParams<Tw>& p, cudaStream_t stream);

}  // namespace vortex::cuda
