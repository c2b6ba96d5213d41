#include <immintrin.h>

#include <cmath>
#include <cstring>

#include "backend/cpu/ops.h"
#include "core/error.h"

namespace vortex::cpu {

void rmsnorm(const float* x, const float* weight, int64_t m, int64_t dim, float eps, float* y) {
#pragma omp parallel for schedule(static) if (m > 4)
  for (int64_t r = 0; r < m; ++r) {
    const float* xr = x + r * dim;
    float sum_sq = 0.0f;
    for (int64_t i = 0; i < dim; ++i) sum_sq += xr[i] * xr[i];
    float inv = 1.0f / std::sqrt(sum_sq / static_cast<float>(dim) + eps);
    for (int64_t i = 0; i < dim; ++i) y[r * dim + i] = weight[i] * (xr[i] * inv);
  }
}

void embedding(const Matrix& table, const int32_t* ids, int64_t m, float* out) {
  const int64_t dim = table.cols;
  const size_t row_bytes = static_cast<size_t>(dim) * dtype_size(table.dtype);
  for (int64_t r = 0; r < m; ++r) {
    check(ids[r] >= 0 && ids[r] < table.rows, "token id {} is out of range [0, {})", ids[r], table.rows);
    const auto* row = static_cast<const uint8_t*>(table.data) + static_cast<size_t>(ids[r]) * row_bytes;
    convert_to_f32(table.dtype, row, out + r * dim, static_cast<size_t>(dim));
  }
}

void silu_mul(const float* gate, const float* up, int64_t n, float* out) {
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) {
    float g = gate[i];
    out[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

void add_inplace(float* x, const float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] += y[i];
}

}  // namespace vortex::cpu
