// RL rollouts (GenerateRequest::rollout) on the small Qwen3 test model, CPU f32: the dense
// log-probs the engine reports equal teacher-forced dense scoring of the same tokens, the policy's
// equal sparse scoring (no refresh), α is exactly 1 when the spec reads every page, and the trace
// survives preemption and batching unchanged. Plus the α arithmetic on hand-made rows.
#include <gtest/gtest.h>

#include <cmath>

#include "common/device_sampling_model.h"
#include "common/test_util.h"
#include "core/error.h"
#include "io/hf_config.h"
#include "model/weights.h"
#include "runtime/batch_engine.h"
#include "runtime/engine_access.h"
#include "runtime/rollout.h"
#include "runtime/step_profile.h"
#include "vortex/engine.h"

namespace vortex {
namespace {

std::filesystem::path model_dir() { return test::data_dir() / "models" / "qwen3-f32"; }

TEST(RolloutMath, AgreementOverTheKeptTokensBoundsTheExactValue) {
  const std::vector<float> policy_logits = {2.0f, 1.0f, 0.5f, -1.0f, -3.0f};
  const std::vector<float> dense_logits = {1.0f, 2.0f, 0.0f, -1.0f, 1.0f};
  std::vector<double> p, q;
  const double lp = temperature_distribution(policy_logits, 2.0f, 1, p);
  EXPECT_NEAR(lp, std::log(p[1]), 1e-12);
  double sum = 0.0;
  for (double x : p) sum += x;
  EXPECT_NEAR(sum, 1.0, 1e-12);
  EXPECT_NEAR(p[0] / p[1], std::exp(0.5), 1e-12);  // temperature 2 halves the logit gaps
  temperature_distribution(dense_logits, 2.0f, 0, q);
  double exact = 0.0;
  for (size_t v = 0; v < p.size(); ++v) exact += std::min(p[v], q[v]);
  std::vector<int32_t> scratch;
  for (int32_t top : {0, 5, 3, 1}) {
    PolicyTop kept;
    keep_top(p, top, scratch, kept);
    double error = -1.0;
    const double alpha = agreement(kept, q, error);
    EXPECT_LE(alpha, exact + 1e-12) << top;
    EXPECT_GE(alpha + error, exact - 1e-12) << top;
    if (top == 0 || top == 5) {
      EXPECT_NEAR(alpha, exact, 1e-12);
      EXPECT_EQ(error, 0.0);
    }
  }
  PolicyTop self;
  keep_top(p, 0, scratch, self);
  double error = 0.0;
  EXPECT_EQ(agreement(self, p, error), 1.0);
}

// OBRS against a direct computation on whole distributions, and its defining property: accepted
// tokens weighted by w are distributed as the target (Σ_x q(x)·a(x)/Z·w(x)·f(x) = Σ_x p(x)·f(x)).
TEST(RolloutMath, ObrsMatchesTheDirectComputation) {
  const std::vector<float> q_logits = {2.0f, 1.0f, 0.5f, -1.0f, -3.0f, 0.0f};
  const std::vector<float> p_logits = {1.0f, 2.0f, 0.0f, -1.0f, 1.0f, -2.0f};
  std::vector<double> q, p;
  temperature_distribution(q_logits, 1.0f, 0, q);
  temperature_distribution(p_logits, 1.0f, 0, p);
  std::vector<int32_t> scratch;
  for (double lambda : {0.5, 1.0, 2.0}) {
    PolicyTop all;
    keep_top(q, 0, scratch, all);
    double z = 0.0;
    for (size_t v = 0; v < q.size(); ++v) z += std::min(q[v], p[v] / lambda);
    double expectation = 0.0, target = 0.0;
    for (int32_t x = 0; x < 6; ++x) {
      const ObrsToken o = obrs_token(all, x, q[static_cast<size_t>(x)], p, lambda);
      const double qx = q[static_cast<size_t>(x)], px = p[static_cast<size_t>(x)];
      EXPECT_NEAR(o.accept, std::min(1.0, px / (lambda * qx)), 1e-12);
      EXPECT_NEAR(o.normaliser, z, 1e-12);
      EXPECT_NEAR(o.weight, px * z / std::min(qx, px / lambda), 1e-9);
      expectation += qx * o.accept / z * o.weight * (x + 1.0);
      target += px * (x + 1.0);
    }
    EXPECT_NEAR(expectation, target, 1e-9) << lambda;
    // Two kept tokens: Z counts them and the sampled token (kept or not), the rest as q = 0.
    PolicyTop two;
    keep_top(q, 2, scratch, two);  // tokens 0 and 1
    const ObrsToken o = obrs_token(two, 4, q[4], p, lambda);
    EXPECT_NEAR(o.normaliser, std::min(q[0], p[0] / lambda) + std::min(q[1], p[1] / lambda) + std::min(q[4], p[4] / lambda), 1e-12);
  }
}

// reduce_rows (the host twin of the GPU's reduce kernel) against the direct computations: a
// policy row's log-prob of its drawn token and its top tokens best first, a dense row's log-prob
// of a given token and its sums over a kept policy distribution, and a row asked for nothing.
TEST(RolloutMath, ReduceRowsMatchesTheDirectComputation) {
  const int64_t V = 7;
  const std::vector<float> logits = {0.5f, 2.0f, -1.0f, 1.5f, 0.0f, 2.0f, -3.0f,    // row 0: a tie at the top
                                     1.0f, -2.0f, 0.3f, 0.7f, 2.2f, -0.4f, 1.1f,    // row 1
                                     9.0f, 9.0f, 9.0f, 9.0f, 9.0f, 9.0f, 9.0f};     // row 2: nothing asked
  RowReductions r;
  r.clear();
  const std::vector<int32_t> kept_ids = {4, 0, 3};
  const std::vector<double> kept_probs = {0.3, 0.25, 0.2};
  const int32_t policy = r.add_policy(kept_ids, kept_probs);
  r.rows = {{.temperature = 1.0f, .top = 3}, {.temperature = 0.5f, .token = 2, .policy = policy, .lambda = 0.8}, {}};
  const std::vector<int32_t> drawn = {3, 0, 0};
  reduce_rows(logits, V, drawn, r);
  ASSERT_EQ(r.stats.size(), 3u);
  std::vector<double> p;
  EXPECT_NEAR(r.stats[0].logprob, temperature_distribution({logits.data(), 7}, 1.0f, 3, p), 1e-12);
  EXPECT_EQ(r.top_offsets, (std::vector<int64_t>{0, 3, 3, 3}));
  EXPECT_EQ(r.top_ids, (std::vector<int32_t>{1, 5, 3}));  // equal logits in id order
  for (size_t j = 0; j < 3; ++j) EXPECT_NEAR(r.top_probs[j], p[static_cast<size_t>(r.top_ids[j])], 1e-15);
  EXPECT_NEAR(r.stats[1].logprob, temperature_distribution({logits.data() + 7, 7}, 0.5f, 2, p), 1e-12);
  double overlap = 0.0, covered = 0.0, obrs = 0.0;
  for (size_t i = 0; i < kept_ids.size(); ++i) {
    const double pv = p[static_cast<size_t>(kept_ids[i])];
    overlap += std::min(kept_probs[i], pv), covered += pv, obrs += std::min(kept_probs[i], pv / 0.8);
  }
  EXPECT_NEAR(r.stats[1].overlap, overlap, 1e-15);
  EXPECT_NEAR(r.stats[1].covered, covered, 1e-15);
  EXPECT_NEAR(r.stats[1].obrs, obrs, 1e-15);
  EXPECT_EQ(r.stats[2].logprob, 0.0);
  // agreement() and obrs_token() from the sums equal them from the whole row.
  PolicyTop top;
  keep_given(kept_ids, kept_probs, V, top);
  EXPECT_NEAR(top.residual, 0.25, 1e-15);
  double error_sums = 0.0, error_row = 0.0;
  EXPECT_NEAR(agreement(top, r.stats[1], V, error_sums), agreement(top, p, error_row), 1e-15);
  EXPECT_NEAR(error_sums, error_row, 1e-15);
  const ObrsToken a = obrs_token(top, 2, 0.1, r.stats[1], 0.8), b = obrs_token(top, 2, 0.1, p, 0.8);
  EXPECT_NEAR(a.accept, b.accept, 1e-12);
  EXPECT_NEAR(a.normaliser, b.normaliser, 1e-12);
  EXPECT_NEAR(a.weight, b.weight, 1e-12);
}

GenerateRequest rollout_request(const std::string& attention, int64_t refresh, float temperature = 1.0f, uint64_t seed = 3) {
  GenerateRequest r;
  for (int i = 0; i < 150; ++i) r.prompt.push_back((i * 37 + 5) % 500 + 3);
  r.max_tokens = 40;
  r.ignore_eos = true;
  r.sampling = {.temperature = temperature, .seed = seed};
  r.attention = attention;
  r.rollout = {.enabled = true, .refresh = refresh, .alpha_top = 0};
  return r;
}

std::vector<int32_t> whole(const GenerateRequest& r, const GenerateResult& out) {
  std::vector<int32_t> tokens = r.prompt;
  tokens.insert(tokens.end(), out.tokens.begin(), out.tokens.end());
  return tokens;
}

TEST(Rollout, DenseLogprobsEqualDenseScoringAndPolicyLogprobsEqualSparseScoring) {
  auto engine = Engine::open(model_dir(), {.prefill_chunk = 64, .max_batch = 4});
  const std::string spec = "quest:budget=32,sink=16,window=16";
  for (int64_t refresh : {0, 8}) {
    const GenerateRequest r = rollout_request(spec, refresh);
    const GenerateResult out = engine->generate(r);
    const RolloutTrace& t = out.rollout;
    ASSERT_EQ(t.logprobs.size(), out.tokens.size());
    ASSERT_EQ(t.dense_logprobs.size(), out.tokens.size());
    ASSERT_EQ(t.alpha.size(), out.tokens.size());
    // Token 1 from the prompt's dense row; then one pass at the end, or 4 passes of 8 sparse
    // tokens each followed by a densely sampled token, and a last pass over 3.
    EXPECT_EQ(t.dense_passes, refresh == 0 ? 1 : 5);
    const ScoreResult dense = engine->score(whole(r, out), 0);
    const auto offset = r.prompt.size() - 1;
    double worst = 0.0, below_one = 0.0;
    for (size_t i = 0; i < out.tokens.size(); ++i) {
      worst = std::max(worst, static_cast<double>(std::abs(t.dense_logprobs[i] - dense.logprobs[offset + i])));
      EXPECT_GE(t.alpha[i], 0.0f);
      EXPECT_LE(t.alpha[i], 1.0f);
      below_one += 1.0 - t.alpha[i];
    }
    EXPECT_LE(worst, 1e-3) << "refresh " << refresh;
    EXPECT_GT(below_one, 1e-3) << "the sparse policy never differed from dense: the test proves nothing";
    EXPECT_EQ(t.alpha_error, 0.0);  // alpha_top 0: exact
    EXPECT_EQ(t.dense_sampled[0], 1);  // the first token comes from the prompt's dense row
    if (refresh == 0) {
      ScoreOptions sparse;
      sparse.attention = spec;
      sparse.sparse_from = static_cast<int64_t>(r.prompt.size());
      const ScoreResult policy = engine->score(whole(r, out), sparse);
      double policy_worst = 0.0;
      for (size_t i = 0; i < out.tokens.size(); ++i)
        policy_worst = std::max(policy_worst, static_cast<double>(std::abs(t.logprobs[i] - policy.logprobs[offset + i])));
      EXPECT_LE(policy_worst, 1e-3);
    } else {
      EXPECT_EQ(t.dense_sampled[9], 1);  // the token after the first refresh
    }
  }
  EXPECT_EQ(batch_engine(*engine).load().pages_used, 0);
}

TEST(Rollout, ObrsAcceptanceFollowsTheReportedLogprobs) {
  auto engine = Engine::open(model_dir(), {.prefill_chunk = 64, .max_batch = 4});
  GenerateRequest r = rollout_request("quest:budget=32,sink=16,window=16", 0);
  r.rollout.obrs_lambda = 0.8;
  const GenerateResult out = engine->generate(r);
  const RolloutTrace& t = out.rollout;
  ASSERT_EQ(t.obrs_accept.size(), out.tokens.size());
  ASSERT_EQ(t.obrs_weight.size(), out.tokens.size());
  int rejected = 0;
  for (size_t i = 0; i < out.tokens.size(); ++i) {
    const double ratio = std::exp(static_cast<double>(t.dense_logprobs[i]) - t.logprobs[i]);
    EXPECT_NEAR(t.obrs_accept[i], std::min(1.0, ratio / 0.8), 1e-4) << i;
    EXPECT_TRUE(std::isfinite(t.obrs_weight[i]) && t.obrs_weight[i] >= 0.0f) << i;
    rejected += t.obrs_accept[i] < 1.0f;
  }
  EXPECT_GT(rejected, 0);
  r.rollout.obrs_lambda = -1.0;
  EXPECT_THROW(batch_engine(*engine).validate(r), Error);
}

TEST(Rollout, AlphaIsExactlyOneWhenTheSpecReadsEveryPage) {
  auto engine = Engine::open(model_dir(), {.prefill_chunk = 64, .max_batch = 4});
  const GenerateResult out = engine->generate(rollout_request("quest:budget=100000", 0));
  for (size_t i = 0; i < out.tokens.size(); ++i) {
    EXPECT_EQ(out.rollout.alpha[i], 1.0f) << i;
    EXPECT_NEAR(out.rollout.dense_logprobs[i], out.rollout.logprobs[i], 1e-5) << i;
  }
}

// Rollouts of several samples in a batch, in a pool small enough to preempt them, equal each one
// alone: the tokens and the whole trace.
TEST(Rollout, BatchedAndPreemptedRolloutsEqualAlone) {
  EngineOptions options{.prefill_chunk = 64, .max_batch = 8};
  auto probe = Engine::open(model_dir(), options);
  options.kv_memory_gib = static_cast<double>(30 * 16 * EngineAccess::config(*probe).kv_bytes_per_token(4)) / (1 << 30);
  auto engine = Engine::open(model_dir(), options);
  std::vector<GenerateRequest> requests;
  for (uint64_t k = 0; k < 6; ++k) {
    requests.push_back(rollout_request(k % 2 ? "quest:budget=32,sink=16,window=16" : "streaming:sink=16,window=32",
                                       k < 3 ? 0 : 8, 0.8f, 10 + k));
    requests.back().max_tokens = 60;
    requests.back().rollout.alpha_top = 64;
  }
  std::vector<GenerateResult> expected;
  for (const auto& r : requests) expected.push_back(engine->generate(r));
  std::vector<GenerateResult> got(requests.size());
  for (size_t i = 0; i < requests.size(); ++i)
    batch_engine(*engine).submit(requests[i], {.on_token = nullptr, .on_finish = [&got, i](const SequenceFinish& f) { got[i] = f.result; }});
  int64_t preempted = 0;
  while (batch_engine(*engine).has_work()) preempted += batch_engine(*engine).step().preempted;
  EXPECT_GT(preempted, 0);
  for (size_t i = 0; i < requests.size(); ++i) {
    EXPECT_EQ(got[i].tokens, expected[i].tokens) << i;
    EXPECT_EQ(got[i].rollout.logprobs, expected[i].rollout.logprobs) << i;
    EXPECT_EQ(got[i].rollout.dense_logprobs, expected[i].rollout.dense_logprobs) << i;
    EXPECT_EQ(got[i].rollout.alpha, expected[i].rollout.alpha) << i;
  }
  EXPECT_EQ(batch_engine(*engine).load().pages_used, 0);
}

// The step profile `vortex rollout` prints sorts every step into one kind: the kinds' tokens add
// up to every token through the forward, decode steps carry one token per sequence, and the dense
// passes' steps exist exactly when a sparse rollout ran its passes.
TEST(Rollout, StepProfileAccountsForEveryStep) {
  auto engine = Engine::open(model_dir(), {.prefill_chunk = 64, .max_batch = 4});
  for (uint64_t k = 0; k < 3; ++k) {
    GenerateRequest r = rollout_request("quest:budget=32,sink=16,window=16", 0, 0.8f, 20 + k);
    r.max_tokens = 24;
    batch_engine(*engine).submit(r, {});
  }
  StepProfile profile;
  int64_t tokens = 0, steps = 0, passes = 0;
  while (batch_engine(*engine).has_work()) {
    const StepStats step = batch_engine(*engine).step();
    profile.add(step, 1.0);
    tokens += step.tokens, steps += step.chunks > 0, passes += step.dense_passes;
  }
  const nlohmann::json j = profile.json(batch_engine(*engine).forward_counters());
  int64_t kind_tokens = 0, kind_steps = 0;
  for (const char* kind : {"decode", "draft", "verify", "dense_pass", "prefill", "other"}) {
    kind_tokens += j[kind]["tokens"].get<int64_t>(), kind_steps += j[kind]["steps"].get<int64_t>();
    EXPECT_DOUBLE_EQ(j[kind]["wall_ms"].get<double>(), j[kind]["steps"].get<double>()) << kind;
  }
  EXPECT_EQ(kind_tokens, tokens);
  EXPECT_EQ(kind_steps, steps);
  EXPECT_EQ(passes, 3);
  EXPECT_GT(j["dense_pass"]["steps"].get<int64_t>(), 0);
  EXPECT_GT(j["decode"]["steps"].get<int64_t>(), 0);
  EXPECT_LE(j["decode"]["tokens"].get<int64_t>(), 3 * j["decode"]["steps"].get<int64_t>());
  EXPECT_EQ(j["backend"]["forwards"], 0) << "the CPU backend reports no forward counters";
  EXPECT_NE(profile.text(batch_engine(*engine).forward_counters()).find("dense_pass"), std::string::npos);
}

// Rollouts on a backend that samples and reduces on its device (the GPU's path, here with the
// host twin of its kernel): the tokens and the whole trace equal the host path's, no logits come
// back, and preemption (a pool of 24 pages) changes nothing — greedy and sampled, with and
// without refresh, kept top tokens and OBRS.
TEST(Rollout, DeviceReducedRolloutsEqualTheHostPath) {
  EngineOptions options{.prefill_chunk = 64, .max_batch = 8};
  auto engine = Engine::open(model_dir(), options);
  std::vector<GenerateRequest> requests;
  for (uint64_t k = 0; k < 5; ++k) {
    requests.push_back(rollout_request(k % 2 ? "quest:budget=32,sink=16,window=16" : "streaming:sink=16,window=32",
                                       k < 2 ? 0 : 8, k == 4 ? 0.0f : 0.8f, 20 + k));
    requests.back().max_tokens = 50;
    requests.back().rollout.alpha_top = k == 3 ? 0 : 64;
    requests.back().rollout.obrs_lambda = k == 1 ? 0.8 : 0.0;
  }
  std::vector<GenerateResult> expected;
  for (const auto& r : requests) expected.push_back(engine->generate(r));
  const ModelConfig& config = EngineAccess::config(*engine);
  test::DeviceSamplingModel model(model_dir(), config, 24, 64);
  BatchEngine batch(model, config, nullptr, 24 * 16, 8);
  std::vector<GenerateResult> got(requests.size());
  for (size_t i = 0; i < requests.size(); ++i)
    batch.submit(requests[i], {.on_token = nullptr, .on_finish = [&got, i](const SequenceFinish& f) { got[i] = f.result; }});
  int64_t preempted = 0;
  while (batch.has_work()) preempted += batch.step().preempted;
  EXPECT_GT(preempted, 0);
  EXPECT_EQ(model.logit_steps, 0);
  EXPECT_GT(model.reduced_steps, 0);
  auto near = [](const std::vector<float>& a, const std::vector<float>& b, const char* what, size_t i) {
    ASSERT_EQ(a.size(), b.size()) << what << " " << i;
    for (size_t j = 0; j < a.size(); ++j)
      if (!(std::isnan(a[j]) && std::isnan(b[j]))) {
        EXPECT_NEAR(a[j], b[j], 1e-6) << what << " " << i << " token " << j;
      }
  };
  for (size_t i = 0; i < requests.size(); ++i) {
    ASSERT_EQ(got[i].tokens, expected[i].tokens) << i;
    near(got[i].rollout.logprobs, expected[i].rollout.logprobs, "logprobs", i);
    near(got[i].rollout.dense_logprobs, expected[i].rollout.dense_logprobs, "dense logprobs", i);
    near(got[i].rollout.alpha, expected[i].rollout.alpha, "alpha", i);
    near(got[i].rollout.obrs_accept, expected[i].rollout.obrs_accept, "obrs accept", i);
    near(got[i].rollout.obrs_weight, expected[i].rollout.obrs_weight, "obrs weight", i);
    EXPECT_EQ(got[i].rollout.dense_sampled, expected[i].rollout.dense_sampled) << i;
    EXPECT_EQ(got[i].rollout.dense_passes, expected[i].rollout.dense_passes) << i;
    EXPECT_NEAR(got[i].rollout.alpha_error, expected[i].rollout.alpha_error, 1e-9) << i;
  }
  EXPECT_EQ(batch.load().pages_used, 0);
}

TEST(Rollout, BadOptionsAreNamed) {
  auto engine = Engine::open(model_dir());
  GenerateRequest r = rollout_request("quest:budget=32", -1);
  EXPECT_THROW(
      {
        try {
          batch_engine(*engine).validate(r);
        } catch (const Error& e) {
          EXPECT_NE(std::string(e.what()).find("refresh"), std::string::npos) << e.what();
          throw;
        }
      },
      Error);
  r = rollout_request("", 0);
  r.speculate = "quest:budget=32";
  EXPECT_THROW(batch_engine(*engine).validate(r), Error);
  r = rollout_request("", 0);
  r.rollout.alpha_top = -2;
  EXPECT_THROW(batch_engine(*engine).validate(r), Error);
}

}  // namespace
}  // namespace vortex
