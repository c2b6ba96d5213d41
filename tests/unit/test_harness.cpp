// The accuracy harness's parts: α and its statistics against hand-computed values, the
// nearest-rank percentile, position bins, the SVG writer, problem files and op ranges, the report,
// and the harness end to end on the tiny test model (dense here; HarnessSparse needs the sparse
// engine).
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "common/test_util.h"
#include "core/error.h"
#include "eval/agreement.h"
#include "eval/harness.h"
#include "eval/harness_report.h"
#include "eval/svg_plot.h"
#include "io/hf_config.h"
#include "runtime/engine_access.h"
#include "sparse/attention_spec.h"
#include "vortex/engine.h"

namespace vortex {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

std::vector<float> logs(std::vector<double> probabilities) {
  std::vector<float> out;
  for (double p : probabilities) out.push_back(p > 0 ? static_cast<float>(std::log(p)) : kNegInf);
  return out;
}

// log-softmax of random logits (V), in double, as the engine's rows are.
std::vector<float> random_log_softmax(size_t vocab, uint32_t seed, float scale) {
  std::vector<float> logits = test::random_floats(vocab, seed, -scale, scale);
  double max = -1e300, sum = 0.0;
  for (float x : logits) max = std::max(max, static_cast<double>(x));
  for (float x : logits) sum += std::exp(x - max);
  std::vector<float> out;
  for (float x : logits) out.push_back(static_cast<float>(x - max - std::log(sum)));
  return out;
}

// Σ_v min(exp a_v, exp b_v) in long double: the definition, for comparison.
double agreement_by_definition(const std::vector<float>& a, const std::vector<float>& b) {
  long double sum = 0;
  for (size_t v = 0; v < a.size(); ++v) sum += std::min(std::exp(static_cast<long double>(a[v])), std::exp(static_cast<long double>(b[v])));
  return static_cast<double>(sum);
}

TEST(Agreement, HandComputedCases) {
  EXPECT_NEAR(distribution_agreement(logs({0.5, 0.5}), logs({0.25, 0.75})), 0.75, 1e-7);
  EXPECT_NEAR(distribution_agreement(logs({0.7, 0.2, 0.1}), logs({0.1, 0.2, 0.7})), 0.4, 1e-7);
  EXPECT_EQ(distribution_agreement(logs({1.0, 0.0}), logs({0.0, 1.0})), 0.0);  // disjoint
  EXPECT_NEAR(distribution_agreement(logs({0.6, 0.4, 0.0}), logs({0.6, 0.0, 0.4})), 0.6, 1e-7);
  // Symmetric.
  EXPECT_EQ(distribution_agreement(logs({0.5, 0.5}), logs({0.25, 0.75})),
            distribution_agreement(logs({0.25, 0.75}), logs({0.5, 0.5})));
}

TEST(Agreement, IdenticalRowsGiveExactlyOne) {
  for (uint32_t seed : {1u, 2u, 3u}) {
    std::vector<float> row = random_log_softmax(2048 + seed, seed, 8.0f);
    EXPECT_EQ(distribution_agreement(row, row), 1.0);
  }
  EXPECT_EQ(distribution_agreement(logs({1.0, 0.0, 0.0}), logs({1.0, 0.0, 0.0})), 1.0);  // -inf entries
}

TEST(Agreement, MatchesTheDefinitionOnLargeRandomRows) {
  const std::vector<float> a = random_log_softmax(151936, 11, 10.0f), b = random_log_softmax(151936, 12, 10.0f);
  EXPECT_NEAR(distribution_agreement(a, b), agreement_by_definition(a, b), 1e-6);
  // Nearly equal rows: one entry nudged, so α is just below 1 and must not drown in rounding.
  std::vector<float> c = a;
  c[7] += 1e-3f;
  const double expected = 1.0 - std::abs(std::exp(static_cast<double>(c[7])) - std::exp(static_cast<double>(a[7]))) / 2;
  EXPECT_NEAR(distribution_agreement(a, c), expected, 1e-12);
  EXPECT_LT(distribution_agreement(a, c), 1.0);
}

TEST(Agreement, RowsOfDifferentSizesAreRejected) {
  EXPECT_THROW(distribution_agreement(logs({0.5, 0.5}), logs({1.0})), Error);
}

TEST(Percentile, NearestRank) {
  std::vector<double> twenty, hundred;
  for (int i = 20; i >= 1; --i) twenty.push_back(i);  // unsorted input
  for (int i = 1; i <= 100; ++i) hundred.push_back(i);
  EXPECT_EQ(percentile_nearest_rank(twenty, 5), 1.0);   // ceil(0.05 · 20) = 1
  twenty.push_back(21);
  EXPECT_EQ(percentile_nearest_rank(twenty, 5), 2.0);   // ceil(0.05 · 21) = 2
  EXPECT_EQ(percentile_nearest_rank(hundred, 5), 5.0);
  EXPECT_EQ(percentile_nearest_rank(hundred, 50), 50.0);
  EXPECT_EQ(percentile_nearest_rank(hundred, 100), 100.0);
  EXPECT_EQ(percentile_nearest_rank({0.3}, 5), 0.3);
  EXPECT_EQ(percentile_nearest_rank({4, 1, 3, 2}, 50), 2.0);  // rank 2, not the interpolated 2.5
  EXPECT_THROW(percentile_nearest_rank({}, 5), Error);
  EXPECT_THROW(percentile_nearest_rank({1.0}, 0), Error);
}

TEST(AlphaStats, BinsByQueryPosition) {
  EXPECT_EQ(alpha_bin(0), 0);
  EXPECT_EQ(alpha_bin(2047), 0);
  EXPECT_EQ(alpha_bin(2048), 1);
  EXPECT_EQ(alpha_bin(4095), 1);
  EXPECT_EQ(alpha_bin(4096), 2);
  AlphaStats stats;
  EXPECT_FALSE(stats.mean().has_value());
  EXPECT_TRUE(stats.bins().empty());
  stats.add(100, 0.9);
  stats.add(2047, 0.5);
  stats.add(2048, 1.0);
  stats.add(7000, 0.2);
  EXPECT_EQ(stats.count(), 4);
  EXPECT_NEAR(*stats.mean(), 0.65, 1e-12);
  const std::vector<AlphaBin> bins = stats.bins();
  ASSERT_EQ(bins.size(), 3u);  // bin 2 is empty and absent
  EXPECT_EQ(bins[0].bin, 0);
  EXPECT_EQ(bins[0].tokens, 2);
  EXPECT_NEAR(bins[0].mean, 0.7, 1e-12);
  EXPECT_EQ(bins[0].p5, 0.5);
  EXPECT_EQ(bins[1].bin, 1);
  EXPECT_EQ(bins[1].p5, 1.0);
  EXPECT_EQ(bins[2].bin, 3);
  EXPECT_EQ(bins[2].mean, 0.2);
}

TEST(AlphaStats, AllOnesGiveExactlyOne) {
  AlphaStats stats;
  for (int64_t t = 300; t < 5000; ++t) stats.add(t, 1.0);
  EXPECT_EQ(*stats.mean(), 1.0);
  for (const AlphaBin& b : stats.bins()) {
    EXPECT_EQ(b.mean, 1.0);
    EXPECT_EQ(b.p5, 1.0);
  }
}

// ---- SVG ------------------------------------------------------------------------------------

// Tags balance and text holds no raw '<' or stray '&': enough to know an XML parser accepts it.
void expect_well_formed(const std::string& svg) {
  std::vector<std::string> open;
  size_t pos = svg.find("<svg");
  ASSERT_NE(pos, std::string::npos);
  EXPECT_EQ(svg.rfind("<?xml", 0), 0u);
  while (pos < svg.size()) {
    const size_t lt = svg.find('<', pos);
    const std::string text = svg.substr(pos, lt == std::string::npos ? std::string::npos : lt - pos);
    for (size_t amp = text.find('&'); amp != std::string::npos; amp = text.find('&', amp + 1))
      EXPECT_TRUE(text.compare(amp, 5, "&amp;") == 0 || text.compare(amp, 4, "&lt;") == 0 ||
                  text.compare(amp, 4, "&gt;") == 0 || text.compare(amp, 6, "&quot;") == 0 || text.compare(amp, 6, "&apos;") == 0)
          << text;
    if (lt == std::string::npos) break;
    const size_t gt = svg.find('>', lt);
    ASSERT_NE(gt, std::string::npos);
    const std::string tag = svg.substr(lt + 1, gt - lt - 1);
    EXPECT_EQ(tag.find('<'), std::string::npos) << tag;
    const std::string name = tag.substr(tag[0] == '/' ? 1 : 0, tag.find_first_of(" />", 1) - (tag[0] == '/' ? 1 : 0));
    if (tag[0] == '/') {
      ASSERT_FALSE(open.empty()) << "closing " << name;
      EXPECT_EQ(open.back(), name);
      open.pop_back();
    } else if (tag.back() != '/') {
      open.push_back(name);
    }
    pos = gt + 1;
  }
  EXPECT_TRUE(open.empty());
}

size_t count(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t p = text.find(needle); p != std::string::npos; p = text.find(needle, p + 1)) ++n;
  return n;
}

void expect_ticks(const std::vector<double>& ticks, const std::vector<double>& expected) {
  ASSERT_EQ(ticks.size(), expected.size());
  for (size_t i = 0; i < ticks.size(); ++i) EXPECT_NEAR(ticks[i], expected[i], 1e-12);
}

TEST(SvgPlot, NiceTicks) {
  expect_ticks(nice_ticks(0, 1), {0, 0.2, 0.4, 0.6, 0.8, 1});
  expect_ticks(nice_ticks(1, 8, 6, 1.0), {0, 2, 4, 6, 8});
  expect_ticks(nice_ticks(1, 3, 6, 1.0), {1, 2, 3});
  expect_ticks(nice_ticks(0, 100), {0, 20, 40, 60, 80, 100});
  expect_ticks(nice_ticks(0.93, 0.99), {0.92, 0.94, 0.96, 0.98, 1.0});
  const std::vector<double> around = nice_ticks(5, 5);  // one value: ticks on both sides of it
  EXPECT_LT(around.front(), 5.0);
  EXPECT_GT(around.back(), 5.0);
}

TEST(SvgPlot, WellFormedWithEverySeriesAndTickLabels) {
  std::vector<PlotSeries> series = {
      {.name = "dense", .x = {1, 2, 3}, .y = {90, 80, 60}, .color = -1, .dashed = false},
      {.name = "quest:budget=64 & <odd> \"name\"", .x = {1, 2, 3}, .y = {85, 70, 40}, .color = -1, .dashed = true}};
  PlotOptions options;
  options.title = "accuracy vs op";
  options.x_label = "op";
  options.y_label = "accuracy (%)";
  options.y_min = 0.0;
  options.y_max = 100.0;
  options.x_integer_ticks = true;
  const std::string svg = line_plot_svg(options, series);
  expect_well_formed(svg);
  EXPECT_EQ(count(svg, "<polyline"), 2u);
  EXPECT_EQ(count(svg, "<circle"), 6u);
  EXPECT_EQ(count(svg, "stroke-dasharray"), 2u);  // the dashed series and its legend sample
  EXPECT_NE(svg.find(">dense</text>"), std::string::npos);
  EXPECT_NE(svg.find(">quest:budget=64 &amp; &lt;odd&gt; &quot;name&quot;</text>"), std::string::npos);
  for (const char* label : {">0</text>", ">20</text>", ">100</text>", ">1</text>", ">2</text>", ">3</text>", ">accuracy vs op</text>"})
    EXPECT_NE(svg.find(label), std::string::npos) << label;
}

TEST(SvgPlot, NaNBreaksTheLineAndEmptyPlotSaysSo) {
  const std::vector<PlotSeries> gap = {
      {.name = "a", .x = {0, 1, 2, 3}, .y = {0.9, std::nan(""), 0.8, 0.7}, .color = -1, .dashed = false}};
  const std::string svg = line_plot_svg(PlotOptions{}, gap);
  expect_well_formed(svg);
  EXPECT_EQ(count(svg, "<polyline"), 2u);
  EXPECT_EQ(count(svg, "<circle"), 3u);
  EXPECT_EQ(svg.find("no data"), std::string::npos);
  PlotOptions empty;
  empty.empty_note = "nothing here";
  const std::string none = line_plot_svg(empty, {});
  expect_well_formed(none);
  EXPECT_NE(none.find("nothing here"), std::string::npos);
  EXPECT_THROW(line_plot_svg(PlotOptions{}, std::vector<PlotSeries>{{.name = "bad", .x = {1}, .y = {}, .color = -1, .dashed = false}}), Error);
}

// ---- problems and options -------------------------------------------------------------------

std::string expect_error(const auto& action) {
  try {
    action();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "no vortex::Error";
  return {};
}

TEST(Problems, ParsesWhatTheGeneratorWrites) {
  SymbolicOptions options;
  options.seed = 3;
  options.op_max = 4;
  options.examples_per_op = 2;
  for (const SymbolicExample& e : generate_problems(options)) {
    const SymbolicExample back = parse_problem_json(symbolic_example_json(e));
    EXPECT_EQ(back.op, e.op);
    EXPECT_EQ(back.id, e.id);
    EXPECT_EQ(back.prompt, e.prompt);
    EXPECT_EQ(back.answer_list, e.answer_list);
    EXPECT_EQ(back.solution, e.solution);
  }
}

TEST(Problems, BadLinesNameTheField) {
  EXPECT_NE(expect_error([] { parse_problem_json("{\"op\": 1,"); }).find("invalid JSON"), std::string::npos);
  EXPECT_NE(expect_error([] { parse_problem_json("[1, 2]"); }).find("JSON object"), std::string::npos);
  EXPECT_NE(expect_error([] { parse_problem_json(R"({"op": 1, "answer_list": []})"); }).find("\"prompt\""), std::string::npos);
  EXPECT_NE(expect_error([] { parse_problem_json(R"({"op": 0, "prompt": "p", "answer_list": []})"); }).find("\"op\""), std::string::npos);
  EXPECT_NE(expect_error([] { parse_problem_json(R"({"op": "2", "prompt": "p", "answer_list": []})"); }).find("\"op\""), std::string::npos);
  EXPECT_NE(expect_error([] { parse_problem_json(R"({"op": 2, "prompt": "", "answer_list": []})"); }).find("empty"), std::string::npos);
  EXPECT_NE(expect_error([] { parse_problem_json(R"({"op": 2, "prompt": "p", "answer_list": "V1"})"); }).find("answer_list"), std::string::npos);
  EXPECT_NE(expect_error([] { parse_problem_json(R"({"op": 2, "prompt": "p", "answer_list": [3]})"); }).find("answer_list"), std::string::npos);
}

TEST(Problems, FileErrorsNameFileAndLine) {
  const std::filesystem::path dir = test::scratch_dir("harness_problems");
  const std::string missing = expect_error([&] { load_problems(dir / "none.jsonl"); });
  EXPECT_NE(missing.find("none.jsonl"), std::string::npos);
  std::ofstream(dir / "empty.jsonl").close();
  EXPECT_NE(expect_error([&] { load_problems(dir / "empty.jsonl"); }).find("empty"), std::string::npos);
  std::ofstream(dir / "blank.jsonl") << "\n  \n";
  EXPECT_NE(expect_error([&] { load_problems(dir / "blank.jsonl"); }).find("no problems"), std::string::npos);
  const std::string good = R"({"op": 1, "id": 0, "prompt": "p", "answer_list": ["V000001"]})";
  std::ofstream(dir / "bad.jsonl") << good << "\n\n" << "{oops\n" << good << "\n";
  const std::string bad = expect_error([&] { load_problems(dir / "bad.jsonl"); });
  EXPECT_NE(bad.find("bad.jsonl line 3"), std::string::npos) << bad;
  std::ofstream(dir / "good.jsonl") << good << "\n" << good;  // no final newline
  EXPECT_EQ(load_problems(dir / "good.jsonl").size(), 2u);
}

TEST(Problems, OpRanges) {
  EXPECT_EQ(parse_op_range("1-8"), (std::pair<int64_t, int64_t>{1, 8}));
  EXPECT_EQ(parse_op_range("5"), (std::pair<int64_t, int64_t>{5, 5}));
  for (const char* bad : {"", "x", "1-", "-3", "1-2-3", "1..8", " 1-8"})
    EXPECT_NE(expect_error([&] { parse_op_range(bad); }).find("--ops"), std::string::npos) << bad;
  EXPECT_NE(expect_error([] { parse_op_range("0-3"); }).find("out of range"), std::string::npos);
  EXPECT_NE(expect_error([] { parse_op_range("5-2"); }).find("out of range"), std::string::npos);
}

TEST(Problems, EvalOptionsMakeTheMaxOpExclusive) {
  const SymbolicOptions o = eval_problem_options(1, "0", "2-4", 3);
  EXPECT_EQ(o.op_min, 2);
  EXPECT_EQ(o.op_max, 5);
  const std::vector<SymbolicExample> problems = generate_problems(o);
  ASSERT_EQ(problems.size(), 9u);
  EXPECT_EQ(problems.front().op, 2);
  EXPECT_EQ(problems.back().op, 4);
  EXPECT_EQ(eval_problem_options(1, "4k", "1-8", 1).length, 4000);
  EXPECT_NE(expect_error([] { eval_problem_options(1, "4x", "1-8", 1); }).find("--length"), std::string::npos);
  EXPECT_NE(expect_error([] { eval_problem_options(1, "0", "1-8", 0); }).find("--examples-per-op"), std::string::npos);
  EXPECT_NE(expect_error([] { eval_problem_options(1, "0", "1-2000000", 1); }).find("out of range"), std::string::npos);
}

// ---- report ---------------------------------------------------------------------------------

std::vector<SpecResult> sample_results() {
  std::vector<SpecResult> r(2);
  r[0].attention = "dense";
  r[0].dense = true;
  r[0].by_op = {{.op = 1, .examples = 2, .correct = 2, .accuracy = 1.0}, {.op = 2, .examples = 2, .correct = 1, .accuracy = 0.5}};
  r[0].examples = 4;
  r[0].correct = 3;
  r[0].accuracy = 0.75;
  r[0].auc = accuracy_auc(r[0].by_op);
  r[0].decode_tokens = 90;
  r[0].decode_s = 2.0;
  r[1] = r[0];
  r[1].attention = "streaming:sink=16,window=32";
  r[1].dense = false;
  r[1].alpha.add(300, 0.5);
  r[1].alpha.add(4100, 0.9);
  return r;
}

TEST(Report, JsonHasTheKeysAndBinLists) {
  const nlohmann::json j = harness_results_json(sample_results());
  ASSERT_EQ(j.size(), 1u);
  const auto& dense = j["results"][0];
  const auto& sparse = j["results"][1];
  EXPECT_EQ(dense["attention"], "dense");
  EXPECT_EQ(dense["accuracy"], 0.75);
  EXPECT_EQ(dense["accuracy_by_op"]["2"], 0.5);
  EXPECT_EQ(dense["auc"], 75.0);  // 100 × (1 + 0.5) / 2
  EXPECT_EQ(dense["alpha_mean"], 1.0);
  EXPECT_TRUE(dense["alpha_p5_by_bin"].empty());
  EXPECT_EQ(dense["tokens_per_s"], 45.0);
  EXPECT_NEAR(sparse["alpha_mean"].get<double>(), 0.7, 1e-12);
  EXPECT_EQ(sparse["alpha_p5_by_bin"], nlohmann::json::parse("[0.5, null, 0.9]"));
  EXPECT_EQ(sparse["alpha_tokens_by_bin"], nlohmann::json::parse("[1, null, 1]"));
  EXPECT_EQ(sparse["alpha_p5_worst"], 0.5);
}

TEST(Report, TableAndPlotsNameEverySpec) {
  const std::vector<SpecResult> r = sample_results();
  const std::string table = harness_results_table(r, "heading");
  for (const char* needle : {"heading", "streaming:sink=16,window=32", "75.0%", "(ref)", "0.700", "0.500", "worst-bin α p5",
                             "50.0% (1/2)", "tokens/s"})
    EXPECT_NE(table.find(needle), std::string::npos) << needle << "\n" << table;
  const std::string accuracy = accuracy_plot_svg(r), alpha = alpha_plot_svg(r);
  expect_well_formed(accuracy);
  expect_well_formed(alpha);
  EXPECT_EQ(count(accuracy, "<polyline"), 2u);
  EXPECT_NE(alpha.find("streaming:sink=16,window=32 p5"), std::string::npos);
  EXPECT_EQ(count(alpha, "<circle"), 4u);  // two bins with data, mean and p5 each
}

// ---- the engine and the harness on the tiny test model ------------------------------------------

std::filesystem::path tiny_model() { return test::data_dir() / "models" / "qwen3-f32"; }

TEST(HarnessEngine, FullLogprobRowsAreNormalisedAndMatchTheTokenLogprobs) {
  auto engine = Engine::open(tiny_model());
  const std::vector<int32_t> tokens = {5, 17, 300, 42, 9, 511, 3};
  ScoreOptions options;
  options.full_logprobs = true;
  const ScoreResult r = engine->score(tokens, options);
  const size_t vocab = static_cast<size_t>(EngineAccess::config(*engine).vocab_size);
  ASSERT_EQ(r.full.size(), (tokens.size() - 1) * vocab);
  for (size_t i = 0; i + 1 < tokens.size(); ++i) {
    std::span<const float> row(r.full.data() + i * vocab, vocab);
    EXPECT_EQ(row[static_cast<size_t>(tokens[i + 1])], r.logprobs[i]);
    double sum = 0.0;
    for (float lp : row) sum += std::exp(static_cast<double>(lp));
    EXPECT_NEAR(sum, 1.0, 1e-5);
    EXPECT_EQ(distribution_agreement(row, row), 1.0);
  }
  EXPECT_TRUE(engine->score(tokens, 0).full.empty());
  // Two dense passes agree exactly: α of dense against itself is 1.
  EXPECT_EQ(engine->score(tokens, options).full, r.full);
}

TEST(HarnessEngine, DenseRunIsGradedAndDeterministic) {
  auto engine = Engine::open(tiny_model());
  const std::vector<SymbolicExample> problems = generate_problems(eval_problem_options(1, "0", "1-2", 2));
  HarnessOptions options;
  options.attention = {"dense"};
  options.max_tokens = 8;
  size_t calls = 0;
  const std::vector<SpecResult> a = run_gsm_harness(*engine, problems, options, [&](const HarnessProgress& p) {
    ++calls;
    EXPECT_EQ(p.problem, calls);
    EXPECT_EQ(p.problems, 4u);
  });
  EXPECT_EQ(calls, 4u);
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(a[0].examples, 4);
  ASSERT_EQ(a[0].by_op.size(), 2u);
  EXPECT_EQ(a[0].by_op[0].op, 1);
  EXPECT_EQ(a[0].alpha.count(), 0);
  EXPECT_GT(a[0].generated_tokens, 0);
  EXPECT_LE(a[0].generated_tokens, 4 * 8);
  const std::vector<SpecResult> b = run_gsm_harness(*engine, problems, options);
  EXPECT_EQ(b[0].generated_tokens, a[0].generated_tokens);
  EXPECT_EQ(b[0].correct, a[0].correct);
}

// --alpha-kv-dtype: the dense spec gets an α against an engine whose KV cache stores another type;
// against an engine like its own it is exactly 1, against f32 from an fp8 cache below 1.
TEST(HarnessEngine, DenseAlphaAgainstAnotherKvType) {
  const std::vector<SymbolicExample> problems = generate_problems(eval_problem_options(1, "0", "1-2", 2));
  auto f32 = Engine::open(tiny_model());
  auto fp8 = Engine::open(tiny_model(), {.kv_dtype = KvDtype::kFp8});
  HarnessOptions options;
  options.attention = {"dense"};
  options.max_tokens = 24;
  options.dense_alpha_reference = f32.get();
  const std::vector<SpecResult> same = run_gsm_harness(*f32, problems, options);
  ASSERT_GT(same[0].alpha.count(), 0);
  EXPECT_EQ(same[0].alpha.mean(), 1.0);
  const std::vector<SpecResult> rounded = run_gsm_harness(*fp8, problems, options);
  ASSERT_GT(rounded[0].alpha.count(), 0);
  EXPECT_LT(*rounded[0].alpha.mean(), 1.0);
  EXPECT_GT(*rounded[0].alpha.mean(), 0.5);
  const nlohmann::json json = harness_results_json(rounded);
  EXPECT_LT(json["results"][0]["alpha_mean"].get<double>(), 1.0);
  const std::string table = harness_results_table(rounded, "t");  // its α is shown where dense shows "(ref)"
  EXPECT_NE(table.find(fmt::format("{:.3f}", *rounded[0].alpha.mean())), std::string::npos) << table;
}

TEST(HarnessEngine, BadSpecsAndEmptyInputFailBeforeRunning) {
  auto engine = Engine::open(tiny_model());
  const std::vector<SymbolicExample> problems = generate_problems(eval_problem_options(1, "0", "1", 1));
  HarnessOptions options;
  EXPECT_NE(expect_error([&] { run_gsm_harness(*engine, problems, options); }).find("--attention"), std::string::npos);
  options.attention = {"dense", "nonsense:x=1"};
  EXPECT_NE(expect_error([&] { run_gsm_harness(*engine, problems, options); }).find("nonsense"), std::string::npos);
  options.attention = {"dense"};
  EXPECT_NE(expect_error([&] { run_gsm_harness(*engine, {}, options); }).find("no problems"), std::string::npos);
}

// ---- sparse: these need the sparse engine (they fail with "not available yet" before it) ---------

std::vector<SpecResult> run_specs(const std::vector<std::string>& specs, bool recall = false, bool alpha = true) {
  auto engine = Engine::open(tiny_model());
  const std::vector<SymbolicExample> problems = generate_problems(eval_problem_options(1, "0", "1-3", 2));
  HarnessOptions options;
  options.attention = specs;
  options.max_tokens = 48;
  options.recall = recall;
  options.alpha = alpha;
  return run_gsm_harness(*engine, problems, options);
}

// --recall: every sparse spec measures its selections (in the sparse scoring pass, with or without
// α); the oracle's selection has recall 1; dense measures nothing; JSON, table and figures carry it;
// auto reports what it expanded to.
TEST(HarnessSparse, RecallIsMeasuredPerLayerAndBin) {
  const std::vector<SpecResult> r = run_specs({"dense", "oracle:budget=16", "auto:budget=16"}, true, false);
  EXPECT_EQ(r[0].recall.count(), 0);
  ASSERT_GT(r[1].recall.count(), 0);
  EXPECT_GE(r[1].recall.overall()->recall_mean, 0.99);
  EXPECT_EQ(r[1].alpha.count(), 0);  // alpha off
  ASSERT_GT(r[2].recall.count(), 0);
  EXPECT_EQ(r[1].recall.by_layer().size(), 2u);  // the test model's two layers
  EXPECT_EQ(r[2].expanded, parse_attention_spec("auto:budget=16").expanded);
  EXPECT_FALSE(r[2].expanded.empty());
  const nlohmann::json j = harness_results_json(r);
  EXPECT_TRUE(j["results"][0]["selection_recall"].is_null());
  EXPECT_EQ(j["results"][1]["selection_recall"]["by_layer"].size(), 2u);
  EXPECT_GT(j["results"][1]["selection_recall"]["mass_mean"].get<double>(), 0.0);
  EXPECT_EQ(j["results"][2]["expanded"], r[2].expanded);
  const std::string table = harness_results_table(r, "heading");
  for (const char* needle : {"recall", "selection recall / attention mass by layer", "expanded to"})
    EXPECT_NE(table.find(needle), std::string::npos) << needle << "\n" << table;
  expect_well_formed(recall_plot_svg(r, true));
  expect_well_formed(recall_plot_svg(r, false));
  const std::vector<SpecResult> both = run_specs({"oracle:budget=16"}, true, true);
  EXPECT_GT(both[0].alpha.count(), 0);
  EXPECT_EQ(both[0].recall.count(), r[1].recall.count());
}

TEST(HarnessSparse, BudgetCoveringEveryPageEqualsDenseExactly) {
  const std::vector<SpecResult> r = run_specs({"dense", "quest:budget=100000"});
  EXPECT_EQ(r[1].correct, r[0].correct);
  EXPECT_EQ(r[1].generated_tokens, r[0].generated_tokens);
  ASSERT_GT(r[1].alpha.count(), 0);
  EXPECT_EQ(*r[1].alpha.mean(), 1.0);
  for (const AlphaBin& b : r[1].alpha.bins()) EXPECT_EQ(b.p5, 1.0);
}

TEST(HarnessSparse, StreamingWindowDiffersFromDense) {
  const std::vector<SpecResult> r = run_specs({"streaming:sink=16,window=32"});
  ASSERT_GT(r[0].alpha.count(), 0);
  EXPECT_LT(*r[0].alpha.mean(), 1.0);
  EXPECT_GT(*r[0].alpha.mean(), 0.0);
  EXPECT_LT(r[0].alpha.bins().front().p5, 1.0);
}

}  // namespace
}  // namespace vortex
