#include "backend/cpu/rope.h"

#include <algorithm>
#include <cmath>
#include <numbers>

namespace vortex {
namespace {

// transformers computes inv_freq = 1 / base^(2i/D) in float32.
std::vector<double> default_inv_freq(double base, int64_t dim) {
  std::vector<double> inv(static_cast<size_t>(dim / 2));
  for (int64_t i = 0; i < dim / 2; ++i) {
    float exponent = static_cast<float>(2 * i) / static_cast<float>(dim);
    inv[static_cast<size_t>(i)] = 1.0 / std::pow(base, static_cast<double>(exponent));
  }
  return inv;
}

void llama3_scale(std::vector<double>& inv, const RopeConfig& r) {
  const double old_context = static_cast<double>(r.original_max_position);
  const double low_wavelen = old_context / r.low_freq_factor;
  const double high_wavelen = old_context / r.high_freq_factor;
  for (double& f : inv) {
    double wavelen = 2.0 * std::numbers::pi / f;
    if (wavelen < high_wavelen) continue;                  // high frequency: unchanged
    if (wavelen > low_wavelen) { f /= r.factor; continue; }  // low frequency: interpolated
    double smooth = (old_context / wavelen - r.low_freq_factor) / (r.high_freq_factor - r.low_freq_factor);
    f = (1.0 - smooth) * f / r.factor + smooth * f;
  }
}

double yarn_mscale(double scale, double mscale) { return scale <= 1.0 ? 1.0 : 0.1 * mscale * std::log(scale) + 1.0; }

// YaRN: blend interpolated and extrapolated frequencies over a ramp of dimensions.
float yarn_scale(std::vector<double>& inv, const RopeConfig& r, int64_t dim) {
  auto correction_dim = [&](double rotations) {
    return (static_cast<double>(dim) * std::log(static_cast<double>(r.original_max_position) / (rotations * 2.0 * std::numbers::pi))) /
           (2.0 * std::log(r.theta));
  };
  double low = correction_dim(r.beta_fast), high = correction_dim(r.beta_slow);
  if (r.truncate) low = std::floor(low), high = std::ceil(high);
  low = std::max(low, 0.0);
  high = std::min(high, static_cast<double>(dim - 1));
  if (low == high) high += 0.001;
  for (size_t i = 0; i < inv.size(); ++i) {
    double ramp = std::clamp((static_cast<double>(i) - low) / (high - low), 0.0, 1.0);
    double extrapolation_factor = 1.0 - ramp;
    double extrapolated = inv[i], interpolated = inv[i] / r.factor;
    inv[i] = interpolated * (1.0 - extrapolation_factor) + extrapolated * extrapolation_factor;
  }
  if (r.attention_factor > 0) return static_cast<float>(r.attention_factor);
  if (r.mscale > 0 && r.mscale_all_dim > 0)
    return static_cast<float>(yarn_mscale(r.factor, r.mscale) / yarn_mscale(r.factor, r.mscale_all_dim));
  return static_cast<float>(yarn_mscale(r.factor, 1.0));
}

}  // namespace

RopeFrequencies rope_frequencies(const ModelConfig& config) {
  const RopeConfig& r = config.rope;
  std::vector<double> inv = default_inv_freq(r.theta, config.head_dim);
  RopeFrequencies out;
  switch (r.type) {
    case RopeType::kDefault: break;
    case RopeType::kLinear:
      for (double& f : inv) f /= r.factor;
      break;
    case RopeType::kLlama3: llama3_scale(inv, r); break;
    case RopeType::kYarn: out.attention_scaling = yarn_scale(inv, r, config.head_dim); break;
  }
  out.inv_freq.assign(inv.begin(), inv.end());
  return out;
}

namespace cpu {

void apply_rope(const RopeFrequencies& freqs, float* x, int64_t tokens, int64_t heads, int64_t head_dim,
                const int32_t* positions) {
  const int64_t half = head_dim / 2;
  std::vector<float> cos_table(static_cast<size_t>(half)), sin_table(static_cast<size_t>(half));
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t i = 0; i < half; ++i) {
      // float32 angle, as transformers computes inv_freq @ position_ids in float32.
      float angle = static_cast<float>(positions[t]) * freqs.inv_freq[static_cast<size_t>(i)];
      cos_table[static_cast<size_t>(i)] = std::cos(angle) * freqs.attention_scaling;
      sin_table[static_cast<size_t>(i)] = std::sin(angle) * freqs.attention_scaling;
    }
    for (int64_t h = 0; h < heads; ++h) {
      float* v = x + (t * heads + h) * head_dim;
      for (int64_t i = 0; i < half; ++i) {
        float a = v[i], b = v[i + half];
        float c = cos_table[static_cast<size_t>(i)], s = sin_table[static_cast<size_t>(i)];
        v[i] = a * c - b * s;
        v[i + half] = b * c + a * s;
      }
    }
  }
}

}  // namespace cpu
}  // namespace vortex
