// CPU reference kernels: fp32 arithmetic and fp32 accumulation throughout. These are the oracle
// every other backend is checked against, and are vectorised (AVX2/FMA) and OpenMP-parallel so
// that the CPU path is also usable. Results do not depend on the thread count: work is split by
// output element, never by reduction.
//
// Letters: M rows (tokens), K input features, N output features, C hidden size, D head dim.
#pragma once

#include <immintrin.h>

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

// x · y over n floats. Four independent 8-wide FMA chains: a float reduction is not vectorised by
// the compiler without reassociation, and attention's q·k products are this loop. Inline so that
// the attention loops see it.
inline float dot(const float* x, const float* y, int64_t n) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps(), acc2 = _mm256_setzero_ps(), acc3 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 8), _mm256_loadu_ps(y + i + 8), acc1);
    acc2 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 16), _mm256_loadu_ps(y + i + 16), acc2);
    acc3 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 24), _mm256_loadu_ps(y + i + 24), acc3);
  }
  for (; i + 8 <= n; i += 8) acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i), acc0);
  __m256 acc = _mm256_add_ps(_mm256_add_ps(acc0, acc1), _mm256_add_ps(acc2, acc3));
  __m128 lo = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
  lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
  float sum = _mm_cvtss_f32(lo);
  for (; i < n; ++i) sum += x[i] * y[i];
  return sum;
}

// y (n) += a · x (n).
inline void axpy(float a, const float* x, float* y, int64_t n) {
  const __m256 va = _mm256_set1_ps(a);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
  for (; i < n; ++i) y[i] += a * x[i];
}

}  // namespace vortex::cpu
