#include "backend/cuda/cuda_check.h"
#include "backend/cuda/gemm.cuh"
#include "backend/cuda/gemv.cuh"

namespace vortex::cuda {

constexpr size_t kWorkspaceBytes = 32u << 20;

Gemm::Gemm() : workspace_(kWorkspaceBytes) { VX_CUBLAS(cublasLtCreate(&handle_)); }

Gemm::~Gemm() {
  for (auto& [key, plan] : plans_) {
    cublasLtMatrixLayoutDestroy(plan.a);
    cublasLtMatrixLayoutDestroy(plan.b);
    cublasLtMatrixLayoutDestroy(plan.c);
    cublasLtMatmulDescDestroy(plan.desc);
  }
  if (handle_) cublasLtDestroy(handle_);
}

// Column-major view: y'(N, M) = W'(K, N)ᵀ · x'(K, M), where a row-major (R, C) matrix is a
// column-major (C, R) one. So A = W with op T, B = x, C = D = y.
const Gemm::Plan& Gemm::plan(const GemmArgs& g) {
  auto key = std::make_tuple(g.m, g.n, g.k, static_cast<int>(g.dtype));
  if (auto it = plans_.find(key); it != plans_.end()) return it->second;
  check(g.dtype == DType::kF32 || g.dtype == DType::kBF16, "gemm: dtype {} unsupported", dtype_name(g.dtype));
  const cudaDataType_t type = g.dtype == DType::kF32 ? CUDA_R_32F : CUDA_R_16BF;
  Plan p;
  VX_CUBLAS(cublasLtMatmulDescCreate(&p.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t transpose = CUBLAS_OP_T;
  VX_CUBLAS(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &transpose, sizeof(transpose)));
  VX_CUBLAS(cublasLtMatrixLayoutCreate(&p.a, type, static_cast<uint64_t>(g.k), static_cast<uint64_t>(g.n), g.k));
  VX_CUBLAS(cublasLtMatrixLayoutCreate(&p.b, type, static_cast<uint64_t>(g.k), static_cast<uint64_t>(g.m), g.k));
  VX_CUBLAS(cublasLtMatrixLayoutCreate(&p.c, CUDA_R_32F, static_cast<uint64_t>(g.n), static_cast<uint64_t>(g.m), g.n));
  cublasLtMatmulPreference_t preference;
  VX_CUBLAS(cublasLtMatmulPreferenceCreate(&preference));
  size_t workspace = kWorkspaceBytes;
  VX_CUBLAS(cublasLtMatmulPreferenceSetAttribute(preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace, sizeof(workspace)));
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  VX_CUBLAS(cublasLtMatmulAlgoGetHeuristic(handle_, p.desc, p.a, p.b, p.c, p.c, preference, 1, &result, &found));
  cublasLtMatmulPreferenceDestroy(preference);
  check(found > 0, "gemm: cuBLASLt has no algorithm for M={} N={} K={} {}", g.m, g.n, g.k, dtype_name(g.dtype));
  p.algo = result.algo;
  return plans_.emplace(key, p).first->second;
}

void Gemm::run(const GemmArgs& g, cudaStream_t stream) {
  if (g.m == 0) return;
  if (gemv_fits(g)) return launch_gemv(g, stream);  // decode at batch ≤ 4: weight streaming
  const Plan& p = plan(g);
  const float alpha = 1.0f, beta = g.accumulate ? 1.0f : 0.0f;
  VX_CUBLAS(cublasLtMatmul(handle_, p.desc, &alpha, g.w, p.a, g.x, p.b, &beta, g.y, p.c, g.y, p.c, &p.algo,
                           workspace_.get(), kWorkspaceBytes, stream));
}

}  // namespace vortex::cuda
