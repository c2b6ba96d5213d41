#include "runtime/batch_engine.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <mutex>
#include <optional>

#include "core/error.h"
#include "io/hf_config.h"
#include "sparse/attention_spec.h"
#include "sparse/page_selection.h"
#include "sparse/sparse_attention.h"

namespace vortex {

BatchEngine::BatchEngine(ModelBackend& model, const ModelConfig& config, const Tokenizer* tokenizer, int64_t max_context,
                         int64_t max_running, bool prefix_caching)
    : model_(model),
      config_(config),
      tokenizer_(tokenizer),
      max_context_(max_context),
      prefix_cache_(prefix_caching ? std::make_unique<PrefixCache>(model.allocator(), model.page_size()) : nullptr),
      scheduler_({.max_running = max_running, .max_step_tokens = model.max_tokens(), .page_size = model.page_size()},
                 model.allocator(), prefix_cache_.get()) {
  check(max_context <= model.allocator().num_pages() * model.page_size(),
        "internal: a context of {} tokens does not fit the KV cache", max_context);
}

BatchEngine::Lease::Lease(BatchEngine& batch, const char* owner) : batch_(batch) {
  const char* holder = nullptr;
  if (!batch.owner_.compare_exchange_strong(holder, owner))
    vortex::fail("{}: this engine is in use by {} (one caller steps an engine at a time); send the request through it, "
         "or wait until it is done", owner, holder);
}

BatchEngine::Lease::~Lease() { batch_.owner_.store(nullptr); }

std::optional<int32_t> token_out_of_range(std::span<const int32_t> tokens, int64_t vocab) {
  for (int32_t id : tokens)
    if (id < 0 || id >= vocab) return id;
  return std::nullopt;
}

void check_prompt_ids(std::span<const int32_t> tokens, int64_t vocab) {
  check(!tokens.empty(), "the prompt is empty: give at least one token");
  const std::optional<int32_t> bad = token_out_of_range(tokens, vocab);
  check(!bad, "token id {} is out of range: the vocabulary has {} ids", bad.value_or(0), vocab);
}

void BatchEngine::validate(const GenerateRequest& request) const {
  check(request.max_tokens >= 0, "max_tokens must be >= 0, got {}", request.max_tokens);
  const auto& prompt = request.prompt;
  check_prompt_ids(prompt, config_.vocab_size);
  check(static_cast<int64_t>(prompt.size()) <= max_context_, "the prompt has {} tokens, which exceeds the context of {} tokens",
        prompt.size(), max_context_);
  check(static_cast<int64_t>(prompt.size()) < max_context_,
        "the prompt has {} tokens and fills the context of {} tokens: no room to generate", prompt.size(), max_context_);
  validate_sampling(request.sampling);
  for (const auto& s : request.stop_strings) check(!s.empty(), "stop strings must not be empty");
  check(request.logprobs >= -1, "logprobs must be >= 0, got {}", request.logprobs);
  std::shared_ptr<const SparseAttention> attention = resolve_checked(request.attention);
  auto check_lsh_tables = [&](const SparseAttention* a) {
    if (!a || !a->lsh.on()) return;
    const int64_t per_token = (2 * int64_t{a->lsh.tables} + 4) * config_.num_layers * config_.num_kv_heads;
    const int64_t kv = config_.kv_bytes_per_token(4);
    check(per_token <= kMaxLshTablesPerKv * kv, "attention spec '{}': its hash tables would take {} bytes per token, over {}x "
          "the {} bytes of K/V they index; use fewer tables (l=, at most {} for this model)", a->text, per_token, kMaxLshTablesPerKv,
          kv, (kMaxLshTablesPerKv * kv / (config_.num_layers * config_.num_kv_heads) - 4) / 2);
  };
  check_lsh_tables(attention.get());
  const RolloutOptions& rollout = request.rollout;
  if (rollout.enabled) {
    check(request.speculate.empty(), "rollout and speculate do not combine: a rollout samples from its own attention");
    check(rollout.refresh >= 0 && rollout.refresh <= max_context_, "refresh must be in 0..{} tokens, got {}", max_context_,
          rollout.refresh);
    check(rollout.alpha_top >= 0, "alpha_top must be >= 0 (0: the whole vocabulary), got {}", rollout.alpha_top);
    check(rollout.obrs_lambda >= 0.0 && rollout.obrs_lambda <= 1e6, "obrs_lambda must be in 0..1e6 (0: off), got {}",
          rollout.obrs_lambda);
  }
  if (request.speculate.empty()) {
    check(request.gamma == 0, "gamma is {} but speculate is not set: gamma counts the drafts of self-speculation", request.gamma);
    return;
  }
  check(!attention, "speculate '{}' drafts for dense attention, but attention is '{}': give one or the other",
        request.speculate, request.attention);
  check(request.gamma >= 0 && request.gamma <= kMaxGamma, "gamma must be in 1..{} (or 0 for auto), got {}", kMaxGamma,
        request.gamma);
  std::shared_ptr<const SparseAttention> draft = resolve_checked(request.speculate);
  check(draft != nullptr, "speculate '{}': the draft must attend sparsely (e.g. quest:budget=256); a dense draft is the "
        "model itself", request.speculate);
  check(draft->flow->state.empty(), "speculate '{}': flow '{}' keeps state across steps (saves), which a rejected draft "
        "would leave behind; draft with a stateless flow", request.speculate, draft->flow->name);
  check_lsh_tables(draft.get());
}

std::shared_ptr<const SparseAttention> BatchEngine::resolve_checked(const std::string& spec) const {
  if (spec.empty()) return nullptr;
  auto cached = [&]() -> std::optional<std::shared_ptr<const SparseAttention>> {
    std::lock_guard lock(resolved_mutex_);
    if (auto* hit = resolved_.find(spec)) return *hit;
    return std::nullopt;
  };
  if (auto hit = cached()) return *hit;
  std::lock_guard first_use(first_use_mutex_);  // one first use at a time, so a spec is prepared once
  if (auto hit = cached()) return *hit;
  std::shared_ptr<const SparseAttention> attention = resolve_attention(spec, model_.page_size());
  if (attention) {
    check(model_.supports_sparse(), "attention '{}': sparse attention is not available on this device yet (only 'dense')", spec);
    check_attention_fits(*attention, config_.num_layers);
    model_.compile_sparse(*attention);   // the slow part (NVRTC), while running sequences step on
    std::lock_guard lock(model_mutex_);  // never while a forward pass uses the model's sparse state
    model_.prepare_sparse(*attention);
  }
  std::lock_guard lock(resolved_mutex_);
  resolved_.put(spec, attention);  // an evicted spec stays alive in the sequences that use it
  return attention;
}

size_t BatchEngine::resolved_specs() const {
  std::lock_guard lock(resolved_mutex_);
  return resolved_.size();
}

SequenceId BatchEngine::submit(const GenerateRequest& request, SequenceCallbacks callbacks, Clock::time_point arrival) {
  validate(request);
  GenerationLimits limits{.max_context = max_context_, .eos_token_ids = {}};
  if (!request.ignore_eos) limits.eos_token_ids = config_.eos_token_ids;
  const SequenceId id = next_id_++;
  auto [it, inserted] = generations_.try_emplace(id, request, limits, tokenizer_, std::move(callbacks), arrival);
  if (request.max_tokens == 0) {  // nothing to generate: finish without touching the model
    it->second.finish(FinishReason::kLength);
    generations_.erase(it);
    return id;
  }
  const auto prompt = static_cast<int64_t>(request.prompt.size());
  // Prefix caching shares K/V computed by dense attention: every token of a dense sequence; the
  // prompt of a sparse or speculating one (its generated tokens attend sparsely, at layers >= 1
  // their K/V depend on the spec); nothing of a flow that keeps per-page state, nor of an lsh
  // sequence (its hash tables are keyed by its first page, and centred by its own prompt).
  int64_t shareable = std::numeric_limits<int64_t>::max();
  if (!request.attention.empty())
    if (auto attention = resolve_checked(request.attention)) {
      shareable = attention->flow->state.empty() && !attention->lsh.on() ? prompt : 0;
      attention_[id] = {.attention = std::move(attention), .sparse_from = prompt};
    }
  if (!request.speculate.empty()) {
    speculating_[id] = {.draft = resolve_checked(request.speculate), .gamma = request.gamma, .sparse_from = prompt};
    shareable = std::min(shareable, speculating_[id].draft->lsh.on() ? int64_t{0} : prompt);
  }
  if (request.rollout.enabled) {
    const auto found = attention_.find(id);
    rolling_[id] = {.options = request.rollout, .temperature = request.sampling.temperature > 0.0f ? request.sampling.temperature : 1.0f,
                    .attention = found == attention_.end() ? nullptr : found->second.attention.get(), .sparse_from = prompt};
    it->second.defer_finish();  // the finish waits for the last dense pass
  }
  scheduler_.add(id, request.prompt, shareable);
  return id;
}

bool BatchEngine::cancel(SequenceId id) {
  if (!scheduler_.contains(id)) return false;
  drop(id);
  return true;
}

void BatchEngine::drop(SequenceId id) {
  scheduler_.remove(id);
  generations_.erase(id);
  attention_.erase(id);
  speculating_.erase(id);
  rolling_.erase(id);
}

BatchLoad BatchEngine::load() const {
  const PageAllocator& pages = model_.allocator();
  return {.running = scheduler_.num_running(), .waiting = scheduler_.num_waiting(),
          .pages_used = pages.num_held(), .pages_free = pages.num_available(), .pages_cached = pages.num_cached(),
          .prefix = prefix_cache_stats()};
}

PrefixCacheStats BatchEngine::prefix_cache_stats() const { return prefix_cache_ ? prefix_cache_->stats() : PrefixCacheStats{}; }

StepStats BatchEngine::step() {
  StepStats stats;
  ++steps_;
  StepPlan plan = scheduler_.schedule();
  stats.preempted = static_cast<int64_t>(plan.preempted.size());
  for (SequenceId id : plan.preempted) {
    abandon_round(id);  // preemption never keeps draft tokens
    if (auto r = rolling_.find(id); r != rolling_.end()) r->second.dense.clear();  // a dense pass starts over
  }
  for (const ScheduledChunk& c : plan.chunks) stats.pages_attended += pages_attended(c);
  stats.tokens = plan.tokens;
  stats.chunks = static_cast<int64_t>(plan.chunks.size());
  if (plan.chunks.empty()) return stats;
  try {
    run_forward(plan, stats);
  } catch (const std::exception& e) {  // an internal failure ends the sequences it touched, not the process
    fail(plan, e.what());
    stats.finished = stats.chunks;
    return stats;
  }
  scheduler_.complete(plan);
  sample(plan, stats);
  return stats;
}

BatchEngine::ChunkAttention BatchEngine::chunk_attention(const ScheduledChunk& chunk) const {
  if (auto it = rolling_.find(chunk.id); it != rolling_.end() && it->second.dense_phase) {
    const Rolling& r = it->second;  // dense, every row from the first pending token's predecessor on
    return {.attention = r.attention, .sparse_from = std::numeric_limits<int64_t>::max(),
            .all_logits = chunk.start + chunk.count > r.first_pending - 1};
  }
  if (auto it = rolling_.find(chunk.id); it != rolling_.end() && it->second.attention)
    return {.attention = it->second.attention, .sparse_from = it->second.sparse_from};  // refreshed K/V stay dense
  if (auto it = speculating_.find(chunk.id); it != speculating_.end()) {
    const Speculating& s = it->second;
    if (s.phase == Speculating::Phase::kDraft) return {.attention = s.draft.get(), .sparse_from = s.sparse_from};
    return {.attention = s.draft.get(), .sparse_from = std::numeric_limits<int64_t>::max(),
            .all_logits = s.phase == Speculating::Phase::kVerify};
  }
  if (auto it = attention_.find(chunk.id); it != attention_.end())
    return {.attention = it->second.attention.get(), .sparse_from = it->second.sparse_from};
  return {};
}

int64_t BatchEngine::pages_attended(const ScheduledChunk& chunk) const {
  const int64_t P = model_.page_size(), position = chunk.start + chunk.count - 1, all = position / P + 1;
  const ChunkAttention mode = chunk_attention(chunk);
  if (!mode.attention || chunk.count != 1 || position < mode.sparse_from) return all;
  const SparseAttention& a = *mode.attention;
  const QueryPageCounts query = count_query_pages(a, position);
  const int64_t sparse = query.always + std::min(query.k, query.candidates);
  int64_t total = 0;  // over layers
  for (int64_t layer = 0; layer < config_.num_layers; ++layer) total += a.dense_layer(layer) ? all : sparse;
  return (total + config_.num_layers / 2) / config_.num_layers;
}

void BatchEngine::run_forward(const StepPlan& plan, StepStats& stats) {
  chunks_.clear();
  first_row_.clear();
  int64_t rows = 0, drafts = 0, verifies = 0;
  for (const ScheduledChunk& c : plan.chunks) {
    ScheduledSequence& seq = scheduler_.sequence(c.id);
    const ChunkAttention mode = chunk_attention(c);
    if (seq.cached_tokens > 0 && c.start == seq.cached_tokens) generations_.at(c.id).set_cached_tokens(seq.cached_tokens);
    chunks_.push_back({.tokens = seq.tokens.data() + c.start, .count = c.count, .start = c.start,
                       .page_table = &seq.pages, .all_logits = mode.all_logits, .attention = mode.attention,
                       .sparse_from = mode.sparse_from});
    first_row_.push_back(rows);
    rows += mode.all_logits ? c.count : 1;
    stats.prompt_tokens += std::clamp(seq.prompt - c.start, int64_t{0}, c.count);
    if (mode.attention && c.start >= mode.sparse_from && speculating_.count(c.id)) ++drafts;
    if (mode.all_logits) ++verifies;
    if (auto r = rolling_.find(c.id); r != rolling_.end() && r->second.dense_phase) stats.dense_pass_tokens += c.count;
  }
  // Device sampling when every sampled sequence can do without logits: no request asked for
  // log-probabilities, speculating ones are greedy (their drafts and verdicts need only each
  // row's argmax), and rollouts' rows are reduced on the device. Draws are taken only then, so
  // each sequence's random stream advances exactly once per sampled token either way.
  device_sampled_ = model_.samples_on_device() && std::none_of(plan.chunks.begin(), plan.chunks.end(), [&](const ScheduledChunk& c) {
    const Generation& gen = generations_.at(c.id);
    const bool speculating = speculating_.count(c.id) > 0;
    return (gen.needs_logits() && (c.samples || speculating)) || (speculating && !gen.greedy()) ||
           (rolling_.count(c.id) > 0 && !model_.reduces_on_device());
  });
  auto t0 = Clock::now();
  std::lock_guard lock(model_mutex_);
  if (device_sampled_) {
    draws_.assign(static_cast<size_t>(rows), TokenDraw{});  // greedy: rows that sample nothing, drafts, verify rows
    reductions_.clear();
    reducing_ = false;
    for (size_t i = 0; i < plan.chunks.size(); ++i) {
      const ScheduledChunk& c = plan.chunks[i];
      int64_t row = first_row_[i];
      if (auto roll = rolling_.find(c.id); roll != rolling_.end()) {
        if (!reducing_) reductions_.rows.assign(static_cast<size_t>(rows), RowReduction{});
        reducing_ = true;
        add_reductions(c, row, roll->second);
        if (roll->second.dense_phase && roll->second.finishing) continue;  // the last pass samples nothing
        if (roll->second.dense_phase) row += c.count - 1;                   // a refresh samples from its last row
      }
      if (c.samples && !speculating_.count(c.id)) draws_[static_cast<size_t>(row)] = generations_.at(c.id).next_draw();
    }
    model_.forward_sample(chunks_, draws_, tokens_, reducing_ ? &reductions_ : nullptr);
  } else {
    model_.forward(chunks_, logits_);
  }
  stats.forward_ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  // --gamma auto learns the two step kinds' times from steps that ran only one of them.
  const auto n = static_cast<int64_t>(plan.chunks.size());
  if (drafts == n) gamma_.record_draft_step(stats.forward_ms);
  if (verifies == n) gamma_.record_verify_step(stats.forward_ms);
}

void BatchEngine::sample(const StepPlan& plan, StepStats& stats) {
  const auto vocab = static_cast<size_t>(config_.vocab_size);
  const auto now = Clock::now();
  for (size_t i = 0; i < plan.chunks.size(); ++i) {
    const ScheduledChunk& c = plan.chunks[i];
    // This chunk's rows: logits, or with device sampling one token per row.
    const auto first = static_cast<size_t>(first_row_[i]);
    const std::span<const float> rows =
        device_sampled_ ? std::span<const float>() : std::span<const float>(logits_).subspan(first * vocab);
    auto spec = speculating_.find(c.id);
    Speculating* s = spec == speculating_.end() ? nullptr : &spec->second;
    if (auto roll = rolling_.find(c.id); roll != rolling_.end()) {
      Rolling& r = roll->second;
      if (r.dense_phase) {  // a piece of the dense pass: its rows from the first pending token's predecessor on
        record_dense_rows(c, first, rows, r);
        if (!c.samples) continue;
        // A refresh's last row is the next token's (a finishing pass has none).
        const size_t last = first + static_cast<size_t>(c.count - 1);
        finish_dense_pass(c.id, r, device_sampled_ ? device_row(last) : RolloutRow::of(rows.subspan(static_cast<size_t>(c.count - 1) * vocab, vocab)),
                          stats, now);
        continue;
      }
      if (!c.samples) continue;
      Generation& gen = generations_.at(c.id);
      const RolloutRow row = device_sampled_ ? device_row(first) : RolloutRow::of(rows.first(vocab));
      const Generation::Step step = device_sampled_ ? gen.advance(row.token, now) : gen.advance(row.logits, now);
      const int64_t row_position = c.start + c.count - 1;
      record_policy(c.id, r, row, step.token, row_position + 1, r.attention && row_position >= r.sparse_from);
      if (step.finished && !r.pending.empty()) {  // the last dense pass, then the finish
        ++stats.sampled;
        if (step.inter_token_s >= 0) stats.inter_token_s.push_back(step.inter_token_s);
        start_dense_pass(c.id, r, true);
        continue;
      }
      if (deliver(c.id, step, stats)) continue;
      if (r.options.refresh > 0 && static_cast<int64_t>(r.pending.size()) >= r.options.refresh) start_dense_pass(c.id, r, false);
      continue;
    }
    if (s && s->phase == Speculating::Phase::kVerify) {  // a piece of the verify chunk: keep every row
      if (device_sampled_) s->p_tokens.insert(s->p_tokens.end(), tokens_.begin() + first, tokens_.begin() + first + c.count);
      else s->p.insert(s->p.end(), rows.begin(), rows.begin() + static_cast<ptrdiff_t>(c.count * vocab));
      if (c.samples) finish_round(c.id, *s, stats, now);
      continue;
    }
    if (!c.samples) continue;
    if (s && s->phase == Speculating::Phase::kDraft) {
      draft(c.id, *s, device_sampled_ ? tokens_[first] : -1, rows.first(device_sampled_ ? 0 : vocab));
      ++stats.drafted;
      continue;
    }
    Generation& gen = generations_.at(c.id);
    if (deliver(c.id, device_sampled_ ? gen.advance(tokens_[first], now) : gen.advance(rows.first(vocab), now), stats)) continue;
    if (s) start_round(c.id, *s);
  }
}

bool BatchEngine::deliver(SequenceId id, const Generation::Step& step, StepStats& stats) {
  ++stats.sampled;
  if (step.first_token_s >= 0) stats.first_token_s.push_back(step.first_token_s);
  if (step.inter_token_s >= 0) stats.inter_token_s.push_back(step.inter_token_s);
  if (step.finished) {
    generations_.at(id).release_finish();  // a rollout's finish waited for this
    drop(id);
    ++stats.finished;
    return true;
  }
  scheduler_.append(id, step.token);
  return false;
}

void BatchEngine::start_round(SequenceId id, Speculating& s) {
  const Generation& gen = generations_.at(id);
  // This round's drafts run in steps steps_+1 … steps_+γ and its verify chunk in steps_+γ+1. It
  // joins the rounds under way (γ up to their verify step), or when the next step is their verify
  // step, takes that step as a plain dense one and joins the next rounds; else it begins new ones.
  int64_t wanted = 0;
  if (round_verify_step_ > steps_ + 1) {
    wanted = round_verify_step_ - steps_ - 1;
    if (s.gamma > 0) wanted = std::min<int64_t>(wanted, s.gamma);
  } else if (round_verify_step_ <= steps_) {
    wanted = s.gamma > 0 ? s.gamma : gamma_.choose();
    if (wanted > 0) round_verify_step_ = steps_ + 1 + wanted;
  }
  const int64_t gamma = std::min<int64_t>(wanted, gen.remaining_tokens() - 1);
  s.drafts.clear(), s.q.clear(), s.p.clear(), s.p_tokens.clear();
  if (gamma <= 0) {  // one dense step (auto chose none, or one token remains)
    s.phase = Speculating::Phase::kDense;
    return;
  }
  s.phase = Speculating::Phase::kDraft;
  s.committed = static_cast<int64_t>(scheduler_.sequence(id).tokens.size());
  s.round_gamma = static_cast<int32_t>(gamma);
}

void BatchEngine::draft(SequenceId id, Speculating& s, int32_t chosen, std::span<const float> logits) {
  Sampler& sampler = generations_.at(id).sampler();
  int32_t token = chosen;  // the device's argmax, when it picked
  if (chosen < 0 && sampler.greedy()) {
    token = argmax(logits);
  } else if (chosen < 0) {
    token = sample_with_draw(logits, sampler.next_draw(), speculation_scratch_.sampler);
    s.q.insert(s.q.end(), logits.begin(), logits.end());
  }
  s.drafts.push_back(token);
  scheduler_.append(id, token);
  if (static_cast<int32_t>(s.drafts.size()) < s.round_gamma) return;
  // Verify: the last committed token and the drafts again, densely (it rewrites their K/V).
  scheduler_.rewind(id, s.committed - 1);
  s.phase = Speculating::Phase::kVerify;
}

void BatchEngine::finish_round(SequenceId id, Speculating& s, StepStats& stats, Clock::time_point now) {
  Generation& gen = generations_.at(id);
  const int64_t V = config_.vocab_size;
  const bool on_device = !s.p_tokens.empty();  // the verify rows' argmax, not their logits
  const SpeculationVerdict verdict = on_device ? verify_greedy_tokens(s.p_tokens, s.drafts)
                                     : gen.sampler().greedy()
                                         ? verify_greedy(s.p, s.drafts, V)
                                         : verify_sampled(s.p, s.q, s.drafts, V, gen.sampler(), speculation_scratch_);
  const auto drafted = static_cast<int64_t>(s.drafts.size());
  gen.record_round(drafted, verdict.accepted);
  gamma_.record_round(static_cast<int32_t>(drafted), verdict.accepted);
  speculation_totals_.drafted += drafted, speculation_totals_.accepted += verdict.accepted, ++speculation_totals_.verifies;
  stats.verified += drafted, stats.accepted += verdict.accepted, ++stats.verifies;
  scheduler_.truncate(id, s.committed + verdict.accepted);  // the rejected drafts go
  s.phase = Speculating::Phase::kDense;
  // Deliver the kept drafts (already in the sequence) and the verdict's token. When the sequence
  // ends on one of them, deliver() drops it, `s` with it: nothing below touches `s` after that.
  auto row = [&](int32_t i) { return std::span<const float>(s.p).subspan(static_cast<size_t>(i * V), static_cast<size_t>(V)); };
  auto advance = [&](int32_t token, int32_t i) { return on_device ? gen.advance(token, now) : gen.advance(token, row(i), now); };
  for (int32_t i = 0; i < verdict.accepted; ++i) {
    const Generation::Step step = advance(s.drafts[static_cast<size_t>(i)], i);
    if (step.finished) {
      deliver(id, step, stats);
      return;
    }
    ++stats.sampled;  // already in `tokens`: no append
    if (step.inter_token_s >= 0) stats.inter_token_s.push_back(step.inter_token_s);
  }
  if (!deliver(id, advance(verdict.token, verdict.accepted), stats)) start_round(id, s);
}

void BatchEngine::abandon_round(SequenceId id) {
  auto it = speculating_.find(id);
  if (it == speculating_.end() || it->second.phase == Speculating::Phase::kDense) return;
  scheduler_.truncate(id, it->second.committed);
  it->second.phase = Speculating::Phase::kDense;
  it->second.drafts.clear(), it->second.q.clear(), it->second.p.clear(), it->second.p_tokens.clear();
}

void BatchEngine::fail(const StepPlan& plan, const std::string& message) {
  for (const ScheduledChunk& c : plan.chunks) {
    if (!scheduler_.contains(c.id)) continue;
    generations_.at(c.id).finish(FinishReason::kStop, "internal: " + message);
    generations_.at(c.id).release_finish();
    drop(c.id);
  }
}

BatchEngine::RolloutRow BatchEngine::device_row(size_t row) const {
  RolloutRow out;
  out.token = tokens_[row], out.stats = &reductions_.stats[row];
  const auto first = static_cast<size_t>(reductions_.top_offsets[row]), last = static_cast<size_t>(reductions_.top_offsets[row + 1]);
  out.top_ids = {reductions_.top_ids.data() + first, last - first};
  out.top_probs = {reductions_.top_probs.data() + first, last - first};
  return out;
}

// What the device reduces of a rolling chunk's rows: a policy row's log-prob (and its kept
// distribution when it is sparse); in a dense pass, each pending token's dense log-prob and sums
// against the kept policy distribution, and a refresh's next row's log-prob.
void BatchEngine::add_reductions(const ScheduledChunk& c, int64_t first_row, const Rolling& r) {
  const auto V = static_cast<int32_t>(config_.vocab_size);
  if (!r.dense_phase) {
    if (!c.samples) return;
    const bool sparse_row = r.attention && c.start + c.count - 1 >= r.sparse_from;
    const int32_t top = r.options.alpha_top <= 0 ? V : std::min(r.options.alpha_top, V);
    reductions_.rows[static_cast<size_t>(first_row)] = {.temperature = r.temperature, .top = sparse_row ? top : 0};
    return;
  }
  const auto n = static_cast<int64_t>(r.pending.size());
  for (int64_t k = std::max<int64_t>(0, r.first_pending - 1 - c.start); k < c.count; ++k) {
    const int64_t j = c.start + k - (r.first_pending - 1);
    RowReduction& want = reductions_.rows[static_cast<size_t>(first_row + k)];
    if (j < n) {
      const PolicyTop& top = r.tops[static_cast<size_t>(j)];
      want = {.temperature = r.temperature, .token = r.pending[static_cast<size_t>(j)],
              .policy = reductions_.add_policy(top.ids, top.probs), .lambda = r.options.obrs_lambda};
    } else if (!r.finishing) {
      want = {.temperature = r.temperature};
    }
  }
}

void BatchEngine::record_policy(SequenceId id, Rolling& r, const RolloutRow& row, int32_t token, int64_t position, bool sparse_row) {
  RolloutTrace& trace = generations_.at(id).trace();
  const bool host = !row.logits.empty();
  const double logprob = host ? temperature_distribution(row.logits, r.temperature, token, rollout_probs_) : row.stats->logprob;
  trace.logprobs.push_back(static_cast<float>(logprob));
  trace.dense_sampled.push_back(sparse_row ? 0 : 1);
  const double lambda = r.options.obrs_lambda;
  if (!sparse_row) {  // the policy's row was dense (the prompt's last row, a refresh's last row)
    trace.dense_logprobs.push_back(static_cast<float>(logprob));
    trace.alpha.push_back(1.0f);
    if (lambda > 0.0) {  // p = q: accepted with min(1, 1/λ), weight 1
      trace.obrs_accept.push_back(static_cast<float>(std::min(1.0, 1.0 / lambda)));
      trace.obrs_weight.push_back(1.0f);
    }
    return;
  }
  if (lambda > 0.0) {
    trace.obrs_accept.push_back(std::numeric_limits<float>::quiet_NaN());
    trace.obrs_weight.push_back(std::numeric_limits<float>::quiet_NaN());
  }
  trace.dense_logprobs.push_back(std::numeric_limits<float>::quiet_NaN());  // until the dense pass
  trace.alpha.push_back(std::numeric_limits<float>::quiet_NaN());
  if (r.pending.empty()) r.first_pending = position, r.first_index = static_cast<int64_t>(trace.logprobs.size()) - 1;
  r.pending.push_back(token);
  r.pending_q.push_back(std::exp(logprob));
  r.tops.emplace_back();
  if (host) keep_top(rollout_probs_, r.options.alpha_top, rollout_order_, r.tops.back());
  else keep_given(row.top_ids, row.top_probs, config_.vocab_size, r.tops.back());
}

// A piece of a dense pass: row k of the chunk is position c.start + k, the dense distribution of
// pending token j = c.start + k − (first_pending − 1).
void BatchEngine::record_dense_rows(const ScheduledChunk& c, size_t first, std::span<const float> rows, Rolling& r) {
  const auto V = static_cast<size_t>(config_.vocab_size);
  const auto n = static_cast<int64_t>(r.pending.size());
  for (int64_t k = std::max<int64_t>(0, r.first_pending - 1 - c.start); k < c.count; ++k) {
    const int64_t j = c.start + k - (r.first_pending - 1);
    if (j >= n) break;  // a refresh's next row
    check(j == static_cast<int64_t>(r.dense.size()), "internal: dense row {} of a pass arrived after {}", j, r.dense.size());
    if (device_sampled_) {
      r.dense.push_back(reductions_.stats[first + static_cast<size_t>(k)]);
      continue;
    }
    RowStats& out = r.dense.emplace_back();
    out.logprob = temperature_distribution(rows.subspan(static_cast<size_t>(k) * V, V), r.temperature, r.pending[static_cast<size_t>(j)],
                                           rollout_probs_);
    compare_with_policy(r.tops[static_cast<size_t>(j)], rollout_probs_, r.options.obrs_lambda, out);
  }
}

void BatchEngine::start_dense_pass(SequenceId id, Rolling& r, bool finishing) {
  r.dense_phase = true;
  r.finishing = finishing;
  r.dense.clear();
  // Recompute from the row that chose the first pending token: the chunk ends at the sequence's
  // last token, which gives one more row (the next token's) unless the sequence ended.
  scheduler_.rewind(id, r.first_pending - 1);
}

void BatchEngine::finish_dense_pass(SequenceId id, Rolling& r, const RolloutRow& next, StepStats& stats, Clock::time_point now) {
  const size_t n = r.pending.size();
  check(r.dense.size() == n, "internal: a dense pass of {} tokens brought {} rows", n, r.dense.size());
  Generation& gen = generations_.at(id);
  RolloutTrace& trace = gen.trace();
  for (size_t j = 0; j < n; ++j) {
    const RowStats& dense = r.dense[j];
    double error = 0.0;
    const auto index = static_cast<size_t>(r.first_index) + j;
    trace.dense_logprobs[index] = static_cast<float>(dense.logprob);
    trace.alpha[index] = static_cast<float>(agreement(r.tops[j], dense, config_.vocab_size, error));
    trace.alpha_error = std::max(trace.alpha_error, error);
    if (r.options.obrs_lambda > 0.0) {
      const ObrsToken o = obrs_token(r.tops[j], r.pending[j], r.pending_q[j], dense, r.options.obrs_lambda);
      trace.obrs_accept[index] = static_cast<float>(o.accept);
      trace.obrs_weight[index] = static_cast<float>(o.weight);
    }
  }
  ++trace.dense_passes;
  ++stats.dense_passes;
  r.pending.clear(), r.pending_q.clear(), r.tops.clear(), r.dense.clear();
  r.dense_phase = false;
  if (r.finishing) {
    gen.release_finish();
    drop(id);
    ++stats.finished;
    return;
  }
  // Refresh: the pass's last row is the dense distribution of the next token; the policy samples it.
  // The recomputed K/V are dense now, and stay so when a preempted sequence is recomputed.
  r.sparse_from = scheduler_.sequence(id).computed;
  const Generation::Step step = next.logits.empty() ? gen.advance(next.token, now) : gen.advance(next.logits, now);
  record_policy(id, r, next, step.token, 0, false);
  deliver(id, step, stats);
}

}  // namespace vortex
