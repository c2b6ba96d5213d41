#include "sparse/selection_recall.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/error.h"

namespace vortex {

void SelectionRecorder::record(const SelectionSample& sample) {
  std::lock_guard lock(mutex_);
  samples_.push_back(sample);
}

std::vector<SelectionSample> SelectionRecorder::take() {
  std::lock_guard lock(mutex_);
  return std::exchange(samples_, {});
}

namespace {

// Keys of page index i of the sequence held by the query at `position`: P, or fewer on its own page.
int64_t keys_on_page(int64_t i, int64_t position, int64_t P) { return std::min(P, position + 1 - i * P); }

// The oracle's top k of the candidates by page_score (indices into candidates), equal scores to
// the lower index: the rule of select_pages.
std::vector<int32_t> oracle_top(std::span<const float> page_score, std::span<const int32_t> candidates, int64_t k) {
  std::vector<int32_t> order(candidates.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int32_t>(i);
  auto score = [&](int32_t i) { return page_score[static_cast<size_t>(candidates[static_cast<size_t>(i)])]; };
  const auto keep = static_cast<std::ptrdiff_t>(std::min<size_t>(order.size(), static_cast<size_t>(k)));
  std::partial_sort(order.begin(), order.begin() + keep, order.end(),
                    [&](int32_t x, int32_t y) { return score(x) > score(y) || (score(x) == score(y) && x < y); });
  order.resize(static_cast<size_t>(keep));
  return order;
}

// |a ∩ b| / |b| over indices into the candidates.
float overlap(std::span<const int32_t> a, const std::vector<int32_t>& b, size_t n) {
  if (b.empty()) return 1.0f;
  std::vector<uint8_t> in_a(n, 0);
  for (int32_t i : a) in_a[static_cast<size_t>(i)] = 1;
  size_t hit = 0;
  for (int32_t i : b) hit += in_a[static_cast<size_t>(i)];
  return static_cast<float>(hit) / static_cast<float>(b.size());
}

}  // namespace

SelectionSample measure_selection(const KvCache& cache, const SelectionProbe& p, std::vector<float>& logits) {
  const KvCacheShape& shape = cache.shape();
  const int64_t P = shape.page_size, D = shape.head_dim, Hg = p.group, T = p.position + 1;
  const int64_t pages = (T + P - 1) / P;  // page indices 0..own
  check(p.q != nullptr && Hg >= 1 && static_cast<int64_t>(p.page_table->size()) >= pages,
        "internal: selection probe of {} heads at position {}", Hg, p.position);
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  // logits (Hg, T): every key of the sequence, as dense attention sees it. page_score: the oracle
  // flow's rule, Σ_h max over the page's keys of q_h·k · scale.
  logits.resize(static_cast<size_t>(Hg * T));
  std::vector<float> page_score(static_cast<size_t>(pages), 0.0f);
  const float* keys = cache.k(p.layer);
  for (int64_t i = 0; i < pages; ++i) {
    const float* page = keys + cache.offset((*p.page_table)[static_cast<size_t>(i)], p.kv_head, 0);
    for (int64_t h = 0; h < Hg; ++h) {
      float best = -std::numeric_limits<float>::infinity();
      for (int64_t s = 0; s < keys_on_page(i, p.position, P); ++s) {
        const float* q = p.q + h * D;
        const float* k = page + s * D;
        float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
        for (int64_t d = 0; d < D; ++d) dot += q[d] * k[d];
        const float logit = dot * scale;
        logits[static_cast<size_t>(h * T + i * P + s)] = logit;
        best = std::max(best, logit);
      }
      page_score[static_cast<size_t>(i)] += best;
    }
  }
  // Per head: the softmax weight of every page, summed over the pages of a set.
  std::vector<double> weight(static_cast<size_t>(Hg * pages), 0.0);  // (Hg, pages)
  for (int64_t h = 0; h < Hg; ++h) {
    const float* row = logits.data() + h * T;
    const float m = *std::max_element(row, row + T);
    double z = 0.0;
    for (int64_t t = 0; t < T; ++t) z += std::exp(static_cast<double>(row[t] - m));
    for (int64_t t = 0; t < T; ++t) weight[static_cast<size_t>(h * pages + t / P)] += std::exp(static_cast<double>(row[t] - m)) / z;
  }
  auto mass_of = [&](std::span<const int32_t> picked) {
    std::vector<uint8_t> kept(static_cast<size_t>(pages), 0);
    for (int32_t i : p.always) kept[static_cast<size_t>(i)] = 1;
    for (int32_t i : picked) kept[static_cast<size_t>(p.candidates[static_cast<size_t>(i)])] = 1;
    double total = 0.0;
    for (int64_t h = 0; h < Hg; ++h)
      for (int64_t i = 0; i < pages; ++i) total += kept[static_cast<size_t>(i)] ? weight[static_cast<size_t>(h * pages + i)] : 0.0;
    return static_cast<float>(std::min(1.0, total / static_cast<double>(Hg)));
  };
  const std::vector<int32_t> oracle = oracle_top(page_score, p.candidates, p.k);
  SelectionSample out;
  out.position = p.position;
  out.layer = static_cast<int32_t>(p.layer);
  out.kv_head = static_cast<int32_t>(p.kv_head);
  out.k = static_cast<int32_t>(p.k);
  out.candidates = static_cast<int32_t>(p.candidates.size());
  out.recall = overlap(p.picked, oracle, p.candidates.size());
  out.mass = mass_of(p.picked);
  out.oracle_mass = mass_of(oracle);
  out.stage_recall = p.survivors.empty() ? 1.0f : overlap(p.survivors, oracle, p.candidates.size());
  return out;
}

}  // namespace vortex
