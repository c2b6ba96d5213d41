#include "backend/cuda/cuda_check.h"
#include "backend/cuda/embedding.cuh"
#include "backend/cuda/types.cuh"

namespace vortex::cuda {

template <typename Tw>
__global__ void embedding_kernel(EmbeddingParams<Tw> p) {
  const int64_t row = blockIdx.x;
  const Tw* src = p.table + static_cast<int64_t>(p.ids[row]) * p.dim;
  for (int64_t i = threadIdx.x; i < p.dim; i += blockDim.x) p.out[row * p.dim + i] = to_float(src[i]);
}

template <typename Tw>
void launch_embedding(const EmbeddingParams<Tw>& p, cudaStream_t stream) {
  if (p.rows == 0) return;
  embedding_kernel<<<static_cast<unsigned>(p.rows), 256, 0, stream>>>(p);
  VX_CUDA_LAUNCH();
}

template void launch_embedding<float>(const EmbeddingParams<float>&, cudaStream_t);
template void launch_embedding<__nv_bfloat16>(const EmbeddingParams<__nv_bfloat16>&, cudaStream_t);

}  // namespace vortex::cuda
