#include "backend/cpu/memory_bandwidth.h"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <memory>

namespace vortex::cpu {

double measure_read_bandwidth_gbps() {
  using Clock = std::chrono::steady_clock;
  const size_t count = size_t{1} << 28;  // 1 GiB of floats
  std::unique_ptr<float[]> buffer(new float[count]);
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < count; ++i) buffer[i] = static_cast<float>(i & 1023);
  double best = 0.0;
  for (int rep = 0; rep < 5; ++rep) {
    const auto t0 = Clock::now();
    float total = 0.0f;
#pragma omp parallel reduction(+ : total)
    {
      __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps(), acc2 = _mm256_setzero_ps(), acc3 = _mm256_setzero_ps();
#pragma omp for schedule(static)
      for (size_t i = 0; i < count; i += 32) {
        acc0 = _mm256_add_ps(acc0, _mm256_loadu_ps(buffer.get() + i));
        acc1 = _mm256_add_ps(acc1, _mm256_loadu_ps(buffer.get() + i + 8));
        acc2 = _mm256_add_ps(acc2, _mm256_loadu_ps(buffer.get() + i + 16));
        acc3 = _mm256_add_ps(acc3, _mm256_loadu_ps(buffer.get() + i + 24));
      }
      alignas(32) float lanes[8];
      _mm256_store_ps(lanes, _mm256_add_ps(_mm256_add_ps(acc0, acc1), _mm256_add_ps(acc2, acc3)));
      for (float lane : lanes) total += lane;
    }
    const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    if (total == -1.0f) std::abort();  // keeps the reduction alive
    best = std::max(best, static_cast<double>(count * sizeof(float)) / seconds / 1e9);
  }
  return best;
}

}  // namespace vortex::cpu
