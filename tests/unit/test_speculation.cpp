// Self-speculative decoding (runtime/speculation.h) on the CPU backend: greedy output and
// log-probabilities identical to dense greedy, token for token, alone and in a batch with
// preemption and cancellation (and every page back afterwards); sampled output distributed as
// dense sampling's (chi-square over 10^5 draws on a tiny-vocabulary model, with a sparse-only
// control the same test rejects); the acceptance rule on hand-made rows; bad requests refused.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <random>

#include "backend/cpu/forward.h"
#include "common/test_util.h"
#include "core/error.h"
#include "io/hf_config.h"
#include "model/weights.h"
#include "runtime/batch_engine.h"
#include "runtime/engine_access.h"
#include "runtime/sampler.h"
#include "runtime/speculation.h"
#include "vortex/engine.h"

namespace vortex {
namespace {

std::filesystem::path model_dir() { return test::data_dir() / "models" / "qwen3-f32"; }

// Prompts long enough (≥ 120 tokens, 8+ pages) that the draft's budget leaves pages out.
GenerateRequest request(int64_t prompt_length, int32_t offset, int64_t max_tokens) {
  GenerateRequest r;
  for (int64_t i = 0; i < prompt_length; ++i) r.prompt.push_back(static_cast<int32_t>((i * 37 + offset * 11) % 500 + 3));
  r.max_tokens = max_tokens;
  r.ignore_eos = true;
  r.sampling.temperature = 0.0f;  // greedy
  return r;
}

constexpr const char* kDraft = "quest:budget=16,sink=16,window=16";

GenerateRequest speculative(GenerateRequest r, int32_t gamma, const std::string& draft = kDraft) {
  r.speculate = draft;
  r.gamma = gamma;
  return r;
}

TEST(Speculation, GreedyOutputAndLogprobsEqualDenseGreedy) {
  auto engine = Engine::open(model_dir(), {.prefill_chunk = 64});
  int64_t drafted = 0, accepted = 0;
  for (int32_t offset = 0; offset < 3; ++offset) {
    GenerateRequest dense = request(150 + 40 * offset, offset, 48);
    auto expected = engine->generate(dense).tokens;
    GenerateRequest sparse_only = dense;
    sparse_only.attention = kDraft;
    EXPECT_NE(engine->generate(sparse_only).tokens, expected) << "the draft alone should not be dense";
    for (int32_t gamma : {1, 3, 6, 0}) {
      GenerateResult result = engine->generate(speculative(dense, gamma));
      EXPECT_EQ(result.tokens, expected) << "prompt " << offset << ", gamma " << gamma;
      EXPECT_GT(result.speculation.verifies, 0);
      drafted += result.speculation.drafted;
      accepted += result.speculation.accepted;
      EXPECT_EQ(batch_engine(*engine).load().pages_used, 0);
    }
  }
  EXPECT_GT(accepted, 0);
  EXPECT_LT(accepted, drafted);  // rejections happened: both paths ran
}

// Log-probabilities come from the verify chunk's rows: bit-identical to dense decode's on the CPU.
TEST(Speculation, LogprobsEqualDenseDecodes) {
  auto engine = Engine::open(model_dir(), {.prefill_chunk = 64});
  GenerateRequest dense = request(170, 5, 30);
  dense.logprobs = 3;
  std::vector<TokenOutput> expected, got;
  auto run = [&](const GenerateRequest& r, std::vector<TokenOutput>& into) {
    BatchEngine& batch = batch_engine(*engine);
    bool done = false;
    batch.submit(r, {.on_token = [&](const TokenOutput& t) { into.push_back(t); }, .on_finish = [&](const SequenceFinish&) { done = true; }});
    while (!done) batch.step();
  };
  run(dense, expected);
  run(speculative(dense, 4), got);
  ASSERT_EQ(got.size(), expected.size());
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].token, expected[i].token) << i;
    EXPECT_EQ(got[i].logprob, expected[i].logprob) << i;
    EXPECT_EQ(got[i].top, expected[i].top) << i;
  }
}

// Four greedy requests whose prompts (120–270 tokens) end at different steps, with their dense
// outputs, on an engine without prefix caching (the prompts computed for the expected outputs
// would make every later prefill one step); submit() queues them speculating.
struct StaggeredBatch {
  std::unique_ptr<Engine> engine = Engine::open(model_dir(), {.prefill_chunk = 64, .max_batch = 4, .prefix_caching = false});
  std::vector<GenerateRequest> requests;
  std::vector<std::vector<int32_t>> expected, got = std::vector<std::vector<int32_t>>(4);
  explicit StaggeredBatch(int64_t max_tokens) {
    for (int32_t i = 0; i < 4; ++i) {
      requests.push_back(request(120 + 50 * i, i, max_tokens));
      expected.push_back(engine->generate(requests.back()).tokens);
    }
  }
  BatchEngine& submit(int32_t gamma) {
    BatchEngine& batch = batch_engine(*engine);
    for (size_t i = 0; i < requests.size(); ++i)
      batch.submit(speculative(requests[i], gamma), {.on_token = nullptr, .on_finish = [this, i](const SequenceFinish& f) { got[i] = f.result.tokens; }});
    return batch;
  }
};

// Sequences whose prompts end at different steps still verify together: once no prompt is left,
// a step holds drafts only or verify chunks only (a round joins the one under way), except where a
// sequence's last tokens cut its round short. Outputs stay dense greedy's.
TEST(Speculation, RoundsOfABatchVerifyTogether) {
  StaggeredBatch staggered(60);
  BatchEngine& batch = staggered.submit(3);
  int64_t draft_steps = 0, verify_steps = 0, mixed_steps = 0;
  while (batch.has_work()) {
    const StepStats stats = batch.step();
    if (stats.prompt_tokens > 0) continue;
    draft_steps += stats.drafted > 0 && stats.verifies == 0;
    verify_steps += stats.verifies > 0 && stats.drafted == 0;
    mixed_steps += stats.drafted > 0 && stats.verifies > 0;
  }
  EXPECT_EQ(staggered.got, staggered.expected);
  EXPECT_GT(verify_steps, 10);
  EXPECT_GT(draft_steps, 2 * verify_steps);
  // Without the alignment about half of these steps mix the two (seen: 1 draft + 3 verifies, 3 + 1).
  EXPECT_LE(mixed_steps, 8) << draft_steps << " draft steps, " << verify_steps << " verify steps";
}

// With prompts first (SchedulerOptions::prefill_first), the whole batch drafts and verifies
// together from the first decode step on: every step after the prompts holds all four sequences
// until one finishes, and the outputs are still dense greedy's.
TEST(Speculation, PrefillFirstDraftsWithTheWholeBatch) {
  StaggeredBatch staggered(40);
  BatchEngine& batch = batch_engine(*staggered.engine);
  batch.set_prefill_first(true);
  staggered.submit(3);
  bool prompts_done = false, finished = false;
  int64_t full_steps = 0;
  while (batch.has_work()) {
    const StepStats stats = batch.step();
    EXPECT_FALSE(prompts_done && stats.prompt_tokens > 0) << "a prompt chunk after decoding began";
    prompts_done = prompts_done || stats.prompt_tokens == 0;
    if (prompts_done && !finished) {
      EXPECT_EQ(stats.chunks, 4);
      full_steps += stats.chunks == 4;
    }
    finished = finished || stats.finished > 0;
  }
  batch.set_prefill_first(false);
  EXPECT_EQ(staggered.got, staggered.expected);
  EXPECT_GT(full_steps, 20);
}

// Stop tokens and max_tokens that fall inside a round end the sequence there.
TEST(Speculation, StopsInsideARoundAsDenseDoes) {
  auto engine = Engine::open(model_dir(), {.prefill_chunk = 64});
  GenerateRequest dense = request(160, 2, 40);
  auto full = engine->generate(dense).tokens;
  for (int64_t max_tokens : {1, 2, 5, 13}) {
    GenerateRequest r = dense;
    r.max_tokens = max_tokens;
    EXPECT_EQ(engine->generate(speculative(r, 4)).tokens, engine->generate(r).tokens) << max_tokens;
  }
  GenerateRequest stop = dense;
  stop.stop_token_ids = {full[9]};
  auto expected = engine->generate(stop).tokens;
  ASSERT_LE(expected.size(), 10u);
  EXPECT_EQ(engine->generate(speculative(stop, 5)).tokens, expected);
  EXPECT_EQ(batch_engine(*engine).load().pages_used, 0);
}

// Speculating and plain sequences in one batch, joining mid-way, in a KV pool small enough to
// preempt, one cancelled mid-way: every finished sequence has its dense greedy output, and every
// page comes back.
TEST(Speculation, InABatchWithPreemptionAndCancellationNothingLeaks) {
  EngineOptions options{.prefill_chunk = 64, .max_batch = 8};
  auto engine = Engine::open(model_dir(), options);
  std::vector<GenerateRequest> requests;
  for (int32_t i = 0; i < 6; ++i) {
    GenerateRequest r = request(120 + 17 * i, i, 24 + 3 * i);
    requests.push_back(i % 3 == 2 ? r : speculative(r, 1 + i));
  }
  requests.push_back(speculative(request(140, 9, 40), 3));  // cancelled after a few steps
  std::vector<std::vector<int32_t>> expected;
  for (const GenerateRequest& r : requests) {
    GenerateRequest dense = r;
    dense.speculate.clear(), dense.gamma = 0;
    expected.push_back(engine->generate(dense).tokens);
  }
  const ModelConfig& config = EngineAccess::config(*engine);
  auto weights = std::make_shared<ModelWeights>(load_model_weights(model_dir(), config));
  cpu::CpuModel model(weights, {.num_layers = config.num_layers, .num_pages = 40, .num_kv_heads = config.num_kv_heads,
                                .page_size = 16, .head_dim = config.head_dim}, 64);
  BatchEngine batch(model, config, nullptr, 40 * 16, 8);
  std::vector<std::vector<int32_t>> got(requests.size());
  std::vector<int> finished(requests.size(), 0);
  const std::vector<int> join = {0, 0, 1, 3, 6, 10, 2};
  std::vector<SequenceId> ids(requests.size(), 0);
  int64_t preempted = 0, verifies = 0;
  for (int step = 0; step < 5000; ++step) {
    for (size_t i = 0; i < requests.size(); ++i)
      if (join[i] == step)
        ids[i] = batch.submit(requests[i], {.on_token = nullptr, .on_finish = [&, i](const SequenceFinish& f) {
                                              got[i] = f.result.tokens;
                                              ++finished[i];
                                            }});
    if (step == 12) {
      EXPECT_TRUE(batch.cancel(ids.back()));
    }
    if (step > 12 && !batch.has_work()) break;
    StepStats stats = batch.step();
    preempted += stats.preempted;
    verifies += stats.verifies;
  }
  EXPECT_GT(preempted, 0);
  EXPECT_GT(verifies, 0);
  for (size_t i = 0; i + 1 < requests.size(); ++i) {
    EXPECT_EQ(finished[i], 1) << i;
    EXPECT_EQ(got[i], expected[i]) << "request " << i;
  }
  EXPECT_EQ(finished.back(), 0);
  EXPECT_EQ(batch.load().pages_used, 0);
  EXPECT_EQ(batch.load().pages_free, 40);
  EXPECT_GT(batch.speculation_totals().drafted, 0);
}

// Random mixes, seeded: speculating (greedy, several gammas and drafts, auto) and plain requests
// (greedy and sampled), joining at random steps into a KV pool small enough to preempt, some
// cancelled at random steps, some with stop tokens. Every finished greedy sequence has its dense
// greedy output, every sampled plain one its output alone, and the pool is whole at the end.
TEST(Speculation, RandomMixesKeepTheOutputAndLeakNothing) {
  auto engine = Engine::open(model_dir(), {.prefill_chunk = 64});
  const ModelConfig& config = EngineAccess::config(*engine);
  auto weights = std::make_shared<ModelWeights>(load_model_weights(model_dir(), config));
  const char* drafts[] = {kDraft, "streaming:sink=16,window=32", "auto:budget=32", "quest:budget=32,sink=16,window=16"};
  int64_t preempted = 0, verifies = 0, cancels = 0;
  for (uint32_t seed = 1; seed <= 24; ++seed) {
    std::mt19937 rng(seed);
    const int pages = 24 + static_cast<int>(rng() % 24);
    cpu::CpuModel model(weights, {.num_layers = config.num_layers, .num_pages = pages, .num_kv_heads = config.num_kv_heads,
                                  .page_size = 16, .head_dim = config.head_dim}, 48);
    BatchEngine batch(model, config, nullptr, pages * 16, 6);
    const int n = 8;
    std::vector<GenerateRequest> requests;
    std::vector<std::vector<int32_t>> expected;
    std::vector<int> join, cancel_at;
    for (int i = 0; i < n; ++i) {
      GenerateRequest r = request(60 + static_cast<int64_t>(rng() % 200), static_cast<int32_t>(seed * 10 + i),
                                  5 + static_cast<int64_t>(rng() % 30));
      r.prompt.resize(std::min<size_t>(r.prompt.size(), static_cast<size_t>(pages * 16 - r.max_tokens - 1)));
      const bool sampled = rng() % 4 == 0;
      if (sampled) r.sampling.temperature = 0.9f, r.sampling.seed = rng();
      if (!sampled && rng() % 3 != 0) r.speculate = drafts[rng() % 4], r.gamma = static_cast<int32_t>(rng() % 7);
      GenerateRequest plain = r;
      plain.speculate.clear(), plain.gamma = 0;
      expected.push_back(engine->generate(plain).tokens);
      if (rng() % 4 == 0 && expected.back().size() > 3) {  // a stop token inside the output
        r.stop_token_ids = {expected.back()[expected.back().size() / 2]};
        plain.stop_token_ids = r.stop_token_ids;
        expected.back() = engine->generate(plain).tokens;
      }
      requests.push_back(r);
      join.push_back(static_cast<int>(rng() % 12));
      cancel_at.push_back(rng() % 6 == 0 ? join.back() + 1 + static_cast<int>(rng() % 20) : -1);
    }
    std::vector<std::vector<int32_t>> got(n);
    std::vector<int> finished(n, 0);
    std::vector<SequenceId> ids(n, 0);
    std::vector<bool> cancelled(n, false);
    for (int step = 0; step < 20000; ++step) {
      for (int i = 0; i < n; ++i) {
        if (join[i] == step)
          ids[i] = batch.submit(requests[i], {.on_token = nullptr, .on_finish = [&, i](const SequenceFinish& f) {
                                                got[i] = f.result.tokens;
                                                ++finished[i];
                                              }});
        if (cancel_at[i] == step && finished[i] == 0) cancelled[i] = batch.cancel(ids[i]);
      }
      if (step > 12 && !batch.has_work()) break;
      const StepStats stats = batch.step();
      preempted += stats.preempted, verifies += stats.verifies;
    }
    cancels += std::count(cancelled.begin(), cancelled.end(), true);
    for (int i = 0; i < n; ++i) {
      if (cancelled[i]) {
        EXPECT_EQ(finished[i], 0) << "seed " << seed << " request " << i;
        continue;
      }
      EXPECT_EQ(finished[i], 1) << "seed " << seed << " request " << i;
      EXPECT_EQ(got[i], expected[i]) << "seed " << seed << " request " << i << " speculate '" << requests[i].speculate << "'";
    }
    EXPECT_EQ(batch.load().pages_used, 0) << "seed " << seed;
    EXPECT_EQ(batch.load().pages_free, pages) << "seed " << seed;
  }
  EXPECT_GT(preempted, 0);  // the mixes really preempted, speculated and cancelled
  EXPECT_GT(verifies, 0);
  EXPECT_GT(cancels, 0);
}

TEST(Speculation, RejectsBadRequestsByName) {
  auto engine = Engine::open(model_dir());
  auto message = [&](GenerateRequest r) {
    try {
      batch_engine(*engine).validate(r);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  GenerateRequest r = request(20, 0, 4);
  GenerateRequest gamma_only = r;
  gamma_only.gamma = 3;
  EXPECT_NE(message(gamma_only).find("speculate is not set"), std::string::npos) << message(gamma_only);
  EXPECT_NE(message(speculative(r, 17)).find("gamma must be in 1..16"), std::string::npos);
  EXPECT_NE(message(speculative(r, -1)).find("gamma must be in 1..16"), std::string::npos);
  EXPECT_NE(message(speculative(r, 2, "dense")).find("must attend sparsely"), std::string::npos);
  EXPECT_NE(message(speculative(r, 2, "h2o:budget=32,window=16")).find("keeps state"), std::string::npos);
  EXPECT_NE(message(speculative(r, 2, "quest:budget=oops")).find("oops"), std::string::npos);
  GenerateRequest both = speculative(r, 2);
  both.attention = "quest:budget=64";
  EXPECT_NE(message(both).find("give one or the other"), std::string::npos);
  EXPECT_EQ(message(speculative(r, 0)), "accepted");
}

// ---- The acceptance rule on hand-made rows (vocabulary of 4).

std::vector<float> rows(std::initializer_list<std::initializer_list<float>> values) {
  std::vector<float> out;
  for (auto r : values) out.insert(out.end(), r.begin(), r.end());
  return out;
}

TEST(Speculation, GreedyVerdictKeepsDraftsUntilTheFirstMismatch) {
  const auto p = rows({{0, 5, 1, 0}, {3, 0, 0, 1}, {0, 0, 0, 9}});
  EXPECT_EQ(verify_greedy(p, std::vector<int32_t>{1, 0}, 4).accepted, 2);
  EXPECT_EQ(verify_greedy(p, std::vector<int32_t>{1, 0}, 4).token, 3);  // the bonus
  EXPECT_EQ(verify_greedy(p, std::vector<int32_t>{1, 2}, 4).accepted, 1);
  EXPECT_EQ(verify_greedy(p, std::vector<int32_t>{1, 2}, 4).token, 0);  // the correction
  EXPECT_EQ(verify_greedy(p, std::vector<int32_t>{2, 0}, 4).accepted, 0);
  EXPECT_EQ(verify_greedy(p, std::vector<int32_t>{2, 0}, 4).token, 1);
}

// One draft position, p and q known: the emitted token's distribution is p (not q), whether the
// draft is kept or replaced, over 200,000 rounds; acceptance is Σ min(p, q).
TEST(Speculation, SampledVerdictEmitsTheTargetDistribution) {
  const std::vector<float> p_logits = {std::log(0.5f), std::log(0.3f), std::log(0.15f), std::log(0.05f)};
  const std::vector<float> q_logits = {std::log(0.1f), std::log(0.6f), std::log(0.2f), std::log(0.1f)};
  std::vector<float> p = p_logits;
  p.insert(p.end(), p_logits.begin(), p_logits.end());  // the bonus row (unused when rejected)
  Sampler sampler({.temperature = 1.0f, .seed = 7});
  SpeculationScratch scratch;
  SamplerScratch draw_scratch;
  std::vector<int64_t> counts(4, 0);
  int64_t kept = 0;
  const int64_t n = 200000;
  for (int64_t i = 0; i < n; ++i) {
    const int32_t d = sample_with_draw(q_logits, sampler.next_draw(), draw_scratch);
    const SpeculationVerdict v = verify_sampled(p, q_logits, std::vector<int32_t>{d}, 4, sampler, scratch);
    ++counts[static_cast<size_t>(v.accepted == 1 ? d : v.token)];
    kept += v.accepted;
  }
  const double expected[] = {0.5, 0.3, 0.15, 0.05};
  for (size_t t = 0; t < 4; ++t)
    EXPECT_NEAR(static_cast<double>(counts[t]) / n, expected[t], 0.005) << "token " << t;
  EXPECT_NEAR(static_cast<double>(kept) / n, 0.1 + 0.3 + 0.15 + 0.05, 0.005);
}

TEST(Speculation, AutoGammaFollowsTheCostAndTheAcceptance) {
  GammaController cheap_draft;
  EXPECT_EQ(cheap_draft.choose(), GammaController::kStartGamma);  // nothing measured yet
  cheap_draft.record_draft_step(1.0);
  cheap_draft.record_verify_step(10.0);
  for (int i = 0; i < 50; ++i) cheap_draft.record_round(10, 9);
  GammaController costly_draft = cheap_draft;
  costly_draft.record_draft_step(20.0);
  for (int i = 0; i < 40; ++i) costly_draft.record_draft_step(20.0);
  EXPECT_GE(cheap_draft.choose(), 6);
  EXPECT_EQ(costly_draft.choose(), 0);  // drafting costs more than it saves: dense steps
  GammaController rejected = cheap_draft;
  for (int i = 0; i < 200; ++i) rejected.record_round(4, 0);
  EXPECT_LE(rejected.choose(), 1);
  EXPECT_NEAR(expected_tokens(0.5, 3), 1.875, 1e-12);
}

// ---- Lossless sampling, end to end: the distribution of the tokens at fixed positions inside the
// first round equals dense sampling's, computed exactly from the model's dense rows.

ModelConfig tiny_config() {
  ModelConfig c;
  c.architecture = Architecture::kQwen3;
  c.vocab_size = 12, c.hidden_size = 32, c.intermediate_size = 64, c.num_layers = 2;
  c.num_heads = 2, c.num_kv_heads = 1, c.head_dim = 16, c.max_position_embeddings = 512;
  c.qk_norm = true, c.tie_word_embeddings = true;
  c.rope.theta = 10000.0;
  return c;
}

// The chi-square statistic of counts against probabilities, categories with an expected count
// under 5 pooled; `df` gets the degrees of freedom.
double chi_square(const std::vector<int64_t>& counts, const std::vector<double>& probs, int64_t n, int& df) {
  double stat = 0.0, pooled_count = 0.0, pooled_expected = 0.0;
  df = -1;
  for (size_t i = 0; i < counts.size(); ++i) {
    const double e = probs[i] * static_cast<double>(n);
    if (e < 5.0) {
      pooled_count += static_cast<double>(counts[i]), pooled_expected += e;
      continue;
    }
    stat += (static_cast<double>(counts[i]) - e) * (static_cast<double>(counts[i]) - e) / e, ++df;
  }
  if (pooled_expected >= 5.0) stat += (pooled_count - pooled_expected) * (pooled_count - pooled_expected) / pooled_expected, ++df;
  return stat;
}

// The chi-square quantile for a right tail of 10⁻⁴ (Wilson–Hilferty, z = 3.719).
double critical_value(int df) {
  const double k = df, z = 3.719, a = 2.0 / (9.0 * k);
  return k * std::pow(1.0 - a + z * std::sqrt(a), 3.0);
}

TEST(Speculation, SampledOutputIsDistributedAsDenseSampling) {
  const ModelConfig config = tiny_config();
  auto weights = std::make_shared<ModelWeights>(random_model_weights(config, DType::kF32, 3));
  // Sharp attention (scores of a few units, not a fraction of one), so that the pages the draft
  // leaves out change its distribution.
  const float sharpen = 4.0f, loud = 100.0f;
  for (LayerWeights& layer : weights->layers) {
    for (auto* norm : {&layer.q_norm, &layer.k_norm})
      for (float& w : *norm) w *= sharpen;
    // Attention's output as loud as the residual stream (random projections are 0.02-scaled): the
    // weights are this test's own buffers.
    float* o = static_cast<float*>(const_cast<void*>(layer.o_proj.data));
    for (int64_t i = 0; i < layer.o_proj.rows * layer.o_proj.cols; ++i) o[i] *= loud;
  }
  auto engine = EngineAccess::from_weights(weights, {.prefill_chunk = 64, .max_batch = 256, .kv_memory_gib = 0.05});
  const SamplingParams sampling{.temperature = 10.0f, .top_k = 10, .top_p = 0.97f};
  std::mt19937 rng(5);
  std::vector<int32_t> prompt;
  for (int i = 0; i < 48; ++i) prompt.push_back(static_cast<int32_t>(rng() % 12));
  const std::string draft = "quest:budget=16,sink=0,window=16";

  // Dense sampling's exact distribution of generated tokens 2 and 3 (indices 1 and 2).
  const auto V = static_cast<size_t>(config.vocab_size);
  SamplerScratch scratch;
  std::vector<double> row;
  TokenDraw params{.temperature = sampling.temperature, .top_k = sampling.top_k, .top_p = sampling.top_p};
  auto next = [&](std::vector<int32_t> tokens) {  // processed distribution after `tokens`
    tokens.push_back(0);
    ScoreOptions options;
    options.full_logprobs = true;
    ScoreResult s = engine->score(tokens, options);
    processed_distribution(std::span<const float>(s.full).subspan(s.full.size() - V, V), params, scratch, row);
    return row;
  };
  std::vector<double> first = next(prompt), second(V, 0.0), third(V, 0.0);
  for (size_t a = 0; a < V; ++a) {
    if (first[a] == 0.0) continue;
    std::vector<int32_t> pa = prompt;
    pa.push_back(static_cast<int32_t>(a));
    const std::vector<double> after_a = next(pa);
    for (size_t b = 0; b < V; ++b) {
      second[b] += first[a] * after_a[b];
      if (first[a] * after_a[b] < 1e-9) continue;
      std::vector<int32_t> pab = pa;
      pab.push_back(static_cast<int32_t>(b));
      const std::vector<double> after_ab = next(pab);
      for (size_t c = 0; c < V; ++c) third[c] += first[a] * after_a[b] * after_ab[c];
    }
  }

  auto sample = [&](const std::string& speculate, const std::string& attention, int64_t n, SpeculationStats* stats) {
    std::vector<std::vector<int64_t>> counts(2, std::vector<int64_t>(V, 0));
    BatchEngine& batch = batch_engine(*engine);
    int64_t submitted = 0, done = 0;
    while (done < n) {
      while (submitted < n && submitted - done < 256) {
        GenerateRequest r;
        r.prompt = prompt, r.max_tokens = 4, r.ignore_eos = true, r.attention = attention;
        r.sampling = sampling, r.sampling.seed = static_cast<uint64_t>(1000 + submitted);
        r.speculate = speculate, r.gamma = speculate.empty() ? 0 : 3;
        batch.submit(r, {.on_token = nullptr, .on_finish = [&](const SequenceFinish& f) {
                           ++counts[0][static_cast<size_t>(f.result.tokens.at(1))];
                           ++counts[1][static_cast<size_t>(f.result.tokens.at(2))];
                           if (stats) stats->drafted += f.result.speculation.drafted, stats->accepted += f.result.speculation.accepted;
                           ++done;
                         }});
        ++submitted;
      }
      batch.step();
    }
    return counts;
  };
  const int64_t n = 100000;
  SpeculationStats stats;
  auto counts = sample(draft, "", n, &stats);
  int df = 0;
  const double stat2 = chi_square(counts[0], second, n, df);
  EXPECT_LT(stat2, critical_value(df)) << "token 2: chi-square " << stat2 << " with " << df << " degrees of freedom";
  const double stat3 = chi_square(counts[1], third, n, df);
  EXPECT_LT(stat3, critical_value(df)) << "token 3: chi-square " << stat3 << " with " << df << " degrees of freedom";
  // Rejections were frequent enough for the residual path to shape the result.
  EXPECT_GT(stats.drafted - stats.accepted, n / 20) << stats.accepted << " of " << stats.drafted << " kept";
  EXPECT_LT(stats.drafted - stats.accepted, stats.drafted);
  std::printf("speculative sampling: %lld of %lld drafts kept; chi-square %.1f and %.1f (df %d, critical %.1f)\n",
              static_cast<long long>(stats.accepted), static_cast<long long>(stats.drafted), stat2, stat3, df,
              critical_value(df));

  // The control: the draft's own sampling, which the same test must reject.
  auto control = sample("", draft, n / 10, nullptr);
  const double control_stat = chi_square(control[1], third, n / 10, df);
  EXPECT_GT(control_stat, critical_value(df)) << "the sparse draft alone passed for dense";
  std::printf("sparse-only control: chi-square %.1f (df %d, critical %.1f)\n", control_stat, df, critical_value(df));
}

}  // namespace
}  // namespace vortex
