// The attention spec grammar (sparse/attention_spec.h) and its resolution for running
// (sparse/sparse_attention.h): budgets, page size, schedule tables, errors that name the fault.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "sparse/attention_spec.h"
#include "sparse/sparse_attention.h"
#include "vortex/flow.h"

namespace vortex {
namespace {

using ::testing::HasSubstr;

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(AttentionSpec, ParsesTheGrammar) {
  EXPECT_EQ(parse_attention_spec("dense").method, AttentionMethod::kDense);
  AttentionSpec q = parse_attention_spec("quest:budget=2048,page=16,sink=16,window=64,skip_layers=0-1");
  EXPECT_EQ(q.method, AttentionMethod::kFlow);
  EXPECT_EQ(q.flow_name, "quest");
  EXPECT_EQ(q.budget, 2048);
  EXPECT_EQ(q.page, 16);
  EXPECT_EQ(q.sink, 16);
  EXPECT_EQ(q.window, 64);
  EXPECT_EQ(q.skip_layers_first, 0);
  EXPECT_EQ(q.skip_layers_last, 1);
  AttentionSpec s = parse_attention_spec("streaming:sink=16,window=1024");
  EXPECT_EQ(s.flow_name, "streaming");
  EXPECT_EQ(s.window, 1024);
  EXPECT_EQ(parse_attention_spec("streaming").flow_name, "streaming");
  EXPECT_EQ(parse_attention_spec("flow:flows/my.flow,budget=64").flow_path, "flows/my.flow");
  EXPECT_EQ(parse_attention_spec("schedule:table=t.json").table_path, "t.json");
  EXPECT_DOUBLE_EQ(parse_attention_spec("centroid:budget=25%").budget_fraction, 0.25);
  EXPECT_DOUBLE_EQ(parse_attention_spec("centroid:budget=0.5").budget_fraction, 0.5);
  for (const std::string& name : builtin_flow_names())
    EXPECT_EQ(parse_attention_spec(name + (name == "streaming" ? ":sink=4" : ":budget=64")).flow_name, name) << name;
}

TEST(AttentionSpec, RejectsMalformedSpecsByName) {
  for (const char* bad : {"", "magic", "dense:budget=1", "quest", "quest:budget=", "quest:budget=-4", "quest:budget=1x",
                          "quest:budget=0%", "quest:budget=1.5", "quest:color=3", "streaming:budget=5",
                          "quest:skip_layers=3-1", "flow:budget=4", "schedule:", "schedule:budget=3"})
    EXPECT_THROW(parse_attention_spec(bad), Error) << bad;
  EXPECT_THAT(error_of([] { parse_attention_spec("magic"); }), HasSubstr("unknown method 'magic'"));
  EXPECT_THAT(error_of([] { parse_attention_spec("quest:color=3"); }), HasSubstr("'quest' does not take 'color'"));
  // A repeated key used to be accepted silently: budget=64,budget=25% set both a token and a
  // fraction budget, and the fraction won whatever the order.
  EXPECT_THAT(error_of([] { parse_attention_spec("quest:budget=64,budget=25%"); }), HasSubstr("'budget' is given twice"));
  EXPECT_THAT(error_of([] { parse_attention_spec("streaming:sink=4,window=8,sink=8"); }), HasSubstr("'sink' is given twice"));
}

// rest=: what unattended pages contribute, on any selecting flow, streaming and auto (kept in the
// expansion); anything else is named.
TEST(AttentionSpec, RestEstimates) {
  EXPECT_EQ(parse_attention_spec("quest:budget=64").rest, RestEstimate::kDrop);
  EXPECT_EQ(parse_attention_spec("quest:budget=64,rest=mean").rest, RestEstimate::kMean);
  EXPECT_EQ(parse_attention_spec("streaming:sink=4,window=8,rest=exact").rest, RestEstimate::kExact);
  const AttentionSpec a = parse_attention_spec("auto:budget=512,rest=proxy");
  EXPECT_EQ(a.rest, RestEstimate::kProxy);
  EXPECT_THAT(a.expanded, HasSubstr(",rest=proxy"));
  EXPECT_EQ(parse_attention_spec(a.expanded).rest, RestEstimate::kProxy);
  EXPECT_EQ(resolve_attention("auto:budget=512,rest=proxy", 16)->rest, RestEstimate::kProxy);
  EXPECT_THAT(error_of([] { parse_attention_spec("quest:budget=64,rest=guess"); }), HasSubstr("rest takes drop, mean, proxy or exact"));
  EXPECT_THAT(error_of([] { parse_attention_spec("lsh:rest=mean"); }), HasSubstr("'lsh' does not take 'rest'"));
}

// dense_below=F (attend every page where the selection holds under F of the estimated mass) and
// cover=F (add the left-out pages of largest estimated mass until it holds F): on any selecting
// flow, streaming and auto (kept in the expansion); a fraction in (0, 1]; estimated with int4
// proxies unless rest= names another estimate; not both at once.
TEST(AttentionSpec, CoverageKeys) {
  struct Key {
    std::string name;
    double AttentionSpec::*spec;
    double SparseAttention::*resolved;
  };
  for (const Key& key : {Key{"dense_below", &AttentionSpec::dense_below, &SparseAttention::dense_below},
                         Key{"cover", &AttentionSpec::cover, &SparseAttention::cover}}) {
    SCOPED_TRACE(key.name);
    const std::string k = key.name;
    EXPECT_EQ(parse_attention_spec("quest:budget=64").*key.spec, 0.0);
    EXPECT_EQ(parse_attention_spec("quest:budget=64," + k + "=0.5").*key.spec, 0.5);
    EXPECT_EQ(parse_attention_spec("streaming:sink=4,window=8," + k + "=1").*key.spec, 1.0);
    const AttentionSpec a = parse_attention_spec("auto:budget=512," + k + "=0.25");
    EXPECT_THAT(a.expanded, HasSubstr("," + k + "=0.25"));
    EXPECT_EQ(parse_attention_spec(a.expanded).*key.spec, 0.25);
    const auto resolved = resolve_attention("auto:budget=512," + k + "=0.25", 16);
    EXPECT_EQ((*resolved).*key.resolved, 0.25);
    EXPECT_EQ(resolved->rest, RestEstimate::kDrop);
    EXPECT_EQ(resolved->rest_estimate(), RestEstimate::kProxy) << "the coverage is estimated with int4 proxies";
    EXPECT_EQ(resolve_attention("quest:budget=64,rest=exact," + k + "=0.5", 16)->rest_estimate(), RestEstimate::kExact);
    for (const char* bad : {"0", "1.5", "half", "-0.1", "0.5x"})
      EXPECT_THAT(error_of([&] { parse_attention_spec("quest:budget=64," + k + "=" + bad); }),
                  HasSubstr(k + " takes a fraction of the attention mass in (0, 1]"))
          << bad;
    EXPECT_THAT(error_of([&] { parse_attention_spec("lsh:" + k + "=0.5"); }), HasSubstr("'lsh' does not take '" + k + "'"));
  }
  EXPECT_EQ(resolve_attention("quest:budget=64", 16)->rest_estimate(), RestEstimate::kDrop);
  EXPECT_THAT(error_of([] { parse_attention_spec("quest:budget=64,cover=0.5,dense_below=0.5"); }),
              HasSubstr("dense_below and cover are two answers to the same shortfall; give one"));
}

// auto: the recommended sparse attention, a built-in flow with chosen settings; only the budget (and
// the page) are the user's; `expanded` says what it became.
TEST(AttentionSpec, AutoExpandsToTheChosenFlow) {
  const AttentionSpec a = parse_attention_spec("auto:budget=512");
  EXPECT_EQ(a.method, AttentionMethod::kFlow);
  EXPECT_EQ(a.name, "auto");
  EXPECT_EQ(a.text, "auto:budget=512");
  EXPECT_EQ(a.budget, 512);
  ASSERT_NE(find_builtin_flow(a.flow_name), nullptr);
  const AutoChoice choice = auto_choice(a);
  EXPECT_EQ(a.flow_name, choice.flow);
  EXPECT_EQ(a.sink, choice.sink);
  EXPECT_EQ(a.window, choice.window);
  EXPECT_THAT(a.expanded, ::testing::StartsWith(choice.flow + ":budget=512,"));
  const AttentionSpec expanded = parse_attention_spec(a.expanded);  // the expansion is itself a spec of the same meaning
  EXPECT_EQ(expanded.flow_name, a.flow_name);
  EXPECT_EQ(expanded.sink, a.sink);
  EXPECT_EQ(expanded.window, a.window);
  EXPECT_EQ(expanded.skip_layers_first, a.skip_layers_first);
  EXPECT_DOUBLE_EQ(parse_attention_spec("auto:budget=10%").budget_fraction, 0.1);
  EXPECT_THAT(parse_attention_spec("auto:budget=10%").expanded, HasSubstr(":budget=10%"));
  EXPECT_THAT(error_of([] { parse_attention_spec("auto"); }), HasSubstr("needs parameters (e.g. 'auto:budget=1024')"));
  EXPECT_THAT(error_of([] { parse_attention_spec("auto:page=16"); }), HasSubstr("auto needs a budget"));
  EXPECT_THAT(error_of([] { parse_attention_spec("auto:budget=64,window=8"); }), HasSubstr("'auto' does not take 'window'"));
  EXPECT_EQ(parse_attention_spec("dense").expanded, "");
  // Dense layers the spec names are kept in the expansion (docs/accuracy.md: at noise 16000 the
  // embedded model's answers need its last two layers dense).
  const AttentionSpec layered = parse_attention_spec("auto:budget=1024,skip_layers=6-7");
  EXPECT_EQ(layered.skip_layers_first, 6);
  EXPECT_EQ(layered.skip_layers_last, 7);
  EXPECT_THAT(layered.expanded, HasSubstr(",skip_layers=6-7"));
  EXPECT_EQ(parse_attention_spec(layered.expanded).skip_layers_last, 7);
  ASSERT_NE(resolve_attention("auto:budget=256", 16), nullptr);
  EXPECT_EQ(resolve_attention("auto:budget=256", 16)->flow.get(), find_builtin_flow(a.flow_name));
}

TEST(SparseAttention, ResolvesBudgetsAndPages) {
  EXPECT_EQ(resolve_attention("dense", 16), nullptr);
  auto q = resolve_attention("quest:budget=100,sink=16,window=64,skip_layers=0-1", 16);
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->pages_to_select(5000), 6);  // 100 tokens → 6 whole pages of 16
  EXPECT_TRUE(q->dense_layer(1));
  EXPECT_FALSE(q->dense_layer(2));
  auto f = resolve_attention("centroid:budget=10%", 16);
  EXPECT_EQ(f->budget.budget_tokens(1000), 100);
  EXPECT_EQ(resolve_attention("streaming:sink=4,window=8", 16)->pages_to_select(1 << 20), 0);
  EXPECT_THAT(error_of([] { resolve_attention("quest:sink=16", 16); }), HasSubstr("needs a budget"));
  EXPECT_THAT(error_of([] { resolve_attention("quest:budget=64,page=32", 16); }), HasSubstr("page=32 must equal the KV page size 16"));
  EXPECT_THAT(error_of([] { resolve_attention("flow:/no/such.flow,budget=64", 16); }), HasSubstr("/no/such.flow"));
}

TEST(SparseAttention, ScheduleTableGivesBudgetsByPositionBin) {
  auto path = std::filesystem::temp_directory_path() / "vortex_test_schedule.json";
  std::ofstream(path) << R"({"attention": "quest:sink=16,window=64", "bin_tokens": 2048, "budgets": [256, 512, 1024]})";
  auto s = resolve_attention("schedule:table=" + path.string(), 16);
  EXPECT_EQ(s->budget.budget_tokens(100), 256);
  EXPECT_EQ(s->budget.budget_tokens(2048), 512);
  EXPECT_EQ(s->budget.budget_tokens(100000), 1024);  // beyond the table: its last bin
  EXPECT_EQ(s->sink, 16);
  std::ofstream(path) << R"({"attention": "quest", "budgets": [1]})";
  EXPECT_THAT(error_of([&] { resolve_attention("schedule:table=" + path.string(), 16); }), HasSubstr("bin_tokens"));
  std::filesystem::remove(path);
  EXPECT_THAT(error_of([&] { resolve_attention("schedule:table=" + path.string(), 16); }), HasSubstr("cannot open"));
}

}  // namespace
}  // namespace vortex
