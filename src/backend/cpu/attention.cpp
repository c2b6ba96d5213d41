#include "backend/cpu/attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "backend/cpu/ops.h"

namespace vortex::cpu {

void append_kv(KvCache& cache, int64_t layer, const std::vector<int32_t>& page_table, int64_t start, int64_t tokens,
               const float* k, const float* v) {
  const KvCacheShape& s = cache.shape();
  float* k_layer = cache.k(layer);
  float* v_layer = cache.v(layer);
  for (int64_t t = 0; t < tokens; ++t) {
    int64_t position = start + t;
    int32_t page = page_table[static_cast<size_t>(position / s.page_size)];
    int64_t slot = position % s.page_size;
    for (int64_t g = 0; g < s.num_kv_heads; ++g) {
      int64_t dst = cache.offset(page, g, slot);
      int64_t src = (t * s.num_kv_heads + g) * s.head_dim;
      std::memcpy(k_layer + dst, k + src, static_cast<size_t>(s.head_dim) * sizeof(float));
      std::memcpy(v_layer + dst, v + src, static_cast<size_t>(s.head_dim) * sizeof(float));
    }
  }
}

void paged_attention(const KvCache& cache, int64_t layer, const AttentionChunk& chunk, int64_t num_heads, float scale) {
  const KvCacheShape& s = cache.shape();
  const int64_t D = s.head_dim, P = s.page_size, group = num_heads / s.num_kv_heads;
  const float* k_layer = cache.k(layer);
  const float* v_layer = cache.v(layer);
  const std::vector<int32_t>& pages = *chunk.page_table;
#pragma omp parallel
  {
    std::vector<float> scores(static_cast<size_t>(chunk.start + chunk.tokens));
    std::vector<float> acc(static_cast<size_t>(D));
#pragma omp for schedule(dynamic) collapse(2)
    for (int64_t t = 0; t < chunk.tokens; ++t) {
      for (int64_t h = 0; h < num_heads; ++h) {
        const int64_t g = h / group, length = chunk.start + t + 1;
        const float* q = chunk.q + (t * num_heads + h) * D;
        float max_score = -INFINITY;
        for (int64_t j = 0; j < length; ++j) {
          const float* k = k_layer + cache.offset(pages[static_cast<size_t>(j / P)], g, j % P);
          scores[static_cast<size_t>(j)] = dot(q, k, D) * scale;
          max_score = std::max(max_score, scores[static_cast<size_t>(j)]);
        }
        float denominator = 0.0f;
        std::fill(acc.begin(), acc.end(), 0.0f);
        for (int64_t j = 0; j < length; ++j) {
          float p = std::exp(scores[static_cast<size_t>(j)] - max_score);
          denominator += p;
          const float* v = v_layer + cache.offset(pages[static_cast<size_t>(j / P)], g, j % P);
          for (int64_t d = 0; d < D; ++d) acc[static_cast<size_t>(d)] += p * v[d];
        }
        float* out = chunk.out + (t * num_heads + h) * D;
        for (int64_t d = 0; d < D; ++d) out[d] = acc[static_cast<size_t>(d)] / denominator;
      }
    }
  }
}

}  // namespace vortex::cpu
