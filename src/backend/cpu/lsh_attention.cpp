#include "backend/cpu/lsh_attention.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <unordered_set>

#include "backend/cpu/ops.h"
#include "core/error.h"
#include "sparse/sparse_attention.h"

namespace vortex::cpu {
namespace {

constexpr size_t kPlaneSets = 8;  // distinct (K, L, seed) kept; clients choose them

bool same(const LshParams& a, const LshParams& b) { return a.bits == b.bits && a.tables == b.tables && a.seed == b.seed; }

bool runs_lsh(const SequenceChunk& c) {
  return c.attention && c.attention->lsh.on() && c.start + c.count > c.sparse_from && !c.page_table->empty();
}

}  // namespace

LshAttention::~LshAttention() {
  if (stats_.queries == 0) return;
  const auto q = static_cast<double>(stats_.queries);
  std::fprintf(stderr, "lsh: %lld queries (per head and layer) attended %.1f keys exactly and sampled %.1f of %.1f (%.2f%%) on average\n",
               static_cast<long long>(stats_.queries), static_cast<double>(stats_.exact) / q, static_cast<double>(stats_.sampled) / q,
               static_cast<double>(stats_.middle) / q, stats_.middle ? 100.0 * static_cast<double>(stats_.sampled) / static_cast<double>(stats_.middle) : 0.0);
}

void LshAttention::begin_step(std::span<const SequenceChunk> chunks) {
  std::unordered_set<int32_t> live;
  for (const SequenceChunk& c : chunks) {
    if (c.page_table->empty()) continue;
    const int32_t key = c.page_table->front();
    auto it = sequences_.find(key);
    if (it == sequences_.end()) continue;
    Sequence& s = it->second;
    // A new sequence on this page, another prompt end or other parameters: start over.
    if (c.start < s.mean_to || (runs_lsh(c) && (c.sparse_from != s.mean_to || !same(c.attention->lsh, s.params)))) {
      sequences_.erase(it);
      continue;
    }
    live.insert(key);
    for (Head& h : s.heads) {  // positions >= c.start are (re)written by this chunk
      const auto keep = static_cast<size_t>(std::min<int64_t>(static_cast<int64_t>(h.norms.size()), c.start));
      h.norms.resize(keep);
      h.codes.resize(keep * static_cast<size_t>(s.params.tables));
      if (h.indexed > c.start) h.indexed = 0, h.ids.clear(), h.offsets.clear();
    }
  }
  std::erase_if(sequences_, [&](const auto& entry) { return !live.count(entry.first); });
}

const LshPlanes& LshAttention::planes(const LshParams& params, int64_t layer, int64_t g) {
  const auto key = std::make_tuple(params.bits, params.tables, params.seed);
  auto it = planes_.find(key);
  if (it == planes_.end()) {
    if (planes_.size() >= kPlaneSets) planes_.clear();
    it = planes_.emplace(key, std::vector<std::unique_ptr<LshPlanes>>(static_cast<size_t>(num_layers_ * shape_.num_kv_heads))).first;
  }
  auto& slot = it->second[static_cast<size_t>(layer * shape_.num_kv_heads + g)];
  const int64_t heads = model_kv_heads_ > 0 ? model_kv_heads_ : shape_.num_kv_heads;  // the model's, under tensor parallelism
  if (!slot) slot = std::make_unique<LshPlanes>(params, shape_.head_dim, static_cast<uint64_t>(layer * heads + head_offset_ + g));
  return *slot;
}

LshAttention::Head& LshAttention::ready_head(const KvCache& cache, const SequenceChunk& chunk, Sequence& s, int64_t layer, int64_t g,
                                             int64_t length) {
  const int64_t D = shape_.head_dim, P = shape_.page_size, L = s.params.tables;
  Head& h = s.heads[static_cast<size_t>(layer * shape_.num_kv_heads + g)];
  auto key = [&](int64_t i) {
    return cache.k(layer) + cache.offset((*chunk.page_table)[static_cast<size_t>(i / P)], g, i % P);
  };
  if (h.mean.empty()) {  // μ over the prompt's keys
    h.mean.assign(static_cast<size_t>(D), 0.0f);
    std::vector<double> sum(static_cast<size_t>(D), 0.0);
    for (int64_t i = 0; i < s.mean_to; ++i)
      for (int64_t d = 0; d < D; ++d) sum[static_cast<size_t>(d)] += key(i)[d];
    if (s.mean_to > 0)
      for (int64_t d = 0; d < D; ++d) h.mean[static_cast<size_t>(d)] = static_cast<float>(sum[static_cast<size_t>(d)] / static_cast<double>(s.mean_to));
  }
  const LshPlanes& hyperplanes = planes(s.params, layer, g);
  std::vector<float> centred(static_cast<size_t>(D));
  for (auto i = static_cast<int64_t>(h.norms.size()); i < length; ++i) {
    const float* k = key(i);
    for (int64_t d = 0; d < D; ++d) centred[static_cast<size_t>(d)] = k[d] - h.mean[static_cast<size_t>(d)];
    h.codes.resize(static_cast<size_t>((i + 1) * L));
    hyperplanes.hash(centred.data(), h.codes.data() + i * L);
    h.norms.push_back(std::sqrt(dot(centred.data(), centred.data(), D)));
  }
  // The CSR tables: rebuilt over every hashed key once enough keys are past them.
  if (length - h.indexed > std::max<int64_t>(256, h.indexed / 4)) {
    const int64_t buckets = int64_t{1} << s.params.bits;
    h.offsets.assign(static_cast<size_t>(L * (buckets + 1)), 0);
    h.ids.resize(static_cast<size_t>(L * length));
    for (int64_t t = 0; t < L; ++t) {
      int32_t* offsets = h.offsets.data() + t * (buckets + 1);
      for (int64_t i = 0; i < length; ++i) ++offsets[h.codes[static_cast<size_t>(i * L + t)] + 1];
      for (int64_t b = 0; b < buckets; ++b) offsets[b + 1] += offsets[b];
      std::vector<int32_t> fill(offsets, offsets + buckets);
      for (int64_t i = 0; i < length; ++i)  // ascending positions within each bucket
        h.ids[static_cast<size_t>(t * length + fill[h.codes[static_cast<size_t>(i * L + t)]]++)] = static_cast<int32_t>(i);
    }
    h.indexed = length;
  }
  return h;
}

void LshAttention::attend(const KvCache& cache, int64_t layer, const SequenceChunk& chunk, int64_t first_sparse, const float* q,
                          int64_t num_heads, float scale, float* out) {
  const LshParams& params = chunk.attention->lsh;
  const int64_t D = shape_.head_dim, P = shape_.page_size, G = shape_.num_kv_heads, group = num_heads / G, L = params.tables;
  auto [it, fresh] = sequences_.try_emplace(chunk.page_table->front());
  Sequence& s = it->second;
  if (fresh) {
    s.params = params;
    s.mean_to = chunk.sparse_from;
    s.heads.resize(static_cast<size_t>(num_layers_ * G));
  }
  const int64_t end = chunk.start + chunk.count;
  std::vector<Head*> heads;
  for (int64_t g = 0; g < G; ++g) heads.push_back(&ready_head(cache, chunk, s, layer, g, end));
  std::vector<const LshPlanes*> hyperplanes;
  for (int64_t g = 0; g < G; ++g) hyperplanes.push_back(&planes(params, layer, g));
  const int64_t sink = chunk.attention->sink, window = chunk.attention->window, buckets = int64_t{1} << params.bits;
  const int64_t work = (chunk.count - first_sparse) * num_heads;
  int64_t exact_keys = 0, sampled_keys = 0, middle_keys = 0;
#pragma omp parallel for schedule(dynamic) if (work > 1) reduction(+ : exact_keys, sampled_keys, middle_keys)
  for (int64_t job = 0; job < work; ++job) {
    thread_local std::vector<uint16_t> query_codes;
    thread_local std::vector<uint8_t> hits;
    thread_local std::vector<int32_t> exact, sampled;
    thread_local std::vector<float> logits;
    const int64_t t = first_sparse + job / num_heads, head = job % num_heads, g = head / group;
    const int64_t length = chunk.start + t + 1;
    const Head& h = *heads[static_cast<size_t>(g)];
    const float* qh = q + (t * num_heads + head) * D;
    query_codes.resize(static_cast<size_t>(L));
    hyperplanes[static_cast<size_t>(g)]->hash(qh, query_codes.data());
    // The sink and window exactly; the keys between them by collisions in >= 2 tables.
    const int64_t middle_first = std::min(sink, length), middle_last = std::max(middle_first, length - window);
    exact.clear(), sampled.clear();
    for (int64_t i = 0; i < middle_first; ++i) exact.push_back(static_cast<int32_t>(i));
    for (int64_t i = middle_last; i < length; ++i) exact.push_back(static_cast<int32_t>(i));
    hits.assign(static_cast<size_t>(length), 0);
    for (int64_t table = 0; table < L; ++table) {
      const int32_t* offsets = h.offsets.data() + table * (buckets + 1);
      const uint16_t b = query_codes[static_cast<size_t>(table)];
      const int32_t* ids = h.ids.data() + table * h.indexed;
      if (h.indexed == 0) break;
      for (int32_t j = offsets[b]; j < offsets[b + 1] && ids[j] < length; ++j) hits[static_cast<size_t>(ids[j])] += hits[static_cast<size_t>(ids[j])] < 2;
    }
    const int64_t csr_end = std::min(h.indexed, length);
    for (int64_t i = std::max(middle_first, int64_t{0}); i < middle_last; ++i) {
      if (i >= csr_end) {  // past the CSR: compare codes
        const uint16_t* codes = h.codes.data() + i * L;
        int32_t count = 0;
        for (int64_t table = 0; table < L && count < 2; ++table) count += codes[table] == query_codes[static_cast<size_t>(table)];
        hits[static_cast<size_t>(i)] = static_cast<uint8_t>(count);
      }
      if (hits[static_cast<size_t>(i)] >= 2) sampled.push_back(static_cast<int32_t>(i));
    }
    exact_keys += static_cast<int64_t>(exact.size()), sampled_keys += static_cast<int64_t>(sampled.size());
    middle_keys += middle_last - middle_first;
    const LshTerms terms{.exact = exact, .sampled = sampled, .q_mu = dot(qh, h.mean.data(), D), .q_norm = std::sqrt(dot(qh, qh, D))};
    auto row = [&](const float* base, int32_t i) { return base + cache.offset((*chunk.page_table)[static_cast<size_t>(i / P)], g, i % P); };
    lsh_attend(qh, D, scale, terms, params.bits, params.tables, [&](int32_t i) { return row(cache.k(layer), i); },
               [&](int32_t i) { return row(cache.v(layer), i); }, [&](int32_t i) { return h.norms[static_cast<size_t>(i)]; }, logits,
               out + (t * num_heads + head) * D);
  }
  stats_.queries += work, stats_.exact += exact_keys, stats_.sampled += sampled_keys, stats_.middle += middle_keys;
}

}  // namespace vortex::cpu
