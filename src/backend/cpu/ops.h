// CPU reference kernels: fp32 arithmetic and fp32 accumulation throughout. These are the oracle
// every other backend is checked against, and are vectorised (AVX2/FMA) and OpenMP-parallel so
// that the CPU path is also usable. Results do not depend on the thread count: work is split by
// output element, never by reduction.
//
// Letters: M rows (tokens), K input features, N output features, C hidden size, D head dim.
#pragma once

#include <cstdint>

#include "model/weights.h"

namespace vortex::cpu {

// y (M, N) = x (M, K) · Wᵀ + bias, with W (N, K) in f32/bf16/f16, bias (N) or null.
void linear(const float* x, int64_t m, const Matrix& w, const float* bias, float* y);

// y (M, C) = x / rms(x) · weight, rms over C in fp32 (transformers' RMSNorm).
void rmsnorm(const float* x, const float* weight, int64_t m, int64_t dim, float eps, float* y);

// out (M, C) = table rows `ids` (M), converted to fp32.
void embedding(const Matrix& table, const int32_t* ids, int64_t m, float* out);

// out (n) = silu(gate) · up.
void silu_mul(const float* gate, const float* up, int64_t n, float* out);

// x (n) += y (n).
void add_inplace(float* x, const float* y, int64_t n);

// Sum of x (n) as fp32 (for tests and summaries).
float dot(const float* x, const float* y, int64_t n);

}  // namespace vortex::cpu
