// Sparse attention on the GPU: what CudaModel runs around its attention kernels when some rows of
// a forward pass use a sparse attention spec. The CUDA counterpart of the CPU backend's
// plan_query_pages + select_layer_pages + PageSummaryStore (src/sparse/), built from the kernels
// page_summary, the generated flow indexers (flow_kernel.h), page_topk and page_list_compose.
//
// Per step, on the host (plan): which batch rows are sparse (a chunk with a spec, positions ≥
// sparse_from), each row's SparseRow (position, sink, window, k, selection kind), which layers are
// sparse for which rows ("layer classes": specs differ in skip_layers), and the indexer launch
// groups (one per spec; a stateful flow gets one group per row index within a chunk, its "waves", so
// that the saves of one query are seen by the next query of the same sequence, as on the CPU).
// Everything per step is uploaded into device buffers, so the kernels below capture into a CUDA
// graph whose structure depends only on signature().
//
// On the device, once per step (launch_step): the dense page table is copied into the attention
// table (its lists area follows), and every sparse row's candidate pages are written (the same for
// every layer). Per layer (launch_layer), after the layer's keys are appended: summaries of the
// pages that just filled, state reset of pages that restarted, the indexers, top-k, then the page
// lists: dense rows keep their page table, sparse rows get (row, kv head) lists.
//
// Every page that fills gets every kind's summaries in every layer, whoever fills it: a dense
// sequence's pages may be shared later (prefix caching) with a sparse sequence, and a spec's
// skip_layers do not hold for the next spec that shares them. So steps with no sparse row, once a
// kind exists, still summarise (plan_fills, then summarise_fills per layer), and sparse steps
// summarise in every layer, sparse for some row or not.
//
// A flow with stages (`stage topk`) runs one indexer per pass; between passes page_topk and
// stage_compact (page_stage.cuh) narrow each (row, kv head)'s candidates to the stage's survivors,
// and stage_map turns the final selection back into candidate indices.
//
// Summaries are one record per (page, kv head) in each field's storage type (field_storage.h; f32
// records are the CPU store's (S, W) floats) and state fp32 (num_pages, G), per layer, allocated
// when a spec is first prepared. A full page may be shared by several sequences (prefix caching):
// its summaries are a function of its keys, computed when it filled (or by summarise_all when a
// kind is added later), and shared with it; flow state is per page, so sequences with a stateful
// flow never share pages.
// Letters: M batch rows, R sparse rows, G kv heads, P page size, N candidates of a row.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "backend/chunk.h"
#include "backend/cuda/device_buffer.h"
#include "backend/cuda/flow_kernel.h"
#include "backend/cuda/page_list_compose.cuh"
#include "core/dtype.h"
#include "io/hf_config.h"
#include "sparse/sparse_attention.h"

namespace vortex::cuda {

// The shape of a model's flow indexers (query heads per KV head, head dim, page, query type).
IndexerShape indexer_shape(const ModelConfig& config, int64_t page_size, DType precision);

// One chunk of the forward's batch, as CudaModel laid it out.
struct PlannerChunk {
  const SequenceChunk* chunk = nullptr;
  int64_t first_row = 0;     // its first batch row
  int64_t table_offset = 0;  // where its page table starts in the forward's flat page table
};

class SparsePlanner {
 public:
  // fp8_keys: the cache holds int8 keys with a scale per row (kv_fp8.cuh), summarised as read (rotated
  // back where the cache rotates them: kv/kv_rounding.h).
  SparsePlanner(const ModelConfig& config, int64_t num_pages, int64_t page_size, DType precision, int64_t table_capacity,
                bool fp8_keys = false);
  ~SparsePlanner();

  struct Prepared;
  // Loads the spec's flow indexers (compiling them unless precompile_indexers did) and allocates
  // its summaries and state. Idempotent (flows are keyed by their text); throws vortex::Error
  // naming the flow when it cannot run on the GPU.
  Prepared& prepare(const SparseAttention& attention);
  // Whether prepare() allocated a summary kind since the last call: pages filled before it (the
  // prefix cache's, shared with new sequences) have no such summaries until summarise_all.
  bool take_kinds_added() { return std::exchange(kinds_added_, false); }

  // The host side of a step; uploads on `stream`. False when no row is sparse (then nothing else
  // runs). `max_kv_len` is the batch's longest sequence.
  bool plan(std::span<const PlannerChunk> chunks, int64_t rows, int32_t max_kv_len, cudaStream_t stream);
  // A step with no sparse row: the pages its rows fill and start, uploaded for summarise_fills.
  // Only once a spec was prepared (has_summaries).
  void plan_fills(std::span<const PlannerChunk> chunks, int64_t rows, cudaStream_t stream);
  bool has_summaries() const { return !kinds_.empty() || !slots_.empty(); }
  // True once after plan() reallocated a buffer: graphs captured before hold stale pointers.
  bool take_buffers_changed();
  // What a captured step depends on besides the batch size and dense split count: the layout of
  // the step's sparse rows, layer classes and launch groups, and each spec's flow (not the spec's
  // text: its budget, sink and window are uploaded data).
  const std::string& signature() const { return signature_; }

  // Before the layers: the attention table and the candidates.
  void launch_step(const int32_t* page_table, cudaStream_t stream);  // page_table: table_capacity entries
  // After layer `layer`'s keys are appended; q is (M, H, D) of the layer, k_cache the layer's keys
  // (k_scale their row scales with fp8 keys, else null).
  // False when no row is sparse in this layer (nothing was launched).
  bool launch_layer(int64_t layer, const void* q, const void* k_cache, const float* k_scale, cudaStream_t stream);
  // After layer `layer`'s keys are appended, in a plan_fills step: the filled pages' summaries and
  // the restarted pages' state (launch_layer does the same first).
  void summarise_fills(int64_t layer, const void* k_cache, const float* k_scale, cudaStream_t stream);

  // For a sparse layer's attention (per_head_pages): the table, (M, G) offsets and key counts.
  const int32_t* table() const { return table_.get(); }
  const int64_t* head_offset() const { return head_offset_.get(); }
  const int32_t* head_kv_len() const { return head_kv_len_.get(); }
  // The most keys a row in [first, first + count) attends in `layer` (its list, or dense).
  int32_t max_kv_len(int64_t layer, int64_t first, int64_t count) const;
  // Whether some row of the chunk with index `chunk` is sparse in `layer`.
  bool chunk_sparse(int64_t layer, size_t chunk) const;

  // Profiling: called with the name of each phase launch_step / launch_layer is about to enqueue
  // ("plan", "summaries", "indexer", "topk", "page_lists"); null: no calls.
  std::function<void(const char*)> marker;

  // Benchmarks (random KV without prefill): summarises every page of every prepared kind.
  // k_cache, k_scale: every layer's (k_scale null unless fp8_keys).
  void summarise_all(const void* k_cache, const float* k_scale, cudaStream_t stream);

  struct Kind;
  struct Slot;

 private:
  struct LayerClass {
    std::vector<int32_t> specs;             // spec indices (into step_specs_) sparse in these layers
    int64_t row_offset = 0, rows = 0;       // its sparse rows in the uploaded SparseRow / batch_row arrays
    bool needs_topk = false;                // some row selects among its candidates
    std::vector<int32_t> bound;             // (M) keys each batch row attends in these layers
    std::vector<uint8_t> chunk_sparse;      // per chunk
  };
  struct Group {
    int32_t spec = 0;                       // into step_specs_
    int32_t wave = 0;
  };
  // The host arrays of a step, kept from step to step (plan() allocates nothing once warm).
  struct StepHost {
    std::vector<int32_t> chunk_spec;                  // per chunk: its spec in step_specs_, or −1
    std::vector<SparseRow> sparse;                    // sparse rows, then each class's rows again
    std::vector<int32_t> batch_row, group;            // per entry of `sparse`: its batch row; launch group (sparse rows)
    std::vector<float> threshold;                     // per sparse row
    std::vector<int32_t> fill, start;                 // (M) the page each row filled / started, or −1
    std::vector<int32_t> row_spec, sparse_index;      // (M) a sparse row's spec and index in `sparse`, or −1
    std::vector<int32_t> candidates;                  // (M)
    std::vector<SparseRowPlan> row_plan;              // (M)
    std::vector<int64_t> dense_offset;                // (M·G)
    std::vector<int32_t> dense_kv_len;                // (M·G)
    std::vector<int32_t> stage_keep;                  // (stages, M·G)
    std::vector<uint8_t> staged;                      // (M·G)
    std::vector<int32_t> specs;                       // one layer's sparse specs
  };
  bool collect_specs(std::span<const PlannerChunk> chunks);  // false: no chunk has a spec
  int32_t launch_group(int32_t spec, int32_t wave);          // its index in groups_, added when new
  void plan_rows(std::span<const PlannerChunk> chunks);
  void plan_classes(std::span<const PlannerChunk> chunks);
  void check_limits() const;
  void upload_step(cudaStream_t stream);
  void make_signature();
  template <typename T>
  void summarise(int64_t layer, const void* k_cache, const float* k_scale, const int32_t* pages, int64_t count, cudaStream_t stream);
  void collect_fills(std::span<const PlannerChunk> chunks);
  void summarise_keys(int64_t layer, const void* k_cache, const float* k_scale, const int32_t* pages, int64_t count, cudaStream_t stream);
  void run_stages(const Prepared& prep, FlowKernelParams params, cudaStream_t stream);
  void grow(int64_t segments, int64_t stride, int64_t list_entries);

  ModelConfig config_;
  int64_t num_pages_, page_size_, table_capacity_;
  DType precision_;
  bool fp8_keys_;
  bool keys_rotated_;  // fp8 keys stored as H·k
  std::vector<std::unique_ptr<Kind>> kinds_;
  std::vector<std::unique_ptr<Slot>> slots_;
  std::map<std::string, std::unique_ptr<Prepared>> prepared_;  // by flow text
  // By flow object, for the per-step lookup; holding the flow keeps its address from being reused.
  // prepare() drops the flows only this map holds.
  std::map<const Flow*, std::pair<std::shared_ptr<const Flow>, Prepared*>> by_flow_;

  // The step (host).
  std::vector<const SparseAttention*> step_specs_;
  std::vector<Prepared*> step_prepared_;
  std::vector<Group> groups_;
  std::vector<int32_t> layer_class_;      // (L) class index or −1
  std::vector<LayerClass> classes_;       // the first class_count_ are this step's (the rest: kept for reuse)
  int32_t class_count_ = 0;
  int64_t list_entries_ = 0;              // page-list entries the largest class needs
  StepHost host_;
  int64_t rows_ = 0, segments_ = 0, sparse_rows_ = 0;
  int32_t stride_ = 0;                    // candidates / list pages per segment
  int64_t max_stages_ = 0;                // the most stages of a step's flows (0: no flow has stages)
  std::string signature_;
  bool buffers_changed_ = false;
  bool kinds_added_ = false;

  // Uploaded per step.
  DeviceBuffer<SparseRow> rows_all_;      // sparse rows, then each class's rows
  DeviceBuffer<int32_t> batch_row_all_, group_, fill_pages_, start_pages_;
  DeviceBuffer<float> threshold_;
  DeviceBuffer<int32_t> stage_keep_;      // (stages, M·G) survivors each stage keeps; 0 for segments without
  DeviceBuffer<uint8_t> staged_;          // (M·G) 1 where the row's flow has stages
  DeviceBuffer<int64_t> dense_offset_;    // (M, G)
  DeviceBuffer<int32_t> dense_kv_len_;    // (M, G)
  // Step workspace.
  DeviceBuffer<int32_t> table_;           // [dense page table | lists]
  DeviceBuffer<int32_t> cand_pages_, cand_offsets_, topk_count_, topk_k_, group_counts_, selected_, selected_count_;
  DeviceBuffer<int64_t> score_offset_, head_offset_;
  DeviceBuffer<int32_t> head_kv_len_;
  DeviceBuffer<float> topk_threshold_, scores_, spill_;
  // page_topk's sort keys when a segment has more candidates than its shared memory holds (stride_
  // > kPageTopKSharedCount: contexts past 128K tokens at page 16); empty otherwise.
  DeviceBuffer<uint32_t> topk_keys_;
  // Stages: the survivors of each (row, kv head) and their page ids, the counts the final top-k reads.
  DeviceBuffer<int32_t> stage_count_, final_count_, stage_selected_, stage_selected_count_, alive_, alive_pages_;
  int64_t spill_floats_ = 0;              // per candidate, the largest of the step's flows
};

}  // namespace vortex::cuda
