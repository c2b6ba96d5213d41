// MagicPIG's LSH-sampled attention (sparse/lsh.h, backend/cpu/lsh_attention.h): the sampling
// probability against simulation, the estimator's unbiasedness over hash seeds (random inputs, and
// the keys and values the trained test model writes to its KV cache), and the `lsh` spec on the
// CPU engine: near-dense when sampling is near-certain, deterministic in a batch and after
// preemption, bad parameters named.
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>
#include <random>
#include <tuple>

#include "backend/cpu/forward.h"
#include "common/test_util.h"
#include "core/error.h"
#include "model/weights.h"
#include "runtime/batch_engine.h"
#include "runtime/engine_access.h"
#include "sparse/attention_spec.h"
#include "sparse/lsh.h"
#include "vortex/engine.h"

namespace vortex {
namespace {

std::filesystem::path model_dir() { return test::data_dir() / "models" / "qwen3-f32"; }

double dot(const float* x, const float* y, int64_t n) {
  double s = 0.0;
  for (int64_t i = 0; i < n; ++i) s += static_cast<double>(x[i]) * y[i];
  return s;
}

// hash's blocked, unrolled projections give each plane's sign of plane · x (computed here in double,
// plane by plane), for plane counts with and without a partial last block or group of four blocks.
TEST(LshMath, HashIsTheSignOfEachProjection) {
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (const auto& [bits, tables, D] : {std::tuple{3, 7, 16}, std::tuple{10, 150, 64}, std::tuple{4, 8, 128}, std::tuple{16, 2, 24}}) {
    const LshPlanes planes({.bits = bits, .tables = tables, .seed = 9}, D, 3);
    std::vector<uint16_t> codes(static_cast<size_t>(tables));
    int checked = 0;
    for (int trial = 0; trial < 20; ++trial) {
      std::vector<float> x(static_cast<size_t>(D));
      for (float& v : x) v = normal(rng);
      planes.hash(x.data(), codes.data());
      for (int64_t i = 0; i < int64_t{bits} * tables; ++i) {
        double s = 0.0, magnitude = 0.0;
        for (int64_t d = 0; d < D; ++d) {
          s += static_cast<double>(planes.plane(i, d)) * x[static_cast<size_t>(d)];
          magnitude += std::fabs(static_cast<double>(planes.plane(i, d)) * x[static_cast<size_t>(d)]);
        }
        if (std::fabs(s) < 1e-5 * magnitude) continue;  // within fp32 rounding of 0: either sign
        ++checked;
        ASSERT_EQ((codes[static_cast<size_t>(i / bits)] >> (i % bits)) & 1, s >= 0.0 ? 1 : 0)
            << "bits " << bits << " tables " << tables << " plane " << i;
      }
    }
    EXPECT_GT(checked, 19 * bits * tables);
  }
}

// P[a key at angle θ collides with the query in >= 2 of L tables] against counting over random
// hyperplanes: within 4 standard errors of 4,000 draws at every angle.
TEST(LshMath, SampleProbabilityMatchesSimulation) {
  const int64_t D = 16;
  const LshParams params{.bits = 3, .tables = 6, .seed = 0};
  for (double theta : {0.2, 0.8, 1.5, 2.5}) {
    std::vector<float> q(D, 0.0f), k(D, 0.0f);
    q[0] = 1.0f;
    k[0] = static_cast<float>(std::cos(theta)), k[1] = static_cast<float>(std::sin(theta));
    const double w = lsh_sample_probability(std::cos(theta), params.bits, params.tables);
    int sampled = 0;
    const int draws = 4000;
    std::vector<uint16_t> qc(6), kc(6);
    std::vector<int32_t> out;
    for (int s = 0; s < draws; ++s) {
      LshPlanes planes({.bits = params.bits, .tables = params.tables, .seed = static_cast<uint64_t>(s) + 1}, D, 0);
      planes.hash(q.data(), qc.data());
      planes.hash(k.data(), kc.data());
      out.clear();
      lsh_collect(qc.data(), kc.data(), params.tables, 0, 1, out);
      sampled += !out.empty();
    }
    const double se = std::sqrt(w * (1.0 - w) / draws);
    EXPECT_NEAR(static_cast<double>(sampled) / draws, w, 4.0 * se + 1e-3) << "theta " << theta;
  }
}

struct Inputs {
  int64_t n = 0, D = 0;
  std::vector<float> q, keys, values, mean;  // q (D), keys and values (n, D), mean (D)
};

// Over `seeds` hash seeds: the mean of Σ_sampled e^{s_i}/w_i · [1, v_i] against the exact
// Σ e^{s_i} · [1, v_i] over the keys between the sink and window (relative to the exact sum's
// scale, and in standard errors), and the mean output of lsh_attend against exact attention.
void check_unbiased(const Inputs& in, int64_t sink, int64_t window, const LshParams& base, int seeds, double output_tolerance) {
  const int64_t n = in.n, D = in.D;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  std::vector<double> logit(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) logit[static_cast<size_t>(i)] = dot(in.q.data(), in.keys.data() + i * D, D) * scale;
  const double top = *std::max_element(logit.begin(), logit.end());
  // Exact: the middle's sums (shifted by the top logit), and the whole attention output.
  std::vector<double> exact(static_cast<size_t>(D + 1), 0.0), attention(static_cast<size_t>(D), 0.0);
  double all = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    const double e = std::exp(logit[static_cast<size_t>(i)] - top);
    all += e;
    for (int64_t d = 0; d < D; ++d) attention[static_cast<size_t>(d)] += e * in.values[static_cast<size_t>(i * D + d)];
    if (i < sink || i >= n - window) continue;
    exact[0] += e;
    for (int64_t d = 0; d < D; ++d) exact[static_cast<size_t>(d + 1)] += e * in.values[static_cast<size_t>(i * D + d)];
  }
  for (double& a : attention) a /= all;
  std::vector<float> centred(static_cast<size_t>(n * D)), norms(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t d = 0; d < D; ++d) centred[static_cast<size_t>(i * D + d)] = in.keys[static_cast<size_t>(i * D + d)] - in.mean[static_cast<size_t>(d)];
    norms[static_cast<size_t>(i)] = std::sqrt(dot(centred.data() + i * D, centred.data() + i * D, D));
  }
  std::vector<double> mean_sum(static_cast<size_t>(D + 1), 0.0), sq_sum(static_cast<size_t>(D + 1), 0.0), mean_out(static_cast<size_t>(D), 0.0);
  std::vector<int32_t> exact_ids, sampled;
  for (int64_t i = 0; i < n; ++i)
    if (i < sink || i >= n - window) exact_ids.push_back(static_cast<int32_t>(i));
  std::vector<uint16_t> qc(static_cast<size_t>(base.tables)), kc(static_cast<size_t>(n * base.tables));
  std::vector<float> logits, out(static_cast<size_t>(D));
  const double q_mu = dot(in.q.data(), in.mean.data(), D), q_norm = std::sqrt(dot(in.q.data(), in.q.data(), D));
  int64_t drawn = 0;
  for (int s = 0; s < seeds; ++s) {
    LshPlanes planes({.bits = base.bits, .tables = base.tables, .seed = static_cast<uint64_t>(s) + 100}, D, 0);
    planes.hash(in.q.data(), qc.data());
    for (int64_t i = 0; i < n; ++i) planes.hash(centred.data() + i * D, kc.data() + i * base.tables);
    sampled.clear();
    lsh_collect(qc.data(), kc.data(), base.tables, sink, n - window, sampled);
    drawn += static_cast<int64_t>(sampled.size());
    std::vector<double> sums(static_cast<size_t>(D + 1), 0.0);
    for (int32_t i : sampled) {
      const double cos_theta = (dot(in.q.data(), in.keys.data() + i * D, D) - q_mu) / (q_norm * norms[static_cast<size_t>(i)]);
      const double e = std::exp(logit[static_cast<size_t>(i)] - top) / lsh_sample_probability(cos_theta, base.bits, base.tables);
      sums[0] += e;
      for (int64_t d = 0; d < D; ++d) sums[static_cast<size_t>(d + 1)] += e * in.values[static_cast<size_t>(i * D + d)];
    }
    for (size_t j = 0; j < sums.size(); ++j) mean_sum[j] += sums[j] / seeds, sq_sum[j] += sums[j] * sums[j] / seeds;
    lsh_attend(in.q.data(), D, scale, {.exact = exact_ids, .sampled = sampled, .q_mu = q_mu, .q_norm = q_norm}, base.bits, base.tables,
               [&](int32_t i) { return in.keys.data() + i * D; }, [&](int32_t i) { return in.values.data() + i * D; },
               [&](int32_t i) { return norms[static_cast<size_t>(i)]; }, logits, out.data());
    for (int64_t d = 0; d < D; ++d) mean_out[static_cast<size_t>(d)] += out[static_cast<size_t>(d)] / seeds;
  }
  EXPECT_GT(drawn, 0);
  EXPECT_LT(drawn, static_cast<int64_t>(seeds) * (n - sink - window)) << "every key sampled every time: the test proves nothing";
  for (size_t j = 0; j < exact.size(); ++j) {
    const double se = std::sqrt(std::max(0.0, sq_sum[j] - mean_sum[j] * mean_sum[j]) / seeds);
    EXPECT_NEAR(mean_sum[j], exact[j], 4.0 * se + 1e-9 * std::abs(exact[0])) << "sum " << j;
  }
  double worst = 0.0, size = 0.0;
  for (int64_t d = 0; d < D; ++d) {
    worst = std::max(worst, std::abs(mean_out[static_cast<size_t>(d)] - attention[static_cast<size_t>(d)]));
    size = std::max(size, std::abs(attention[static_cast<size_t>(d)]));
  }
  EXPECT_LE(worst, output_tolerance * size) << "mean output vs exact attention";
}

// Random inputs: keys sharing a common direction (as trained keys do), a few aligned with q.
TEST(Lsh, EstimatorIsUnbiasedOnRandomInputs) {
  Inputs in;
  in.n = 300, in.D = 32;
  in.q = test::random_floats(32, 71, -1.0f, 1.0f);
  in.keys = test::random_floats(300 * 32, 72, -1.0f, 1.0f);
  in.values = test::random_floats(300 * 32, 73, -1.0f, 1.0f);
  const auto common = test::random_floats(32, 74, -2.0f, 2.0f);
  for (int64_t i = 0; i < 300; ++i)
    for (int64_t d = 0; d < 32; ++d) in.keys[static_cast<size_t>(i * 32 + d)] += common[static_cast<size_t>(d)] + (i % 37 == 5 ? 2.0f * in.q[static_cast<size_t>(d)] : 0.0f);
  in.mean.assign(32, 0.0f);
  for (int64_t i = 0; i < 300; ++i)
    for (int64_t d = 0; d < 32; ++d) in.mean[static_cast<size_t>(d)] += in.keys[static_cast<size_t>(i * 32 + d)] / 300.0f;
  check_unbiased(in, 4, 16, {.bits = 4, .tables = 20}, 3000, 0.05);
}

// The trained test model's keys and values (layer 1, KV head 0, after a 200-token prompt), with a
// later key as the query: the attention the model itself computes has this shape.
TEST(Lsh, EstimatorIsUnbiasedOnTrainedKeys) {
  auto engine = Engine::open(model_dir());
  const ModelConfig& config = EngineAccess::config(*engine);
  auto weights = std::make_shared<ModelWeights>(load_model_weights(model_dir(), config));
  cpu::CpuModel model(weights, {.num_layers = config.num_layers, .num_pages = 16, .num_kv_heads = config.num_kv_heads, .page_size = 16,
                                .head_dim = config.head_dim}, 256);
  std::vector<int32_t> prompt, pages;
  for (int i = 0; i < 200; ++i) prompt.push_back((i * 37 + 5) % 400 + 3);
  ASSERT_TRUE(model.reserve(pages, 200));
  std::vector<float> logits;
  const SequenceChunk chunk{.tokens = prompt.data(), .count = 200, .start = 0, .page_table = &pages};
  model.forward({&chunk, 1}, logits);
  Inputs in;
  in.D = config.head_dim;
  in.n = 180;
  const KvCache& kv = model.kv();
  for (int64_t i = 0; i < 200; ++i) {
    const int32_t page = pages[static_cast<size_t>(i / 16)];
    const float* k = kv.k(1) + kv.offset(page, 0, i % 16);
    const float* v = kv.v(1) + kv.offset(page, 0, i % 16);
    if (i < in.n) {
      in.keys.insert(in.keys.end(), k, k + in.D);
      in.values.insert(in.values.end(), v, v + in.D);
    } else if (i == 190) {
      in.q.assign(k, k + in.D);
    }
  }
  in.mean.assign(static_cast<size_t>(in.D), 0.0f);
  for (int64_t i = 0; i < in.n; ++i)
    for (int64_t d = 0; d < in.D; ++d) in.mean[static_cast<size_t>(d)] += in.keys[static_cast<size_t>(i * in.D + d)] / static_cast<float>(in.n);
  check_unbiased(in, 4, 16, {.bits = 4, .tables = 20}, 3000, 0.05);
}

TEST(Lsh, SpecParsesWithMagicPigDefaultsAndNamesBadParameters) {
  const AttentionSpec a = parse_attention_spec("lsh");
  EXPECT_EQ(a.lsh.bits, 10);
  EXPECT_EQ(a.lsh.tables, 150);
  EXPECT_EQ(a.sink, 4);
  EXPECT_EQ(a.window, 64);
  const AttentionSpec b = parse_attention_spec("lsh:k=8,l=64,seed=3,sink=16,window=32");
  EXPECT_EQ(b.lsh.bits, 8);
  EXPECT_EQ(b.lsh.tables, 64);
  EXPECT_EQ(b.lsh.seed, 3u);
  EXPECT_EQ(b.window, 32);
  for (const char* bad : {"lsh:k=0", "lsh:k=17", "lsh:l=1", "lsh:l=5000", "lsh:budget=10", "lsh:k=x"}) {
    try {
      parse_attention_spec(bad);
      ADD_FAILURE() << bad << " was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(bad), std::string::npos) << e.what();
    }
  }
}

// With K = 1 bit and L = 1,024 tables every key is sampled with w ≈ 1: the sparse logits equal
// dense's closely. With fewer tables they differ (a sample) and stay finite.
TEST(Lsh, NearCertainSamplingIsDense) {
  auto engine = Engine::open(model_dir(), {.prefill_chunk = 64, .max_batch = 4});
  std::vector<int32_t> tokens;
  for (int i = 0; i < 300; ++i) tokens.push_back((i * 37 + 5) % 400 + 3);
  const ScoreResult dense = engine->score(tokens, 0);
  for (const std::string spec : {"lsh:k=1,l=1024,sink=4,window=16", "lsh:k=6,l=40,sink=4,window=16"}) {
    ScoreOptions options;
    options.attention = spec;
    options.sparse_from = 100;
    const ScoreResult sparse = engine->score(tokens, options);
    double worst = 0.0;
    for (size_t i = 0; i < dense.logprobs.size(); ++i) {
      ASSERT_TRUE(std::isfinite(sparse.logprobs[i])) << spec << " " << i;
      worst = std::max(worst, static_cast<double>(std::abs(sparse.logprobs[i] - dense.logprobs[i])));
    }
    if (spec.find("l=1024") != std::string::npos) EXPECT_LE(worst, 1e-3) << spec;
    else EXPECT_GT(worst, 1e-3) << spec << ": the estimator never sampled differently from dense";
  }
}

// A client chooses L: hash tables over BatchEngine::kMaxLshTablesPerKv times the K/V they index
// are refused with an error that names the spec and the largest L the model allows.
TEST(Lsh, HashTablesAreBoundedByTheKvTheyIndex) {
  auto engine = Engine::open(model_dir());
  const ModelConfig& c = EngineAccess::config(*engine);
  const int64_t largest = (BatchEngine::kMaxLshTablesPerKv * c.kv_bytes_per_token(4) / (c.num_layers * c.num_kv_heads) - 4) / 2;
  ASSERT_GE(largest, 2);
  ASSERT_LT(largest, 1024);
  GenerateRequest r;
  r.prompt = {5, 6, 7};
  r.max_tokens = 8;
  r.attention = "lsh:l=" + std::to_string(largest);
  EXPECT_NO_THROW(batch_engine(*engine).validate(r));
  r.attention = "lsh:l=" + std::to_string(largest + 1);
  try {
    batch_engine(*engine).validate(r);
    ADD_FAILURE() << "accepted " << r.attention;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(r.attention), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("at most " + std::to_string(largest)), std::string::npos) << e.what();
  }
  r.attention.clear();
  r.speculate = "lsh:l=1024";
  EXPECT_THROW(batch_engine(*engine).validate(r), Error);
}

// Greedy lsh generation in a batch with other requests, in a pool small enough to preempt, equals
// each request alone: the hash tables are a cache the KV pages determine.
TEST(Lsh, BatchedAndPreemptedEqualAlone) {
  EngineOptions options{.prefill_chunk = 64, .max_batch = 6};
  auto probe = Engine::open(model_dir(), options);
  options.kv_memory_gib = static_cast<double>(30 * 16 * EngineAccess::config(*probe).kv_bytes_per_token(4)) / (1 << 30);
  auto engine = Engine::open(model_dir(), options);
  std::vector<GenerateRequest> requests;
  for (int k = 0; k < 5; ++k) {
    GenerateRequest r;
    for (int i = 0; i < 120 + 10 * k; ++i) r.prompt.push_back((i * 31 + 7 * k) % 400 + 3);
    r.max_tokens = 40;
    r.ignore_eos = true;
    r.attention = k == 2 ? "quest:budget=32,sink=16,window=16" : "lsh:k=6,l=40,sink=4,window=16,seed=" + std::to_string(k);
    requests.push_back(r);
  }
  std::vector<std::vector<int32_t>> expected;
  for (const auto& r : requests) expected.push_back(engine->generate(r).tokens);
  std::vector<std::vector<int32_t>> got(requests.size());
  for (size_t i = 0; i < requests.size(); ++i)
    batch_engine(*engine).submit(requests[i], {.on_token = nullptr, .on_finish = [&got, i](const SequenceFinish& f) { got[i] = f.result.tokens; }});
  int64_t preempted = 0;
  while (batch_engine(*engine).has_work()) preempted += batch_engine(*engine).step().preempted;
  EXPECT_GT(preempted, 0);
  for (size_t i = 0; i < requests.size(); ++i) EXPECT_EQ(got[i], expected[i]) << i;
  EXPECT_EQ(batch_engine(*engine).load().pages_used, 0);
}

}  // namespace
}  // namespace vortex
