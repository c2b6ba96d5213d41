#include "sparse/lsh.h"

#include <numbers>
#include <random>

#include "core/error.h"

namespace vortex {

LshPlanes::LshPlanes(const LshParams& params, int64_t head_dim, uint64_t stream)
    : bits_(params.bits), tables_(params.tables), dim_(head_dim) {
  check(params.bits >= 1 && params.bits <= 16 && params.tables >= 2, "internal: lsh needs 1..16 bits and 2+ tables");
  std::mt19937_64 rng(params.seed * 0x9E3779B97F4A7C15ull + stream);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  planes_.resize(static_cast<size_t>(tables_) * static_cast<size_t>(bits_) * static_cast<size_t>(dim_));
  for (float& x : planes_) x = normal(rng);
}

void LshPlanes::hash(const float* x, uint16_t* codes) const {
  const float* plane = planes_.data();
  for (int32_t t = 0; t < tables_; ++t) {
    uint32_t code = 0;
    for (int32_t j = 0; j < bits_; ++j, plane += dim_) {
      float s = 0.0f;
      for (int64_t d = 0; d < dim_; ++d) s += plane[d] * x[d];
      code |= static_cast<uint32_t>(s >= 0.0f) << j;
    }
    codes[t] = static_cast<uint16_t>(code);
  }
}

double lsh_sample_probability(double cos_theta, int32_t bits, int32_t tables) {
  const double theta = std::acos(std::clamp(cos_theta, -1.0, 1.0));
  const double p = std::pow(1.0 - theta / std::numbers::pi, bits);
  const double miss = std::pow(1.0 - p, tables), once = tables * p * std::pow(1.0 - p, tables - 1);
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
