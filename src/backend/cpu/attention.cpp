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

// Per (token, kv head): the group's query heads share each K and V row as it is read, so a row
// comes from memory once per group rather than once per head.
void paged_attention(const KvCache& cache, int64_t layer, const AttentionChunk& chunk, int64_t num_heads, float scale) {
  const KvCacheShape& s = cache.shape();
  const int64_t D = s.head_dim, P = s.page_size, G = s.num_kv_heads, group = num_heads / G;
  const float* k_layer = cache.k(layer);
  const float* v_layer = cache.v(layer);
  const std::vector<int32_t>& pages = *chunk.page_table;
  const size_t max_length = static_cast<size_t>(chunk.start + chunk.tokens);
#pragma omp parallel
  {
    std::vector<float> scores(static_cast<size_t>(group) * max_length);  // (group, length)
    std::vector<float> acc(static_cast<size_t>(group * D));               // (group, D)
    std::vector<float> max_score(static_cast<size_t>(group)), denominator(static_cast<size_t>(group));
#pragma omp for schedule(dynamic) collapse(2)
    for (int64_t t = 0; t < chunk.tokens; ++t) {
      for (int64_t g = 0; g < G; ++g) {
        const int64_t length = chunk.start + t + 1;
        const float* q = chunk.q + (t * num_heads + g * group) * D;  // (group, D)
        std::fill(max_score.begin(), max_score.end(), -INFINITY);
        for (int64_t first = 0; first < length; first += P) {  // one (page, kv head) block: P rows of D
          const float* k = k_layer + cache.offset(pages[static_cast<size_t>(first / P)], g, 0);
          const int64_t rows = std::min(P, length - first);
          for (int64_t r = 0; r < rows; ++r)
            for (int64_t h = 0; h < group; ++h) {
              float score = dot(q + h * D, k + r * D, D) * scale;
              scores[static_cast<size_t>(h) * max_length + static_cast<size_t>(first + r)] = score;
              max_score[static_cast<size_t>(h)] = std::max(max_score[static_cast<size_t>(h)], score);
            }
        }
        std::fill(acc.begin(), acc.end(), 0.0f);
        std::fill(denominator.begin(), denominator.end(), 0.0f);
        for (int64_t first = 0; first < length; first += P) {
          const float* v = v_layer + cache.offset(pages[static_cast<size_t>(first / P)], g, 0);
          const int64_t rows = std::min(P, length - first);
          for (int64_t r = 0; r < rows; ++r)
            for (int64_t h = 0; h < group; ++h) {
              const size_t hs = static_cast<size_t>(h);
              float p = std::exp(scores[hs * max_length + static_cast<size_t>(first + r)] - max_score[hs]);
              denominator[hs] += p;
              axpy(p, v + r * D, acc.data() + h * D, D);
            }
        }
        for (int64_t h = 0; h < group; ++h) {
          float* out = chunk.out + (t * num_heads + g * group + h) * D;
          for (int64_t d = 0; d < D; ++d) out[d] = acc[static_cast<size_t>(h * D + d)] / denominator[static_cast<size_t>(h)];
        }
      }
    }
  }
}

}  // namespace vortex::cpu
