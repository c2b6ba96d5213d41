#include "sparse/field_reduce.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace vortex {
namespace {

// Rows r0, r0 + S, r0 + 2S, ... < rows of keys (rows, D), reduced into out (D) or (1).
struct SubRow {
  const float* keys;  // (rows, D)
  int64_t first, stride, rows, head_dim;
  int64_t count() const { return first < rows ? (rows - first + stride - 1) / stride : 0; }
  const float* key(int64_t i) const { return keys + (first + i * stride) * head_dim; }
};

void reduce_extreme(const SubRow& s, bool is_max, float* out) {
  const int64_t D = s.head_dim;
  std::copy(s.key(0), s.key(0) + D, out);
  for (int64_t i = 1; i < s.count(); ++i) {
    const float* k = s.key(i);
    if (is_max)
      for (int64_t d = 0; d < D; ++d) out[d] = std::max(out[d], k[d]);
    else
      for (int64_t d = 0; d < D; ++d) out[d] = std::min(out[d], k[d]);
  }
}

void reduce_mean(const SubRow& s, float* out) {
  const int64_t D = s.head_dim;
  std::fill(out, out + D, 0.0f);
  for (int64_t i = 0; i < s.count(); ++i) {
    const float* k = s.key(i);
    for (int64_t d = 0; d < D; ++d) out[d] += k[d];
  }
  const float inv = 1.0f / static_cast<float>(s.count());
  for (int64_t d = 0; d < D; ++d) out[d] *= inv;
}

// Two passes (mean, then squared deviations): no cancellation when the keys share a large offset.
void reduce_std(const SubRow& s, float* out) {
  const int64_t D = s.head_dim;
  reduce_mean(s, out);  // out = mean, then replaced feature by feature
  const float inv = 1.0f / static_cast<float>(s.count());
  for (int64_t d = 0; d < D; ++d) {
    float mean = out[d], var = 0.0f;
    for (int64_t i = 0; i < s.count(); ++i) {
      float dev = s.key(i)[d] - mean;
      var += dev * dev;
    }
    out[d] = std::sqrt(var * inv);
  }
}

void reduce_norm(const SubRow& s, float* out) {
  float best = 0.0f;
  for (int64_t i = 0; i < s.count(); ++i) {
    const float* k = s.key(i);
    float sq = 0.0f;
#pragma omp simd reduction(+ : sq)
    for (int64_t d = 0; d < s.head_dim; ++d) sq += k[d] * k[d];
    best = std::max(best, std::sqrt(sq));
  }
  out[0] = best;
}

}  // namespace

void reduce_page(const FlowField& field, const float* keys, int64_t rows, int64_t page_size, int64_t head_dim,
                 float* out) {
  const int64_t S = field.rows(page_size), W = field.width(head_dim);
  check(S >= 1 && page_size % S == 0, "field '{}': sub={} does not divide the page size {}", field.name, S, page_size);
  check(rows >= 0 && rows <= page_size && head_dim >= 1, "internal: reduce_page of {} rows (page size {}, head dim {})",
        rows, page_size, head_dim);
  for (int64_t r = 0; r < S; ++r) {
    SubRow sub{.keys = keys, .first = r, .stride = S, .rows = rows, .head_dim = head_dim};
    float* o = out + r * W;
    if (sub.count() == 0) {
      std::fill(o, o + W, 0.0f);
      continue;
    }
    switch (field.reduce) {
      case FieldReduce::kMax: reduce_extreme(sub, true, o); break;
      case FieldReduce::kMin: reduce_extreme(sub, false, o); break;
      case FieldReduce::kMean: reduce_mean(sub, o); break;
      case FieldReduce::kStd: reduce_std(sub, o); break;
      case FieldReduce::kNorm: reduce_norm(sub, o); break;
    }
  }
}

}  // namespace vortex
