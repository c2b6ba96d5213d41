#include "backend/cpu/attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <span>

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

namespace {

struct HeadScratch {
  std::vector<float> scores;                // (group, attended rows)
  std::vector<float> acc;                   // (group, D)
  std::vector<float> max_score, denominator;  // (group)
  std::vector<int32_t> dense_pages;         // 0..pages-1 for dense tokens
};

// softmax(q·k·scale)·v for the group's query heads q (group, D) over the rows of `pages` (page
// indices, ascending) that precede position `length`.
void attend(const KvCache& cache, int64_t layer, const std::vector<int32_t>& page_table, std::span<const int32_t> pages,
            int64_t g, int64_t length, const float* q, int64_t group, float scale, HeadScratch& s, float* out,
            int64_t out_stride) {
  const KvCacheShape& shape = cache.shape();
  const int64_t D = shape.head_dim, P = shape.page_size;
  const size_t rows_max = pages.size() * static_cast<size_t>(P);
  s.scores.resize(static_cast<size_t>(group) * rows_max);
  s.acc.assign(static_cast<size_t>(group * D), 0.0f);
  s.max_score.assign(static_cast<size_t>(group), -INFINITY);
  s.denominator.assign(static_cast<size_t>(group), 0.0f);
  size_t row = 0;
  for (int32_t index : pages) {  // one (page, kv head) block: P rows of D
    const float* k = cache.k(layer) + cache.offset(page_table[static_cast<size_t>(index)], g, 0);
    const int64_t rows = std::min(P, length - index * P);
    for (int64_t r = 0; r < rows; ++r, ++row)
      for (int64_t h = 0; h < group; ++h) {
        const size_t hs = static_cast<size_t>(h);
        float score = dot(q + h * D, k + r * D, D) * scale;
        s.scores[hs * rows_max + row] = score;
        s.max_score[hs] = std::max(s.max_score[hs], score);
      }
  }
  row = 0;
  for (int32_t index : pages) {
    const float* v = cache.v(layer) + cache.offset(page_table[static_cast<size_t>(index)], g, 0);
    const int64_t rows = std::min(P, length - index * P);
    for (int64_t r = 0; r < rows; ++r, ++row)
      for (int64_t h = 0; h < group; ++h) {
        const size_t hs = static_cast<size_t>(h);
        float p = std::exp(s.scores[hs * rows_max + row] - s.max_score[hs]);
        s.denominator[hs] += p;
        axpy(p, v + r * D, s.acc.data() + h * D, D);
      }
  }
  for (int64_t h = 0; h < group; ++h)
    for (int64_t d = 0; d < D; ++d)
      out[h * out_stride + d] = s.acc[static_cast<size_t>(h * D + d)] / s.denominator[static_cast<size_t>(h)];
}

}  // namespace

// Per (token, kv head): the group's query heads share each K and V row as it is read, so a row
// comes from memory once per group rather than once per head.
void paged_attention(const KvCache& cache, int64_t layer, const AttentionChunk& chunk, int64_t num_heads, float scale) {
  const KvCacheShape& s = cache.shape();
  const int64_t D = s.head_dim, P = s.page_size, G = s.num_kv_heads, group = num_heads / G;
  // One team wake-up per call is worth it only past ~64K multiply-adds (keys × heads × head_dim).
  const int64_t work = chunk.tokens * (chunk.start + chunk.tokens) * num_heads * D;
#pragma omp parallel if (chunk.tokens * G > 1 && work >= (int64_t{1} << 16))
  {
    // Scratch that only grows, one per OpenMP thread: after the first steps a decode step
    // allocates nothing here (it holds no state between calls, only capacity).
    thread_local HeadScratch scratch;
#pragma omp for schedule(dynamic) collapse(2)
    for (int64_t t = 0; t < chunk.tokens; ++t) {
      for (int64_t g = 0; g < G; ++g) {
        const int64_t length = chunk.start + t + 1;
        std::span<const int32_t> pages;
        if (chunk.page_lists && t >= chunk.first_sparse) {
          pages = (*chunk.page_lists)[static_cast<size_t>((t - chunk.first_sparse) * G + g)];
        } else {
          scratch.dense_pages.resize(static_cast<size_t>((length + P - 1) / P));
          for (size_t i = 0; i < scratch.dense_pages.size(); ++i) scratch.dense_pages[i] = static_cast<int32_t>(i);
          pages = scratch.dense_pages;
        }
        const int64_t head = t * num_heads + g * group;
        attend(cache, layer, *chunk.page_table, pages, g, length, chunk.q + head * D, group, scale, scratch,
               chunk.out + head * D, D);
      }
    }
  }
}

}  // namespace vortex::cpu
