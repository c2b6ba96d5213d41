#include "backend/cpu/attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <optional>
#include <span>
#include <utility>

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
      round_kv_row(s.storage, KvRow::kKey, k_layer + dst, s.head_dim);
      round_kv_row(s.storage, KvRow::kValue, v_layer + dst, s.head_dim);
    }
  }
}

namespace {

struct HeadScratch {
  std::vector<float> scores;                // (group, attended rows)
  std::vector<int32_t> rest_pages;          // pages outside the list (rest estimates)
  std::vector<float> rest_logw, rest_value;  // (group, rest pages), (rest pages, D)
  std::vector<float> page_scores;           // (P) one head's scores over one rest page's keys
  std::vector<float> acc;                   // (group, D)
  std::vector<float> max_score, denominator;  // (group)
  std::vector<int32_t> dense_pages;         // 0..pages-1 for dense tokens
  std::vector<double> rest_share;           // cover: (group, rest pages) each page's share of a head's mass
  std::vector<double> page_share, need;     // cover: (rest pages) shares summed over the group; (group) lacking
  std::vector<size_t> order;                // cover: rest pages, largest summed share first
  std::vector<int32_t> grown;               // cover: the list with the pages cover added
};

// The pages before the list's last that the list leaves out (all full: the window follows them),
// each as a log-mass per query head and its mean value; raises s.max_score to cover them.
void estimate_rest(const KvCache& cache, const PageSummaryStore& store, int64_t layer, const std::vector<int32_t>& page_table,
                   std::span<const int32_t> pages, int64_t g, const float* q, int64_t group, float scale, RestEstimate rest,
                   HeadScratch& s) {
  const KvCacheShape& shape = cache.shape();
  const int64_t D = shape.head_dim, P = shape.page_size;
  s.rest_pages.clear();
  const int32_t last = pages.empty() ? 0 : pages.back();
  size_t next = 0;
  for (int32_t index = 0; index < last; ++index) {
    while (next < pages.size() && pages[next] < index) ++next;
    if (next < pages.size() && pages[next] == index) continue;
    s.rest_pages.push_back(index);
  }
  const size_t n = s.rest_pages.size();
  s.rest_logw.resize(static_cast<size_t>(group) * n);
  s.rest_value.resize(n * static_cast<size_t>(D));
  s.page_scores.resize(static_cast<size_t>(P));
  const float log_p = std::log(static_cast<float>(P));
  const FlowPageView keys = rest == RestEstimate::kExact ? FlowPageView{} : store.rest_keys(rest, layer, g);
  for (size_t i = 0; i < n; ++i) {
    const int32_t page = page_table[static_cast<size_t>(s.rest_pages[i])];
    std::copy_n(store.value_mean(layer, page, g), D, s.rest_value.data() + i * static_cast<size_t>(D));
    const float* k = rest == RestEstimate::kExact ? cache.k(layer) + cache.offset(page, g, 0) : keys.base + page * keys.page_stride;
    for (int64_t h = 0; h < group; ++h) {
      const float* qh = q + h * D;
      float logw = 0.0f;
      if (rest == RestEstimate::kMean) {
        logw = log_p + dot(qh, k, D) * scale;
      } else {  // log Σ_t exp(scale · q·k_t) over the page's keys (int4 proxies or exact)
        float best = -INFINITY;
        for (int64_t r = 0; r < P; ++r) best = std::max(best, s.page_scores[static_cast<size_t>(r)] = dot(qh, k + r * D, D) * scale);
        double sum = 0.0;
        for (int64_t r = 0; r < P; ++r) sum += std::exp(static_cast<double>(s.page_scores[static_cast<size_t>(r)] - best));
        logw = best + static_cast<float>(std::log(sum));
      }
      s.rest_logw[static_cast<size_t>(h) * n + i] = logw;
      s.max_score[static_cast<size_t>(h)] = std::max(s.max_score[static_cast<size_t>(h)], logw);
    }
  }
}

// Head h's mass (relative to its running maximum) in the attended rows (s.scores, rows_max per
// head) and in all, the left-out pages' estimated masses (s.rest_logw) included; with `shares`,
// also each left-out page's share of that total.
std::pair<double, double> head_mass(const HeadScratch& s, int64_t h, size_t rows, size_t rows_max, double* shares = nullptr) {
  const size_t hs = static_cast<size_t>(h), n = s.rest_pages.size();
  double attended = 0.0, rest = 0.0;
  for (size_t r = 0; r < rows; ++r) attended += std::exp(static_cast<double>(s.scores[hs * rows_max + r] - s.max_score[hs]));
  for (size_t i = 0; i < n; ++i) {
    const double w = std::exp(static_cast<double>(s.rest_logw[hs * n + i] - s.max_score[hs]));
    rest += w;
    if (shares) shares[i] = w;
  }
  const double total = attended + rest;
  if (shares) for (size_t i = 0; i < n; ++i) shares[i] /= total;
  return {attended, total};
}

// Whether the attended rows hold at least `dense_below` of each head's estimated mass.
bool covers(const HeadScratch& s, int64_t group, size_t rows, size_t rows_max, double dense_below) {
  for (int64_t h = 0; h < group; ++h) {
    const auto [attended, total] = head_mass(s, h, rows, rows_max);
    if (attended < dense_below * total) return false;
  }
  return true;
}

// The left-out pages (s.rest_pages, masses s.rest_logw) that must join `pages` for each head's
// attended rows (s.scores) and added pages to hold `cover` of its estimated mass, taken largest
// first by the group's summed shares (each head's mass over its total). Writes `pages` with them
// (ascending) to s.grown; returns how many it added (0: the list already holds enough).
size_t grow(HeadScratch& s, std::span<const int32_t> pages, int64_t group, size_t rows, size_t rows_max, double cover) {
  const size_t n = s.rest_pages.size();
  s.rest_share.resize(static_cast<size_t>(group) * n);
  s.page_share.assign(n, 0.0);
  s.need.resize(static_cast<size_t>(group));
  bool short_of = false;
  for (int64_t h = 0; h < group; ++h) {
    const size_t hs = static_cast<size_t>(h);
    double* share = s.rest_share.data() + hs * n;
    const auto [attended, total] = head_mass(s, h, rows, rows_max, share);
    for (size_t i = 0; i < n; ++i) s.page_share[i] += share[i];
    s.need[hs] = cover - attended / total;  // the share this head still lacks
    short_of = short_of || s.need[hs] > 0.0;
  }
  if (!short_of) return 0;
  s.order.resize(n);
  std::iota(s.order.begin(), s.order.end(), size_t{0});
  std::stable_sort(s.order.begin(), s.order.end(), [&](size_t a, size_t b) { return s.page_share[a] > s.page_share[b]; });
  s.grown.assign(pages.begin(), pages.end());
  auto lacking = [&] { return std::any_of(s.need.begin(), s.need.end(), [](double need) { return need > 0.0; }); };
  for (size_t k = 0; k < n && lacking(); ++k) {
    const size_t i = s.order[k];
    for (int64_t h = 0; h < group; ++h) s.need[static_cast<size_t>(h)] -= s.rest_share[static_cast<size_t>(h) * n + i];
    s.grown.push_back(s.rest_pages[i]);
  }
  const size_t added = s.grown.size() - pages.size();
  std::sort(s.grown.begin(), s.grown.end());
  return added;
}

// softmax(q·k·scale)·v for the group's query heads q (group, D) over the rows of `pages` (page
// indices, ascending) that precede position `length`; with `estimate`, the left-out pages' masses
// are estimated, and added when `add_rest`. Returns nothing, writing nothing, when the attended
// rows hold less than `dense_below` of a head's estimated mass; else the pages `cover` added to
// the list (0 when it holds `cover` of every head's estimated mass, or cover is 0).
std::optional<size_t> attend(const KvCache& cache, int64_t layer, const std::vector<int32_t>& page_table,
                             std::span<const int32_t> pages, int64_t g, int64_t length, const float* q, int64_t group,
                             float scale, HeadScratch& s, float* out, int64_t out_stride, RestEstimate estimate,
                             bool add_rest, double dense_below, double cover, const PageSummaryStore* store) {
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
  if (estimate != RestEstimate::kDrop) {
    estimate_rest(cache, *store, layer, page_table, pages, g, q, group, scale, estimate, s);
    if (dense_below > 0.0 && !covers(s, group, row, rows_max, dense_below)) return std::nullopt;
    if (cover > 0.0) {
      if (const size_t added = grow(s, pages, group, row, rows_max, cover); added > 0) {
        // s.grown outlives the call: only estimate_rest and the score passes write s.
        attend(cache, layer, page_table, s.grown, g, length, q, group, scale, s, out, out_stride,
               add_rest ? estimate : RestEstimate::kDrop, add_rest, 0.0, 0.0, store);
        return added;
      }
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
  const size_t n_rest = add_rest ? s.rest_pages.size() : 0;
  for (size_t i = 0; i < n_rest; ++i)
    for (int64_t h = 0; h < group; ++h) {
      const size_t hs = static_cast<size_t>(h);
      const float w = std::exp(s.rest_logw[hs * n_rest + i] - s.max_score[hs]);
      s.denominator[hs] += w;
      axpy(w, s.rest_value.data() + i * static_cast<size_t>(D), s.acc.data() + h * D, D);
    }
  for (int64_t h = 0; h < group; ++h)
    for (int64_t d = 0; d < D; ++d)
      out[h * out_stride + d] = s.acc[static_cast<size_t>(h * D + d)] / s.denominator[static_cast<size_t>(h)];
  return size_t{0};
}

// 0..pages-1 for a token at `length` that attends every page.
std::span<const int32_t> every_page(HeadScratch& s, int64_t length, int64_t P) {
  s.dense_pages.resize(static_cast<size_t>((length + P - 1) / P));
  for (size_t i = 0; i < s.dense_pages.size(); ++i) s.dense_pages[i] = static_cast<int32_t>(i);
  return s.dense_pages;
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
        const int64_t head = t * num_heads + g * group;
        const float* q = chunk.q + head * D;
        float* out = chunk.out + head * D;
        if (chunk.page_lists && t >= chunk.first_sparse) {
          const auto& pages = (*chunk.page_lists)[static_cast<size_t>((t - chunk.first_sparse) * G + g)];
          const RestEstimate estimate = chunk.estimate != RestEstimate::kDrop ? chunk.estimate : chunk.rest;
          const std::optional<size_t> added =
              attend(cache, layer, *chunk.page_table, pages, g, length, q, group, scale, scratch, out, D, estimate,
                     chunk.rest != RestEstimate::kDrop, chunk.dense_below, chunk.cover, chunk.summaries);
          if (SparseHeadCounts* counts = chunk.counts) {
            counts->sparse.fetch_add(1, std::memory_order_relaxed);
            counts->pages.fetch_add(static_cast<int64_t>(pages.size()), std::memory_order_relaxed);
            if (!added) counts->dense.fetch_add(1, std::memory_order_relaxed);
            if (added.value_or(0) > 0) {
              counts->covered.fetch_add(1, std::memory_order_relaxed);
              counts->cover_pages.fetch_add(static_cast<int64_t>(*added), std::memory_order_relaxed);
            }
          }
          if (added) continue;
        }
        attend(cache, layer, *chunk.page_table, every_page(scratch, length, P), g, length, q, group, scale, scratch, out, D,
               RestEstimate::kDrop, false, 0.0, 0.0, nullptr);
      }
    }
  }
}

}  // namespace vortex::cpu
