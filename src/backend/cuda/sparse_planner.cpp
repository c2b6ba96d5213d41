#include "backend/cuda/sparse_planner.h"

#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <type_traits>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/page_stage.cuh"
#include "backend/cuda/page_summary.cuh"
#include "backend/cuda/page_topk.cuh"
#include "backend/cuda/paged_attention.cuh"
#include "core/error.h"
#include "kv/kv_rounding.h"
#include "sparse/field_storage.h"

namespace vortex::cuda {

// One summary kind (a field reduction, its sub-rows and storage type) for every layer:
// (L, num_pages, G) records of record_bytes (src/sparse/field_storage.h).
struct SparsePlanner::Kind {
  FieldReduce reduce = FieldReduce::kMax;
  FieldStorage storage = FieldStorage::kF32;
  int32_t sub = 1;    // S, resolved
  int32_t width = 0;  // W
  int64_t record_bytes = 0;
  DeviceBuffer<uint8_t> values;
  int64_t layer_bytes = 0;
};

// One flow state slot for every layer: (L, num_pages, G), zero until saved.
struct SparsePlanner::Slot {
  std::string key;  // flow name + "/" + state name, as the CPU store keys it
  DeviceBuffer<float> values;
  int64_t layer_floats = 0;
};

struct SparsePlanner::Prepared {
  std::shared_ptr<const Flow> flow;
  // One indexer per scoring pass (flow_stage: each stage, then the selection); empty: the flow
  // computes nothing per page (streaming).
  std::vector<std::unique_ptr<FlowIndexer>> indexers;
  int64_t spill_floats = 0;              // the largest of its passes'
  std::vector<Kind*> fields;             // per flow field
  std::vector<Slot*> state;              // per state slot
  bool stateful = false;
  int32_t id = 0;                        // its index in prepared order: the signature names flows by it
};

namespace {

template <typename T>
void upload(DeviceBuffer<T>& buffer, const std::vector<T>& values, cudaStream_t stream, bool& changed) {
  if (buffer.size() < values.size()) {
    buffer = DeviceBuffer<T>(std::max<size_t>(values.size(), 2 * buffer.size()));
    changed = true;
  }
  if (!values.empty())
    VX_CUDA(cudaMemcpyAsync(buffer.get(), values.data(), values.size() * sizeof(T), cudaMemcpyHostToDevice, stream));
}

// Grows by at least half again: every reallocation drops the captured graphs of every batch size.
template <typename T>
void ensure(DeviceBuffer<T>& buffer, size_t count, bool& changed) {
  if (buffer.size() < count) {
    buffer = DeviceBuffer<T>(std::max<size_t>({count, buffer.size() + buffer.size() / 2, 1}));
    changed = true;
  }
}

int32_t clamp_int32(int64_t v) { return static_cast<int32_t>(std::clamp<int64_t>(v, 0, std::numeric_limits<int32_t>::max())); }

template <typename T>
DeviceBuffer<T> zeroed(size_t count, const std::string& what) {
  DeviceBuffer<T> buffer;
  try {
    buffer = DeviceBuffer<T>(count);
  } catch (const Error& e) {
    cudaGetLastError();  // an allocation failure is not sticky; clear it
    fail("{}: {:.2f} GB of GPU memory are not available ({})", what, static_cast<double>(count * sizeof(T)) / 1e9, e.what());
  }
  VX_CUDA(cudaMemset(buffer.get(), 0, count * sizeof(T)));
  return buffer;
}

}  // namespace

IndexerShape indexer_shape(const ModelConfig& config, int64_t page_size, DType precision) {
  return {.group = static_cast<int32_t>(config.num_heads / config.num_kv_heads), .head_dim = static_cast<int32_t>(config.head_dim),
          .page_size = static_cast<int32_t>(page_size), .q_type = precision == DType::kF32 ? FlowQueryType::kF32 : FlowQueryType::kBF16};
}

SparsePlanner::SparsePlanner(const ModelConfig& config, int64_t num_pages, int64_t page_size, DType precision, int64_t table_capacity,
                             bool fp8_keys)
    : config_(config), num_pages_(num_pages), page_size_(page_size), table_capacity_(table_capacity), precision_(precision),
      fp8_keys_(fp8_keys), keys_rotated_(fp8_keys && kv_keys_rotated(KvStorage::kFp8, config.head_dim)) {}

SparsePlanner::~SparsePlanner() = default;

SparsePlanner::Prepared& SparsePlanner::prepare(const SparseAttention& attention) {
  auto known = by_flow_.find(attention.flow.get());
  if (known != by_flow_.end()) return *known->second.second;
  // Forget flow objects no spec holds any more (a spec that fell out of BatchEngine's cache and
  // its sequences ended), so re-resolved specs do not grow the map.
  std::erase_if(by_flow_, [](const auto& entry) { return entry.second.first.use_count() == 1; });
  const Flow& flow = *attention.flow;
  const std::string key = flow.name + "\n" + to_text(flow);
  if (auto it = prepared_.find(key); it != prepared_.end()) {
    by_flow_[attention.flow.get()] = {attention.flow, it->second.get()};
    return *it->second;
  }
  const int64_t G = config_.num_kv_heads, D = config_.head_dim, P = page_size_, L = config_.num_layers;
  check(attention.page_size == P, "attention '{}': page size {} differs from the KV page size {}", attention.text, attention.page_size, P);
  auto prepared = std::make_unique<Prepared>();
  prepared->flow = attention.flow;
  prepared->stateful = !flow.saves.empty();
  if (flow_needs_indexer(flow)) {
    const IndexerShape shape = indexer_shape(config_, P, precision_);
    for (size_t pass = 0; pass <= flow.stages.size(); ++pass) {
      prepared->indexers.push_back(std::make_unique<FlowIndexer>(flow_stage(flow, pass), shape));
      prepared->spill_floats = std::max(prepared->spill_floats, prepared->indexers.back()->layout().spill_floats);
    }
  }
  for (const FlowField& field : flow.fields) {
    const auto sub = static_cast<int32_t>(field.rows(P)), width = static_cast<int32_t>(field.width(D));
    auto it = std::find_if(kinds_.begin(), kinds_.end(), [&](const auto& k) {
      return k->reduce == field.reduce && k->sub == sub && k->storage == field.storage;
    });
    if (it == kinds_.end()) {
      auto kind = std::make_unique<Kind>();
      kind->reduce = field.reduce, kind->storage = field.storage, kind->sub = sub, kind->width = width;
      kind->record_bytes = field_record_bytes(field.storage, sub, width);
      kind->layer_bytes = num_pages_ * G * kind->record_bytes;
      kind->values = zeroed<uint8_t>(static_cast<size_t>(L * kind->layer_bytes),
                                     fmt::format("attention '{}': the page summaries of field '{}'", attention.text, field.name));
      kinds_.push_back(std::move(kind));
      it = kinds_.end() - 1;
      kinds_added_ = true;
    }
    prepared->fields.push_back(it->get());
  }
  for (const std::string& state : flow.state) {
    const std::string slot_key = flow.name + "/" + state;
    auto it = std::find_if(slots_.begin(), slots_.end(), [&](const auto& s) { return s->key == slot_key; });
    if (it == slots_.end()) {
      auto slot = std::make_unique<Slot>();
      slot->key = slot_key;
      slot->layer_floats = num_pages_ * G;
      slot->values = zeroed<float>(static_cast<size_t>(L * slot->layer_floats), fmt::format("attention '{}': flow state '{}'", attention.text, state));
      slots_.push_back(std::move(slot));
      it = slots_.end() - 1;
    }
    prepared->state.push_back(it->get());
  }
  prepared->id = static_cast<int32_t>(prepared_.size());
  Prepared& result = *prepared;
  by_flow_[attention.flow.get()] = {attention.flow, &result};
  prepared_.emplace(key, std::move(prepared));
  return result;
}

// The host side of a step, in order: the step's specs (collect_specs), every row's SparseRow and
// per-segment dense fallbacks (plan_rows), the layer classes (plan_classes), the GPU's limits, the
// uploads and workspace (upload_step), and the signature. Every host array is a member reused from
// step to step: once the largest batch has been seen, a step allocates nothing on the host.
bool SparsePlanner::plan(std::span<const PlannerChunk> chunks, int64_t rows, int32_t max_kv_len, cudaStream_t stream) {
  if (!collect_specs(chunks)) return false;
  rows_ = rows, segments_ = rows * config_.num_kv_heads;
  const int64_t splits = (max_kv_len + kAttentionSplitTokens - 1) / kAttentionSplitTokens;
  stride_ = static_cast<int32_t>(std::max<int64_t>(1, splits * kAttentionSplitTokens / page_size_));
  plan_rows(chunks);
  plan_classes(chunks);
  check_limits();
  upload_step(stream);
  make_signature();
  return true;
}

// Every row's page that fills (its last slot written) or starts (its first), dense rows included
// (see the header), or -1: host_.fill and host_.start over rows_ rows.
void SparsePlanner::collect_fills(std::span<const PlannerChunk> chunks) {
  StepHost& h = host_;
  h.fill.assign(static_cast<size_t>(rows_), -1), h.start.assign(static_cast<size_t>(rows_), -1);
  for (const PlannerChunk& planned : chunks) {
    const SequenceChunk& chunk = *planned.chunk;
    for (int64_t t = 0; t < chunk.count; ++t) {
      const int64_t position = chunk.start + t;
      const auto row = static_cast<size_t>(planned.first_row + t);
      const int32_t page = (*chunk.page_table)[static_cast<size_t>(position / page_size_)];
      if ((position + 1) % page_size_ == 0) h.fill[row] = page;
      if (position % page_size_ == 0) h.start[row] = page;
    }
  }
}

void SparsePlanner::plan_fills(std::span<const PlannerChunk> chunks, int64_t rows, cudaStream_t stream) {
  const StepHost& h = host_;
  rows_ = rows;
  collect_fills(chunks);
  bool changed = false;
  upload(fill_pages_, h.fill, stream, changed);
  upload(start_pages_, h.start, stream, changed);
  buffers_changed_ = buffers_changed_ || changed;
}

bool SparsePlanner::collect_specs(std::span<const PlannerChunk> chunks) {
  step_specs_.clear(), step_prepared_.clear();
  StepHost& h = host_;
  h.chunk_spec.assign(chunks.size(), -1);
  for (size_t c = 0; c < chunks.size(); ++c) {
    const SparseAttention* a = chunks[c].chunk->attention;
    if (!a) continue;
    auto it = std::find(step_specs_.begin(), step_specs_.end(), a);
    if (it == step_specs_.end()) {
      step_prepared_.push_back(&prepare(*a));
      step_specs_.push_back(a);
      it = step_specs_.end() - 1;
    }
    h.chunk_spec[c] = static_cast<int32_t>(it - step_specs_.begin());
  }
  if (step_specs_.empty()) return false;
  max_stages_ = 0;
  for (const SparseAttention* a : step_specs_) max_stages_ = std::max(max_stages_, static_cast<int64_t>(a->flow->stages.size()));
  return true;
}

int32_t SparsePlanner::launch_group(int32_t spec, int32_t wave) {
  for (size_t i = 0; i < groups_.size(); ++i)
    if (groups_[i].spec == spec && groups_[i].wave == wave) return static_cast<int32_t>(i);
  groups_.push_back({.spec = spec, .wave = wave});
  return static_cast<int32_t>(groups_.size() - 1);
}

// Every sparse row, in batch order, with its launch group; fill / start pages of every row; the
// dense page table of every (row, kv head) segment, which rows outside a class keep.
void SparsePlanner::plan_rows(std::span<const PlannerChunk> chunks) {
  const int64_t G = config_.num_kv_heads, P = page_size_;
  const auto rows = static_cast<size_t>(rows_), segments = static_cast<size_t>(segments_);
  StepHost& h = host_;
  groups_.clear();
  h.sparse.clear(), h.batch_row.clear(), h.group.clear(), h.threshold.clear();
  collect_fills(chunks);
  h.row_spec.assign(rows, -1), h.sparse_index.assign(rows, -1);
  h.candidates.assign(rows, 0), h.row_plan.assign(rows, SparseRowPlan{});
  h.dense_offset.resize(segments), h.dense_kv_len.resize(segments);
  h.stage_keep.assign(static_cast<size_t>(max_stages_) * segments, 0);  // (stages, segments)
  h.staged.assign(max_stages_ > 0 ? segments : 0, 0);
  for (size_t c = 0; c < chunks.size(); ++c) {
    const SequenceChunk& chunk = *chunks[c].chunk;
    const int32_t s = h.chunk_spec[c];
    for (int64_t t = 0; t < chunk.count; ++t) {
      const int64_t row = chunks[c].first_row + t, position = chunk.start + t;
      const auto r_index = static_cast<size_t>(row);
      for (int64_t g = 0; g < G; ++g) {
        h.dense_offset[static_cast<size_t>(row * G + g)] = chunks[c].table_offset;
        h.dense_kv_len[static_cast<size_t>(row * G + g)] = static_cast<int32_t>(position + 1);
      }
      if (s < 0 || position < chunk.sparse_from) continue;
      const SparseAttention& a = *step_specs_[static_cast<size_t>(s)];
      const Prepared& prep = *step_prepared_[static_cast<size_t>(s)];
      const int32_t wave = prep.stateful ? static_cast<int32_t>(position - std::max(chunk.start, chunk.sparse_from)) : 0;
      const SparseRow r{.table_offset = chunks[c].table_offset, .position = static_cast<int32_t>(position), .sink = clamp_int32(a.sink),
                        .window = clamp_int32(a.window), .k = clamp_int32(a.pages_to_select(position + 1)),
                        .select_kind = a.flow->select.kind, .saves = static_cast<uint8_t>(prep.stateful)};
      for (size_t stage = 0; stage < a.flow->stages.size(); ++stage)
        for (int64_t g = 0; g < G; ++g) {
          h.stage_keep[static_cast<size_t>(static_cast<int64_t>(stage) * segments_ + row * G + g)] = clamp_int32(a.stage_keep(stage, r.k));
          h.staged[static_cast<size_t>(row * G + g)] = 1;
        }
      h.sparse.push_back(r);
      h.batch_row.push_back(static_cast<int32_t>(row));
      h.group.push_back(prep.indexers.empty() ? -1 : launch_group(s, wave));
      h.threshold.push_back(a.flow->select.kind == FlowSelectKind::kThreshold ? a.flow->select.threshold
                                                                              : -std::numeric_limits<float>::infinity());
      h.row_spec[r_index] = s;
      h.sparse_index[r_index] = static_cast<int32_t>(h.sparse.size() - 1);
      h.row_plan[r_index] = plan_sparse_row(r, static_cast<int>(P));
      h.candidates[r_index] = h.row_plan[r_index].candidates;
    }
  }
  sparse_rows_ = static_cast<int64_t>(h.sparse.size());
}

// Layer classes: the specs sparse in a layer. Each class lists its rows again (appended to the
// sparse rows) for page_list_compose, and bounds the keys every batch row attends in its layers.
void SparsePlanner::plan_classes(std::span<const PlannerChunk> chunks) {
  const int64_t L = config_.num_layers, G = config_.num_kv_heads, P = page_size_;
  StepHost& h = host_;
  layer_class_.assign(static_cast<size_t>(L), -1);
  class_count_ = 0;
  list_entries_ = 0;
  for (int64_t l = 0; l < L; ++l) {
    h.specs.clear();
    for (size_t s = 0; s < step_specs_.size(); ++s)
      if (!step_specs_[s]->dense_layer(l)) h.specs.push_back(static_cast<int32_t>(s));
    if (h.specs.empty()) continue;
    int32_t c = 0;
    while (c < class_count_ && classes_[static_cast<size_t>(c)].specs != h.specs) ++c;
    layer_class_[static_cast<size_t>(l)] = c;
    if (c < class_count_) continue;
    if (static_cast<size_t>(class_count_) == classes_.size()) classes_.emplace_back();
    LayerClass& cls = classes_[static_cast<size_t>(class_count_++)];
    cls.specs.assign(h.specs.begin(), h.specs.end());
    cls.row_offset = static_cast<int64_t>(h.sparse.size());
    cls.rows = 0;
    cls.needs_topk = false;
    cls.bound.resize(static_cast<size_t>(rows_));
    cls.chunk_sparse.assign(chunks.size(), 0);
    for (size_t ci = 0; ci < chunks.size(); ++ci) {
      const SequenceChunk& chunk = *chunks[ci].chunk;
      for (int64_t t = 0; t < chunk.count; ++t) {
        const int64_t row = chunks[ci].first_row + t;
        const auto r_index = static_cast<size_t>(row);
        const auto dense = static_cast<int32_t>(chunk.start + t + 1);
        cls.bound[r_index] = dense;
        const int32_t s = h.row_spec[r_index];
        if (s < 0 || !std::binary_search(cls.specs.begin(), cls.specs.end(), s)) continue;
        const SparseRow r = h.sparse[static_cast<size_t>(h.sparse_index[r_index])];
        const SparseRowPlan& rp = h.row_plan[r_index];
        const int32_t N = rp.candidates;
        const bool every = r.select_kind == FlowSelectKind::kTopK && r.k >= N;
        const int32_t picked = every ? N : (r.select_kind == FlowSelectKind::kNone ? 0 : std::min(r.k, N));
        cls.needs_topk = cls.needs_topk || (!every && r.select_kind != FlowSelectKind::kNone && r.k > 0);
        const int64_t pages = rp.sink_pages + picked + (rp.own - rp.window_first + 1);
        cls.bound[r_index] = static_cast<int32_t>(std::min<int64_t>(dense, pages * P));
        cls.chunk_sparse[ci] = 1;
        h.sparse.push_back(r);
        h.batch_row.push_back(static_cast<int32_t>(row));
        ++cls.rows;
      }
    }
    list_entries_ = std::max(list_entries_, cls.rows * G * stride_);
  }
}

// What the kernels cannot take: page_topk and stage_compact sort a selection in shared memory, so
// a row selects at most kPageTopKMaxKeep pages per kv head (among any number of candidates), and a
// stage keeps at most kStageMaxKeep.
void SparsePlanner::check_limits() const {
  const StepHost& h = host_;
  const int64_t P = page_size_;
  for (int64_t i = 0; i < sparse_rows_; ++i) {
    const SparseRow& r = h.sparse[static_cast<size_t>(i)];
    const auto batch_row = static_cast<size_t>(h.batch_row[static_cast<size_t>(i)]);
    const int32_t N = h.candidates[batch_row];
    const bool selects = r.select_kind == FlowSelectKind::kThreshold ? r.k > 0 : r.select_kind == FlowSelectKind::kTopK && r.k > 0 && r.k < N;
    const SparseAttention& a = *step_specs_[static_cast<size_t>(h.row_spec[batch_row])];
    check(!selects || std::min(r.k, N) <= kPageTopKMaxKeep,
          "attention spec '{}': sparse attention on the GPU selects at most {} pages per sequence and kv head ({} tokens at page {}); "
          "its budget asks for {} pages here", a.text, kPageTopKMaxKeep, static_cast<int64_t>(kPageTopKMaxKeep) * P, P, r.k);
    for (size_t stage = 0; stage < a.flow->stages.size(); ++stage) {
      const int32_t keep = clamp_int32(a.stage_keep(stage, r.k));
      check(keep >= N || keep <= kStageMaxKeep,
            "attention spec '{}': a stage of its flow keeps {} of {} candidate pages; the GPU keeps at most {} per sequence and kv head",
            a.text, keep, N, kStageMaxKeep);
    }
  }
}

// The step's arrays to the device, then the workspace for its shape.
void SparsePlanner::upload_step(cudaStream_t stream) {
  const StepHost& h = host_;
  bool changed = false;
  upload(rows_all_, h.sparse, stream, changed);
  upload(batch_row_all_, h.batch_row, stream, changed);
  upload(group_, h.group, stream, changed);
  upload(threshold_, h.threshold, stream, changed);
  upload(fill_pages_, h.fill, stream, changed);
  upload(start_pages_, h.start, stream, changed);
  upload(dense_offset_, h.dense_offset, stream, changed);
  upload(dense_kv_len_, h.dense_kv_len, stream, changed);
  if (max_stages_ > 0) {
    upload(stage_keep_, h.stage_keep, stream, changed);
    upload(staged_, h.staged, stream, changed);
  }
  spill_floats_ = 0;
  for (const Group& g : groups_)
    spill_floats_ = std::max(spill_floats_, step_prepared_[static_cast<size_t>(g.spec)]->spill_floats);
  grow(segments_, stride_, list_entries_);
  buffers_changed_ = buffers_changed_ || changed;
}

// What a captured step's launches depend on (see signature()), written over the last step's.
void SparsePlanner::make_signature() {
  signature_.clear();
  auto out = std::back_inserter(signature_);
  fmt::format_to(out, "stride {} rows {} groups {} spill {} |", stride_, sparse_rows_, groups_.size(), spill_floats_);
  for (const Group& g : groups_) fmt::format_to(out, " g{}.{}", g.spec, g.wave);
  for (int32_t c = 0; c < class_count_; ++c) {
    const LayerClass& cls = classes_[static_cast<size_t>(c)];
    const int32_t bound = *std::max_element(cls.bound.begin(), cls.bound.end());
    fmt::format_to(out, " | rows {} at {} topk {} splits {} specs {}", cls.rows, cls.row_offset, cls.needs_topk,
                   (bound + kAttentionSplitTokens - 1) / kAttentionSplitTokens, fmt::join(cls.specs, ","));
  }
  fmt::format_to(out, " | layers {}", fmt::join(layer_class_, ","));
  // Each spec by its flow, not its text: budget, sink and window reach the kernels as uploaded
  // rows (and the splits above), so specs that differ only in them share captured steps.
  for (const Prepared* p : step_prepared_) fmt::format_to(out, " | flow {}", p->id);
}

void SparsePlanner::grow(int64_t segments, int64_t stride, int64_t list_entries) {
  bool& changed = buffers_changed_;
  // The candidate workspace only when some row is sparse (a sparse request's prompt prefill has
  // many rows and none sparse: it needs the summaries, not the workspace).
  const auto area = sparse_rows_ > 0 ? static_cast<size_t>(segments * stride) : size_t{0};
  ensure(table_, static_cast<size_t>(table_capacity_ + list_entries), changed);
  ensure(cand_pages_, area, changed);
  ensure(cand_offsets_, static_cast<size_t>(segments), changed);
  ensure(score_offset_, static_cast<size_t>(segments), changed);
  ensure(topk_count_, static_cast<size_t>(segments), changed);
  ensure(topk_k_, static_cast<size_t>(segments), changed);
  ensure(topk_threshold_, static_cast<size_t>(segments), changed);
  ensure(group_counts_, static_cast<size_t>(segments) * std::max<size_t>(groups_.size(), 1), changed);
  ensure(selected_, area, changed);
  ensure(selected_count_, static_cast<size_t>(segments), changed);
  ensure(head_offset_, static_cast<size_t>(segments), changed);
  ensure(head_kv_len_, static_cast<size_t>(segments), changed);
  ensure(scores_, area, changed);
  if (stride > kPageTopKSharedCount) ensure(topk_keys_, area, changed);
  if (spill_floats_ > 0) ensure(spill_, area * static_cast<size_t>(spill_floats_), changed);
  if (max_stages_ > 0) {
    ensure(stage_count_, static_cast<size_t>(segments), changed);
    ensure(final_count_, static_cast<size_t>(segments), changed);
    ensure(stage_selected_count_, static_cast<size_t>(segments), changed);
    ensure(alive_, area, changed);
    ensure(alive_pages_, area, changed);
    ensure(stage_selected_, area, changed);
  }
}

bool SparsePlanner::take_buffers_changed() { return std::exchange(buffers_changed_, false); }

void SparsePlanner::launch_step(const int32_t* page_table, cudaStream_t stream) {
  if (marker) marker("plan");
  // The whole capacity, not this step's entries: a captured step replays the same copy.
  VX_CUDA(cudaMemcpyAsync(table_.get(), page_table, static_cast<size_t>(table_capacity_) * sizeof(int32_t), cudaMemcpyDeviceToDevice, stream));
  if (sparse_rows_ == 0) return;
  // Segments of rows that are not sparse keep zero counts (and defined offsets).
  VX_CUDA(cudaMemsetAsync(topk_count_.get(), 0, static_cast<size_t>(segments_) * sizeof(int32_t), stream));
  VX_CUDA(cudaMemsetAsync(cand_offsets_.get(), 0, static_cast<size_t>(segments_) * sizeof(int32_t), stream));
  VX_CUDA(cudaMemsetAsync(score_offset_.get(), 0, static_cast<size_t>(segments_) * sizeof(int64_t), stream));
  if (!groups_.empty())
    VX_CUDA(cudaMemsetAsync(group_counts_.get(), 0, static_cast<size_t>(segments_) * groups_.size() * sizeof(int32_t), stream));
  launch_sparse_candidates({.rows = rows_all_.get(), .batch_row = batch_row_all_.get(), .group = group_.get(), .threshold = threshold_.get(),
                            .page_table = table_.get(), .pages = cand_pages_.get(), .offsets = cand_offsets_.get(),
                            .score_offset = score_offset_.get(), .counts = topk_count_.get(), .k = topk_k_.get(),
                            .thresholds = topk_threshold_.get(), .group_counts = group_counts_.get(), .rows_count = sparse_rows_,
                            .segments = segments_, .num_kv_heads = static_cast<int>(config_.num_kv_heads),
                            .page_size = static_cast<int>(page_size_), .stride = stride_},
                           stream);
}

template <typename T>
void SparsePlanner::summarise(int64_t layer, const void* k_cache, const float* k_scale, const int32_t* pages, int64_t count,
                              cudaStream_t stream) {
  for (const auto& kind : kinds_)
    launch_page_summary(PageSummaryParams<T>{.k_cache = static_cast<const T*>(k_cache), .k_scale = k_scale,
                                             .keys_rotated = std::is_same_v<T, __nv_fp8_e4m3> && keys_rotated_, .pages = pages,
                                             .summary = kind->values.get() + layer * kind->layer_bytes,
                                             .record_bytes = kind->record_bytes, .count = count,
                                             .num_kv_heads = static_cast<int>(config_.num_kv_heads),
                                             .page_size = static_cast<int>(page_size_), .head_dim = static_cast<int>(config_.head_dim),
                                             .sub = kind->sub, .reduce = kind->reduce, .storage = kind->storage},
                        stream);
}

// The keys' element type picks the summary kernel: the precision's, or fp8.
void SparsePlanner::summarise_keys(int64_t layer, const void* k_cache, const float* k_scale, const int32_t* pages, int64_t count,
                                   cudaStream_t stream) {
  if (fp8_keys_) summarise<__nv_fp8_e4m3>(layer, k_cache, k_scale, pages, count, stream);
  else if (precision_ == DType::kF32) summarise<float>(layer, k_cache, nullptr, pages, count, stream);
  else summarise<__nv_bfloat16>(layer, k_cache, nullptr, pages, count, stream);
}

void SparsePlanner::summarise_fills(int64_t layer, const void* k_cache, const float* k_scale, cudaStream_t stream) {
  // Pages that just filled get every kind's summary (kinds are few: a flow's fields); pages that
  // restarted lose their state.
  if (marker) marker("summaries");
  summarise_keys(layer, k_cache, k_scale, fill_pages_.get(), rows_, stream);
  for (size_t first = 0; first < slots_.size(); first += kPageStateMaxSlots) {
    PageStateResetParams reset{.pages = start_pages_.get(), .count = rows_, .num_kv_heads = static_cast<int>(config_.num_kv_heads)};
    for (size_t i = first; i < std::min(slots_.size(), first + kPageStateMaxSlots); ++i)
      reset.state[reset.slots++] = slots_[i]->values.get() + layer * slots_[i]->layer_floats;
    launch_page_state_reset(reset, stream);
  }
}

bool SparsePlanner::launch_layer(int64_t layer, const void* q, const void* k_cache, const float* k_scale, cudaStream_t stream) {
  summarise_fills(layer, k_cache, k_scale, stream);  // in every layer: another spec may be sparse here
  const int32_t c = layer_class_[static_cast<size_t>(layer)];
  if (c < 0) return false;
  const LayerClass& cls = classes_[static_cast<size_t>(c)];
  if (cls.rows == 0) return false;
  const int64_t G = config_.num_kv_heads;
  if (marker) marker("indexer");
  // With stages, the final top-k's counts are the survivors' (stage_compact writes them).
  if (max_stages_ > 0)
    VX_CUDA(cudaMemcpyAsync(final_count_.get(), topk_count_.get(), static_cast<size_t>(segments_) * sizeof(int32_t), cudaMemcpyDeviceToDevice, stream));
  for (size_t gi = 0; gi < groups_.size(); ++gi) {
    const Group& g = groups_[gi];
    if (!std::binary_search(cls.specs.begin(), cls.specs.end(), g.spec)) continue;
    const Prepared& prep = *step_prepared_[static_cast<size_t>(g.spec)];
    FlowKernelParams p{.q = q, .pages = cand_pages_.get(), .offsets = cand_offsets_.get(),
                       .counts = group_counts_.get() + static_cast<int64_t>(gi) * segments_, .scores = scores_.get(),
                       .spill = prep.spill_floats > 0 ? spill_.get() : nullptr,
                       .q_row_stride = config_.num_heads * config_.head_dim, .rows = static_cast<int32_t>(rows_),
                       .kv_heads = static_cast<int32_t>(G)};
    for (size_t f = 0; f < prep.fields.size(); ++f) p.fields[f] = prep.fields[f]->values.get() + layer * prep.fields[f]->layer_bytes;
    for (size_t s = 0; s < prep.state.size(); ++s) p.state[s] = prep.state[s]->values.get() + layer * prep.state[s]->layer_floats;
    if (prep.indexers.size() == 1) prep.indexers.front()->launch(p, stride_, stream);
    else run_stages(prep, p, stream);
  }
  if (marker) marker("topk");
  if (cls.needs_topk)
    launch_page_topk({.scores = scores_.get(), .score_offset = score_offset_.get(),
                      .count = max_stages_ > 0 ? final_count_.get() : topk_count_.get(), .k = topk_k_.get(),
                      .threshold = topk_threshold_.get(), .selected = selected_.get(), .selected_count = selected_count_.get(),
                      .keys = topk_keys_.get(), .key_stride = stride_, .segments = segments_, .max_count = stride_, .selected_stride = stride_},
                     stream);
  if (max_stages_ > 0)
    launch_stage_map({.selected = selected_.get(), .selected_count = selected_count_.get(), .alive = alive_.get(),
                      .staged = staged_.get(), .segments = segments_, .stride = stride_}, stream);
  if (marker) marker("page_lists");
  VX_CUDA(cudaMemcpyAsync(head_offset_.get(), dense_offset_.get(), static_cast<size_t>(segments_) * sizeof(int64_t), cudaMemcpyDeviceToDevice, stream));
  VX_CUDA(cudaMemcpyAsync(head_kv_len_.get(), dense_kv_len_.get(), static_cast<size_t>(segments_) * sizeof(int32_t), cudaMemcpyDeviceToDevice, stream));
  launch_page_list_compose({.rows = rows_all_.get() + cls.row_offset, .batch_row = batch_row_all_.get() + cls.row_offset,
                            .page_table = table_.get(), .selected = selected_.get(), .selected_count = selected_count_.get(),
                            .list_pages = table_.get() + table_capacity_, .list_offset = head_offset_.get(),
                            .kv_len = head_kv_len_.get(), .rows_count = cls.rows, .num_kv_heads = static_cast<int>(G),
                            .page_size = static_cast<int>(page_size_), .selected_stride = stride_, .list_stride = stride_,
                            .list_base = table_capacity_},
                           stream);
  return true;
}

// A flow with stages, for one launch group: each pass scores the survivors of the one before (the
// first, every candidate), a stage's page_topk keeps its best ceil(factor · k), stage_compact makes
// them the next pass's candidate list; the last pass's scores go to the layer's final top-k.
void SparsePlanner::run_stages(const Prepared& prep, FlowKernelParams p, cudaStream_t stream) {
  VX_CUDA(cudaMemcpyAsync(stage_count_.get(), p.counts, static_cast<size_t>(segments_) * sizeof(int32_t), cudaMemcpyDeviceToDevice, stream));
  p.counts = stage_count_.get();
  for (size_t pass = 0; pass < prep.indexers.size(); ++pass) {
    p.pages = pass == 0 ? cand_pages_.get() : alive_pages_.get();
    prep.indexers[pass]->launch(p, stride_, stream);
    if (pass + 1 == prep.indexers.size()) break;
    launch_page_topk({.scores = scores_.get(), .score_offset = score_offset_.get(), .count = stage_count_.get(),
                      .k = stage_keep_.get() + static_cast<int64_t>(pass) * segments_, .threshold = nullptr,
                      .selected = stage_selected_.get(), .selected_count = stage_selected_count_.get(), .keys = topk_keys_.get(),
                      .key_stride = stride_, .segments = segments_, .max_count = stride_, .selected_stride = stride_, .prune_only = true},
                     stream);
    launch_stage_compact({.selected = stage_selected_.get(), .selected_count = stage_selected_count_.get(),
                          .keep = stage_keep_.get() + static_cast<int64_t>(pass) * segments_, .count = stage_count_.get(),
                          .final_count = final_count_.get(), .alive = alive_.get(), .cand_pages = cand_pages_.get(),
                          .alive_pages = alive_pages_.get(), .segments = segments_, .stride = stride_, .first = pass == 0},
                         stream);
  }
}

int32_t SparsePlanner::max_kv_len(int64_t layer, int64_t first, int64_t count) const {
  const LayerClass& cls = classes_[static_cast<size_t>(layer_class_[static_cast<size_t>(layer)])];
  return *std::max_element(cls.bound.begin() + first, cls.bound.begin() + first + count);
}

bool SparsePlanner::chunk_sparse(int64_t layer, size_t chunk) const {
  const int32_t c = layer_class_[static_cast<size_t>(layer)];
  return c >= 0 && classes_[static_cast<size_t>(c)].chunk_sparse[chunk] != 0;
}

void SparsePlanner::summarise_all(const void* k_cache, const float* k_scale, cudaStream_t stream) {
  std::vector<int32_t> all(static_cast<size_t>(num_pages_));
  std::iota(all.begin(), all.end(), 0);
  DeviceBuffer<int32_t> pages(all.size());
  VX_CUDA(cudaMemcpyAsync(pages.get(), all.data(), all.size() * sizeof(int32_t), cudaMemcpyHostToDevice, stream));
  const size_t element = fp8_keys_ ? 1 : precision_ == DType::kF32 ? 4 : 2;
  const int64_t layer_rows = num_pages_ * config_.num_kv_heads * page_size_, layer_elements = layer_rows * config_.head_dim;
  for (int64_t l = 0; l < config_.num_layers; ++l) {
    const void* keys = static_cast<const uint8_t*>(k_cache) + static_cast<size_t>(l * layer_elements) * element;
    summarise_keys(l, keys, fp8_keys_ ? k_scale + l * layer_rows : nullptr, pages.get(), num_pages_, stream);
  }
  VX_CUDA(cudaStreamSynchronize(stream));
}

}  // namespace vortex::cuda
