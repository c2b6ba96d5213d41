#include "sparse/lsh.h"

#include <immintrin.h>

#include <algorithm>
#include <numbers>
#include <random>

#include "core/error.h"

namespace vortex {

LshPlanes::LshPlanes(const LshParams& params, int64_t head_dim, uint64_t stream)
    : bits_(params.bits), tables_(params.tables), dim_(head_dim) {
  check(params.bits >= 1 && params.bits <= 16 && params.tables >= 2, "internal: lsh needs 1..16 bits and 2+ tables");
  std::mt19937_64 rng(params.seed * 0x9E3779B97F4A7C15ull + stream);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const int64_t planes = static_cast<int64_t>(tables_) * bits_, blocks = (planes + kLanes - 1) / kLanes;
  blocked_.assign(static_cast<size_t>(blocks * dim_ * kLanes), 0.0f);
  for (int64_t i = 0; i < planes; ++i)  // plane i's elements in order, as drawn
    for (int64_t d = 0; d < dim_; ++d) blocked_[static_cast<size_t>(((i / kLanes) * dim_ + d) * kLanes + i % kLanes)] = normal(rng);
}

void LshPlanes::hash(const float* x, uint16_t* codes) const {
  std::fill(codes, codes + tables_, uint16_t{0});
  const int64_t planes = static_cast<int64_t>(tables_) * bits_, blocks = (planes + kLanes - 1) / kLanes;
  auto set_bits = [&](int64_t first, __m256 sum) {  // planes first .. first + 7 (those that exist)
    float acc[kLanes];
    _mm256_storeu_ps(acc, sum);
    for (int64_t j = 0; j < kLanes && first + j < planes; ++j) {
      const int64_t i = first + j;  // table i / bits, bit i % bits
      codes[i / bits_] = static_cast<uint16_t>(codes[i / bits_] | static_cast<uint32_t>(acc[j] >= 0.0f) << (i % bits_));
    }
  };
  // Four blocks at a time: four independent FMA chains hide the FMA's latency. Lane j of a block's
  // sum is its plane j summed over d in order, however many blocks run together.
  int64_t b = 0;
  for (; b + 4 <= blocks; b += 4) {
    const float* block = blocked_.data() + b * dim_ * kLanes;
    const int64_t stride = dim_ * kLanes;
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps(), s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
    for (int64_t d = 0; d < dim_; ++d) {
      const __m256 xd = _mm256_set1_ps(x[d]);
      const float* at = block + d * kLanes;
      s0 = _mm256_fmadd_ps(xd, _mm256_loadu_ps(at), s0);
      s1 = _mm256_fmadd_ps(xd, _mm256_loadu_ps(at + stride), s1);
      s2 = _mm256_fmadd_ps(xd, _mm256_loadu_ps(at + 2 * stride), s2);
      s3 = _mm256_fmadd_ps(xd, _mm256_loadu_ps(at + 3 * stride), s3);
    }
    set_bits(b * kLanes, s0), set_bits((b + 1) * kLanes, s1), set_bits((b + 2) * kLanes, s2), set_bits((b + 3) * kLanes, s3);
  }
  for (; b < blocks; ++b) {
    const float* block = blocked_.data() + b * dim_ * kLanes;
    __m256 sum = _mm256_setzero_ps();
    for (int64_t d = 0; d < dim_; ++d) sum = _mm256_fmadd_ps(_mm256_set1_ps(x[d]), _mm256_loadu_ps(block + d * kLanes), sum);
    set_bits(b * kLanes, sum);
  }
}

double lsh_sample_probability(double cos_theta, int32_t bits, int32_t tables) {
  const double theta = std::acos(std::clamp(cos_theta, -1.0, 1.0));
  const double p = std::pow(1.0 - theta / std::numbers::pi, bits);
  const double miss_but_one = std::pow(1.0 - p, tables - 1);  // (1 − p)^(L−1)
  const double miss = miss_but_one * (1.0 - p), once = tables * p * miss_but_one;
  return std::clamp(1.0 - miss - once, 0.0, 1.0);
}

void lsh_collect(const uint16_t* query_codes, const uint16_t* key_codes, int32_t tables, int64_t first, int64_t last,
                 std::vector<int32_t>& out) {
  for (int64_t i = first; i < last; ++i) {
    const uint16_t* codes = key_codes + i * tables;
    int32_t hits = 0;
    for (int32_t t = 0; t < tables && hits < 2; ++t) hits += codes[t] == query_codes[t];
    if (hits >= 2) out.push_back(static_cast<int32_t>(i));
  }
}

}  // namespace vortex
