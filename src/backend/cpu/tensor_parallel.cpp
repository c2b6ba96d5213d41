#include "backend/cpu/tensor_parallel.h"

#include <algorithm>
#include <chrono>
#include <exception>
#include <thread>

#include "core/error.h"
#include "model/tensor_parallel.h"

namespace vortex::cpu {
namespace {

// `ranks` once the model splits that way (an OptionError naming tensor_parallel otherwise).
int64_t checked_ranks(const ModelConfig& config, int64_t ranks) {
  shard_plan(config, ranks, 0);
  return ranks;
}

}  // namespace

class ThreadGroup::Member : public Communicator {
 public:
  Member(ThreadGroup& group, int64_t rank) : group_(group), rank_(rank) {}
  int64_t ranks() const override { return static_cast<int64_t>(group_.inputs_.size()); }
  int64_t rank() const override { return rank_; }

  void all_reduce_sum(float* data, int64_t n) override {
    const Timer timer(seconds_);
    group_.inputs_[static_cast<size_t>(rank_)] = data;
    group_.barrier_.arrive_and_wait();  // every rank's buffer is in place
    sum_.assign(static_cast<size_t>(n), 0.0f);
    for (size_t r = 0; r < group_.inputs_.size(); ++r)
      if (!group_.left_[r])
        for (int64_t i = 0; i < n; ++i) sum_[static_cast<size_t>(i)] += group_.inputs_[r][i];
    group_.barrier_.arrive_and_wait();  // every rank has read every buffer before any is overwritten
    std::copy(sum_.begin(), sum_.end(), data);
  }

  void all_gather(const float* in, int64_t n, float* out) override {
    const Timer timer(seconds_);
    group_.inputs_[static_cast<size_t>(rank_)] = in;
    group_.barrier_.arrive_and_wait();
    for (size_t r = 0; r < group_.inputs_.size(); ++r)
      if (group_.left_[r]) std::fill_n(out + static_cast<int64_t>(r) * n, n, 0.0f);
      else std::copy_n(group_.inputs_[r], n, out + static_cast<int64_t>(r) * n);
    group_.barrier_.arrive_and_wait();
  }

  double seconds() const override { return seconds_; }

 private:
  struct Timer {  // adds its lifetime to `total`
    explicit Timer(double& total) : total_(total), start_(std::chrono::steady_clock::now()) {}
    ~Timer() { total_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count(); }
    double& total_;
    std::chrono::steady_clock::time_point start_;
  };
  ThreadGroup& group_;
  int64_t rank_;
  std::vector<float> sum_;  // (n) the reduction, in rank order
  double seconds_ = 0.0;
};

ThreadGroup::ThreadGroup(int64_t ranks)
    : barrier_(static_cast<std::ptrdiff_t>(ranks)), inputs_(static_cast<size_t>(ranks)), left_(static_cast<size_t>(ranks), 0) {
  for (int64_t r = 0; r < ranks; ++r) members_.push_back(std::make_unique<Member>(*this, r));
}

ThreadGroup::~ThreadGroup() = default;

Communicator& ThreadGroup::rank(int64_t r) { return *members_[static_cast<size_t>(r)]; }

void ThreadGroup::leave(int64_t r) {
  left_[static_cast<size_t>(r)] = 1;  // seen by the others after the phase this arrival completes
  barrier_.arrive_and_drop();
}

TensorParallelModel::TensorParallelModel(const ModelWeights& weights, int64_t ranks, KvCacheShape kv_shape, int64_t max_tokens)
    : logits_(static_cast<size_t>(checked_ranks(weights.config, ranks))) {
  check(kv_shape.num_kv_heads == weights.config.num_kv_heads, "internal: the KV shape is not the model's");
  kv_replicated_ = ranks > weights.config.num_kv_heads;
  for (int64_t r = 0; r < ranks; ++r) {
    const ShardPlan plan = shard_plan(weights.config, ranks, r);
    KvCacheShape shape = kv_shape;
    shape.num_kv_heads = plan.kv_heads;
    ranks_.push_back(std::make_unique<CpuModel>(std::make_shared<ModelWeights>(shard_weights(weights, plan)), shape, max_tokens));
    plans_.push_back(plan);
  }
  join_group();
}

void TensorParallelModel::join_group() {
  group_ = std::make_unique<ThreadGroup>(ranks());
  for (int64_t r = 0; r < ranks(); ++r) ranks_[static_cast<size_t>(r)]->join_tensor_parallel(&group_->rank(r), plans_[static_cast<size_t>(r)]);
}

TensorParallelModel::~TensorParallelModel() = default;

void TensorParallelModel::prepare_sparse(const SparseAttention& /*attention*/) {
  // With KV heads replicated, a rank holds only part of a head's query heads, and a flow that
  // reduces over the group's queries would select otherwise than one rank does.
  check_option(!kv_replicated_, "tensor_parallel",
               "{} ranks replicate the model's KV heads; sparse attention needs at most as many ranks as KV heads", ranks());
}

void TensorParallelModel::forward(std::span<const SequenceChunk> chunks, std::vector<float>& logits) {
  check(!failed_, "internal: a rank of this tensor-parallel model failed alone in an earlier step; reopen the engine");
  for (const SequenceChunk& chunk : chunks)
    if (chunk.attention) prepare_sparse(*chunk.attention);
  ranks_.front()->check_chunks(chunks);  // a bad batch fails here, before any rank starts
  // A rank that fails leaves the group, so that the others do not wait for it forever. When every
  // rank failed (the same error at the same point, e.g. a flow the step cannot run) their states
  // still agree: a new group, and the model goes on. When only some did (out of memory), they
  // differ and the model refuses further steps.
  std::vector<std::exception_ptr> errors(ranks_.size());
  auto run = [&](size_t r, std::vector<float>& out) {
    try {
      ranks_[r]->forward(chunks, out);
    } catch (...) {
      errors[r] = std::current_exception();
      group_->leave(static_cast<int64_t>(r));
    }
  };
  std::vector<std::thread> threads;
  for (size_t r = 1; r < ranks_.size(); ++r) threads.emplace_back([&, r] { run(r, logits_[r]); });
  run(0, logits);
  for (std::thread& t : threads) t.join();
  const auto failed = std::count_if(errors.begin(), errors.end(), [](const std::exception_ptr& e) { return e != nullptr; });
  if (failed == 0) return;
  if (failed == ranks()) join_group();
  else failed_ = true;
  for (const std::exception_ptr& e : errors)
    if (e) std::rethrow_exception(e);
}

std::vector<double> TensorParallelModel::communication_seconds() {
  std::vector<double> out;
  for (int64_t r = 0; r < ranks(); ++r) out.push_back(group_->rank(r).seconds());
  return out;
}

ForwardCounters TensorParallelModel::forward_counters() const {
  ForwardCounters total = ranks_.front()->forward_counters();
  if (kv_replicated_) return total;  // (sparse attention is refused then)
  auto add = [](std::vector<int64_t>& to, const std::vector<int64_t>& from) {
    for (size_t i = 0; i < std::min(to.size(), from.size()); ++i) to[i] += from[i];
  };
  for (size_t r = 1; r < ranks_.size(); ++r) {
    const ForwardCounters c = ranks_[r]->forward_counters();
    total.sparse_heads += c.sparse_heads, total.dense_below_heads += c.dense_below_heads, total.sparse_pages += c.sparse_pages;
    total.cover_heads += c.cover_heads, total.cover_pages += c.cover_pages;
    add(total.sparse_heads_by_layer, c.sparse_heads_by_layer), add(total.dense_below_heads_by_layer, c.dense_below_heads_by_layer);
    add(total.sparse_pages_by_layer, c.sparse_pages_by_layer), add(total.cover_pages_by_layer, c.cover_pages_by_layer);
  }
  return total;
}

void TensorParallelModel::fill_kv_random(uint64_t seed) {  // every rank the same stream: replicated heads agree
  for (size_t r = 0; r < ranks_.size(); ++r) ranks_[r]->fill_kv_random(seed);
}

}  // namespace vortex::cpu
