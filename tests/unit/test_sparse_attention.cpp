// Sparse attention on the CPU backend: the planner's page lists (page boundaries, degenerate
// specs, budget rounding), the per-layer selection (list sizes, threshold, flow state, thread
// count), the sparse kernel against dense attention under the materialised mask, and end to end
// through the engine — a budget covering every page gives exactly dense output for every built-in
// flow and page size, a small budget does not, reused pages behave as fresh ones, and sparse
// scoring reproduces sparse generation (the accuracy harness's α relies on it).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <random>

#include <omp.h>

#include "backend/cpu/attention.h"
#include "common/test_util.h"
#include "core/error.h"
#include "io/hf_config.h"
#include "runtime/engine_access.h"
#include "sparse/attention_spec.h"
#include "sparse/page_selection.h"
#include "sparse/sparse_attention.h"
#include "vortex/engine.h"
#include "vortex/flow.h"

namespace vortex {
namespace {

using ::testing::ElementsAre;

TEST(SparsePlanner, KeepsSinkWindowAndOwnPageAndCandidatesTheRest) {
  auto a = resolve_attention("quest:budget=32,sink=16,window=40", 16);
  QueryPages q;
  plan_query_pages(*a, 200, q);  // pages 0..12; position 200 is in page 12
  EXPECT_THAT(q.always, ElementsAre(0, 10, 11, 12));  // sink page 0; window 161..200 → pages 10..12
  EXPECT_THAT(q.candidates, ElementsAre(1, 2, 3, 4, 5, 6, 7, 8, 9));
  EXPECT_EQ(q.k, 2);
  plan_query_pages(*a, 20, q);  // only pages 0 and 1: the sink and the query's own page
  EXPECT_THAT(q.always, ElementsAre(0, 1));
  EXPECT_TRUE(q.candidates.empty());
  auto s = resolve_attention("streaming:sink=4,window=1", 16);
  plan_query_pages(*s, 100, q);  // window of one token: the own page only
  EXPECT_THAT(q.always, ElementsAre(0, 6));
  EXPECT_EQ(q.candidates.size(), 5u);
  EXPECT_EQ(q.k, 0);
}

// Page-boundary positions and degenerate specs: the own page (partly filled or full) is always
// kept, a sink longer than the context never repeats a page, window 0 keeps the own page only,
// a window covering everything leaves no candidates, and budget 0 selects none.
TEST(SparsePlanner, EdgeCases) {
  QueryPages q;
  auto quest = resolve_attention("quest:budget=32,sink=16,window=16", 16);
  plan_query_pages(*quest, 64, q);  // position % P == 0: its page holds one token, the window reaches page 3
  EXPECT_THAT(q.always, ElementsAre(0, 3, 4));
  EXPECT_THAT(q.candidates, ElementsAre(1, 2));
  plan_query_pages(*quest, 79, q);  // position % P == P - 1: its page is full, the window is that page
  EXPECT_THAT(q.always, ElementsAre(0, 4));
  EXPECT_THAT(q.candidates, ElementsAre(1, 2, 3));
  plan_query_pages(*quest, 0, q);  // the first token: its own page only
  EXPECT_THAT(q.always, ElementsAre(0));
  EXPECT_TRUE(q.candidates.empty());
  auto long_sink = resolve_attention("quest:budget=32,sink=1000", 16);
  plan_query_pages(*long_sink, 40, q);  // the sink covers the whole context: every page once
  EXPECT_THAT(q.always, ElementsAre(0, 1, 2));
  EXPECT_TRUE(q.candidates.empty());
  auto huge_sink = resolve_attention("quest:budget=32,sink=9223372036854775807", 16);  // sink + P - 1 would overflow
  plan_query_pages(*huge_sink, 40, q);
  EXPECT_THAT(q.always, ElementsAre(0, 1, 2));
  EXPECT_TRUE(q.candidates.empty());
  auto no_window = resolve_attention("quest:budget=0", 16);
  plan_query_pages(*no_window, 50, q);  // window 0, sink 0: the own page; budget 0: k = 0
  EXPECT_THAT(q.always, ElementsAre(3));
  EXPECT_THAT(q.candidates, ElementsAre(0, 1, 2));
  EXPECT_EQ(q.k, 0);
  auto wide = resolve_attention("quest:budget=16,window=100000", 16);
  plan_query_pages(*wide, 1000, q);
  EXPECT_EQ(q.always.size(), 63u);
  EXPECT_TRUE(q.candidates.empty());
  auto page32 = resolve_attention("quest:budget=64,page=32,sink=1,window=33", 32);
  plan_query_pages(*page32, 200, q);  // pages of 32: position 200 in page 6, window 168..200 → pages 5..6
  EXPECT_THAT(q.always, ElementsAre(0, 5, 6));
  EXPECT_THAT(q.candidates, ElementsAre(1, 2, 3, 4));
  EXPECT_EQ(q.k, 2);
}

// For random specs and positions: always-kept and candidate pages partition the pages 0..own,
// ascending; the own page, the sink's pages and the window's pages are always kept.
TEST(SparsePlanner, AlwaysAndCandidatesPartitionThePages) {
  std::mt19937 rng(11);
  QueryPages q;
  for (int trial = 0; trial < 2000; ++trial) {
    const int64_t P = int64_t{16} << (rng() % 3), sink = rng() % 3 == 0 ? 0 : rng() % 200;
    const int64_t window = rng() % 3 == 0 ? 0 : rng() % 300, position = rng() % 2000;
    auto a = resolve_attention(fmt::format("quest:budget={},sink={},window={}", rng() % 500, sink, window), P);
    plan_query_pages(*a, position, q);
    const QueryPageCounts counts = count_query_pages(*a, position);
    ASSERT_EQ(counts.always, static_cast<int64_t>(q.always.size())) << a->text << " at " << position;
    ASSERT_EQ(counts.candidates, static_cast<int64_t>(q.candidates.size())) << a->text << " at " << position;
    ASSERT_EQ(counts.k, q.k);
    const int64_t own = position / P;
    std::vector<int32_t> all = q.always;
    all.insert(all.end(), q.candidates.begin(), q.candidates.end());
    std::sort(all.begin(), all.end());
    ASSERT_EQ(static_cast<int64_t>(all.size()), own + 1) << a->text << " at " << position;
    for (int64_t i = 0; i <= own; ++i) ASSERT_EQ(all[static_cast<size_t>(i)], i);
    ASSERT_TRUE(std::is_sorted(q.always.begin(), q.always.end()));
    ASSERT_TRUE(std::is_sorted(q.candidates.begin(), q.candidates.end()));
    auto kept = [&](int64_t token) {
      return std::find(q.always.begin(), q.always.end(), token / P) != q.always.end();
    };
    ASSERT_TRUE(kept(position));
    for (int64_t t = 0; t < std::min(sink, position + 1); ++t) ASSERT_TRUE(kept(t)) << a->text << " sink token " << t;
    for (int64_t t = std::max<int64_t>(0, position - window + 1); t <= position; ++t) ASSERT_TRUE(kept(t)) << a->text;
  }
}

// A fraction budget is the ceiling of fraction × length in exact arithmetic: 7% of 900 tokens is
// 63 tokens (3 pages of 16), although 0.07 * 900 is 63.00000000000001 in doubles.
TEST(SparsePlanner, FractionBudgetsRoundUpExactly) {
  auto a = resolve_attention("quest:budget=7%", 16);
  EXPECT_EQ(a->budget.budget_tokens(900), 63);
  EXPECT_EQ(a->pages_to_select(900), 3);
  EXPECT_EQ(a->budget.budget_tokens(901), 64);  // 63.07 → 64
  for (int64_t percent = 1; percent <= 100; ++percent) {
    auto f = resolve_attention(fmt::format("quest:budget={}%", percent), 16);
    for (int64_t length = 1; length < 3000; length += 7)
      ASSERT_EQ(f->budget.budget_tokens(length), (percent * length + 99) / 100) << percent << "% of " << length;
  }
}

// A KV cache of one layer holding `tokens` random keys in scattered pages, its summaries kept as
// the CPU model keeps them (on_append after each append), and the chunk's sparse queries.
struct SelectionFixture {
  static constexpr int64_t H = 8, G = 4, D = 8, P = 16;
  KvCache cache{{.num_layers = 1, .num_pages = 40, .num_kv_heads = G, .page_size = P, .head_dim = D}};
  PageSummaryStore summaries{cache.shape()};
  std::vector<int32_t> page_table;  // scattered page ids
  int64_t first = 0;                // queries at positions first..tokens-1
  std::vector<QueryPages> queries;  // (T')
  std::vector<float> q;             // (T', H, D)

  // `early`: registered before the keys are appended (summarised as pages fill), else when selecting.
  SelectionFixture(int64_t tokens, int64_t first_query, const Flow* early = nullptr) : first(first_query) {
    if (early) summaries.register_flow(*early);
    for (int32_t i = 0; i < 40; ++i) page_table.push_back((i * 7 + 3) % 40);
    auto k = test::random_floats(static_cast<size_t>(tokens * G * D), 71, -2.0f, 2.0f);
    auto v = test::random_floats(static_cast<size_t>(tokens * G * D), 72);
    for (int64_t start = 0; start < tokens; start += 37) {  // appended in uneven chunks
      const int64_t n = std::min<int64_t>(37, tokens - start);
      cpu::append_kv(cache, 0, page_table, start, n, k.data() + start * G * D, v.data() + start * G * D);
      summaries.on_append(cache, 0, page_table, start, n);
    }
    queries.resize(static_cast<size_t>(tokens - first));
    q = test::random_floats(queries.size() * H * D, 73, -2.0f, 2.0f);
  }
  void select(const SparseAttention& a, std::vector<std::vector<int32_t>>& lists) {
    summaries.register_flow(*a.flow);
    for (size_t t = 0; t < queries.size(); ++t) plan_query_pages(a, first + static_cast<int64_t>(t), queries[t]);
    LayerSelectionInput in{.attention = &a, .queries = queries, .q = q.data(), .num_heads = H, .page_table = &page_table, .layer = 0};
    select_layer_pages(in, cache, summaries, lists);
  }
};

// Each (query, kv head) attends exactly its always-kept pages plus min(k, candidates) of its
// candidates, ascending and without repeats: the count of pages a decode step reads.
TEST(SparseSelection, ListsHoldTheKeptPagesAndKCandidates) {
  for (const char* spec : {"quest:budget=48,sink=16,window=20", "h2o:budget=32,window=16", "oracle:budget=16",
                           "quest_gqa:budget=100000", "centroid:budget=0,sink=40"}) {
    SelectionFixture f(500, 470);
    auto a = resolve_attention(spec, 16);
    std::vector<std::vector<int32_t>> lists;
    f.select(*a, lists);
    ASSERT_EQ(lists.size(), f.queries.size() * SelectionFixture::G);
    for (size_t t = 0; t < f.queries.size(); ++t)
      for (int64_t g = 0; g < SelectionFixture::G; ++g) {
        const QueryPages& query = f.queries[t];
        const std::vector<int32_t>& list = lists[t * SelectionFixture::G + static_cast<size_t>(g)];
        const int64_t n = static_cast<int64_t>(query.candidates.size());
        EXPECT_EQ(static_cast<int64_t>(list.size()), static_cast<int64_t>(query.always.size()) + std::min(query.k, n)) << spec;
        EXPECT_TRUE(std::adjacent_find(list.begin(), list.end(), std::greater_equal<>()) == list.end()) << spec;
        EXPECT_TRUE(std::includes(list.begin(), list.end(), query.always.begin(), query.always.end())) << spec;
      }
  }
}

// Summaries of a flow registered after its pages filled (made on first use) select the same pages
// as summaries made as the pages filled.
TEST(SparseSelection, LateRegisteredFlowsSelectAsEarlyOnes) {
  for (const char* spec : {"quest:budget=48,sink=16", "meanstd:budget=32,window=16", "oracle:budget=16", "centroid_gqa:budget=64"}) {
    auto a = resolve_attention(spec, 16);
    SelectionFixture early(500, 440, a->flow.get()), late(500, 440);
    std::vector<std::vector<int32_t>> from_early, from_late;
    early.select(*a, from_early);
    late.select(*a, from_late);
    EXPECT_EQ(from_early, from_late) << spec;
  }
}

// A threshold flow keeps only pages scoring at least the threshold, even when the budget would
// allow every candidate: the budget caps the selection, it does not replace it.
TEST(SparseSelection, ThresholdAppliesWhenTheBudgetCoversEveryCandidate) {
  auto path = test::scratch_dir("sparse_threshold") / "never.flow";
  std::ofstream(path) << "field kmean = mean(k)\nselect threshold(max(dot(q, kmean), heads), 1e9)\n";
  for (const char* budget : {"16", "100000"}) {
    SelectionFixture f(300, 290);
    auto a = resolve_attention(fmt::format("flow:{},budget={},window=16", path.string(), budget), 16);
    std::vector<std::vector<int32_t>> lists;
    f.select(*a, lists);
    for (size_t t = 0; t < f.queries.size(); ++t)
      for (int64_t g = 0; g < SelectionFixture::G; ++g)
        EXPECT_EQ(lists[t * SelectionFixture::G + static_cast<size_t>(g)], f.queries[t].always) << "budget " << budget;
  }
}

// h2o accumulates attention mass at every sparse step, also while the budget still covers every
// candidate (the list is then every page): after one query each head's masses sum to 1.
TEST(SparseSelection, H2oAccumulatesWhileTheBudgetCoversEveryCandidate) {
  SelectionFixture f(200, 199);
  auto a = resolve_attention("h2o:budget=100000,window=16", 16);
  std::vector<std::vector<int32_t>> lists;
  f.select(*a, lists);
  const QueryPages& query = f.queries[0];
  ASSERT_GT(query.candidates.size(), 3u);
  for (int64_t g = 0; g < SelectionFixture::G; ++g) {
    EXPECT_EQ(lists[static_cast<size_t>(g)].size(), query.always.size() + query.candidates.size());
    const float* acc = f.summaries.state_base(*a->flow, 0, 0, g);
    double total = 0.0;
    for (int32_t i : query.candidates) total += acc[f.page_table[static_cast<size_t>(i)] * f.summaries.state_page_stride()];
    EXPECT_NEAR(total, 1.0, 1e-5) << "kv head " << g;
  }
}

// Heads run in parallel: the page lists and the saved state do not depend on the thread count.
TEST(SparseSelection, IndependentOfTheThreadCount) {
  auto run = [](int threads, std::vector<float>& state) {
    const int saved = omp_get_max_threads();
    omp_set_num_threads(threads);
    SelectionFixture f(400, 330);
    auto a = resolve_attention("h2o:budget=64,sink=16,window=16", 16);
    std::vector<std::vector<int32_t>> lists;
    f.select(*a, lists);
    omp_set_num_threads(saved);
    state.clear();
    for (int64_t g = 0; g < SelectionFixture::G; ++g)
      for (int32_t page : f.page_table) state.push_back(f.summaries.state_base(*a->flow, 0, 0, g)[page * SelectionFixture::G]);
    return lists;
  };
  std::vector<float> state1, state4;
  auto one = run(1, state1);
  auto four = run(4, state4);
  EXPECT_EQ(one, four);
  EXPECT_EQ(state1, state4);
}

// A spec of a flow file written for the test.
std::shared_ptr<const SparseAttention> flow_spec(const std::string& name, const std::string& text, const std::string& params) {
  const auto path = test::scratch_dir("sparse_stages") / (name + ".flow");
  std::ofstream(path) << text;
  return resolve_attention(fmt::format("flow:{},{}", path.string(), params), 16);
}

// Stages: a stage that keeps every candidate changes nothing; a stage on the selection's own score
// keeps the same pages as no stage (its survivors hold the final top k); a stage on the opposite
// score confines the selection to the c·k pages that score worst.
TEST(SparseSelection, StagesNarrowTheCandidatesBeforeTheSelection) {
  const std::string fields = "field kmax = max(k)\nfield kmin = min(k)\nfield kmean = mean(k)\n";
  const std::string score = "max(sum(max(q * kmax, q * kmin), feat), heads)";
  const std::string params = "budget=48,sink=16,window=16";
  auto plain = flow_spec("plain", fields + "select topk(" + score + ")\n", params);
  auto wide = flow_spec("wide", fields + "stage topk(max(dot(q, kmean), heads), 1000)\nselect topk(" + score + ")\n", params);
  auto same = flow_spec("same", fields + "stage topk(" + score + ", 2)\nselect topk(" + score + ")\n", params);
  auto worst = flow_spec("worst", fields + "stage topk(-" + score + ", 2)\nselect topk(" + score + ")\n", params);
  std::vector<std::vector<int32_t>> want, got;
  SelectionFixture f(600, 560);
  f.select(*plain, want);
  f.select(*wide, got);
  EXPECT_EQ(got, want);
  f.select(*same, got);
  EXPECT_EQ(got, want);
  f.select(*worst, got);
  EXPECT_NE(got, want);
  const Flow stage0 = *worst->passes.front();
  FlowScratch scratch;
  for (size_t t = 0; t < f.queries.size(); ++t)
    for (int64_t g = 0; g < SelectionFixture::G; ++g) {
      const QueryPages& query = f.queries[t];
      std::vector<int32_t> ids;
      for (int32_t i : query.candidates) ids.push_back(f.page_table[static_cast<size_t>(i)]);
      constexpr int64_t group = SelectionFixture::H / SelectionFixture::G;
      FlowInputs in{.q = f.q.data() + (static_cast<int64_t>(t) * SelectionFixture::H + g * group) * SelectionFixture::D, .group = group,
                    .head_dim = SelectionFixture::D, .page_size = 16, .pages = ids, .fields = {}, .state_base = {}};
      for (size_t i = 0; i < stage0.fields.size(); ++i) in.fields.push_back(f.summaries.field_view(stage0, i, 0, g));
      std::vector<float> scores(ids.size());
      evaluate_flow(stage0, in, scores, scratch);
      std::vector<int32_t> allowed = query.always;
      for (int32_t i : select_pages(stage0, scores, 2 * query.k)) allowed.push_back(query.candidates[static_cast<size_t>(i)]);
      std::sort(allowed.begin(), allowed.end());
      const std::vector<int32_t>& list = got[t * SelectionFixture::G + static_cast<size_t>(g)];
      EXPECT_TRUE(std::includes(allowed.begin(), allowed.end(), list.begin(), list.end())) << "query " << t << " head " << g;
      EXPECT_EQ(list.size(), query.always.size() + static_cast<size_t>(std::min<int64_t>(query.k, static_cast<int64_t>(query.candidates.size()))));
    }
}

// Selection recall through the engine: the oracle's own selection has recall 1 and holds the
// oracle's mass; quest's does not always; every selection that chose is measured once per layer
// and kv head; masses are shares of 1; dense attention measures nothing.
TEST(SelectionRecall, OracleIsPerfectAndQuestIsNot) {
  auto engine = Engine::open(test::data_dir() / "models" / "qwen3-f32", EngineOptions{.max_context = 1024});
  const int64_t vocab = EngineAccess::config(*engine).vocab_size;
  std::mt19937 rng(21);
  std::vector<int32_t> tokens(400);
  for (auto& t : tokens) t = static_cast<int32_t>(rng() % static_cast<uint32_t>(vocab));
  auto measure = [&](const std::string& spec) {
    ScoreOptions o;
    o.attention = spec;
    o.sparse_from = 300;
    o.selection_recall = true;
    return engine->score(tokens, o).selection;
  };
  const auto oracle = measure("oracle:budget=64,sink=16,window=16");
  const int64_t layers = EngineAccess::config(*engine).num_layers, G = EngineAccess::config(*engine).num_kv_heads;
  ASSERT_EQ(static_cast<int64_t>(oracle.size()), 100 * layers * G);  // queries 300..399
  // The oracle flow and the measurement rank pages by the same q·k, summed by separate loops: a
  // near-tie at the k-th page may fall either way, so allow a rare miss.
  int64_t perfect = 0;
  for (const SelectionSample& s : oracle) {
    perfect += s.recall == 1.0f && s.mass == s.oracle_mass;
    EXPECT_GE(s.recall, 0.75f);
    EXPECT_EQ(s.k, 4);
    EXPECT_GT(s.mass, 0.0f);
    EXPECT_LE(s.mass, 1.0f);
    EXPECT_EQ(s.stage_recall, 1.0f);
  }
  EXPECT_GE(perfect, static_cast<int64_t>(oracle.size()) * 99 / 100);
  EXPECT_TRUE(std::is_sorted(oracle.begin(), oracle.end(), [](const SelectionSample& a, const SelectionSample& b) {
    return std::tie(a.position, a.layer, a.kv_head) < std::tie(b.position, b.layer, b.kv_head);
  }));
  const auto quest = measure("quest:budget=64,sink=16,window=16");
  ASSERT_EQ(quest.size(), oracle.size());
  double recall = 0.0;
  for (const SelectionSample& s : quest) recall += s.recall;
  EXPECT_LT(recall / static_cast<double>(quest.size()), 0.999);
  EXPECT_TRUE(measure("dense").empty());
  EXPECT_TRUE(measure("quest:budget=100000").empty());  // the budget covers every page: nothing chosen
}

// The sparse kernel over random page lists equals dense attention with every position outside the
// listed pages masked out (computed here directly, in double).
TEST(SparseKernel, EqualsDenseUnderTheMaterialisedMask) {
  const int64_t H = 6, G = 2, D = 17, P = 16, n = 150, group = H / G;
  KvCache cache({.num_layers = 1, .num_pages = 12, .num_kv_heads = G, .page_size = P, .head_dim = D});
  std::vector<int32_t> pages = {9, 3, 11, 0, 5, 7, 1, 2, 10, 4};
  auto q = test::random_floats(static_cast<size_t>(n * H * D), 61, -2.0f, 2.0f);
  auto k = test::random_floats(static_cast<size_t>(n * G * D), 62, -2.0f, 2.0f);
  auto v = test::random_floats(static_cast<size_t>(n * G * D), 63);
  cpu::append_kv(cache, 0, pages, 0, n, k.data(), v.data());
  const int64_t first = 100;  // tokens 100..149 are sparse
  std::mt19937 rng(7);
  std::vector<std::vector<int32_t>> lists;
  for (int64_t t = first; t < n; ++t)
    for (int64_t g = 0; g < G; ++g) {
      std::vector<int32_t> list;
      for (int32_t i = 0; i < static_cast<int32_t>(t / P); ++i)
        if (rng() % 3 == 0) list.push_back(i);
      list.push_back(static_cast<int32_t>(t / P));  // the own page, always
      lists.push_back(list);
    }
  std::vector<float> out(static_cast<size_t>(n * H * D), std::nanf(""));
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  cpu::AttentionChunk chunk{.q = q.data(), .tokens = n, .start = 0, .page_table = &pages, .out = out.data(),
                            .page_lists = &lists, .first_sparse = first};
  cpu::paged_attention(cache, 0, chunk, H, scale);
  double worst = 0.0;
  for (int64_t t = 0; t < n; ++t)
    for (int64_t h = 0; h < H; ++h) {
      const int64_t g = h / group;
      std::vector<bool> keep(static_cast<size_t>(t + 1), t < first);
      if (t >= first)
        for (int32_t i : lists[static_cast<size_t>((t - first) * G + g)])
          for (int64_t j = i * P; j < std::min((i + 1) * P, t + 1); ++j) keep[static_cast<size_t>(j)] = true;
      double mx = -INFINITY, den = 0.0;
      std::vector<double> s(static_cast<size_t>(t + 1), 0.0);
      for (int64_t j = 0; j <= t; ++j) {
        if (!keep[static_cast<size_t>(j)]) continue;
        double dot = 0.0;
        for (int64_t d = 0; d < D; ++d) dot += double(q[size_t((t * H + h) * D + d)]) * k[size_t((j * G + g) * D + d)];
        s[size_t(j)] = dot * scale;
        mx = std::max(mx, s[size_t(j)]);
      }
      for (int64_t j = 0; j <= t; ++j)
        if (keep[size_t(j)]) den += s[size_t(j)] = std::exp(s[size_t(j)] - mx);
      for (int64_t d = 0; d < D; ++d) {
        double acc = 0.0;
        for (int64_t j = 0; j <= t; ++j)
          if (keep[size_t(j)]) acc += s[size_t(j)] * v[size_t((j * G + g) * D + d)];
        worst = std::max(worst, std::abs(acc / den - out[size_t((t * H + h) * D + d)]));
      }
    }
  EXPECT_LT(worst, 1e-5);
}

// rest= estimates: where each page's values are one vector (so a page's mean value is exact), the
// exact estimate gives dense attention; where each page's keys are one vector too, so does the mean
// estimate; int4 proxies stay within their rounding. The pages the list leaves out are those before
// its last page; a list of every page is dense under any estimate.
TEST(SparseKernel, RestEstimatesRecoverDenseWhereTheyAreExact) {
  const int64_t H = 4, G = 2, D = 16, P = 8, n = 64;
  std::vector<int32_t> pages = {3, 0, 7, 1, 6, 2, 5, 4};
  const auto q = test::random_floats(static_cast<size_t>(H * D), 71, -2.0f, 2.0f);
  auto run = [&](bool constant_keys, RestEstimate rest, bool every_page) {
    KvCache cache({.num_layers = 1, .num_pages = 8, .num_kv_heads = G, .page_size = P, .head_dim = D});
    auto k = test::random_floats(static_cast<size_t>(n * G * D), 72, -1.0f, 1.0f);
    auto v = test::random_floats(static_cast<size_t>(n * G * D), 73);
    for (int64_t j = 0; j < n; ++j)  // every row of a page takes its first row's values (and keys)
      for (int64_t x = 0; x < G * D; ++x) {
        const auto first = static_cast<size_t>((j / P * P) * G * D + x), at = static_cast<size_t>(j * G * D + x);
        v[at] = v[first];
        if (constant_keys) k[at] = k[first];
      }
    cpu::append_kv(cache, 0, pages, 0, n, k.data(), v.data());
    PageSummaryStore store(cache.shape());
    store.register_rest(rest);
    store.ensure_rest(cache, 0, rest, pages);
    std::vector<float> dense_q(static_cast<size_t>(n * H * D), 0.0f);  // only the last token's query matters
    std::copy(q.begin(), q.end(), dense_q.begin() + (n - 1) * H * D);
    std::vector<float> dense(dense_q.size()), sparse(dense_q.size());
    cpu::paged_attention(cache, 0, {.q = dense_q.data(), .tokens = n, .start = 0, .page_table = &pages, .out = dense.data()}, H, 0.25f);
    std::vector<std::vector<int32_t>> lists;
    for (int64_t g = 0; g < G; ++g) lists.push_back(every_page ? std::vector<int32_t>{0, 1, 2, 3, 4, 5, 6, 7} : std::vector<int32_t>{0, 5, 7});
    cpu::paged_attention(cache, 0, {.q = dense_q.data() + (n - 1) * H * D, .tokens = 1, .start = n - 1, .page_table = &pages,
                                     .out = sparse.data(), .page_lists = &lists, .first_sparse = 0, .rest = rest, .summaries = &store},
                         H, 0.25f);
    double worst = 0.0;
    for (int64_t x = 0; x < H * D; ++x) worst = std::max(worst, double(std::abs(sparse[size_t(x)] - dense[size_t((n - 1) * H * D + x)])));
    return worst;
  };
  EXPECT_LT(run(false, RestEstimate::kExact, false), 1e-5);
  EXPECT_LT(run(true, RestEstimate::kMean, false), 1e-5);
  EXPECT_LT(run(false, RestEstimate::kProxy, false), 0.05);
  EXPECT_GT(run(false, RestEstimate::kDrop, false), 0.05) << "dropping five of eight pages changes the output";
  for (RestEstimate rest : {RestEstimate::kDrop, RestEstimate::kMean, RestEstimate::kProxy, RestEstimate::kExact})
    EXPECT_LT(run(false, rest, true), 1e-5);
}

// A one-layer cache of 8 pages of 8 rows (page table {3, 0, 7, 1, 6, 2, 5, 4}, so page index i sits
// in another physical page) whose keys are zero except, in kv head g, the rows of the page indices
// aligned[g], which point along that head's query with length 8: those rows hold nearly all of the
// head's softmax mass. Random values; int4 key proxies summarised for the estimates.
struct AlignedKeys {
  static constexpr int64_t H = 2, G = 2, D = 16, P = 8, n = 64;
  std::vector<int32_t> pages = {3, 0, 7, 1, 6, 2, 5, 4};
  std::vector<float> q;
  KvCache cache{{.num_layers = 1, .num_pages = 8, .num_kv_heads = G, .page_size = P, .head_dim = D}};
  PageSummaryStore store{cache.shape()};

  AlignedKeys(uint32_t seed, const std::vector<int32_t>& head0, const std::vector<int32_t>& head1)
      : q(test::random_floats(static_cast<size_t>(H * D), seed, -2.0f, 2.0f)) {
    std::vector<float> k(static_cast<size_t>(n * G * D), 0.0f);
    const auto v = test::random_floats(static_cast<size_t>(n * G * D), seed + 1);
    for (int64_t j = 0; j < n; ++j)
      for (int64_t g = 0; g < G; ++g) {
        const auto& aligned = g == 0 ? head0 : head1;
        if (std::find(aligned.begin(), aligned.end(), static_cast<int32_t>(j / P)) == aligned.end()) continue;
        double norm = 0.0;
        for (int64_t d = 0; d < D; ++d) norm += double(q[size_t(g * D + d)]) * q[size_t(g * D + d)];
        for (int64_t d = 0; d < D; ++d) k[size_t((j * G + g) * D + d)] = static_cast<float>(8.0 * q[size_t(g * D + d)] / std::sqrt(norm));
      }
    cpu::append_kv(cache, 0, pages, 0, n, k.data(), v.data());
    store.register_rest(RestEstimate::kProxy);
    store.ensure_rest(cache, 0, RestEstimate::kProxy, pages);
  }

  // The last position's attention: over `lists` (one per kv head), with dense_below or cover.
  std::vector<float> attend(const std::vector<std::vector<int32_t>>& lists, double dense_below, double cover,
                            cpu::SparseHeadCounts& counts) {
    std::vector<float> out(static_cast<size_t>(H * D));
    cpu::paged_attention(cache, 0, {.q = q.data(), .tokens = 1, .start = n - 1, .page_table = &pages, .out = out.data(),
                                    .page_lists = &lists, .first_sparse = 0, .dense_below = dense_below, .cover = cover,
                                    .estimate = dense_below > 0.0 || cover > 0.0 ? RestEstimate::kProxy : RestEstimate::kDrop,
                                    .summaries = &store, .counts = &counts},
                         H, 0.25f);
    return out;
  }
  std::vector<float> head(const std::vector<float>& x, int64_t h) const {
    return std::vector<float>(x.begin() + h * D, x.begin() + (h + 1) * D);
  }
};

// dense_below: a (token, kv head) whose list holds less than the threshold of a head's estimated
// mass attends every page (exactly dense attention), the others keep their lists (exactly what they
// give without dense_below). Kv head 0's list holds the only large scores (coverage ~1), kv head
// 1's list none of them (coverage ~0); each sparse attention is counted, and each made dense.
TEST(SparseKernel, DenseBelowAttendsEveryPageWhereTheListHoldsTooLittle) {
  const std::vector<int32_t> list = {0, 5, 7};  // leaves out pages 1, 2, 3, 4 and 6
  AlignedKeys c(81, list, {1, 2, 3, 4, 6});      // kv head 1: the left-out rows align with q
  const std::vector<std::vector<int32_t>> lists = {list, list};
  cpu::SparseHeadCounts none, half, all, reference;
  const std::vector<float> kept = c.attend(lists, 0.0, 0.0, none), mixed = c.attend(lists, 0.5, 0.0, half),
                           every = c.attend(lists, 1.0, 0.0, all);
  const std::vector<float> dense = c.attend({{0, 1, 2, 3, 4, 5, 6, 7}, {0, 1, 2, 3, 4, 5, 6, 7}}, 0.0, 0.0, reference);
  EXPECT_NE(c.head(kept, 1), c.head(dense, 1)) << "the list changes kv head 1's output (the test of the test)";
  EXPECT_EQ(c.head(mixed, 0), c.head(kept, 0)) << "kv head 0's list holds nearly all its mass: it stays sparse";
  EXPECT_EQ(c.head(mixed, 1), c.head(dense, 1)) << "kv head 1's list holds almost none: it attends every page";
  EXPECT_EQ(every, dense);
  EXPECT_EQ(none.sparse.load(), 2);
  EXPECT_EQ(none.dense.load(), 0);
  EXPECT_EQ(half.dense.load(), 1);
  EXPECT_EQ(all.dense.load(), 2);
}

// cover: a (token, kv head) whose list holds less than the threshold of a head's estimated mass
// attends its list and the left-out pages that hold the most, until they hold the threshold. Kv
// head 0's list holds the only large scores (it keeps its list); kv head 1's large scores lie in
// two left-out pages, 2 and 4, each about half its mass: 0.3 adds one of them, 0.9 both (exactly
// the attention over the list with them), 1 every page in both kv heads (exactly dense).
TEST(SparseKernel, CoverAddsTheLeftOutPagesThatHoldTheMass) {
  const std::vector<int32_t> list = {0, 5, 7};  // leaves out pages 1, 2, 3, 4 and 6
  AlignedKeys c(91, list, {2, 4});
  const std::vector<std::vector<int32_t>> lists = {list, list};
  cpu::SparseHeadCounts none, some, most, all, reference;
  const std::vector<float> kept = c.attend(lists, 0.0, 0.0, none), one = c.attend(lists, 0.0, 0.3, some),
                           both = c.attend(lists, 0.0, 0.9, most), every = c.attend(lists, 0.0, 1.0, all);
  const std::vector<float> with_heavy = c.attend({list, {0, 2, 4, 5, 7}}, 0.0, 0.0, reference);
  const std::vector<float> dense = c.attend({{0, 1, 2, 3, 4, 5, 6, 7}, {0, 1, 2, 3, 4, 5, 6, 7}}, 0.0, 0.0, reference);
  EXPECT_NE(c.head(kept, 1), c.head(with_heavy, 1)) << "pages 2 and 4 change kv head 1's output (the test of the test)";
  for (const auto& out : {one, both}) EXPECT_EQ(c.head(out, 0), c.head(kept, 0)) << "kv head 0's list holds its mass";
  EXPECT_EQ(c.head(both, 1), c.head(with_heavy, 1));
  EXPECT_EQ(every, dense);
  EXPECT_NE(c.head(one, 1), c.head(kept, 1));
  EXPECT_NE(c.head(one, 1), c.head(with_heavy, 1));
  EXPECT_EQ(none.sparse.load(), 2);
  EXPECT_EQ(none.pages.load(), 6);
  EXPECT_EQ(none.covered.load(), 0);
  EXPECT_EQ(some.covered.load(), 1);
  EXPECT_EQ(some.cover_pages.load(), 1);
  EXPECT_EQ(most.cover_pages.load(), 2);
  EXPECT_EQ(all.covered.load(), 2) << "below a share of 1 every list leaving a page out grows";
  EXPECT_EQ(all.cover_pages.load(), 10) << "every left-out page, in both kv heads";
  EXPECT_EQ(all.dense.load(), 0) << "cover is not dense_below";
}

std::unique_ptr<Engine> tiny_engine() {
  return Engine::open(test::data_dir() / "models" / "qwen3-f32", EngineOptions{.max_context = 1024});
}

ScoreOptions options(std::string attention, int64_t sparse_from, bool full, int32_t top_n = 0) {
  ScoreOptions o;
  o.attention = std::move(attention);
  o.sparse_from = sparse_from;
  o.full_logprobs = full;
  o.top_n = top_n;
  return o;
}

std::vector<int32_t> random_tokens(int64_t n, int64_t vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> out(static_cast<size_t>(n));
  for (auto& t : out) t = static_cast<int32_t>(rng() % static_cast<uint32_t>(vocab));
  return out;
}

// Every built-in flow with a budget covering every page computes exactly the dense log-probs.
TEST(SparseEngine, BudgetCoveringEveryPageIsExactlyDense) {
  auto engine = tiny_engine();
  auto tokens = random_tokens(300, EngineAccess::config(*engine).vocab_size, 3);
  ScoreResult dense = engine->score(tokens, options("", 0, true));
  for (const std::string& name : builtin_flow_names()) {
    const std::string spec = name == "streaming" ? "streaming:sink=16,window=100000" : name + ":budget=100000";
    ScoreResult sparse = engine->score(tokens, options(spec, 0, true));
    ASSERT_EQ(sparse.full.size(), dense.full.size());
    EXPECT_TRUE(std::equal(sparse.full.begin(), sparse.full.end(), dense.full.begin())) << spec;
  }
}

// dense_below=1 makes every sparse attention that leaves a page out dense, and cover=1 adds every
// page it leaves out: the log-probs are exactly dense's, for a staged flow (auto) and a plain one.
TEST(SparseEngine, DenseBelowOrCoverOneIsExactlyDense) {
  auto engine = tiny_engine();
  auto tokens = random_tokens(300, EngineAccess::config(*engine).vocab_size, 6);
  ScoreResult dense = engine->score(tokens, options("", 0, true));
  for (const char* spec : {"auto:budget=32,dense_below=1", "quest:budget=32,sink=16,window=32,dense_below=1",
                           "auto:budget=32,cover=1", "quest:budget=32,sink=16,window=32,cover=1"}) {
    ScoreResult sparse = engine->score(tokens, options(spec, 100, true));
    ASSERT_EQ(sparse.full.size(), dense.full.size());
    EXPECT_TRUE(std::equal(sparse.full.begin(), sparse.full.end(), dense.full.begin())) << spec;
  }
}

// cover below 1 changes the log-probs (the test of the test) but keeps them closer to dense than
// the list alone.
TEST(SparseEngine, CoverBringsTheLogProbsTowardsDense) {
  auto engine = tiny_engine();
  auto tokens = random_tokens(300, EngineAccess::config(*engine).vocab_size, 7);
  ScoreResult dense = engine->score(tokens, options("", 0, false));
  auto distance = [&](const char* spec) {
    ScoreResult sparse = engine->score(tokens, options(spec, 100, false));
    double sum = 0.0;
    for (size_t i = 0; i < dense.logprobs.size(); ++i) sum += std::abs(double(sparse.logprobs[i]) - dense.logprobs[i]);
    return sum;
  };
  const double alone = distance("quest:budget=32,sink=16,window=32"), covered = distance("quest:budget=32,sink=16,window=32,cover=0.9");
  EXPECT_GT(covered, 0.0);
  EXPECT_LT(covered, alone);
}

// A small budget changes the log-probs (the test of the test), but not before sparse_from.
TEST(SparseEngine, SmallBudgetDiffersOnlyFromSparseFrom) {
  auto engine = tiny_engine();
  auto tokens = random_tokens(300, EngineAccess::config(*engine).vocab_size, 4);
  ScoreResult dense = engine->score(tokens, options("", 0, false));
  for (const char* spec : {"quest:budget=32,sink=16,window=32", "streaming:sink=16,window=32", "h2o:budget=32,window=16",
                           "oracle:budget=16"}) {
    ScoreResult sparse = engine->score(tokens, options(spec, 150, false));
    for (size_t i = 0; i < 150; ++i) ASSERT_EQ(sparse.logprobs[i], dense.logprobs[i]) << spec << " position " << i;
    double diff = 0.0;
    for (size_t i = 150; i < dense.logprobs.size(); ++i) diff = std::max(diff, double(std::abs(sparse.logprobs[i] - dense.logprobs[i])));
    EXPECT_GT(diff, 1e-4) << spec;
  }
}

// Greedy sparse generation, then sparse scoring of prompt + generated tokens: each generated token
// is the argmax of the scored row before it (scoring computes what decoding computed).
TEST(SparseEngine, SparseScoringReproducesSparseGeneration) {
  auto engine = tiny_engine();
  for (const char* spec : {"quest:budget=48,sink=16,window=32", "h2o:budget=48,window=16"}) {
    GenerateRequest request;
    request.prompt = random_tokens(200, EngineAccess::config(*engine).vocab_size, 5);
    request.max_tokens = 40;
    request.sampling.temperature = 0.0f;
    request.ignore_eos = true;
    request.attention = spec;
    GenerateResult result = engine->generate(request);
    ASSERT_EQ(result.tokens.size(), 40u);
    std::vector<int32_t> all = request.prompt;
    all.insert(all.end(), result.tokens.begin(), result.tokens.end());
    ScoreResult scored = engine->score(all, options(spec, 200, false, 1));
    for (size_t i = 0; i < result.tokens.size(); ++i)
      EXPECT_EQ(scored.top[199 + i][0].first, result.tokens[i]) << spec << " token " << i;
  }
}

GenerateRequest greedy(std::vector<int32_t> prompt, int64_t max_tokens, std::string attention) {
  GenerateRequest request;
  request.prompt = std::move(prompt);
  request.max_tokens = max_tokens;
  request.sampling.temperature = 0.0f;
  request.ignore_eos = true;
  request.attention = std::move(attention);
  return request;
}

// Pages of 8 (CPU only), 32 and 64 with the spec's page equal to them: a budget covering every page
// equals dense exactly, a small one differs (only from sparse_from), and generation runs.
TEST(SparseEngine, OtherPageSizesWithTheSpecsPage) {
  for (int64_t page : {8, 32, 64}) {
    auto engine = Engine::open(test::data_dir() / "models" / "qwen3-f32", EngineOptions{.page_size = page, .max_context = 1024});
    auto tokens = random_tokens(400, EngineAccess::config(*engine).vocab_size, 8);
    ScoreResult dense = engine->score(tokens, options("", 0, true));
    ScoreResult all = engine->score(tokens, options(fmt::format("quest:budget=100000,page={}", page), 0, true));
    EXPECT_TRUE(all.full == dense.full) << "page " << page;
    const std::string small = fmt::format("quest:budget={},page={},sink={},window={}", page, page, page, page);
    ScoreResult sparse = engine->score(tokens, options(small, 200, false));
    double diff = 0.0;
    for (size_t i = 0; i < dense.logprobs.size(); ++i) {
      if (i < 200) ASSERT_EQ(sparse.logprobs[i], dense.logprobs[i]) << small << " position " << i;
      else diff = std::max(diff, double(std::abs(sparse.logprobs[i] - dense.logprobs[i])));
    }
    EXPECT_GT(diff, 1e-4) << small;
    EXPECT_EQ(engine->generate(greedy(tokens, 20, small)).tokens.size(), 20u);
    EXPECT_THROW(engine->score(tokens, options(page == 8 ? "quest:budget=64,page=32" : "quest:budget=64,page=16", 0, false)), Error);
  }
  EngineOptions gpu{.page_size = 8, .max_context = 1024};
  gpu.device = Device::kCuda;
  try {
    Engine::open(test::data_dir() / "models" / "qwen3-f32", gpu);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("page_size 8 runs on the CPU only"));
  }
}

// A sequence whose pages were used by an earlier, finished sequence gets fresh summaries and
// fresh flow state: it generates what it generates on an engine that never ran anything.
TEST(SparseEngine, ReusedPagesGiveTheSameOutputAsFreshPages) {
  for (const char* spec : {"h2o:budget=32,window=16", "quest:budget=32,sink=16,window=16", "meanstd:budget=48"}) {
    auto fresh = Engine::open(test::data_dir() / "models" / "qwen3-f32", EngineOptions{.max_context = 1024});
    auto used = Engine::open(test::data_dir() / "models" / "qwen3-f32", EngineOptions{.max_context = 1024});
    const int64_t vocab = EngineAccess::config(*fresh).vocab_size;
    GenerateRequest b = greedy(random_tokens(180, vocab, 10), 40, spec);
    std::vector<int32_t> expected = fresh->generate(b).tokens;
    used->generate(greedy(random_tokens(260, vocab, 9), 30, spec));  // fills (and frees) the same pages first
    EXPECT_EQ(used->generate(b).tokens, expected) << spec;
  }
}

// skip_layers reaching past the model's last layer: the layers that exist follow the range (here
// the test model has layers 0 and 1), the rest of it has no effect; a range entirely past the
// model is an error naming the layer count.
TEST(SparseEngine, SkipLayersBeyondTheModel) {
  auto engine = tiny_engine();
  auto tokens = random_tokens(300, EngineAccess::config(*engine).vocab_size, 12);
  ScoreResult dense = engine->score(tokens, options("", 0, false));
  ScoreResult sparse = engine->score(tokens, options("quest:budget=32,window=16", 100, false));
  EXPECT_EQ(engine->score(tokens, options("quest:budget=32,window=16,skip_layers=0-40", 100, false)).logprobs, dense.logprobs);
  try {
    engine->score(tokens, options("quest:budget=32,window=16,skip_layers=2-40", 100, false));
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("past the model's 2 layers"));
  }
  ScoreResult half = engine->score(tokens, options("quest:budget=32,window=16,skip_layers=1-40", 100, false));
  EXPECT_NE(half.logprobs, sparse.logprobs);
  EXPECT_NE(half.logprobs, dense.logprobs);
}

TEST(SparseEngine, BadSpecsAreClearErrors) {
  auto engine = tiny_engine();
  auto tokens = random_tokens(20, EngineAccess::config(*engine).vocab_size, 6);
  EXPECT_THROW(engine->score(tokens, options("quest:sink=4", 0, false)), Error);
  EXPECT_THROW(engine->score(tokens, options("quest:budget=64,page=64", 0, false)), Error);
  GenerateRequest request;
  request.prompt = tokens;
  request.attention = "flow:/no/such/file.flow,budget=64";
  try {
    engine->generate(request);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("/no/such/file.flow"));
  }
}

}  // namespace
}  // namespace vortex
