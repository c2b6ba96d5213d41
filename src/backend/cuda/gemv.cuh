// Skinny GEMMs for decode: y (M, N) fp32 = x (M, K) · Wᵀ (+ y), bf16 x and W, M ≤ kGemvMaxRows.
// At batch 1–4 a decode step's linear layers are pure weight streaming; for the smaller matrices
// cuBLASLt's kernels reach 2.8–3.5 TB/s and add split-K reduction launches. This kernel streams W
// once with no second launch. Gemm::run sends the shapes it fits here (gemv_fits).
#pragma once

#include <cuda_runtime.h>

#include "backend/cuda/gemm.cuh"

namespace vortex::cuda {

constexpr int64_t kGemvMaxRows = 4;
// Larger matrices stay with cuBLASLt, which streams them as fast or faster (H200, Qwen3-8B at
// batch 1, ncu: gate_up 24576×4096 at 4.12 TB/s against this kernel's 3.89, the LM head equal);
// at or below this size (qkv, o, down) this kernel is as fast or faster and needs no split-K
// reduction launch.
constexpr int64_t kGemvMaxWeights = int64_t{64} << 20;

// bf16, 1 ≤ M ≤ kGemvMaxRows, K a multiple of 8 (rows of whole 16-byte vectors), N·K ≤ kGemvMaxWeights.
bool gemv_fits(const GemmArgs& g);
void launch_gemv(const GemmArgs& g, cudaStream_t stream);

}  // namespace vortex::cuda
