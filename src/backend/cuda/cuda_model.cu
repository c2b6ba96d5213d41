// CudaModel: the forward pass as a list of kernel launches on one stream.
#include <cuda_bf16.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <map>
#include <set>
#include <tuple>
#include <type_traits>

#include "backend/cuda/argmax.cuh"
#include "backend/cuda/bias_add.cuh"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_model.h"
#include "backend/cuda/cuda_weights.cuh"
#include "backend/cuda/embedding.cuh"
#include "backend/cuda/fill_random.cuh"
#include "backend/cuda/gemm.cuh"
#include "backend/cuda/kv_fp8.cuh"
#include "backend/cuda/merge_states.cuh"
#include "backend/cuda/paged_attention.cuh"
#include "backend/cuda/prefill_attention.cuh"
#include "backend/cuda/rmsnorm.cuh"
#include "backend/cuda/rope_append.cuh"
#include "backend/cuda/sample.cuh"
#include "backend/cuda/silu_mul.cuh"
#include "backend/cuda/sparse_planner.h"
#include "core/lru_cache.h"
#include "kv/kv_rounding.h"
#include "model/weights.h"

namespace vortex::cuda {

CudaDeviceInfo cuda_device_info() {
  int count = 0;
  cudaError_t status = cudaGetDeviceCount(&count);
  check(status == cudaSuccess && count > 0, "no CUDA device is available ({})", cudaGetErrorString(status));
  cudaDeviceProp prop{};
  VX_CUDA(cudaGetDeviceProperties(&prop, 0));
  return {.name = prop.name, .multiprocessors = prop.multiProcessorCount, .memory_bytes = prop.totalGlobalMem};
}

// Chunks of at least this many tokens use the tensor-core prefill kernel (bf16); shorter ones,
// decode tokens included, the split-K paged kernel.
constexpr int64_t kPrefillKernelMinTokens = 16;

// One chunk's place in the batch.
struct ChunkSpan {
  int64_t first_row = 0, rows = 0, start = 0, page_offset = 0;
  int32_t kv_len = 0;  // keys its last token attends to
};

// Per-forward metadata, built on the host and copied to the device; kept from step to step, so
// that a step allocates nothing once the largest batch has been seen.
struct HostBatch {
  std::vector<int32_t> ids, positions, kv_len, page_table, logit_rows;  // (M), (M), (M), (entries), (R)
  std::vector<int64_t> slots, page_offset;                              // (M), (M)
  std::vector<ChunkSpan> chunks;
  std::vector<PlannerChunk> planned;                                    // the chunks as the sparse planner takes them
  int32_t max_kv_len = 0;
  void clear() {
    for (auto* v : {&ids, &positions, &kv_len, &page_table, &logit_rows}) v->clear();
    slots.clear(), page_offset.clear(), chunks.clear(), planned.clear();
    max_kv_len = 0;
  }
};

struct CudaModel::Impl {
  ModelConfig config;
  CudaModelOptions options;
  DeviceWeights weights;
  PageAllocator allocator;
  cudaStream_t stream = nullptr;
  Gemm gemm;
  size_t act_size = 4;  // bytes of a GEMM input element (fp32 or bf16)
  size_t kv_size = 4;   // bytes of a K or V element: act_size, or 1 with an fp8 cache
  DeviceBuffer<uint8_t> k_cache, v_cache;  // (L, num_pages, G, P, D) each
  DeviceBuffer<float> k_scale, v_scale;    // fp8 cache: (L, num_pages, G, P) each, the rows' scales (kv_fp8.cuh)
  // Scratch for max_tokens rows.
  DeviceBuffer<int32_t> d_ids, d_positions, d_kv_len, d_page_table, d_logit_rows, d_greedy;
  DeviceBuffer<TokenDraw> d_draws;  // (R) forward_sample's draws
  DeviceSampler sampler;
  DeviceBuffer<int64_t> d_slots, d_page_offset;
  DeviceBuffer<float> x, qkv, gate_up, logits, partial_o, partial_lse;
  DeviceBuffer<uint8_t> h, q, attn, act;
  // Keys stored rotated (fp8, head_dim a power of two: kv_fp8.cuh): q_rotated holds H·q / D for the
  // attention kernels, q (unrotated) the planner's query.
  bool rotate_keys = false;
  DeviceBuffer<uint8_t> q_rotated;
  int64_t partial_capacity = 0;  // rows × splits the partial buffers hold
  HostBatch host;
  // Sparse attention: made when a spec is first prepared; step_sparse when this step has a chunk with a spec.
  std::unique_ptr<SparsePlanner> sparse;
  bool step_sparse = false;
  bool step_fills = false;  // a step with no sparse row that still summarises the pages it fills
  // Decode graphs by "rows splits | the sparse planner's signature", the most recently used; a
  // shape is captured the second time it runs (`seen` remembers the first).
  using GraphKey = std::string;
  static constexpr size_t kMaxGraphs = 512, kMaxSeen = 4096;
  LruCache<GraphKey, cudaGraphExec_t> graphs{kMaxGraphs};
  GraphKey graph_key;  // this step's (decode_graph_key)
  // Profiling (profile_forward): an event before each phase, named by the phase that follows.
  std::vector<std::pair<std::string, cudaEvent_t>>* marks = nullptr;
  void mark(const char* phase) {
    if (!marks) return;
    cudaEvent_t event;
    VX_CUDA(cudaEventCreate(&event));
    VX_CUDA(cudaEventRecord(event, stream));
    marks->emplace_back(phase, event);
  }
  LruCache<GraphKey, bool> seen{kMaxSeen};     // shapes that ran once eagerly
  ForwardCounters counters;

  Impl(const ModelConfig& c, const CudaModelOptions& o, DeviceWeights w)
      : config(c), options(o), weights(std::move(w)), allocator(static_cast<int32_t>(o.num_pages)) {
    VX_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    act_size = dtype_size(options.precision);
    check(!options.fp8_kv || options.precision == DType::kBF16, "internal: an fp8 KV cache needs precision bf16");
    kv_size = options.fp8_kv ? 1 : act_size;
    rotate_keys = options.fp8_kv && kv_keys_rotated(KvStorage::kFp8, c.head_dim);
    allocate();
  }
  ~Impl() {
    clear_graphs();
    if (stream) cudaStreamDestroy(stream);
  }

  void clear_graphs() {
    graphs.clear([](const GraphKey&, cudaGraphExec_t exec) { cudaGraphExecDestroy(exec); });
    seen.clear([](const GraphKey&, bool) {});
  }

  SparsePlanner& planner() {
    if (!sparse)
      sparse = std::make_unique<SparsePlanner>(config, options.num_pages, options.page_size, options.precision,
                                               static_cast<int64_t>(d_page_table.size()), options.fp8_kv);
    return *sparse;
  }

  int64_t layer_kv_elements() const { return options.num_pages * config.num_kv_heads * options.page_size * config.head_dim; }
  int64_t layer_kv_rows() const { return options.num_pages * config.num_kv_heads * options.page_size; }
  // Calls f with a value of the cache's element type: Fp8 with an fp8 cache (bf16 precision only),
  // else the precision's T.
  template <typename T, typename F>
  void with_kv_type(F&& f) const {
    if constexpr (std::is_same_v<T, __nv_bfloat16>)
      if (options.fp8_kv) return f(Fp8{});
    f(T{});
  }
  // One layer's K and V as the kernels take them (Tkv: T, or Fp8 with the rows' scales).
  template <typename Tkv>
  Tkv* layer_k(int64_t layer) const { return reinterpret_cast<Tkv*>(k_cache.get()) + layer * layer_kv_elements(); }
  template <typename Tkv>
  Tkv* layer_v(int64_t layer) const { return reinterpret_cast<Tkv*>(v_cache.get()) + layer * layer_kv_elements(); }
  float* layer_k_scale(int64_t layer) const { return options.fp8_kv ? k_scale.get() + layer * layer_kv_rows() : nullptr; }
  float* layer_v_scale(int64_t layer) const { return options.fp8_kv ? v_scale.get() + layer * layer_kv_rows() : nullptr; }
  // The query the attention kernels multiply with the stored keys.
  const uint8_t* attention_q() const { return rotate_keys ? q_rotated.get() : q.get(); }

  void allocate() {
    const int64_t M = options.max_tokens, C = config.hidden_size, F = config.intermediate_size;
    const int64_t QKV = config.q_dim() + 2 * config.kv_dim();
    const size_t kv_bytes = static_cast<size_t>(config.num_layers * layer_kv_elements()) * kv_size;
    k_cache = DeviceBuffer<uint8_t>(kv_bytes);
    v_cache = DeviceBuffer<uint8_t>(kv_bytes);
    if (options.fp8_kv) {
      k_scale = DeviceBuffer<float>(static_cast<size_t>(config.num_layers * layer_kv_rows()));
      v_scale = DeviceBuffer<float>(static_cast<size_t>(config.num_layers * layer_kv_rows()));
    }
    auto rows = static_cast<size_t>(M);
    d_ids = DeviceBuffer<int32_t>(rows), d_positions = DeviceBuffer<int32_t>(rows), d_kv_len = DeviceBuffer<int32_t>(rows);
    d_logit_rows = DeviceBuffer<int32_t>(rows), d_greedy = DeviceBuffer<int32_t>(rows), d_draws = DeviceBuffer<TokenDraw>(rows);
    const int64_t entries = options.max_page_entries > 0 ? options.max_page_entries : 2 * options.num_pages;
    d_page_table = DeviceBuffer<int32_t>(static_cast<size_t>(entries));
    d_slots = DeviceBuffer<int64_t>(rows), d_page_offset = DeviceBuffer<int64_t>(rows);
    x = DeviceBuffer<float>(rows * C), qkv = DeviceBuffer<float>(rows * QKV), gate_up = DeviceBuffer<float>(rows * 2 * F);
    logits = DeviceBuffer<float>(rows * config.vocab_size);
    h = DeviceBuffer<uint8_t>(rows * std::max(C, F) * act_size);
    q = DeviceBuffer<uint8_t>(rows * config.q_dim() * act_size);
    if (rotate_keys) q_rotated = DeviceBuffer<uint8_t>(rows * config.q_dim() * act_size);
    attn = DeviceBuffer<uint8_t>(rows * config.q_dim() * act_size);
    act = DeviceBuffer<uint8_t>(rows * F * act_size);
    // Split-K partials: room for every row at up to 64K keys, or 32M floats, whichever is smaller;
    // larger batches run attention in row slices.
    const int64_t per_row_split = config.num_heads * config.head_dim;
    partial_capacity = std::min<int64_t>(M * (65536 / kAttentionSplitTokens), (32ll << 20) / per_row_split);
    partial_capacity = std::max<int64_t>(partial_capacity, 65536 / kAttentionSplitTokens);
    partial_o = DeviceBuffer<float>(static_cast<size_t>(partial_capacity * per_row_split));
    partial_lse = DeviceBuffer<float>(static_cast<size_t>(partial_capacity * config.num_heads));
  }

  void build_batch(std::span<const SequenceChunk> chunks) {
    HostBatch& b = host;
    b.clear();
    const int64_t P = options.page_size;
    int64_t row = 0;
    for (const SequenceChunk& chunk : chunks) {
      check(chunk.count > 0, "internal: empty chunk");
      check(static_cast<int64_t>(chunk.page_table->size()) * P >= chunk.start + chunk.count, "internal: page table too short");
      const int64_t offset = static_cast<int64_t>(b.page_table.size());
      b.chunks.push_back({.first_row = row, .rows = chunk.count, .start = chunk.start, .page_offset = offset,
                          .kv_len = static_cast<int32_t>(chunk.start + chunk.count)});
      b.page_table.insert(b.page_table.end(), chunk.page_table->begin(), chunk.page_table->end());
      for (int64_t t = 0; t < chunk.count; ++t, ++row) {
        const int64_t position = chunk.start + t;
        check(chunk.tokens[t] >= 0 && chunk.tokens[t] < config.vocab_size, "token id {} is out of range [0, {})", chunk.tokens[t], config.vocab_size);
        b.ids.push_back(chunk.tokens[t]);
        b.positions.push_back(static_cast<int32_t>(position));
        b.slots.push_back(static_cast<int64_t>((*chunk.page_table)[static_cast<size_t>(position / P)]) * P + position % P);
        b.page_offset.push_back(offset);
        b.kv_len.push_back(static_cast<int32_t>(position + 1));
        if (chunk.all_logits || t == chunk.count - 1) b.logit_rows.push_back(static_cast<int32_t>(row));
      }
      b.max_kv_len = std::max<int32_t>(b.max_kv_len, static_cast<int32_t>(chunk.start + chunk.count));
    }
    check(row <= options.max_tokens, "internal: {} tokens exceed the forward capacity {}", row, options.max_tokens);
    check(b.page_table.size() <= d_page_table.size(), "internal: {} page-table entries exceed capacity {}", b.page_table.size(), d_page_table.size());
    copy(d_ids.get(), b.ids), copy(d_positions.get(), b.positions), copy(d_kv_len.get(), b.kv_len);
    copy(d_page_table.get(), b.page_table), copy(d_logit_rows.get(), b.logit_rows);
    copy(d_slots.get(), b.slots), copy(d_page_offset.get(), b.page_offset);
    step_sparse = step_fills = false;
    const bool any_spec = std::any_of(chunks.begin(), chunks.end(), [](const SequenceChunk& c) { return c.attention != nullptr; });
    if (any_spec || (sparse && sparse->has_summaries())) {
      for (size_t i = 0; i < chunks.size(); ++i)
        b.planned.push_back({.chunk = &chunks[i], .first_row = b.chunks[i].first_row, .table_offset = b.chunks[i].page_offset});
      if (any_spec) step_sparse = planner().plan(b.planned, row, b.max_kv_len, stream);
      // Pages a dense step fills may be shared later with sparse sequences (sparse_planner.h).
      if (!step_sparse && sparse->has_summaries()) sparse->plan_fills(b.planned, row, stream), step_fills = true;
      if (sparse->take_buffers_changed()) {  // captured steps point at the old buffers
        clear_graphs();
        ++counters.graph_resets;
      }
    }
  }

  template <typename T>
  void copy(T* device, const std::vector<T>& values) {
    if (!values.empty()) VX_CUDA(cudaMemcpyAsync(device, values.data(), values.size() * sizeof(T), cudaMemcpyHostToDevice, stream));
  }

  // Attention of every chunk: long bf16 prefill chunks on tensor cores, the rest (decode tokens,
  // short chunks, the f32 reference mode) through the split-K paged kernel, in runs of chunks.
  // In a sparse layer (some row attends a page list), every row that the prefill kernel does not
  // take reads one list per (row, kv head): dense rows their page table, sparse rows their selection.
  template <typename T>
  void attention(int64_t layer, bool sparse_layer) {
    const auto& chunks = host.chunks;
    auto prefill_kernel = [&](size_t i) {  // long bf16 chunks without sparse rows in this layer
      return std::is_same_v<T, __nv_bfloat16> && chunks[i].rows >= kPrefillKernelMinTokens && !(sparse_layer && sparse->chunk_sparse(layer, i));
    };
    size_t i = 0;
    while (i < chunks.size()) {
      if (prefill_kernel(i) && prefill_attention(layer, chunks[i])) {
        ++i;
        continue;
      }
      size_t j = i;
      while (j < chunks.size() && !prefill_kernel(j)) ++j;
      if (j == i) ++j;  // a long chunk whose head_dim the prefill kernel lacks
      const int64_t first = chunks[i].first_row, rows = chunks[j - 1].first_row + chunks[j - 1].rows - first;
      int32_t max_len = 0;
      if (sparse_layer) max_len = sparse->max_kv_len(layer, first, rows);
      else
        for (size_t c = i; c < j; ++c) max_len = std::max(max_len, chunks[c].kv_len);
      with_kv_type<T>([&](auto kv) {
        paged_attention<T, decltype(kv)>(layer, first, rows, max_len, sparse_layer, rows_per_block<T>(i, j, sparse_layer));
      });
      i = j;
    }
  }

  bool prefill_attention(int64_t layer, const ChunkSpan& chunk) {
    using B = __nv_bfloat16;
    const bool fp8 = options.fp8_kv;
    PrefillAttentionParams p{.q = reinterpret_cast<const B*>(attention_q()) + chunk.first_row * config.q_dim(),
                             .k_cache = fp8 ? nullptr : layer_k<B>(layer), .v_cache = fp8 ? nullptr : layer_v<B>(layer),
                             .k_fp8 = fp8 ? layer_k<uint8_t>(layer) : nullptr, .v_fp8 = fp8 ? layer_v<uint8_t>(layer) : nullptr,
                             .k_scale = layer_k_scale(layer), .v_scale = layer_v_scale(layer),
                             .pages = d_page_table.get() + chunk.page_offset,
                             .out = reinterpret_cast<B*>(attn.get()) + chunk.first_row * config.q_dim(),
                             .tokens = chunk.rows, .start = chunk.start, .num_heads = static_cast<int>(config.num_heads),
                             .num_kv_heads = static_cast<int>(config.num_kv_heads), .head_dim = static_cast<int>(config.head_dim),
                             .page_size = static_cast<int>(options.page_size),
                             .scale = 1.0f / std::sqrt(static_cast<float>(config.head_dim))};
    return launch_prefill_attention(p, stream);
  }

  // Chunks [i, j) of equal length R > 1 (a step's verify chunks, all γ + 1 tokens) share each K/V
  // tile among their rows when R × group fits one tensor-core tile: bf16, dense layers only.
  template <typename T>
  int rows_per_block(size_t i, size_t j, bool sparse_layer) const {
    if constexpr (!std::is_same_v<T, __nv_bfloat16>) return 1;
    const int64_t R = host.chunks[i].rows, group = config.num_heads / config.num_kv_heads;
    if (sparse_layer || R < 2 || R * group > 16) return 1;
    for (size_t c = i; c < j; ++c)
      if (host.chunks[c].rows != R) return 1;
    return static_cast<int>(R);
  }

  template <typename T, typename Tkv>
  void paged_attention(int64_t layer, int64_t first_row, int64_t rows, int32_t max_kv_len, bool per_head, int rows_per_block = 1) {
    const int splits = static_cast<int>((max_kv_len + kAttentionSplitTokens - 1) / kAttentionSplitTokens);
    const int64_t rows_per_slice = std::max<int64_t>(rows_per_block, partial_capacity / splits / rows_per_block * rows_per_block);
    const float scale = 1.0f / std::sqrt(static_cast<float>(config.head_dim));
    for (int64_t first = first_row; first < first_row + rows; first += rows_per_slice) {
      const int64_t count = std::min(rows_per_slice, first_row + rows - first);
      const int64_t G = config.num_kv_heads;
      PagedAttentionParams<T, Tkv> p{
          .q = reinterpret_cast<const T*>(attention_q()) + first * config.q_dim(),
          .k_cache = layer_k<Tkv>(layer), .v_cache = layer_v<Tkv>(layer),
          .k_scale = layer_k_scale(layer), .v_scale = layer_v_scale(layer),
          .page_table = d_page_table.get(), .page_offset = d_page_offset.get() + first, .kv_len = d_kv_len.get() + first,
          .partial_o = partial_o.get(), .partial_lse = partial_lse.get(), .rows = count,
          .num_heads = static_cast<int>(config.num_heads), .num_kv_heads = static_cast<int>(config.num_kv_heads),
          .head_dim = static_cast<int>(config.head_dim), .page_size = static_cast<int>(options.page_size),
          .num_splits = splits, .scale = scale, .rows_per_block = rows_per_block};
      if (per_head) {
        p.page_table = sparse->table(), p.page_offset = sparse->head_offset() + first * G, p.kv_len = sparse->head_kv_len() + first * G;
        p.per_head_pages = true;
      }
      launch_paged_attention(p, stream);
      MergeStatesParams<T> m{.partial_o = partial_o.get(), .partial_lse = partial_lse.get(),
                             .out = reinterpret_cast<T*>(attn.get()) + first * config.q_dim(), .out_lse = nullptr,
                             .rows = count, .num_heads = static_cast<int>(config.num_heads), .num_splits = splits,
                             .head_dim = static_cast<int>(config.head_dim)};
      launch_merge_states(m, stream);
    }
  }

  template <typename T, typename Tkv>
  void rope_append(int64_t index, int64_t rows) {
    const DeviceLayer& w = weights.layers[static_cast<size_t>(index)];
    const ModelConfig& c = config;
    launch_rope_append(RopeAppendParams<T, Tkv>{
        .qkv = qkv.get(), .bias = w.qkv_bias, .q_norm = w.q_norm, .k_norm = w.k_norm, .inv_freq = weights.inv_freq,
        .positions = d_positions.get(), .slots = d_slots.get(), .q_out = reinterpret_cast<T*>(q.get()),
        .k_cache = layer_k<Tkv>(index), .v_cache = layer_v<Tkv>(index), .k_scale = layer_k_scale(index), .v_scale = layer_v_scale(index),
        .rotate_keys = rotate_keys, .q_rotated_out = rotate_keys ? reinterpret_cast<T*>(q_rotated.get()) : nullptr,
        .tokens = rows, .num_heads = static_cast<int>(c.num_heads), .num_kv_heads = static_cast<int>(c.num_kv_heads),
        .head_dim = static_cast<int>(c.head_dim), .page_size = static_cast<int>(options.page_size),
        .attention_scaling = weights.attention_scaling, .eps = static_cast<float>(c.rms_norm_eps)}, stream);
  }

  template <typename T>
  void layer(int64_t index, int64_t rows) {
    const DeviceLayer& w = weights.layers[static_cast<size_t>(index)];
    const ModelConfig& c = config;
    const int64_t C = c.hidden_size, F = c.intermediate_size, QKV = c.q_dim() + 2 * c.kv_dim();
    const float eps = static_cast<float>(c.rms_norm_eps);
    T* h_t = reinterpret_cast<T*>(h.get());
    launch_rmsnorm(RmsNormParams<T>{.x = x.get(), .weight = w.input_norm, .out = h_t, .rows = rows, .dim = C, .eps = eps}, stream);
    gemm.run({.x = h_t, .w = w.qkv, .y = qkv.get(), .m = rows, .n = QKV, .k = C, .dtype = weights.dtype}, stream);
    with_kv_type<T>([&](auto kv) { rope_append<T, decltype(kv)>(index, rows); });
    const uint8_t* keys = k_cache.get() + index * layer_kv_elements() * kv_size;  // the layer's, as stored
    const bool sparse_layer = step_sparse && sparse->launch_layer(index, q.get(), keys, layer_k_scale(index), stream);
    if (step_fills) sparse->summarise_fills(index, keys, layer_k_scale(index), stream);
    mark("attention");
    attention<T>(index, sparse_layer);
    mark("rest");
    gemm.run({.x = attn.get(), .w = w.o, .y = x.get(), .m = rows, .n = C, .k = c.q_dim(), .dtype = weights.dtype, .accumulate = true}, stream);
    launch_bias_add({.y = x.get(), .bias = w.o_bias, .rows = rows, .cols = C}, stream);
    launch_rmsnorm(RmsNormParams<T>{.x = x.get(), .weight = w.post_norm, .out = h_t, .rows = rows, .dim = C, .eps = eps}, stream);
    gemm.run({.x = h_t, .w = w.gate_up, .y = gate_up.get(), .m = rows, .n = 2 * F, .k = C, .dtype = weights.dtype}, stream);
    launch_silu_mul(SiluMulParams<T>{.gate_up = gate_up.get(), .bias = w.gate_up_bias, .out = reinterpret_cast<T*>(act.get()), .rows = rows, .dim = F}, stream);
    gemm.run({.x = act.get(), .w = w.down, .y = x.get(), .m = rows, .n = C, .k = F, .dtype = weights.dtype, .accumulate = true}, stream);
    launch_bias_add({.y = x.get(), .bias = w.down_bias, .rows = rows, .cols = C}, stream);
  }

  // Runs the batch up to the logits (R, V) on the device; returns R.
  template <typename T>
  int64_t run(std::span<const SequenceChunk> chunks) {
    using Ms = std::chrono::duration<double, std::milli>;
    const auto t0 = std::chrono::steady_clock::now();
    build_batch(chunks);
    const auto t1 = std::chrono::steady_clock::now();
    counters.host_ms += Ms(t1 - t0).count();
    ++counters.forwards;
    launch<T>();
    counters.launch_ms += Ms(std::chrono::steady_clock::now() - t1).count();
    return static_cast<int64_t>(host.logit_rows.size());
  }

  // The built batch's forward: a captured graph for a decode shape seen before, else eagerly.
  template <typename T>
  void launch() {
    const GraphKey* key = decode_graph_key();
    if (!key || (!graphs.contains(*key) && !seen.contains(*key))) {
      if (key) seen.put(*key, true);  // the first step of a shape runs eagerly: GEMM plans are made then
      ++counters.eager;
      launch_forward<T>();
      return;
    }
    cudaGraphExec_t* exec = graphs.find(*key);
    if (exec == nullptr) {
      // An evicted graph may still run on the stream: CUDA frees it once that launch completes.
      if (auto evicted = graphs.put(*key, capture<T>())) cudaGraphExecDestroy(evicted->second);
      exec = graphs.find(*key);
      ++counters.captured;
    }
    ++counters.replayed;
    VX_CUDA(cudaGraphLaunch(*exec, stream));
  }

  // Decode-only steps (one token per sequence) replay a CUDA graph per (batch size, split count):
  // every per-step value lives in device buffers refreshed before the launch. Anything else runs
  // eagerly (null). The key is written over the last step's.
  // Steps whose chunks all have the same R < kPrefillKernelMinTokens tokens (self-speculation's
  // verify steps: γ+1 tokens per sequence) replay too: their launches depend only on R, the rows,
  // the logits rows and the splits.
  const GraphKey* decode_graph_key() {
    const int64_t R = host.chunks.front().rows;
    if (R >= kPrefillKernelMinTokens) return nullptr;
    for (const ChunkSpan& c : host.chunks)
      if (c.rows != R) return nullptr;
    const int splits = static_cast<int>((host.max_kv_len + kAttentionSplitTokens - 1) / kAttentionSplitTokens);
    const int64_t rows = static_cast<int64_t>(host.ids.size());
    if (rows * splits > partial_capacity) return nullptr;  // attention would run in slices
    // Written into the kept string (assigning a new one would give up its capacity every step).
    auto number = [this](int64_t v) {
      char digits[24];
      graph_key.append(digits, std::to_chars(digits, digits + sizeof digits, v).ptr);
    };
    graph_key.clear();
    number(rows), graph_key += ' ', number(splits);
    if (R > 1) graph_key += " x", number(R), graph_key += " logits ", number(static_cast<int64_t>(host.logit_rows.size()));
    if (step_sparse) graph_key.append(" | ").append(sparse->signature());
    if (step_fills) graph_key.append(" | fills");
    return &graph_key;
  }

  template <typename T>
  cudaGraphExec_t capture() {
    cudaGraph_t graph;
    VX_CUDA(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
    launch_forward<T>();
    VX_CUDA(cudaStreamEndCapture(stream, &graph));
    cudaGraphExec_t exec;
    VX_CUDA(cudaGraphInstantiate(&exec, graph, 0));
    VX_CUDA(cudaGraphDestroy(graph));
    return exec;
  }

  // The forward pass as kernel launches on `stream`, reading the batch from the device buffers.
  template <typename T>
  void launch_forward() {
    const int64_t rows = static_cast<int64_t>(host.ids.size()), out_rows = static_cast<int64_t>(host.logit_rows.size());
    const int64_t C = config.hidden_size;
    mark("rest");
    launch_embedding(EmbeddingParams<T>{.table = static_cast<const T*>(weights.embed), .ids = d_ids.get(), .out = x.get(), .rows = rows, .dim = C}, stream);
    if (step_sparse) {
      sparse->launch_step(d_page_table.get(), stream);
      mark("rest");
    }
    for (int64_t l = 0; l < config.num_layers; ++l) layer<T>(l, rows);
    T* h_t = reinterpret_cast<T*>(h.get());
    launch_rmsnorm(RmsNormParams<T>{.x = x.get(), .weight = weights.final_norm, .row_index = d_logit_rows.get(), .out = h_t,
                                    .rows = out_rows, .dim = C, .eps = static_cast<float>(config.rms_norm_eps)}, stream);
    gemm.run({.x = h_t, .w = weights.lm_head, .y = logits.get(), .m = out_rows, .n = config.vocab_size, .k = C, .dtype = weights.dtype}, stream);
    mark("end");
  }

  int64_t run_any(std::span<const SequenceChunk> chunks) {
    return options.precision == DType::kF32 ? run<float>(chunks) : run<__nv_bfloat16>(chunks);
  }
};

namespace {

CudaModelOptions checked(CudaModelOptions o, const ModelConfig& c) {
  check(o.precision == DType::kBF16 || o.precision == DType::kF32, "cuda: precision must be bf16 or f32");
  check(o.page_size == 16 || o.page_size == 32 || o.page_size == 64, "page size must be 16, 32 or 64, got {}", o.page_size);
  check(o.num_pages > 0 && o.max_tokens > 0, "cuda: num_pages and max_tokens must be positive");
  check(c.head_dim <= 256, "cuda: head_dim {} > 256 is not supported", c.head_dim);
  return o;
}

}  // namespace

CudaModel::CudaModel(std::shared_ptr<const ModelWeights> weights, const CudaModelOptions& options) {
  cuda_device_info();
  impl_ = std::make_unique<Impl>(weights->config, checked(options, weights->config), upload_weights(*weights, options.precision));
}

CudaModel::CudaModel(const ModelConfig& config, const CudaModelOptions& options, uint64_t seed) {
  cuda_device_info();
  impl_ = std::make_unique<Impl>(config, checked(options, config), random_device_weights(config, options.precision, seed));
}

CudaModel::~CudaModel() = default;

void CudaModel::forward(std::span<const SequenceChunk> chunks, std::vector<float>& logits) {
  const int64_t rows = impl_->run_any(chunks);
  logits.resize(static_cast<size_t>(rows * impl_->config.vocab_size));
  VX_CUDA(cudaMemcpyAsync(logits.data(), impl_->logits.get(), logits.size() * sizeof(float), cudaMemcpyDeviceToHost, impl_->stream));
  VX_CUDA(cudaStreamSynchronize(impl_->stream));
}

void CudaModel::forward_greedy(std::span<const SequenceChunk> chunks, std::vector<int32_t>& ids) {
  const int64_t rows = impl_->run_any(chunks);
  launch_argmax({.logits = impl_->logits.get(), .ids = impl_->d_greedy.get(), .rows = rows, .vocab = impl_->config.vocab_size}, impl_->stream);
  ids.resize(static_cast<size_t>(rows));
  VX_CUDA(cudaMemcpyAsync(ids.data(), impl_->d_greedy.get(), ids.size() * sizeof(int32_t), cudaMemcpyDeviceToHost, impl_->stream));
  VX_CUDA(cudaStreamSynchronize(impl_->stream));
}

void CudaModel::forward_sample(std::span<const SequenceChunk> chunks, std::span<const TokenDraw> draws, std::vector<int32_t>& tokens,
                               RowReductions* reductions) {
  Impl& m = *impl_;
  const int64_t rows = m.run_any(chunks);
  const auto launched = std::chrono::steady_clock::now();
  check(static_cast<int64_t>(draws.size()) == rows, "internal: {} draws for {} logits rows", draws.size(), rows);
  VX_CUDA(cudaMemcpyAsync(m.d_draws.get(), draws.data(), draws.size_bytes(), cudaMemcpyHostToDevice, m.stream));
  const SampleParams params{.logits = m.logits.get(), .draws = m.d_draws.get(), .ids = m.d_greedy.get(), .rows = rows,
                            .vocab = m.config.vocab_size};
  const bool exports_tops = reductions && std::any_of(reductions->rows.begin(), reductions->rows.end(),
                                                      [](const RowReduction& r) { return r.temperature > 0.0f && r.top > 0; });
  m.sampler.run(params, draws.data(), m.stream, exports_tops);
  if (reductions) m.sampler.reduce(params, *reductions, m.stream);
  tokens.resize(static_cast<size_t>(rows));
  VX_CUDA(cudaMemcpyAsync(tokens.data(), m.d_greedy.get(), tokens.size() * sizeof(int32_t), cudaMemcpyDeviceToHost, m.stream));
  VX_CUDA(cudaStreamSynchronize(m.stream));
  m.counters.sample_ms += std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - launched).count();
}

PageAllocator& CudaModel::allocator() { return impl_->allocator; }

bool CudaModel::supports_sparse() const { return true; }

std::map<std::string, double> CudaModel::profile_forward(std::span<const SequenceChunk> chunks) {
  Impl& m = *impl_;
  std::vector<std::pair<std::string, cudaEvent_t>> marks;
  m.build_batch(chunks);
  m.marks = &marks;
  if (m.sparse) m.sparse->marker = [&m](const char* phase) { m.mark(phase); };
  if (m.options.precision == DType::kF32) m.launch_forward<float>();
  else m.launch_forward<__nv_bfloat16>();
  m.marks = nullptr;
  if (m.sparse) m.sparse->marker = nullptr;
  VX_CUDA(cudaStreamSynchronize(m.stream));
  std::map<std::string, double> ms;
  for (size_t i = 0; i + 1 < marks.size(); ++i) {
    float elapsed = 0.0f;
    VX_CUDA(cudaEventElapsedTime(&elapsed, marks[i].second, marks[i + 1].second));
    ms[marks[i].first] += elapsed;
  }
  for (auto& [phase, event] : marks) cudaEventDestroy(event);
  return ms;
}
void CudaModel::compile_sparse(const SparseAttention& attention) {
  // Reads only what is fixed at construction: safe beside a running forward().
  precompile_indexers(*attention.flow, indexer_shape(impl_->config, impl_->options.page_size, impl_->options.precision));
}
void CudaModel::prepare_sparse(const SparseAttention& attention) {
  check(!attention.lsh.on(), "attention spec '{}': lsh (LSH-sampled attention) runs on the CPU backend only; the GPU's "
        "offload path (issue #19) is not built", attention.text);
  check(attention.rest == RestEstimate::kDrop, "attention spec '{}': rest={} (estimating the pages a query does not attend) runs on "
        "the CPU backend only so far", attention.text, rest_name(attention.rest));
  check(attention.dense_below <= 0.0, "attention spec '{}': dense_below (attending densely where the selection holds too little "
        "of the attention mass) runs on the CPU backend only so far", attention.text);
  check(attention.cover <= 0.0, "attention spec '{}': cover (adding pages where the selection holds too little of the "
        "attention mass) runs on the CPU backend only so far", attention.text);
  impl_->planner().prepare(attention);
  // Full pages filled before this kind existed (the prefix cache keeps them for new sequences)
  // get its summaries now: one pass over the keys of the pool, once per new summary kind.
  // Graphs captured before summarise only the kinds that existed then: capture again.
  if (impl_->planner().take_kinds_added()) {
    impl_->planner().summarise_all(impl_->k_cache.get(), impl_->k_scale.get(), impl_->stream);
    impl_->clear_graphs();
    ++impl_->counters.graph_resets;
  }
}
size_t CudaModel::cached_graphs() const { return impl_->graphs.size(); }
ForwardCounters CudaModel::forward_counters() const { return impl_->counters; }
void CudaModel::summarise_kv() {
  if (impl_->sparse) impl_->sparse->summarise_all(impl_->k_cache.get(), impl_->k_scale.get(), impl_->stream);
}

bool CudaModel::reserve(std::vector<int32_t>& pages, int64_t tokens) {
  const int64_t needed = (tokens + impl_->options.page_size - 1) / impl_->options.page_size - static_cast<int64_t>(pages.size());
  return needed <= 0 || impl_->allocator.allocate(static_cast<int32_t>(needed), pages);
}

const ModelConfig& CudaModel::config() const { return impl_->config; }
int64_t CudaModel::max_tokens() const { return impl_->options.max_tokens; }
int64_t CudaModel::page_size() const { return impl_->options.page_size; }
size_t CudaModel::weight_bytes() const { return impl_->weights.matrix_bytes; }
size_t CudaModel::kv_bytes_per_token() const {
  const ModelConfig& c = impl_->config;
  const KvStorage storage = impl_->options.fp8_kv ? KvStorage::kFp8 : impl_->act_size == 2 ? KvStorage::kBf16 : KvStorage::kF32;
  return static_cast<size_t>(2 * c.num_layers * c.num_kv_heads * kv_row_bytes(storage, c.head_dim));
}
void CudaModel::synchronize() { VX_CUDA(cudaStreamSynchronize(impl_->stream)); }
void* CudaModel::stream() { return impl_->stream; }

void CudaModel::fill_kv_random(uint64_t seed) {
  const int64_t count = impl_->config.num_layers * impl_->layer_kv_elements();
  if (impl_->options.fp8_kv) {  // int8 keys in [-127, 127] times 1/128, e4m3 values in [-8, 8] times 1/8: in [-1, 1] as below
    launch_fill_random(reinterpret_cast<int8_t*>(impl_->k_cache.get()), count, 127.0f, seed, impl_->stream);
    launch_fill_random(reinterpret_cast<Fp8*>(impl_->v_cache.get()), count, 8.0f, seed + 1, impl_->stream);
    const int64_t rows = impl_->config.num_layers * impl_->layer_kv_rows();
    launch_fill_value(impl_->k_scale.get(), rows, 1.0f / 128.0f, impl_->stream);
    launch_fill_value(impl_->v_scale.get(), rows, 0.125f, impl_->stream);
  } else if (impl_->options.precision == DType::kF32) {
    launch_fill_random(reinterpret_cast<float*>(impl_->k_cache.get()), count, 1.0f, seed, impl_->stream);
    launch_fill_random(reinterpret_cast<float*>(impl_->v_cache.get()), count, 1.0f, seed + 1, impl_->stream);
  } else {
    launch_fill_random(reinterpret_cast<__nv_bfloat16*>(impl_->k_cache.get()), count, 1.0f, seed, impl_->stream);
    launch_fill_random(reinterpret_cast<__nv_bfloat16*>(impl_->v_cache.get()), count, 1.0f, seed + 1, impl_->stream);
  }
  synchronize();
}

}  // namespace vortex::cuda
