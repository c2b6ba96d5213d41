// The narrow interface every backend's model implements: a forward pass over a batch of sequence
// chunks, and the page pool of its KV cache. The engine and the scheduler see only this.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "backend/chunk.h"
#include "core/error.h"
#include "kv/page_allocator.h"

namespace vortex {

struct SparseAttention;

// How a backend's forward passes ran, summed over its life: where a step's time goes besides the
// kernels (profiles such as `vortex rollout --json`'s "profile"), and how sparse attention ran.
// The CPU backend reports only the sparse heads; the CUDA backend all but those.
struct ForwardCounters {
  int64_t forwards = 0;      // forward passes
  int64_t replayed = 0;      // of which replayed a captured CUDA graph
  int64_t captured = 0;      // of which captured (and instantiated) that graph first
  int64_t eager = 0;         // of which launched kernel by kernel
  int64_t graph_resets = 0;  // times every captured graph was dropped (a sparse buffer grew)
  double host_ms = 0.0;      // on the host before any launch: batch layout, sparse plan, uploads
  double launch_ms = 0.0;    // enqueueing the pass: a graph launch, capture + instantiate, or each kernel
  double sample_ms = 0.0;    // from the pass enqueued to the tokens (and reductions) on the host
  int64_t sparse_heads = 0;       // sparse attentions of one (token, layer, kv head)
  int64_t dense_below_heads = 0;  // of which attended every page (dense_below, attention_spec.h)
  int64_t sparse_pages = 0;  // pages their flows' lists held, summed over them
  int64_t cover_heads = 0, cover_pages = 0;  // of them, those cover grew, and the pages it added
  // the same by layer (CPU)
  std::vector<int64_t> sparse_heads_by_layer, dense_below_heads_by_layer, sparse_pages_by_layer, cover_pages_by_layer;
};

class ModelBackend {
 public:
  virtual ~ModelBackend() = default;
  // Runs the chunks; logits (R, V) get one row per requested position, chunk by chunk.
  virtual void forward(std::span<const SequenceChunk> chunks, std::vector<float>& logits) = 0;
  // Runs the chunks and picks each logits row's token on the device instead of returning logits:
  // `draws` has one entry per logits row (forward()'s rows), `tokens` (R) gets the choices, the
  // same ones sample_with_draw (runtime/sampler.h) makes from those logits. Only backends whose
  // samples_on_device() is true implement it. With `reductions` (rows: one per logits row, or
  // empty), also each row's rollout reductions (chunk.h), when reduces_on_device() is true.
  virtual void forward_sample(std::span<const SequenceChunk> /*chunks*/, std::span<const TokenDraw> /*draws*/,
                              std::vector<int32_t>& /*tokens*/, RowReductions* /*reductions*/ = nullptr) {
    fail("internal: this backend does not sample on its device");
  }
  virtual bool samples_on_device() const { return false; }
  virtual bool reduces_on_device() const { return false; }
  // Grows `pages` to hold `tokens` tokens; false (nothing allocated) when the pool is exhausted.
  virtual bool reserve(std::vector<int32_t>& pages, int64_t tokens) = 0;
  virtual PageAllocator& allocator() = 0;
  virtual int64_t max_tokens() const = 0;  // tokens one forward() accepts
  virtual int64_t page_size() const = 0;
  // Whether forward() runs chunks with sparse attention (SequenceChunk::attention).
  virtual bool supports_sparse() const { return false; }
  // Whether forward() measures selections for chunks with a SequenceChunk::recorder.
  virtual bool supports_selection_recall() const { return false; }
  // The slow, stateless part of readying a spec (the CUDA backend compiles the flow's indexers
  // with NVRTC): any thread may call it while another runs forward(). Idempotent.
  virtual void compile_sparse(const SparseAttention& /*attention*/) {}
  // Readies a resolved spec before its first forward (the CUDA backend loads the indexers compiled
  // by compile_sparse and allocates summaries), so that a flow the device cannot run is refused
  // when the request arrives. Never concurrent with forward(). Idempotent.
  virtual void prepare_sparse(const SparseAttention& /*attention*/) {}
  virtual ForwardCounters forward_counters() const { return {}; }
  // Benchmarks: random keys and values in every page of the KV cache (decode timed at a context
  // without prefilling it). Deterministic in `seed`.
  virtual void fill_kv_random(uint64_t /*seed*/) { fail("internal: this backend cannot fill its KV cache at random"); }
};

}  // namespace vortex
