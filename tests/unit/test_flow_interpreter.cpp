// The CPU flow interpreter: page reductions against hand computations, every built-in flow against
// its formula written with plain loops on random data, state across steps, softmax, select_pages.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>

#include "common/test_util.h"
#include "core/error.h"
#include "sparse/field_reduce.h"
#include "sparse/flow_interpreter.h"
#include "vortex/flow.h"

namespace vortex {
namespace {

using ::testing::HasSubstr;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

void expect_close(float actual, float expected, const std::string& what) {
  EXPECT_NEAR(actual, expected, 1e-4f * std::max(1.0f, std::fabs(expected))) << what;
}

// ---- reduce_page -------------------------------------------------------------------------------

// The reduction of the keys in slots r, r + S, ... < rows, feature d, written as plainly as possible.
float hand_reduce(FieldReduce reduce, const std::vector<float>& keys, int64_t rows, int64_t S, int64_t D, int64_t r,
                  int64_t d) {
  std::vector<float> xs;
  for (int64_t j = r; j < rows; j += S) {
    if (reduce != FieldReduce::kNorm) {
      xs.push_back(keys[static_cast<size_t>(j * D + d)]);
      continue;
    }
    double sq = 0.0;
    for (int64_t e = 0; e < D; ++e) sq += double(keys[static_cast<size_t>(j * D + e)]) * keys[static_cast<size_t>(j * D + e)];
    xs.push_back(static_cast<float>(std::sqrt(sq)));
  }
  if (xs.empty()) return 0.0f;
  double mean = 0.0, var = 0.0;
  for (float x : xs) mean += x / double(xs.size());
  for (float x : xs) var += (x - mean) * (x - mean) / double(xs.size());
  switch (reduce) {
    case FieldReduce::kMax: case FieldReduce::kNorm: return *std::max_element(xs.begin(), xs.end());
    case FieldReduce::kMin: return *std::min_element(xs.begin(), xs.end());
    case FieldReduce::kMean: return static_cast<float>(mean);
    case FieldReduce::kStd: return static_cast<float>(std::sqrt(var));
  }
  return kNaN;
}

TEST(ReducePage, EveryReductionAndSubSplitMatchesAHandComputation) {
  const int64_t P = 16;
  for (int64_t D : {1, 3, 17}) {
    std::vector<float> keys = test::random_floats(static_cast<size_t>(P * D), static_cast<uint32_t>(D), -2.0f, 3.0f);
    for (FieldReduce reduce : {FieldReduce::kMax, FieldReduce::kMin, FieldReduce::kMean, FieldReduce::kStd, FieldReduce::kNorm})
      for (int32_t sub : {1, 2, 4, 16, kFlowSubPage})
        for (int64_t rows : {P, int64_t{11}, int64_t{1}}) {
          FlowField field{.name = "f", .reduce = reduce, .sub = sub};
          const int64_t S = field.rows(P), W = field.width(D);
          std::vector<float> out(static_cast<size_t>(S * W), kNaN);  // poisoned: every element must be written
          reduce_page(field, keys.data(), rows, P, D, out.data());
          for (int64_t r = 0; r < S; ++r)
            for (int64_t d = 0; d < W; ++d)
              expect_close(out[static_cast<size_t>(r * W + d)], hand_reduce(reduce, keys, rows, S, D, r, d),
                           fmt::format("{}(k, sub={}) D={} rows={} at ({}, {})", field_reduce_name(reduce), sub, D, rows, r, d));
        }
  }
}

TEST(ReducePage, SubPageKeepsEveryKey) {
  const int64_t P = 32, D = 5;
  std::vector<float> keys = test::random_floats(static_cast<size_t>(P * D), 7);
  std::vector<float> out(keys.size());
  reduce_page({.name = "keys", .reduce = FieldReduce::kMax, .sub = kFlowSubPage}, keys.data(), P, P, D, out.data());
  EXPECT_EQ(out, keys);
}

TEST(ReducePage, RejectsASubThatDoesNotDivideThePage) {
  std::vector<float> keys(16 * 4, 1.0f), out(64);
  EXPECT_THROW(reduce_page({.name = "k", .reduce = FieldReduce::kMax, .sub = 32}, keys.data(), 16, 16, 4, out.data()), Error);
}

// ---- a KV head's pages, summarised for a flow ------------------------------------------------

// One (sequence, KV head, layer): the keys of every page, the fields the flow declares, and q.
struct Pages {
  int64_t num_pages, P, D, Hg;
  std::vector<float> keys;                  // (num_pages, P, D)
  std::vector<float> q;                     // (Hg, D)
  std::vector<std::vector<float>> fields;   // per field: (num_pages, S, W)
  std::vector<std::vector<float>> state;    // per state slot: (num_pages)

  Pages(const Flow& flow, int64_t pages, int64_t page_size, int64_t head_dim, int64_t group, uint32_t seed)
      : num_pages(pages), P(page_size), D(head_dim), Hg(group) {
    keys = test::random_floats(static_cast<size_t>(pages * P * D), seed);
    q = test::random_floats(static_cast<size_t>(Hg * D), seed + 1, -2.0f, 2.0f);
    for (const FlowField& field : flow.fields) {
      const int64_t size = field.rows(P) * field.width(D);
      fields.emplace_back(static_cast<size_t>(pages * size));
      for (int64_t p = 0; p < pages; ++p)
        reduce_page(field, key(p, 0), P, P, D, fields.back().data() + p * size);
    }
    state.assign(flow.state.size(), std::vector<float>(static_cast<size_t>(pages), 0.0f));
  }

  const float* key(int64_t page, int64_t slot) const { return keys.data() + (page * P + slot) * D; }

  FlowInputs inputs(const Flow& flow, std::span<const int32_t> candidates) {
    FlowInputs in{.q = q.data(), .group = Hg, .head_dim = D, .page_size = P, .pages = candidates};  // (N) candidates
    for (size_t f = 0; f < flow.fields.size(); ++f)
      in.fields.push_back({fields[f].data(), flow.fields[f].rows(P) * flow.fields[f].width(D)});
    for (auto& slot : state) in.state_base.push_back(slot.data());
    return in;
  }

  // Scores of `flow` on the candidates, through the interpreter; poisoned first.
  std::vector<float> evaluate(const Flow& flow, std::span<const int32_t> candidates, FlowScratch& scratch) {
    std::vector<float> scores(candidates.size(), kNaN);
    evaluate_flow(flow, inputs(flow, candidates), scores, scratch);
    return scores;
  }
};

// Per-feature statistics of a page's keys, computed directly (not with reduce_page).
struct KeyStats {
  std::vector<float> max, min, mean, std;  // (D)
  KeyStats(const Pages& s, int64_t page) : max(static_cast<size_t>(s.D), -INFINITY), min(static_cast<size_t>(s.D), INFINITY),
                                           mean(static_cast<size_t>(s.D), 0.0f), std(static_cast<size_t>(s.D), 0.0f) {
    for (int64_t d = 0; d < s.D; ++d) {
      const size_t i = static_cast<size_t>(d);
      for (int64_t j = 0; j < s.P; ++j) {
        float k = s.key(page, j)[d];
        max[i] = std::max(max[i], k), min[i] = std::min(min[i], k), mean[i] += k / static_cast<float>(s.P);
      }
      for (int64_t j = 0; j < s.P; ++j) std[i] += (s.key(page, j)[d] - mean[i]) * (s.key(page, j)[d] - mean[i]);
      std[i] = std::sqrt(std[i] / static_cast<float>(s.P));
    }
  }
};

// Per query head h of the group, a number from the head's query and the page.
using HeadFormula = std::function<float(const float* q, const Pages& s, int64_t page)>;

float combine_heads(const Pages& s, int64_t page, bool use_max, const HeadFormula& per_head) {
  float acc = use_max ? -INFINITY : 0.0f;
  for (int64_t h = 0; h < s.Hg; ++h) {
    float x = per_head(s.q.data() + h * s.D, s, page);
    acc = use_max ? std::max(acc, x) : acc + x;
  }
  return acc;
}

float quest_head(const float* q, const Pages& s, int64_t page) {
  KeyStats k(s, page);
  float bound = 0.0f;
  for (int64_t d = 0; d < s.D; ++d) bound += std::max(q[d] * k.max[size_t(d)], q[d] * k.min[size_t(d)]);
  return bound;
}

float centroid_head(const float* q, const Pages& s, int64_t page) {
  KeyStats k(s, page);
  float dot = 0.0f;
  for (int64_t d = 0; d < s.D; ++d) dot += q[d] * k.mean[size_t(d)];
  return dot;
}

float meanstd_head(const float* q, const Pages& s, int64_t page) {
  KeyStats k(s, page);
  float score = centroid_head(q, s, page);
  for (int64_t d = 0; d < s.D; ++d) score += std::fabs(q[d]) * k.std[size_t(d)];
  return score;
}

float max_logit_head(const float* q, const Pages& s, int64_t page) {
  float best = -INFINITY;
  for (int64_t j = 0; j < s.P; ++j) {
    float dot = 0.0f;
    for (int64_t d = 0; d < s.D; ++d) dot += q[d] * s.key(page, j)[d];
    best = std::max(best, dot / std::sqrt(static_cast<float>(s.D)));
  }
  return best;
}

struct BuiltinCase {
  const char* name;
  bool use_max;
  HeadFormula per_head;
};

void PrintTo(const BuiltinCase& c, std::ostream* out) { *out << c.name; }

class BuiltinFlowScores : public ::testing::TestWithParam<BuiltinCase> {};

// Odd sizes: 3 query heads per KV head, head dim 17, candidates a shuffled subset of the pages.
TEST_P(BuiltinFlowScores, MatchThePlainFormula) {
  const BuiltinCase& c = GetParam();
  const Flow& flow = *find_builtin_flow(c.name);
  for (int64_t page_size : {16, 32}) {
    Pages pages(flow, 11, page_size, 17, 3, 42);
    std::vector<int32_t> candidates = {7, 2, 9, 0, 4, 10, 5};
    FlowScratch scratch;
    std::vector<float> scores = pages.evaluate(flow, candidates, scratch);
    for (size_t i = 0; i < candidates.size(); ++i)
      expect_close(scores[i], combine_heads(pages, candidates[i], c.use_max, c.per_head),
                   fmt::format("{} P={} page {}", c.name, page_size, candidates[i]));
  }
}

INSTANTIATE_TEST_SUITE_P(Builtins, BuiltinFlowScores,
                         ::testing::Values(BuiltinCase{"quest", false, quest_head}, BuiltinCase{"quest_gqa", true, quest_head},
                                           BuiltinCase{"centroid", false, centroid_head},
                                           BuiltinCase{"centroid_gqa", true, centroid_head},
                                           BuiltinCase{"meanstd", true, meanstd_head},
                                           BuiltinCase{"oracle", false, max_logit_head}),
                         [](const auto& info) { return std::string(info.param.name); });

// h2o: mass = softmax over the candidates of (max over heads of q·mean(k)) · scale, accumulated.
std::vector<float> h2o_mass(const Pages& s, const std::vector<int32_t>& candidates) {
  std::vector<float> logits, mass;
  for (int32_t page : candidates)
    logits.push_back(combine_heads(s, page, true, centroid_head) / std::sqrt(static_cast<float>(s.D)));
  float top = *std::max_element(logits.begin(), logits.end()), total = 0.0f;
  for (float x : logits) total += std::exp(x - top);
  for (float x : logits) mass.push_back(std::exp(x - top) / total);
  return mass;
}

TEST(H2oFlow, AccumulatesMassAcrossSteps) {
  const Flow& flow = *find_builtin_flow("h2o");
  ASSERT_EQ(flow.state, std::vector<std::string>{"acc"});
  Pages pages(flow, 9, 16, 17, 3, 5);
  pages.state[0] = test::random_floats(9, 6);  // pages outside the candidates must keep their value
  std::vector<float> untouched = pages.state[0];
  std::vector<int32_t> first = {3, 1, 6, 4}, second = {1, 6, 4, 8};
  for (int32_t page : first) pages.state[0][size_t(page)] = 0.0f;  // never saved: the engine zeroes the slot
  pages.state[0][8] = 0.0f;
  FlowScratch scratch;

  std::vector<float> scores1 = pages.evaluate(flow, first, scratch);
  std::vector<float> mass1 = h2o_mass(pages, first);
  float total = 0.0f;
  for (size_t i = 0; i < first.size(); ++i) {
    expect_close(scores1[i], mass1[i], "step 1");
    expect_close(pages.state[0][size_t(first[i])], mass1[i], "saved at step 1");
    total += pages.state[0][size_t(first[i])];
  }
  expect_close(total, 1.0f, "the mass of one step sums to 1 over the pages");

  pages.q = test::random_floats(pages.q.size(), 77, -2.0f, 2.0f);  // the next token's query
  std::vector<float> scores2 = pages.evaluate(flow, second, scratch);
  std::vector<float> mass2 = h2o_mass(pages, second);
  for (size_t i = 0; i < second.size(); ++i) {
    float before = i < 3 ? mass1[i + 1] : 0.0f;  // pages 1, 6, 4 were candidates at step 1; page 8 was not
    expect_close(scores2[i], before + mass2[i], fmt::format("step 2 page {}", second[i]));
    expect_close(pages.state[0][size_t(second[i])], before + mass2[i], "saved at step 2");
  }
  expect_close(pages.state[0][3], mass1[0], "page 3 was not a candidate at step 2");
  for (int32_t page : {0, 2, 5, 7}) EXPECT_EQ(pages.state[0][size_t(page)], untouched[size_t(page)]) << page;
}

// ---- the language's ops, each against its formula ---------------------------------------------

Flow flow_with_score(const std::string& score) {
  return parse_flow("field kmean = mean(k)\nfield kmax = max(k)\nfield k4 = min(k, sub=4)\nfield kn = norm(k, sub=2)\n"
                    "select topk(" + score + ")\n", "ops");
}

struct OpCase {
  const char* score;
  std::function<float(const Pages&, int64_t page)> expected;
};

void PrintTo(const OpCase& op, std::ostream* out) { *out << op.score; }

class FlowOps : public ::testing::TestWithParam<OpCase> {};

float head_dot(const Pages& s, int64_t h, const std::vector<float>& v) {
  float acc = 0.0f;
  for (int64_t d = 0; d < s.D; ++d) acc += s.q[size_t(h * s.D + d)] * v[size_t(d)];
  return acc;
}

TEST_P(FlowOps, MatchTheirFormula) {
  Flow flow = flow_with_score(GetParam().score);
  Pages pages(flow, 6, 16, 5, 2, 9);
  std::vector<int32_t> candidates = {5, 0, 3, 1};
  FlowScratch scratch;
  std::vector<float> scores = pages.evaluate(flow, candidates, scratch);
  for (size_t i = 0; i < candidates.size(); ++i)
    expect_close(scores[i], GetParam().expected(pages, candidates[i]), fmt::format("{} page {}", GetParam().score, candidates[i]));
}

// c(h): q_h · mean(k) of head h.
float c(const Pages& s, int64_t page, int64_t h) { return head_dot(s, h, KeyStats(s, page).mean); }

INSTANTIATE_TEST_SUITE_P(
    Cases, FlowOps,
    ::testing::Values(
        OpCase{"sum(dot(q, kmean), heads) * 2 - 1 / D",
               [](const Pages& s, int64_t p) { return (c(s, p, 0) + c(s, p, 1)) * 2 - 1.0f / float(s.D); }},
        OpCase{"max(abs(dot(q, kmean)) + exp(dot(q, kmax) / 8), heads)",
               [](const Pages& s, int64_t p) {
                 float x = -INFINITY;
                 for (int64_t h = 0; h < 2; ++h) x = std::max(x, std::fabs(c(s, p, h)) + std::exp(head_dot(s, h, KeyStats(s, p).max) / 8));
                 return x;
               }},
        OpCase{"min(relu(dot(q, kmean)) - sigmoid(-dot(q, kmean)), heads) + log(P) * scale",
               [](const Pages& s, int64_t p) {
                 float x = INFINITY;
                 for (int64_t h = 0; h < 2; ++h) x = std::min(x, std::max(c(s, p, h), 0.0f) - 1 / (1 + std::exp(c(s, p, h))));
                 return x + std::log(16.0f) / std::sqrt(5.0f);
               }},
        OpCase{"mean(gt(dot(q, kmean), 0) + ge(dot(q, kmean), 0.1) + (dot(q, kmean) < 0) + le(dot(q, kmean), -0.1) + eq(dot(q, kmean), dot(q, kmean)), heads)",
               [](const Pages& s, int64_t p) {
                 float x = 0.0f;
                 for (int64_t h = 0; h < 2; ++h) {
                   float v = c(s, p, h);
                   x += float(v > 0) + float(v >= 0.1f) + float(v < 0) + float(v <= -0.1f) + 1.0f;
                 }
                 return x / 2;
               }},
        OpCase{"max(max(max(q * k4, feat), sub), heads) + min(max(min(kmax, kmean), feat), sub)",
               [](const Pages& s, int64_t p) {  // k4 sub-row r: min over key slots r, r+4, r+8, r+12
                 float best = -INFINITY;
                 for (int64_t h = 0; h < 2; ++h)
                   for (int64_t r = 0; r < 4; ++r)
                     for (int64_t d = 0; d < s.D; ++d) {
                       float m = INFINITY;
                       for (int64_t j = r; j < 16; j += 4) m = std::min(m, s.key(p, j)[d]);
                       best = std::max(best, s.q[size_t(h * s.D + d)] * m);
                     }
                 KeyStats k(s, p);
                 float second = -INFINITY;
                 for (int64_t d = 0; d < s.D; ++d) second = std::max(second, std::min(k.max[size_t(d)], k.mean[size_t(d)]));
                 return best + second;
               }},
        OpCase{"sum(kn, sub) + mean(sum(kmean, feat), heads)",
               [](const Pages& s, int64_t p) {  // kn: per sub-row (even / odd slots) the largest key norm
                 float total = 0.0f;
                 for (int64_t r = 0; r < 2; ++r) {
                   float best = 0.0f;
                   for (int64_t j = r; j < 16; j += 2) {
                     float sq = 0.0f;
                     for (int64_t d = 0; d < s.D; ++d) sq += s.key(p, j)[d] * s.key(p, j)[d];
                     best = std::max(best, std::sqrt(sq));
                   }
                   total += best;
                 }
                 KeyStats k(s, p);
                 for (float m : k.mean) total += m;
                 return total;
               }},
        OpCase{"3.5", [](const Pages&, int64_t) { return 3.5f; }}),
    [](const auto& info) { return "case" + std::to_string(info.index); });

TEST(FlowSoftmax, SumsToOneOverThePagesPerElement) {
  // Softmax of a (Hg,1,1) value: per query head over the pages; summed over the heads, Hg.
  Flow flow = flow_with_score("sum(softmax(dot(q, kmean)), heads)");
  Pages pages(flow, 12, 16, 7, 4, 3);
  std::vector<int32_t> candidates = {11, 3, 0, 8, 5, 6, 2};
  FlowScratch scratch;
  std::vector<float> scores = pages.evaluate(flow, candidates, scratch);
  float total = 0.0f;
  for (float s : scores) total += s;
  expect_close(total, 4.0f, "Hg heads, each summing to 1");
  // Values from before a softmax reused after it (kept for every page), and a page-invariant input.
  Flow mixed = flow_with_score("softmax(max(dot(q, kmean), heads)) * max(dot(q, kmean), heads) + softmax(2)");
  std::vector<float> out = pages.evaluate(mixed, candidates, scratch);
  std::vector<float> logits;
  for (int32_t p : candidates) logits.push_back(combine_heads(pages, p, true, centroid_head));
  float top = *std::max_element(logits.begin(), logits.end()), z = 0.0f;
  for (float x : logits) z += std::exp(x - top);
  for (size_t i = 0; i < candidates.size(); ++i)
    expect_close(out[i], std::exp(logits[i] - top) / z * logits[i] + 1.0f / 7, fmt::format("page {}", candidates[i]));
}

TEST(FlowState, SavesSeeTheStateFromBeforeTheStep) {
  Flow flow = parse_flow("save(a, load(b))\nsave(b, load(a) + 1)\nselect topk(load(a))\n", "swap");
  Pages pages(flow, 4, 16, 3, 1, 1);
  ASSERT_EQ(flow.state, (std::vector<std::string>{"b", "a"}));
  pages.state[0] = {10, 11, 12, 13};  // b
  pages.state[1] = {20, 21, 22, 23};  // a
  std::vector<int32_t> candidates = {2, 0};
  FlowScratch scratch;
  std::vector<float> scores = pages.evaluate(flow, candidates, scratch);
  EXPECT_EQ(scores, (std::vector<float>{22, 20}));
  EXPECT_EQ(pages.state[1], (std::vector<float>{10, 21, 12, 23}));  // a = old b
  EXPECT_EQ(pages.state[0], (std::vector<float>{21, 11, 23, 13}));  // b = old a + 1
}

TEST(FlowInterpreter, ScratchIsReusedWithoutAllocation) {
  const Flow& flow = *find_builtin_flow("h2o");
  Pages pages(flow, 40, 16, 9, 2, 8);
  FlowScratch scratch;
  scratch.reserve(flow, 2, 9, 16, 40);
  const float* values = scratch.values.data();
  const float* spills = scratch.spills.data();
  std::vector<int32_t> all(40), some = {4, 2};
  for (int32_t i = 0; i < 40; ++i) all[size_t(i)] = i;
  pages.evaluate(flow, all, scratch);
  pages.evaluate(flow, some, scratch);
  pages.evaluate(flow, {}, scratch);
  EXPECT_EQ(scratch.values.data(), values);
  EXPECT_EQ(scratch.spills.data(), spills);
}

TEST(FlowInterpreter, NoCandidatesIsNoWork) {
  for (const std::string& name : builtin_flow_names()) {
    const Flow& flow = *find_builtin_flow(name);
    Pages pages(flow, 2, 16, 4, 2, 1);
    FlowScratch scratch;
    EXPECT_TRUE(pages.evaluate(flow, {}, scratch).empty()) << name;
  }
}

TEST(FlowInterpreter, RejectsInputsThatDoNotMatchTheFlow) {
  const Flow& quest = *find_builtin_flow("quest");
  Pages pages(quest, 3, 16, 4, 2, 1);
  std::vector<int32_t> candidates = {0, 1};
  std::vector<float> scores(2);
  FlowScratch scratch;
  FlowInputs in = pages.inputs(quest, candidates);
  in.fields.pop_back();
  try {
    evaluate_flow(quest, in, scores, scratch);
    ADD_FAILURE() << "no error for a missing field";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("flow 'quest' has 2 fields, the inputs give 1"));
  }
  Flow sub8 = parse_flow("field k8 = max(k, sub=8)\nselect topk(max(max(dot(q, k8), sub), heads))", "sub8");
  Pages small(sub8, 3, 16, 4, 2, 1);
  FlowInputs bad = small.inputs(sub8, candidates);
  bad.page_size = 4;  // sub=8 does not divide it
  EXPECT_THROW(evaluate_flow(sub8, bad, scores, scratch), Error);
  EXPECT_THROW(evaluate_flow(quest, pages.inputs(quest, candidates), std::span<float>(scores.data(), 1), scratch), Error);
}

// ---- select_pages --------------------------------------------------------------------------------

TEST(SelectPages, TopKBestFirstTiesInCandidateOrderNaNNever) {
  const Flow& quest = *find_builtin_flow("quest");
  std::vector<float> scores = {0.5f, kNaN, 2.0f, 0.5f, -INFINITY, 2.0f, 1.0f};
  EXPECT_EQ(select_pages(quest, scores, 3), (std::vector<int32_t>{2, 5, 6}));
  EXPECT_EQ(select_pages(quest, scores, 5), (std::vector<int32_t>{2, 5, 6, 0, 3}));
  EXPECT_EQ(select_pages(quest, scores, 7), (std::vector<int32_t>{2, 5, 6, 0, 3, 4}));  // k ≥ N: all but NaN
  EXPECT_EQ(select_pages(quest, scores, 100), (std::vector<int32_t>{2, 5, 6, 0, 3, 4}));
  EXPECT_TRUE(select_pages(quest, scores, 0).empty());
  EXPECT_TRUE(select_pages(quest, {}, 4).empty());
  std::vector<float> all_nan(5, kNaN);
  EXPECT_TRUE(select_pages(quest, all_nan, 3).empty());
}

TEST(SelectPages, ThresholdKeepsPagesAtOrAboveItBestFirst) {
  Flow flow = parse_flow("select threshold(1, 0.5)", "th");
  std::vector<float> scores = {0.2f, 0.5f, kNaN, 3.0f, 0.7f, 0.5f};
  EXPECT_EQ(select_pages(flow, scores, 10), (std::vector<int32_t>{3, 4, 1, 5}));
  EXPECT_EQ(select_pages(flow, scores, 2), (std::vector<int32_t>{3, 4}));
}

TEST(SelectPages, StreamingSelectsNothing) {
  const Flow& streaming = *find_builtin_flow("streaming");
  EXPECT_TRUE(streaming.fields.empty());
  Pages pages(streaming, 3, 16, 4, 2, 1);
  std::vector<int32_t> candidates = {0, 2};
  FlowScratch scratch;
  std::vector<float> scores = pages.evaluate(streaming, candidates, scratch);
  EXPECT_EQ(scores, (std::vector<float>{0, 0}));
  EXPECT_TRUE(select_pages(streaming, scores, 2).empty());
}

TEST(SelectPages, QuestOnRandomPagesPicksTheHighestBounds) {
  const Flow& flow = *find_builtin_flow("quest");
  Pages pages(flow, 64, 16, 17, 4, 11);
  std::vector<int32_t> candidates(64);
  for (int32_t i = 0; i < 64; ++i) candidates[size_t(i)] = 63 - i;
  FlowScratch scratch;
  std::vector<float> scores = pages.evaluate(flow, candidates, scratch);
  std::vector<int32_t> picked = select_pages(flow, scores, 8);
  ASSERT_EQ(picked.size(), 8u);
  std::vector<float> sorted = scores;
  std::sort(sorted.rbegin(), sorted.rend());
  for (size_t i = 0; i < picked.size(); ++i) EXPECT_EQ(scores[size_t(picked[i])], sorted[i]);
}

}  // namespace
}  // namespace vortex
