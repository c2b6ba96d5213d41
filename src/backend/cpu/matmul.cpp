// linear(): y = x · Wᵀ for weights in f32, bf16 or f16 (converted to fp32 in registers).
//
// Decode is memory-bound on W, so each output row of W is streamed once from memory and dotted
// with up to kRowBlock rows of x held in cache; OpenMP splits the output rows across cores.
#include <immintrin.h>

#include <algorithm>

#include "backend/cpu/ops.h"
#include "core/error.h"

namespace vortex::cpu {
namespace {

constexpr int kRowBlock = 4;  // rows of x that share one pass over a W row

// Loads 8 weights as fp32.
inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
inline __m256 load8(const uint16_t* p, std::integral_constant<DType, DType::kBF16>) {
  __m128i bits = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(bits), 16));
}
inline __m256 load8(const uint16_t* p, std::integral_constant<DType, DType::kF16>) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
inline float load1(const float* p) { return *p; }
inline float load1(const uint16_t* p, std::integral_constant<DType, DType::kBF16>) { return bf16_to_f32(*p); }
inline float load1(const uint16_t* p, std::integral_constant<DType, DType::kF16>) { return f16_to_f32(*p); }

inline float hsum(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
  lo = _mm_add_ps(lo, hi);
  lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
  return _mm_cvtss_f32(lo);
}

// Dots one W row (K) with ROWS x rows, writing y[r * y_stride]. ROWS is a compile-time constant so
// the accumulators stay in registers; four independent FMA chains per row hide the FMA latency.
template <int ROWS, typename T, typename Load8, typename Load1>
void dot_block(const T* w, const float* x, int64_t k, float* y, int64_t y_stride, Load8 l8, Load1 l1) {
  __m256 acc[ROWS][4];
  for (int r = 0; r < ROWS; ++r)
    for (int a = 0; a < 4; ++a) acc[r][a] = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= k; i += 32) {
    const __m256 w0 = l8(w + i), w1 = l8(w + i + 8), w2 = l8(w + i + 16), w3 = l8(w + i + 24);
    for (int r = 0; r < ROWS; ++r) {
      const float* xr = x + r * k + i;
      acc[r][0] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xr), acc[r][0]);
      acc[r][1] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xr + 8), acc[r][1]);
      acc[r][2] = _mm256_fmadd_ps(w2, _mm256_loadu_ps(xr + 16), acc[r][2]);
      acc[r][3] = _mm256_fmadd_ps(w3, _mm256_loadu_ps(xr + 24), acc[r][3]);
    }
  }
  for (; i + 8 <= k; i += 8) {
    const __m256 w0 = l8(w + i);
    for (int r = 0; r < ROWS; ++r) acc[r][0] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x + r * k + i), acc[r][0]);
  }
  for (int r = 0; r < ROWS; ++r) {
    float sum = hsum(_mm256_add_ps(_mm256_add_ps(acc[r][0], acc[r][1]), _mm256_add_ps(acc[r][2], acc[r][3])));
    for (int64_t j = i; j < k; ++j) sum += l1(w + j) * x[r * k + j];
    y[r * y_stride] = sum;
  }
}

constexpr int64_t kParallelWork = int64_t{1} << 16;

template <typename T, typename Load8, typename Load1>
void linear_typed(const float* x, int64_t m, const T* w, int64_t n, int64_t k, float* y, Load8 l8, Load1 l1) {
  // Below ~64K multiply-adds waking the thread team costs more than it saves (tiny test models).
#pragma omp parallel for schedule(static) if (m * n * k >= kParallelWork)
  for (int64_t row = 0; row < n; ++row) {
    const T* w_row = w + row * k;
    int64_t r0 = 0;
    for (; r0 + kRowBlock <= m; r0 += kRowBlock) dot_block<kRowBlock>(w_row, x + r0 * k, k, y + r0 * n + row, n, l8, l1);
    switch (m - r0) {
      case 1: dot_block<1>(w_row, x + r0 * k, k, y + r0 * n + row, n, l8, l1); break;
      case 2: dot_block<2>(w_row, x + r0 * k, k, y + r0 * n + row, n, l8, l1); break;
      case 3: dot_block<3>(w_row, x + r0 * k, k, y + r0 * n + row, n, l8, l1); break;
      default: break;
    }
  }
}

}  // namespace

void linear(const float* x, int64_t m, const Matrix& w, const float* bias, float* y) {
  const int64_t n = w.rows, k = w.cols;
  switch (w.dtype) {
    case DType::kF32:
      linear_typed(x, m, static_cast<const float*>(w.data), n, k, y, [](const float* p) { return load8(p); },
                   [](const float* p) { return load1(p); });
      break;
    case DType::kBF16: {
      using Tag = std::integral_constant<DType, DType::kBF16>;
      linear_typed(x, m, static_cast<const uint16_t*>(w.data), n, k, y,
                   [](const uint16_t* p) { return load8(p, Tag{}); }, [](const uint16_t* p) { return load1(p, Tag{}); });
      break;
    }
    case DType::kF16: {
      using Tag = std::integral_constant<DType, DType::kF16>;
      linear_typed(x, m, static_cast<const uint16_t*>(w.data), n, k, y,
                   [](const uint16_t* p) { return load8(p, Tag{}); }, [](const uint16_t* p) { return load1(p, Tag{}); });
      break;
    }
    default:
      fail("internal: linear() does not take {} weights", dtype_name(w.dtype));
  }
  if (bias != nullptr) {
    for (int64_t r = 0; r < m; ++r)
      for (int64_t j = 0; j < n; ++j) y[r * n + j] += bias[j];
  }
}

}  // namespace vortex::cpu
