#include "sparse/page_summaries.h"

#include <algorithm>

#include "core/error.h"
#include "sparse/field_reduce.h"
#include "sparse/field_storage.h"

namespace vortex {

PageSummaryStore::PageSummaryStore(const KvCacheShape& shape) : shape_(shape) {}

void PageSummaryStore::register_flow(const Flow& flow) {
  const auto layers = static_cast<size_t>(shape_.num_layers);
  const auto pages = static_cast<size_t>(shape_.num_pages);
  for (const FlowField& field : flow.fields) {
    const int64_t sub = field.rows(shape_.page_size), width = field.width(shape_.head_dim);
    bool known = false;
    for (const Kind& k : kinds_) known = known || (k.reduce == field.reduce && k.sub == sub && k.storage == field.storage);
    if (known) continue;
    Kind kind{.reduce = field.reduce, .storage = field.storage, .sub = sub, .width = width, .values = {}, .valid = {}};
    const auto per_layer = pages * static_cast<size_t>(shape_.num_kv_heads * sub * width);
    for (size_t l = 0; l < layers; ++l) {
      kind.values.emplace_back(new float[per_layer]);  // uninitialised: a page is written when summarised
      kind.valid.emplace_back(pages, uint8_t{0});
    }
    kinds_.push_back(std::move(kind));
  }
  for (size_t slot = 0; slot < flow.state.size(); ++slot) {
    std::string key = flow.name + "/" + flow.state[slot];
    bool known = false;
    for (const State& s : states_) known = known || s.key == key;
    if (known) continue;
    State state{.key = std::move(key), .values = {}};
    // Zeroed ("never saved"): pages filled before the flow was registered (or written without
    // on_append, as the decode benchmark does) are read before any slot-0 reset zeroes them.
    for (size_t l = 0; l < layers; ++l) state.values.emplace_back(new float[pages * static_cast<size_t>(shape_.num_kv_heads)]());
    states_.push_back(std::move(state));
  }
}

size_t PageSummaryStore::kind_index(const FlowField& field) const {
  const int64_t sub = field.rows(shape_.page_size);
  for (size_t i = 0; i < kinds_.size(); ++i)
    if (kinds_[i].reduce == field.reduce && kinds_[i].sub == sub && kinds_[i].storage == field.storage) return i;
  fail("internal: summary field '{}' was not registered", field.name);
}

size_t PageSummaryStore::state_index(const Flow& flow, size_t slot) const {
  const std::string key = flow.name + "/" + flow.state[slot];
  for (size_t i = 0; i < states_.size(); ++i)
    if (states_[i].key == key) return i;
  fail("internal: flow state '{}' was not registered", key);
}

void PageSummaryStore::summarise(const KvCache& cache, int64_t layer, Kind& kind, int32_t page) {
  const int64_t G = shape_.num_kv_heads, per_head = kind.sub * kind.width;
  float* out = kind.values[static_cast<size_t>(layer)].get() + static_cast<int64_t>(page) * G * per_head;
  const FlowField field{.name = "", .reduce = kind.reduce, .sub = static_cast<int32_t>(kind.sub), .loc = {}};
  for (int64_t g = 0; g < G; ++g) {
    reduce_page(field, cache.k(layer) + cache.offset(page, g, 0), shape_.page_size, shape_.page_size, shape_.head_dim,
                out + g * per_head);
    round_field_values(kind.storage, out + g * per_head, kind.sub, kind.width);
  }
  kind.valid[static_cast<size_t>(layer)][static_cast<size_t>(page)] = 1;
}

namespace {

// The key kind a rest= estimate reads, as the flow field that would request it.
FlowField rest_field(RestEstimate rest) {
  if (rest == RestEstimate::kProxy) return {.name = "rest keys", .reduce = FieldReduce::kMax, .sub = kFlowDimPage, .storage = FieldStorage::kInt4};
  return {.name = "rest mean", .reduce = FieldReduce::kMean, .sub = 1, .storage = FieldStorage::kF32};
}

}  // namespace

void PageSummaryStore::register_rest(RestEstimate rest) {
  if (rest == RestEstimate::kDrop) return;
  if (rest != RestEstimate::kExact) {
    Flow keys;
    keys.fields.push_back(rest_field(rest));
    register_flow(keys);
  }
  if (!value_means_.empty()) return;
  const auto pages = static_cast<size_t>(shape_.num_pages);
  for (int64_t l = 0; l < shape_.num_layers; ++l) {
    value_means_.emplace_back(new float[pages * static_cast<size_t>(shape_.num_kv_heads * shape_.head_dim)]);
    value_valid_.emplace_back(pages, uint8_t{0});
  }
}

void PageSummaryStore::summarise_values(const KvCache& cache, int64_t layer, int32_t page) {
  const int64_t G = shape_.num_kv_heads, D = shape_.head_dim, P = shape_.page_size;
  for (int64_t g = 0; g < G; ++g) {
    const float* v = cache.v(layer) + cache.offset(page, g, 0);
    float* out = value_means_[static_cast<size_t>(layer)].get() + (static_cast<int64_t>(page) * G + g) * D;
    for (int64_t d = 0; d < D; ++d) {
      double sum = 0.0;
      for (int64_t r = 0; r < P; ++r) sum += v[r * D + d];
      out[d] = static_cast<float>(sum / static_cast<double>(P));
    }
  }
  value_valid_[static_cast<size_t>(layer)][static_cast<size_t>(page)] = 1;
}

void PageSummaryStore::ensure_rest(const KvCache& cache, int64_t layer, RestEstimate rest, std::span<const int32_t> pages) {
  if (rest == RestEstimate::kDrop) return;
  if (rest != RestEstimate::kExact) {
    Flow keys;  // the flow that would request the estimate's key kind
    keys.fields.push_back(rest_field(rest));
    ensure(cache, layer, keys, pages);
  }
  for (int32_t page : pages)
    if (!value_valid_[static_cast<size_t>(layer)][static_cast<size_t>(page)]) summarise_values(cache, layer, page);
}

FlowPageView PageSummaryStore::rest_keys(RestEstimate rest, int64_t layer, int64_t g) const {
  const Kind& kind = kinds_[kind_index(rest_field(rest))];
  const int64_t per_head = kind.sub * kind.width;
  return {.base = kind.values[static_cast<size_t>(layer)].get() + g * per_head, .page_stride = shape_.num_kv_heads * per_head};
}

void PageSummaryStore::on_append(const KvCache& cache, int64_t layer, const std::vector<int32_t>& page_table, int64_t start,
                                 int64_t count) {
  const int64_t P = shape_.page_size, G = shape_.num_kv_heads;
  const auto l = static_cast<size_t>(layer);
  for (int64_t position = start; position < start + count; ++position) {
    const int32_t page = page_table[static_cast<size_t>(position / P)];
    const int64_t slot = position % P;
    if (slot == 0) {  // the page (re)starts: nothing it held before is valid
      for (Kind& kind : kinds_) kind.valid[l][static_cast<size_t>(page)] = 0;
      if (!value_valid_.empty()) value_valid_[l][static_cast<size_t>(page)] = 0;
      for (State& state : states_) std::fill_n(state.values[l].get() + static_cast<int64_t>(page) * G, G, 0.0f);
    }
    if (slot == P - 1) {
      for (Kind& kind : kinds_) summarise(cache, layer, kind, page);
      if (!value_means_.empty()) summarise_values(cache, layer, page);
    }
  }
}

void PageSummaryStore::ensure(const KvCache& cache, int64_t layer, const Flow& flow, std::span<const int32_t> pages) {
  for (const FlowField& field : flow.fields) {
    Kind& kind = kinds_[kind_index(field)];
    for (int32_t page : pages)
      if (!kind.valid[static_cast<size_t>(layer)][static_cast<size_t>(page)]) summarise(cache, layer, kind, page);
  }
}

FlowPageView PageSummaryStore::field_view(const Flow& flow, size_t field, int64_t layer, int64_t g) const {
  const Kind& kind = kinds_[kind_index(flow.fields[field])];
  const int64_t per_head = kind.sub * kind.width;
  return {.base = kind.values[static_cast<size_t>(layer)].get() + g * per_head, .page_stride = shape_.num_kv_heads * per_head};
}

float* PageSummaryStore::state_base(const Flow& flow, size_t slot, int64_t layer, int64_t g) {
  return states_[state_index(flow, slot)].values[static_cast<size_t>(layer)].get() + g;
}

}  // namespace vortex
