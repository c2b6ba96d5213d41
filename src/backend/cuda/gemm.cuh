// GEMMs through cuBLASLt: y (M, N) fp32 = x (M, K) · Wᵀ (+ y when accumulating), with x and W
// both fp32 (exact fp32 compute, no TF32: the reference mode) or both bf16 (fp32 accumulation).
// W is (N, K) row-major, torch's nn.Linear layout. Algorithms are chosen once per shape; bf16
// shapes with M ≤ 4 go to the GEMV kernel instead (gemv.cuh).
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <tuple>

#include "backend/cuda/device_buffer.h"
#include "core/dtype.h"

namespace vortex::cuda {

struct GemmArgs {
  const void* x = nullptr;  // (M, K), dtype
  const void* w = nullptr;  // (N, K), dtype
  float* y = nullptr;       // (M, N)
  int64_t m = 0, n = 0, k = 0;
  DType dtype = DType::kBF16;  // of x and W: kF32 or kBF16
  bool accumulate = false;     // y += x·Wᵀ (residual add folded into the GEMM)
};

class Gemm {
 public:
  Gemm();
  ~Gemm();
  Gemm(const Gemm&) = delete;
  Gemm& operator=(const Gemm&) = delete;
  void run(const GemmArgs& args, cudaStream_t stream);

 private:
  struct Plan {
    cublasLtMatmulDesc_t desc = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    cublasLtMatmulAlgo_t algo{};
  };
  const Plan& plan(const GemmArgs& args);

  cublasLtHandle_t handle_ = nullptr;
  DeviceBuffer<uint8_t> workspace_;
  std::map<std::tuple<int64_t, int64_t, int64_t, int>, Plan> plans_;
};

}  // namespace vortex::cuda
