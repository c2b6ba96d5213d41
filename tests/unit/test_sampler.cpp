#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "common/test_util.h"
#include "core/error.h"
#include "runtime/sampler.h"
#include "runtime/stop.h"

namespace vortex {
namespace {

std::vector<float> logits_of(const std::vector<double>& probs) {
  std::vector<float> logits;
  for (double p : probs) logits.push_back(static_cast<float>(std::log(p)));
  return logits;
}

std::map<int32_t, int> histogram(const SamplingParams& params, const std::vector<float>& logits, int draws) {
  Sampler sampler(params);
  std::map<int32_t, int> counts;
  for (int i = 0; i < draws; ++i) ++counts[sampler.sample(logits)];
  return counts;
}

TEST(Sampler, GreedyTakesTheFirstMaximum) {
  Sampler sampler({.temperature = 0.0f});
  std::vector<float> logits = {0.1f, 3.0f, -1.0f, 3.0f};
  EXPECT_EQ(sampler.sample(logits), 1);
}

TEST(Sampler, SameSeedSameTokens) {
  auto logits = test::random_floats(1000, 3, -2.0f, 2.0f);
  Sampler a({.temperature = 0.9f, .seed = 42}), b({.temperature = 0.9f, .seed = 42}), c({.temperature = 0.9f, .seed = 43});
  std::vector<int32_t> ta, tb, tc;
  for (int i = 0; i < 50; ++i) ta.push_back(a.sample(logits)), tb.push_back(b.sample(logits)), tc.push_back(c.sample(logits));
  EXPECT_EQ(ta, tb);
  EXPECT_NE(ta, tc);
}

TEST(Sampler, FrequenciesFollowTheDistribution) {
  auto logits = logits_of({0.5, 0.3, 0.2});
  auto counts = histogram({.temperature = 1.0f, .seed = 1}, logits, 20000);
  EXPECT_NEAR(counts[0] / 20000.0, 0.5, 0.02);
  EXPECT_NEAR(counts[1] / 20000.0, 0.3, 0.02);
  EXPECT_NEAR(counts[2] / 20000.0, 0.2, 0.02);
}

TEST(Sampler, TopKTopPAndMinPCutTheTail) {
  auto logits = logits_of({0.4, 0.3, 0.2, 0.1});
  EXPECT_THAT(histogram({.top_k = 2, .seed = 2}, logits, 3000), ::testing::SizeIs(2));
  // top_p 0.6: 0.4 + 0.3 reaches it, so two tokens remain.
  EXPECT_THAT(histogram({.top_p = 0.6f, .seed = 3}, logits, 3000), ::testing::SizeIs(2));
  // min_p 0.6: tokens below 0.6 × 0.4 = 0.24 go.
  EXPECT_THAT(histogram({.min_p = 0.6f, .seed = 4}, logits, 3000), ::testing::SizeIs(2));
  // A low temperature sharpens: the best token dominates.
  auto sharp = histogram({.temperature = 0.05f, .seed = 5}, logits, 2000);
  EXPECT_GT(sharp[0], 1990);
}

// The split that device sampling relies on: sample() is next_draw() then sample_with_draw(), one
// uniform per non-greedy token and none for greedy ones, so a backend given the draws picks the
// tokens the host would, and the stream stays in step either way.
TEST(Sampler, DrawsReproduceSampleAndGreedyDrawsNothing) {
  auto logits = test::random_floats(1000, 4, -2.0f, 2.0f);
  for (const SamplingParams& params : {SamplingParams{.temperature = 0.9f, .top_k = 50, .top_p = 0.9f, .min_p = 0.01f, .seed = 7},
                                       SamplingParams{.temperature = 1.3f, .seed = 8}}) {
    Sampler host(params), device(params);
    SamplerScratch scratch;
    for (int i = 0; i < 40; ++i) {
      const TokenDraw draw = device.next_draw();
      EXPECT_GE(draw.uniform, 0.0);
      EXPECT_LT(draw.uniform, 1.0);
      EXPECT_EQ(host.sample(logits), sample_with_draw(logits, draw, scratch)) << "token " << i;
    }
  }
  Sampler greedy({.temperature = 0.0f, .seed = 9});
  SamplerScratch scratch;
  EXPECT_EQ(greedy.next_draw().uniform, 0.0);
  EXPECT_EQ(sample_with_draw(logits, greedy.next_draw(), scratch), argmax(logits));
}

TEST(Sampler, InvalidParametersAreNamed) {
  try {
    Sampler({.temperature = -1.0f});
    FAIL();
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("temperature"));
  }
  EXPECT_THROW(Sampler({.top_p = 0.0f}), Error);
  EXPECT_THROW(Sampler({.min_p = 1.5f}), Error);
  EXPECT_THROW(Sampler({.top_k = -1}), Error);
}

TEST(LogSoftmax, NormalisesAndRanks) {
  auto logits = test::random_floats(50, 9, -5.0f, 5.0f);
  std::vector<float> lp(50);
  log_softmax(logits, lp);
  double total = 0;
  for (float v : lp) total += std::exp(static_cast<double>(v));
  EXPECT_NEAR(total, 1.0, 1e-6);
  auto top = top_logprobs(lp, 3);
  ASSERT_EQ(top.size(), 3u);
  EXPECT_EQ(top[0].first, argmax(logits));
  EXPECT_GE(top[0].second, top[1].second);
  EXPECT_GE(top[1].second, top[2].second);
}

TEST(StopStrings, CutsTextAndHoldsBackPartialMatches) {
  StopStringMatcher m({"STOP", "\n\n"});
  std::string out;
  out += m.push("Hello ST");
  EXPECT_EQ(out, "Hello ");  // "ST" could begin STOP
  out += m.push("OR");       // "STOR" cannot: released
  EXPECT_EQ(out, "Hello STOR");
  out += m.push("Y. ST");
  out += m.push("OP and more");
  EXPECT_TRUE(m.stopped());
  EXPECT_EQ(out, "Hello STORY. ");
  EXPECT_EQ(m.text(), "Hello STORY. ");
  StopStringMatcher none({});
  EXPECT_EQ(none.push("abc"), "abc");
  EXPECT_EQ(none.flush(), "");
}

}  // namespace
}  // namespace vortex
