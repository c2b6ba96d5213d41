// Tensor parallelism on the CPU backend (model/tensor_parallel.h): N ranks as threads of this
// process, each a CpuModel over its shard with its own KV cache (its KV heads), joined by a
// shared-memory communicator. It is the oracle for a GPU backend's tensor parallelism, as the CPU is
// for every kernel: the same shards and collective points, checked against one rank (TP = 1). It is
// not faster than one CpuModel, whose OpenMP threads already use every core.
#pragma once

#include <barrier>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "backend/backend.h"
#include "backend/communicator.h"
#include "backend/cpu/forward.h"
#include "kv/kv_cache.h"
#include "model/weights.h"

namespace vortex::cpu {

// The collectives among `ranks` threads: every rank deposits its buffer, waits for the others, and
// reads them all in rank order (so the sums have the same bits on every rank).
class ThreadGroup {
 public:
  explicit ThreadGroup(int64_t ranks);
  ~ThreadGroup();
  Communicator& rank(int64_t r);
  // Rank r failed and leaves the group: the others' collectives stop waiting for it and skip it
  // (their results are then void), and no later collective counts it.
  void leave(int64_t r);

 private:
  class Member;
  std::barrier<> barrier_;
  std::vector<const float*> inputs_;  // (ranks) the buffers of the collective under way
  std::vector<char> left_;            // (ranks) set before the rank's arrive_and_drop, read after a phase
  std::vector<std::unique_ptr<Member>> members_;
};

// A ModelBackend over `ranks` CpuModels, one per shard of `weights`. The KV pages are rank 0's:
// reserve() and allocator() are its, and every rank's cache has the same pages (each holding its
// KV heads), so a page table means the same on every rank. forward() runs the ranks on threads and
// returns rank 0's logits, the whole vocabulary's.
class TensorParallelModel : public ModelBackend {
 public:
  // kv_shape: the whole model's (num_kv_heads = the model's G); each rank's cache holds its heads.
  TensorParallelModel(const ModelWeights& weights, int64_t ranks, KvCacheShape kv_shape, int64_t max_tokens);
  ~TensorParallelModel() override;

  void forward(std::span<const SequenceChunk> chunks, std::vector<float>& logits) override;
  bool reserve(std::vector<int32_t>& pages, int64_t tokens) override { return ranks_.front()->reserve(pages, tokens); }
  PageAllocator& allocator() override { return ranks_.front()->allocator(); }
  int64_t max_tokens() const override { return ranks_.front()->max_tokens(); }
  int64_t page_size() const override { return ranks_.front()->page_size(); }
  bool supports_sparse() const override { return true; }
  // Refuses sparse attention where KV heads are replicated (a rank would hold part of a head's queries).
  void prepare_sparse(const SparseAttention& attention) override;
  // Summed over the ranks (each counts its own KV heads' sparse attentions), timings rank 0's.
  ForwardCounters forward_counters() const override;
  void fill_kv_random(uint64_t seed) override;
  int64_t ranks() const { return static_cast<int64_t>(ranks_.size()); }
  CpuModel& rank(int64_t r) { return *ranks_[static_cast<size_t>(r)]; }
  // (ranks) seconds each rank has spent in collectives so far.
  std::vector<double> communication_seconds();

 private:
  void join_group();  // a new ThreadGroup, every rank joined to it

  std::unique_ptr<ThreadGroup> group_;
  bool kv_replicated_ = false;  // more ranks than KV heads
  bool failed_ = false;         // some ranks failed a step and others did not: their states differ
  std::vector<std::unique_ptr<CpuModel>> ranks_;
  std::vector<ShardPlan> plans_;             // (ranks)
  std::vector<std::vector<float>> logits_;  // (ranks) each rank's copy of the logits
};

}  // namespace vortex::cpu
