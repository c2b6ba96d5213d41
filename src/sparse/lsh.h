// MagicPIG's LSH-sampled attention (Chen et al., 2024), the estimator: instead of the keys with the
// largest logits (top-k, which biases outputs that aggregate many moderate weights), a query
// attends to a random sample of keys, drawn by locality-sensitive hashing, and corrects each
// sampled key by its probability of being sampled — an importance-sampling estimate of attention.
//
// SimHash: `tables` (L) tables of `bits` (K) random Gaussian hyperplanes each, per (layer, KV head).
// A vector's code in a table is its K sign bits. Keys are hashed centred (k − μ, μ the mean of the
// prompt's keys), queries as they are: q·(k − μ) = q·k − q·μ differs from the logit by one constant
// per query, so the angle ranks keys as their logits do, while the centring spreads the keys (which
// share a large common direction) over the buckets. Two vectors at angle θ agree on a bit with
// probability 1 − θ/π, so they collide in a table with p = (1 − θ/π)^K. A key is sampled when it
// collides with the query in at least two tables: w = 1 − (1 − p)^L − L·p·(1 − p)^(L−1).
//
// The estimate: the sink and window keys exactly, the sampled keys with their logit s_i − ln w_i,
// softmax over all of them. Σ_sampled e^{s_i}/w_i · v_i and Σ_sampled e^{s_i}/w_i are unbiased
// estimates of the rest's Σ e^{s_i} v_i and Σ e^{s_i}; their ratio (the output) is consistent.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <vector>

#include "sparse/attention_spec.h"

namespace vortex {

// The hyperplanes of one (layer, KV head): (tables · bits, D), Gaussian, from (seed, stream).
class LshPlanes {
 public:
  LshPlanes(const LshParams& params, int64_t head_dim, uint64_t stream);
  // x (D) → codes (tables): bit j of code t is [plane(t·bits + j) · x ≥ 0]. Eight planes at a time
  // in one AVX2 register, each summed over d in order.
  void hash(const float* x, uint16_t* codes) const;
  int32_t bits() const { return bits_; }
  int32_t tables() const { return tables_; }
  // Element d of plane i (i = t·bits + j).
  float plane(int64_t i, int64_t d) const { return blocked_[static_cast<size_t>(((i / kLanes) * dim_ + d) * kLanes + i % kLanes)]; }

 private:
  static constexpr int64_t kLanes = 8;
  int32_t bits_, tables_;
  int64_t dim_;
  std::vector<float> blocked_;  // (⌈tables · bits / 8⌉, D, 8): plane 8b + j's element d at (b, d, j); zero past the last plane
};

// q · k over n floats in eight interleaved partial sums added in a fixed order: vectorised without
// reassociating, the same value on every machine that compiles it the same way.
inline float lsh_dot(const float* q, const float* k, int64_t n) {
  float part[8] = {};
  int64_t d = 0;
  for (; d + 8 <= n; d += 8)
    for (int j = 0; j < 8; ++j) part[j] += q[d + j] * k[d + j];
  float s = ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
  for (; d < n; ++d) s += q[d] * k[d];
  return s;
}

// The probability w that a key at cos θ = `cos_theta` from the query is sampled (see above).
double lsh_sample_probability(double cos_theta, int32_t bits, int32_t tables);

// One query head's attention over keys 0..length−1: `exact` positions (the sink and window) as
// they are, `sampled` positions with −ln w. key(i) and value(i) give rows of D; centred_norm(i) is
// |k_i − μ|; q_mu = q·μ. out (D) = Σ softmax · v. An empty union gives zeros.
struct LshTerms {
  std::span<const int32_t> exact, sampled;
  double q_mu = 0.0;     // q·μ
  double q_norm = 0.0;   // |q|
};
template <typename Key, typename Value, typename Norm>
void lsh_attend(const float* q, int64_t D, float scale, const LshTerms& terms, int32_t bits, int32_t tables, Key key,
                Value value, Norm centred_norm, std::vector<float>& logits, float* out) {
  auto dot = [&](const float* k) { return lsh_dot(q, k, D); };
  const size_t n_exact = terms.exact.size();
  logits.resize(n_exact + terms.sampled.size());
  float top = -INFINITY;
  for (size_t j = 0; j < n_exact; ++j) top = std::max(top, logits[j] = dot(key(terms.exact[j])) * scale);
  for (size_t j = 0; j < terms.sampled.size(); ++j) {
    const int32_t i = terms.sampled[j];
    const float qk = dot(key(i));
    const double norms = terms.q_norm * static_cast<double>(centred_norm(i));
    const double cos_theta = norms > 0.0 ? (static_cast<double>(qk) - terms.q_mu) / norms : 1.0;
    const double w = lsh_sample_probability(cos_theta, bits, tables);
    // A sampled key has w > 0; rounding could still say 0 for θ ≈ π: cap its weight.
    const float logit = qk * scale - static_cast<float>(std::log(std::max(w, 1e-300)));
    top = std::max(top, logits[n_exact + j] = logit);
  }
  std::fill(out, out + D, 0.0f);
  if (logits.empty()) return;
  float denominator = 0.0f;
  for (size_t j = 0; j < logits.size(); ++j) {
    const float p = std::exp(logits[j] - top);
    denominator += p;
    const float* v = value(j < n_exact ? terms.exact[j] : terms.sampled[j - n_exact]);
    for (int64_t d = 0; d < D; ++d) out[d] += p * v[d];
  }
  for (int64_t d = 0; d < D; ++d) out[d] /= denominator;
}

// Collision counts of a query's codes against key codes (n, tables), the plain way: positions in
// [first, last) whose codes agree with the query's in at least two tables are appended to `out`.
void lsh_collect(const uint16_t* query_codes, const uint16_t* key_codes, int32_t tables, int64_t first, int64_t last,
                 std::vector<int32_t>& out);

}  // namespace vortex
