// The continuous-batching core: a running batch of sequences over one model backend.
//
// step() = scheduler.schedule() → one ModelBackend::forward over every scheduled chunk (decode tokens
// and prefill chunks mixed) → for each chunk that ended at its sequence's last token, its
// Generation samples the next token and delivers it. A self-speculating sequence
// (GenerateRequest::speculate, runtime/speculation.h) runs rounds instead: γ steps whose decode
// token attends sparsely (the draft), then one dense chunk of γ+1 tokens whose logits judge the
// drafts; the kept tokens and the correction are delivered, the rest truncated away. Requests submitted between steps join the
// batch at the next step. Greedy output does not depend on the batch: the CPU kernels compute
// each row on its own (linear splits by output element, attention runs per chunk).
//
// Not thread-safe: one thread submits, cancels and steps. Engine::generate steps it for a single
// request; ServingEngine owns a thread that steps it for the HTTP server.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "backend/backend.h"
#include "core/lru_cache.h"
#include "runtime/generation.h"
#include "runtime/rollout.h"
#include "runtime/scheduler.h"
#include "runtime/speculation.h"

namespace vortex {

class Tokenizer;
struct ModelConfig;
struct SparseAttention;

// The prompt's first token id outside [0, vocab), if any: the one range check of prompts, which
// every front end (BatchEngine, Engine::score, the server) reports in its own way.
std::optional<int32_t> token_out_of_range(std::span<const int32_t> tokens, int64_t vocab);
// A vortex::Error for an empty prompt or one with an id outside the vocabulary.
void check_prompt_ids(std::span<const int32_t> tokens, int64_t vocab);

struct StepStats {
  int64_t tokens = 0;           // tokens through the forward
  int64_t chunks = 0;           // sequences in the forward
  int64_t sampled = 0;          // tokens generated
  int64_t preempted = 0;        // sequences sent back to the waiting queue
  // KV pages attention reads, per (layer, kv head) averaged over layers, summed over chunks: every
  // page of the sequence, except for a sparse decode token (its always-kept pages and k candidates
  // in sparse layers).
  int64_t pages_attended = 0;
  int64_t finished = 0;         // sequences that ended this step
  int64_t drafted = 0;          // self-speculation: draft tokens proposed this step
  int64_t verified = 0;         // drafts that this step's verify chunks judged
  int64_t accepted = 0;         // of which they kept
  int64_t verifies = 0;         // verify chunks completed
  int64_t dense_passes = 0;     // rollouts: dense passes completed
  int64_t dense_pass_tokens = 0;  // rollouts: tokens of this step's dense-pass chunks
  int64_t prompt_tokens = 0;    // of `tokens`, prompt positions (prefill chunks): 0 in a decode-only step
  double forward_ms = 0.0;
  std::vector<double> first_token_s;  // time to first token of sequences that began this step
  std::vector<double> inter_token_s;  // gaps between consecutive tokens of one sequence
};

struct BatchLoad {
  int64_t running = 0, waiting = 0;
  int64_t pages_used = 0;    // held by sequences
  int64_t pages_free = 0;    // free, or cached and held by no sequence (evictable)
  int64_t pages_cached = 0;  // kept by the prefix cache (some also held by sequences)
  PrefixCacheStats prefix;   // over the engine's life
};

class BatchEngine {
 public:
  // `max_context` must not exceed the tokens the KV pool holds, so a sequence alone always fits.
  // `prefix_caching`: sequences share the full KV pages of common prefixes (kv/prefix_cache.h).
  BatchEngine(ModelBackend& model, const ModelConfig& config, const Tokenizer* tokenizer, int64_t max_context,
              int64_t max_running, bool prefix_caching = true);

  // Throws vortex::Error naming the field at fault. Any thread may call it (see resolve_checked).
  void validate(const GenerateRequest& request) const;
  // An attention spec resolved for this model and backend (null for "" and dense); throws a
  // vortex::Error when it is malformed, cannot run on this backend, or does not fit the model.
  // Any thread may call it. The first call with a spec text resolves it, compiles it
  // (ModelBackend::compile_sparse, while other threads step) and readies it on the model
  // (ModelBackend::prepare_sparse, never during a forward pass); later calls return that same
  // object while it stays among the kResolvedSpecs most recently used texts.
  std::shared_ptr<const SparseAttention> resolve_checked(const std::string& spec) const;
  // The most spec texts resolve_checked remembers, and how many it holds now.
  static constexpr size_t kResolvedSpecs = 64;
  static constexpr int32_t kMaxGamma = 16;  // drafts per verify step a request may ask for
  // An lsh sequence's hash tables (2·L bytes of codes and a 4-byte norm per key, layer and KV
  // head) may be at most this many times the f32 K/V they index (the CPU backend's): a client
  // chooses L, and this keeps their memory within a multiple of the bounded KV pool.
  static constexpr int64_t kMaxLshTablesPerKv = 2;
  size_t resolved_specs() const;
  // Validates, then queues the request; callbacks run on the stepping thread.
  SequenceId submit(const GenerateRequest& request, SequenceCallbacks callbacks, Clock::time_point arrival = Clock::now());
  // Drops a sequence and frees its pages; no callback runs for it afterwards. False if unknown.
  bool cancel(SequenceId id);
  StepStats step();

  bool has_work() const { return !scheduler_.empty(); }

  // One stepping owner at a time: a ServingEngine for its whole life, Engine::generate and
  // Engine::score for one call. A second owner is refused with a vortex::Error naming the first,
  // instead of racing it (a server's requests and a direct generate() would step one batch from
  // two threads).
  class Lease {
   public:
    Lease(BatchEngine& batch, const char* owner);
    ~Lease();
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;

   private:
    BatchEngine& batch_;
  };
  // Self-speculation over the engine's life (every request's rounds).
  const SpeculationStats& speculation_totals() const { return speculation_totals_; }
  BatchLoad load() const;
  // Prompts before decode tokens (SchedulerOptions::prefill_first); off by default.
  void set_prefill_first(bool on) { scheduler_.set_prefill_first(on); }
  // Prompt tokens looked up in the prefix cache at admission, and of those taken from it; zeros
  // without prefix caching.
  PrefixCacheStats prefix_cache_stats() const;
  // How the backend ran its forward passes so far (profiles).
  ForwardCounters forward_counters() const { return model_.forward_counters(); }
  int64_t max_context() const { return max_context_; }

 private:
  struct Speculating;
  // The attention a chunk runs with: its sequence's spec, or for a speculating sequence the draft's
  // (dense rows outside the draft steps, so that the backend's page summaries follow every key).
  struct ChunkAttention {
    const SparseAttention* attention = nullptr;
    int64_t sparse_from = 0;
    bool all_logits = false;
  };
  ChunkAttention chunk_attention(const ScheduledChunk& chunk) const;
  void run_forward(const StepPlan& plan, StepStats& stats);
  void sample(const StepPlan& plan, StepStats& stats);
  // Self-speculation: a draft token from a draft step's logits; the verdict of a completed verify
  // chunk; the next round's γ; a preempted sequence's round is abandoned (drafts truncated away).
  // `chosen`: the token the device picked (greedy), or -1 to pick it from `logits`.
  void draft(SequenceId id, Speculating& s, int32_t chosen, std::span<const float> logits);
  void finish_round(SequenceId id, Speculating& s, StepStats& stats, Clock::time_point now);
  void start_round(SequenceId id, Speculating& s);
  void abandon_round(SequenceId id);
  // Rollouts (GenerateRequest::rollout): a sampled token's policy side; the dense pass over the
  // pending tokens (rewinding the sequence to recompute them densely with every row); its rows.
  // A row reaches them as its logits (host sampling) or as what the device reduced from them.
  struct Rolling;
  struct RolloutRow {
    std::span<const float> logits;    // the host's row; empty when the device reduced it
    int32_t token = -1;               // the device's: the row's token,
    const RowStats* stats = nullptr;  // its log-prob (and a dense row's sums),
    std::span<const int32_t> top_ids;  // and a policy row's kept distribution
    std::span<const double> top_probs;
    static RolloutRow of(std::span<const float> logits) {
      RolloutRow row;
      row.logits = logits;
      return row;
    }
  };
  RolloutRow device_row(size_t row) const;
  void add_reductions(const ScheduledChunk& c, int64_t first_row, const Rolling& r);
  void record_policy(SequenceId id, Rolling& r, const RolloutRow& row, int32_t token, int64_t position, bool sparse_row);
  void record_dense_rows(const ScheduledChunk& c, size_t first, std::span<const float> rows, Rolling& r);
  void start_dense_pass(SequenceId id, Rolling& r, bool finishing);
  void finish_dense_pass(SequenceId id, Rolling& r, const RolloutRow& next, StepStats& stats, Clock::time_point now);
  bool deliver(SequenceId id, const Generation::Step& step, StepStats& stats);  // true when the sequence ended
  void fail(const StepPlan& plan, const std::string& message);
  void drop(SequenceId id);
  int64_t pages_attended(const ScheduledChunk& chunk) const;

  ModelBackend& model_;
  const ModelConfig& config_;
  const Tokenizer* tokenizer_;
  int64_t max_context_;
  std::unique_ptr<PrefixCache> prefix_cache_;  // before scheduler_: outlives it
  Scheduler scheduler_;
  std::unordered_map<SequenceId, Generation> generations_;
  struct SequenceAttention {
    std::shared_ptr<const SparseAttention> attention;  // null: dense
    int64_t sparse_from = 0;                           // the prompt length: generated tokens are sparse
  };
  std::unordered_map<SequenceId, SequenceAttention> attention_;  // sparse sequences only
  struct Speculating {
    std::shared_ptr<const SparseAttention> draft;
    int32_t gamma = 0;           // the request's γ; 0 = auto
    int64_t sparse_from = 0;     // the prompt length: draft steps attend sparsely from here
    enum class Phase { kDense, kDraft, kVerify } phase = Phase::kDense;
    int64_t committed = 0;       // the sequence's tokens before this round's drafts
    int32_t round_gamma = 0;     // drafts this round
    std::vector<int32_t> drafts{};
    std::vector<float> q{};      // (drafts, V) the draft steps' logits (sampled requests only)
    std::vector<float> p{};      // (γ+1, V) the verify chunk's logits, over its pieces
    std::vector<int32_t> p_tokens{};  // (γ+1) their argmax instead, when the device picked them
  };
  std::unordered_map<SequenceId, Speculating> speculating_;
  struct Rolling {
    RolloutOptions options;
    float temperature = 1.0f;
    const SparseAttention* attention = nullptr;  // the policy's spec (null: dense)
    int64_t sparse_from = 0;      // the prompt's length, then the end of the last refresh
    bool dense_phase = false;     // the dense pass is scheduled
    bool finishing = false;       // the sequence ended: finish after the pass
    int64_t first_pending = 0;    // position of the first token waiting for its dense row
    int64_t first_index = 0;      // its index among the generated tokens
    std::vector<int32_t> pending{};   // the tokens waiting for their dense rows
    std::vector<double> pending_q{};  // their policy probabilities
    std::vector<PolicyTop> tops{};    // their policy distributions
    std::vector<RowStats> dense{};    // the dense pass's rows so far, reduced
  };
  std::unordered_map<SequenceId, Rolling> rolling_;
  std::vector<double> rollout_probs_;    // (V) scratch
  std::vector<int32_t> rollout_order_;   // (V) scratch
  GammaController gamma_;
  // Speculating sequences' rounds verify together: a round that starts while another is under way
  // drafts only until that round's verify step (never more than its own γ), so that once prefills
  // are done every step holds drafts only or verify chunks only — each kind replays one CUDA graph
  // and --gamma auto can time both. steps_ counts step() calls; round_verify_step_ is the step at
  // which the rounds under way verify.
  int64_t steps_ = 0;
  int64_t round_verify_step_ = 0;
  SpeculationStats speculation_totals_;
  SpeculationScratch speculation_scratch_;
  // resolve_checked's cache: spec text -> resolved spec (null for dense), from any thread. Clients
  // choose the text (every budget is another), so it keeps the kResolvedSpecs most recently used.
  mutable std::mutex resolved_mutex_;
  mutable std::mutex first_use_mutex_;  // held while a spec text is resolved and prepared the first time
  mutable LruCache<std::string, std::shared_ptr<const SparseAttention>> resolved_{kResolvedSpecs};
  std::atomic<const char*> owner_{nullptr};  // the Lease holder's name
  // Held by the forward pass and by prepare_sparse: a backend's sparse state (the CUDA planner's
  // page summaries and flow tables) never changes under a running step.
  mutable std::mutex model_mutex_;
  SequenceId next_id_ = 1;
  std::vector<SequenceChunk> chunks_;       // (chunks) scratch for forward()
  std::vector<float> logits_;               // (rows, V) one row per chunk, every row of an all_logits chunk
  std::vector<int64_t> first_row_;          // (chunks) each chunk's first logits row
  // When the backend samples on its device and no sampled sequence needs log-probabilities, the
  // step brings back one token per chunk instead of logits.
  bool device_sampled_ = false;
  std::vector<TokenDraw> draws_;            // (rows) scratch for forward_sample()
  std::vector<int32_t> tokens_;             // (rows) its tokens
  RowReductions reductions_;                // rollouts' rows, reduced on the device
  bool reducing_ = false;                   // this step's forward_sample reduced rows
};

}  // namespace vortex
