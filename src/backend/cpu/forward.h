// The decoder forward pass on the CPU: a list of op calls over a batch of sequence chunks.
//
// One forward() call takes any mix of prefill chunks and decode tokens (continuous batching):
// the linear layers see all tokens of all chunks as one (M, C) matrix; attention runs per chunk
// over that sequence's pages. Scratch buffers are sized once for `max_tokens` rows.
// Letters: M tokens in the batch, C hidden, F intermediate, H heads, G kv heads, D head dim, V vocab.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "backend/backend.h"
#include "backend/chunk.h"
#include "backend/communicator.h"
#include "backend/cpu/attention.h"
#include "backend/cpu/lsh_attention.h"
#include "backend/cpu/rope.h"
#include "kv/kv_cache.h"
#include "model/tensor_parallel.h"
#include "model/weights.h"
#include "sparse/page_selection.h"
#include "sparse/page_summaries.h"

namespace vortex::cpu {

using vortex::SequenceChunk;

class CpuModel : public ModelBackend {
 public:
  CpuModel(std::shared_ptr<const ModelWeights> weights, KvCacheShape kv_shape, int64_t max_tokens);

  // Runs the chunks; logits (R, V) has one row per requested position, chunk by chunk.
  void forward(std::span<const SequenceChunk> chunks, std::vector<float>& logits) override;
  bool reserve(std::vector<int32_t>& pages, int64_t tokens) override { return kv_.reserve(pages, tokens); }
  PageAllocator& allocator() override { return kv_.allocator(); }
  int64_t max_tokens() const override { return max_tokens_; }
  int64_t page_size() const override { return kv_.shape().page_size; }

  bool supports_sparse() const override { return true; }
  bool supports_selection_recall() const override { return true; }
  ForwardCounters forward_counters() const override;
  void fill_kv_random(uint64_t seed) override;  // N(0, 1) values, every layer, page and slot

  KvCache& kv() { return kv_; }
  const ModelWeights& weights() const { return *weights_; }
  // Makes this model rank `plan.rank` of a tensor-parallel group (model/tensor_parallel.h): its
  // weights are that rank's shard, and forward() sums the row-parallel projections and the
  // vocabulary-parallel embedding over the group through `comm` and gathers the logits, so every
  // rank returns the whole model's logits. `comm` outlives the model.
  void join_tensor_parallel(Communicator* comm, const ShardPlan& plan);
  // What forward() checks of a batch before it starts (an Error naming the fault).
  void check_chunks(std::span<const SequenceChunk> chunks) const;

 private:
  void attention_block(const LayerWeights& w, int64_t layer, std::span<const SequenceChunk> chunks, int64_t m);
  void mlp_block(const LayerWeights& w, int64_t m);
  void plan_sparse(std::span<const SequenceChunk> chunks);
  void attend_chunk(const SequenceChunk& chunk, size_t index, int64_t layer, int64_t row);
  void embed(int64_t m);                                             // x_ ← the ids' rows
  void project_logits(int64_t rows, std::vector<float>& logits);     // h_'s rows → logits (rows, V)
  void all_reduce(float* data, int64_t n) { if (comm_) comm_->all_reduce_sum(data, n); }

  std::shared_ptr<const ModelWeights> weights_;
  Communicator* comm_ = nullptr;  // tensor parallel: the group's collectives, else null
  ShardPlan shard_;               // tensor parallel: this rank's part of the model
  std::vector<float> local_logits_, padded_logits_;  // tensor parallel: (rows, the rank's V), (rows, ⌈V / ranks⌉)
  std::vector<float> gathered_;   // tensor parallel: (ranks, rows, ⌈V / ranks⌉) logits
  KvCache kv_;
  RopeFrequencies rope_;
  int64_t max_tokens_;
  // Scratch, sized for max_tokens rows.
  std::vector<int32_t> ids_, positions_;  // (M)
  std::vector<float> x_, h_;              // (M, C)
  std::vector<float> q_, attn_;           // (M, H*D)
  std::vector<float> k_, v_;              // (M, G*D)
  std::vector<float> gate_, up_;          // (M, F)
  // Sparse attention: summaries beside the KV pages, and the step's plan (built once per forward,
  // used by every layer).
  PageSummaryStore summaries_;
  std::vector<std::vector<QueryPages>> chunk_queries_;   // (chunks) of (sparse tokens of the chunk)
  std::vector<std::vector<int32_t>> page_lists_;         // (sparse tokens · G) scratch per layer
  LshAttention lsh_;                                     // `lsh` specs' hash tables, per sequence
  std::unique_ptr<SparseHeadCounts[]> sparse_counts_;    // (layers) over the model's life (forward_counters)
};

}  // namespace vortex::cpu
