// The flow language: builder IR and shapes, the text parser and its errors, to_text round trips,
// and the built-in flows against their flows/*.flow twins.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "common/test_util.h"
#include "core/error.h"
#include "vortex/flow.h"

namespace vortex {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::StartsWith;

// The message of the vortex::Error that `body` throws ("" when it does not throw).
template <typename Body>
std::string error_of(Body&& body) {
  try {
    body();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

std::string parse_error(const std::string& text) { return error_of([&] { parse_flow(text, "test"); }); }

const FlowInstr& score_instr(const Flow& flow) { return flow.instrs.at(static_cast<size_t>(flow.select.value)); }

// ---- builder and IR --------------------------------------------------------------------------

TEST(FlowBuilder, QuestInfersShapesAndLowersToSsa) {
  FlowBuilder f("quest");
  FlowExpr kmax = f.field("kmax", FieldReduce::kMax, 1, FieldStorage::kBF16);
  FlowExpr kmin = f.field("kmin", FieldReduce::kMin, 1, FieldStorage::kBF16);
  EXPECT_EQ(to_string(kmax.shape()), "(1,1,D)");
  FlowExpr products = max(f.q() * kmax, f.q() * kmin);
  EXPECT_EQ(to_string(products.shape()), "(Hg,1,D)");
  FlowExpr bound = sum(products, FlowAxis::kFeat);
  EXPECT_EQ(to_string(bound.shape()), "(Hg,1,1)");
  f.select_topk(sum(bound, FlowAxis::kHeads));
  Flow flow = f.build();
  ASSERT_EQ(flow.fields.size(), 2u);
  EXPECT_EQ(flow.instrs.size(), 8u);  // q, kmax, mul, kmin, mul, max, sum, sum: q is shared
  for (size_t i = 0; i < flow.instrs.size(); ++i) {
    EXPECT_LT(flow.instrs[i].a, static_cast<int32_t>(i));  // operands come first
    EXPECT_LT(flow.instrs[i].b, static_cast<int32_t>(i));
  }
  EXPECT_EQ(flow.select.kind, FlowSelectKind::kTopK);
  EXPECT_TRUE(score_instr(flow).shape.scalar());
  EXPECT_EQ(flow, *find_builtin_flow("quest"));
}

TEST(FlowBuilder, IdenticalSubexpressionsBecomeOneInstruction) {
  FlowBuilder f("cse");
  FlowExpr kmean = f.field("kmean", FieldReduce::kMean);
  FlowExpr a = dot(f.q(), kmean), b = dot(f.q(), kmean);
  f.select_topk(max(a + b, FlowAxis::kHeads));
  Flow flow = f.build();
  EXPECT_EQ(flow.instrs.size(), 5u);  // q, kmean, dot, add, max: the add reads the one dot twice
  const FlowInstr& add = flow.instrs[3];
  EXPECT_EQ(add.op, FlowOp::kAdd);
  EXPECT_EQ(add.a, add.b);
}

TEST(FlowBuilder, ShapesBroadcastAndReduce) {
  FlowBuilder f("shapes");
  FlowExpr k2 = f.field("k2", FieldReduce::kMax, 2), n = f.field("n", FieldReduce::kNorm, kFlowSubPage);
  EXPECT_EQ(to_string(n.shape()), "(1,P,1)");
  EXPECT_EQ(to_string((f.q() * k2).shape()), "(Hg,2,D)");
  EXPECT_EQ(to_string(dot(f.q(), k2).shape()), "(Hg,2,1)");
  EXPECT_EQ(to_string(max(dot(f.q(), k2), FlowAxis::kSub).shape()), "(Hg,1,1)");
  EXPECT_EQ(to_string((n * f.scale()).shape()), "(1,P,1)");
  EXPECT_EQ(to_string((f.q() * 2.0 + 1.0).shape()), "(Hg,1,D)");
  EXPECT_THAT(error_of([&] { (void)(k2 * n); }), HasSubstr("shape mismatch in mul: (1,2,D) and (1,P,1)"));
}

TEST(FlowBuilder, ErrorsNameWhatIsWrong) {
  FlowBuilder f("bad");
  FlowExpr k = f.field("kmax", FieldReduce::kMax);
  EXPECT_THAT(error_of([&] { f.field("kmax", FieldReduce::kMin); }), HasSubstr("redefining 'kmax'"));
  EXPECT_THAT(error_of([&] { f.field("k3", FieldReduce::kMin, 3); }), HasSubstr("sub=3 does not divide the page size"));
  EXPECT_THAT(error_of([&] { f.build(); }), HasSubstr("flow 'bad' has no selection"));
  EXPECT_THAT(error_of([&] { f.save("acc", f.q()); }), HasSubstr("save(acc, ...) needs a (1,1,1) value per page, got (Hg,1,D)"));
  EXPECT_THAT(error_of([&] { f.select_topk(dot(f.q(), k)); }),
              HasSubstr("score has shape (Hg,1,1): reduce over heads (e.g. max(x, heads))"));
  EXPECT_THAT(error_of([&] { (void)number(NAN); }), HasSubstr("NaN"));
  f.select_topk(max(dot(f.q(), k), FlowAxis::kHeads));
  EXPECT_THAT(error_of([&] { f.select_none(); }), HasSubstr("more than one selection"));
  EXPECT_THAT(error_of([&] { f.field("late", FieldReduce::kMax); }), HasSubstr("after the selection"));

  FlowBuilder other("other");
  other.select_topk(sum(dot(other.q(), k), FlowAxis::kHeads));  // k belongs to f
  EXPECT_THAT(error_of([&] { other.build(); }), HasSubstr("another FlowBuilder"));
}

TEST(FlowBuilder, LoadedStateMustBeSaved) {
  FlowBuilder f("state");
  f.select_topk(f.load("acc"));
  EXPECT_THAT(error_of([&] { f.build(); }), HasSubstr("state 'acc' is loaded but never saved"));
}

TEST(FlowBuilder, NegativeNumbersFold) {
  FlowBuilder f("neg");
  f.select_threshold(-FlowExpr(2.0), -1.5f);
  Flow flow = f.build();
  ASSERT_EQ(flow.instrs.size(), 1u);
  EXPECT_EQ(flow.instrs[0].op, FlowOp::kNumber);
  EXPECT_EQ(flow.instrs[0].number, -2.0f);
  EXPECT_EQ(flow.select.threshold, -1.5f);
}

// ---- text form ---------------------------------------------------------------------------------

TEST(FlowText, ParsesTheSuggestedQuestText) {
  Flow flow = parse_flow(R"(# quest: upper bound of q·k from per-page key max and min
field kmax = max(k, store=bf16)
field kmin = min(k,
                 store=bf16)

let bound = sum(max(q * kmax,    # a newline inside parentheses continues the statement
                    q * kmin), feat)   # (Hg,1,1)
select topk(sum(bound, heads))
)", "quest");
  EXPECT_EQ(flow, *find_builtin_flow("quest"));
  EXPECT_EQ(flow.fields[0].loc.line, 2);
  EXPECT_EQ(flow.fields[1].loc.line, 3);
  EXPECT_EQ(flow.select.loc.line, 8);
}

TEST(FlowText, InfixPrecedenceMatchesFunctions) {
  const char* fields = "field kmean = mean(k)\nfield kmax = max(k)\n";
  auto flow_of = [&](const std::string& score) { return parse_flow(fields + ("select topk(" + score + ")\n"), "p"); };
  EXPECT_EQ(flow_of("max(dot(q, kmean) + dot(q, kmax) * 2 - 1, heads)"),
            flow_of("max(sub(add(dot(q, kmean), mul(dot(q, kmax), 2)), 1), heads)"));
  EXPECT_EQ(flow_of("max(dot(q, kmean) / (D - -1), heads) > scale"),
            flow_of("gt(max(div(dot(q, kmean), sub(D, -1)), heads), scale)"));
  EXPECT_EQ(flow_of("max(-dot(q, kmax), heads) <= P"), flow_of("le(max(neg(dot(q, kmax)), heads), P)"));
  EXPECT_EQ(flow_of("sum(sum(q * kmax >= kmean, feat), heads) < 1e+3"),
            flow_of("lt(sum(sum(ge(mul(q, kmax), kmean), feat), heads), 1000)"));
}

TEST(FlowText, EveryOpRoundTrips) {
  Flow flow = parse_flow(R"(field kmean = mean(k)
field kstd = std(k, sub=2)
field knorm = norm(k, sub=page)
field kmin = min(k, sub=4)
let a = abs(q) * exp(-q) + log(relu(q) + 1) - sigmoid(q) / D
let b = max(min(dot(a, kmean), 3), -inf)
let c = sum(mean(dot(q, kstd), sub), heads) + max(min(knorm, sub) * scale, sub) * P
let d = mean(min(q * kmin, sub), feat)
let e = eq(gt(b, 0), le(b, 1)) + lt(b, 2) + ge(b, 3)
let m = softmax(max(b + e + d, heads)) + c
save(x, load(y) + m)
save(y, load(x))
select threshold(m, 0.25)
)", "every");
  EXPECT_EQ(flow.state, (std::vector<std::string>{"y", "x"}));
  EXPECT_EQ(flow.select.kind, FlowSelectKind::kThreshold);
  std::string text = to_text(flow);
  EXPECT_EQ(parse_flow(text, "every"), flow) << text;
}

TEST(FlowText, BuiltinsRoundTripThroughToText) {
  for (const std::string& name : builtin_flow_names()) {
    const Flow& flow = *find_builtin_flow(name);
    std::string text = to_text(flow);
    EXPECT_EQ(parse_flow(text, name), flow) << text;
  }
}

TEST(FlowText, ToTextAvoidsNamesOfFields) {
  FlowBuilder f("clash");
  FlowExpr t2 = f.field("t2", FieldReduce::kMean), t_3 = f.field("t_3", FieldReduce::kMax);
  f.select_topk(sum(dot(f.q(), t2) + dot(f.q(), t_3), FlowAxis::kHeads));
  Flow flow = f.build();
  EXPECT_EQ(parse_flow(to_text(flow), "clash"), flow) << to_text(flow);
}

TEST(FlowText, BuiltinsEqualTheirFlowFiles) {
  std::set<std::string> names;
  for (const std::string& name : builtin_flow_names()) {
    names.insert(name);
    std::filesystem::path path = test::source_dir() / "flows" / (name + ".flow");
    Flow file = load_flow_file(path);
    EXPECT_EQ(file, *find_builtin_flow(name)) << name << ":\n" << to_text(file) << "\nbuilt in:\n"
                                              << to_text(*find_builtin_flow(name));
    EXPECT_EQ(file.origin, path.string());
  }
  for (const auto& entry : std::filesystem::directory_iterator(test::source_dir() / "flows"))
    EXPECT_TRUE(names.count(entry.path().stem().string())) << entry.path() << " is not a built-in flow";
  EXPECT_EQ(names.size(), 12u);
  EXPECT_EQ(find_builtin_flow("nope"), nullptr);
}

TEST(FlowText, MissingFileNamesThePath) {
  EXPECT_THAT(error_of([] { load_flow_file("/nonexistent/dir/my.flow"); }),
              AllOf(HasSubstr("/nonexistent/dir/my.flow"), HasSubstr("cannot read flow file")));
}

TEST(FlowText, FileErrorsNameTheFileAndLine) {
  std::filesystem::path path = test::scratch_dir("flow_text") / "bad.flow";
  std::ofstream(path) << "field kmax = max(k)\n\nselect topk(sum(sum(q * kmx, feat), heads))\n";
  EXPECT_THAT(error_of([&] { load_flow_file(path); }),
              AllOf(StartsWith(path.string() + ":3:25: "), HasSubstr("unknown name 'kmx' (fields: kmax)")));
}

// Each bad text, and what its error must say (with line:column).
struct BadText {
  const char* text;
  std::vector<std::string> expected;
};

void PrintTo(const BadText& bad, std::ostream* out) { *out << '"' << bad.text << '"'; }

class FlowTextErrors : public ::testing::TestWithParam<BadText> {};

TEST_P(FlowTextErrors, SayWhereAndWhat) {
  std::string message = parse_error(GetParam().text);
  ASSERT_FALSE(message.empty()) << "no error for:\n" << GetParam().text;
  for (const std::string& part : GetParam().expected) EXPECT_THAT(message, HasSubstr(part));
}

INSTANTIATE_TEST_SUITE_P(
    Cases, FlowTextErrors,
    ::testing::Values(
        BadText{"field kmax = max(k)\nselect topk(max(dot(q, kmx), heads))", {"2:24: ", "unknown name 'kmx'"}},
        BadText{"field kmax = avg(k)\nselect none", {"1:14: ", "unknown field reduction 'avg'"}},
        BadText{"field kmax = max(q)\nselect none", {"1:18: ", "write max(k)"}},
        BadText{"field kmax = max(k, rows=2)\nselect none", {"1:21: ", "unknown field option 'rows'"}},
        BadText{"select topk(foo(q))", {"1:13: ", "unknown function 'foo'"}},
        BadText{"select topk(max(abs(q, q), heads))", {"1:17: ", "'abs' takes 1 argument, got 2"}},
        BadText{"select topk(sum(q))", {"1:13: ", "'sum' takes (x, axis), got 1 argument"}},
        BadText{"select topk(max(q, q, q))", {"1:13: ", "'max' takes (a, b) or (x, axis), got 3"}},
        BadText{"field a = max(k, sub=2)\nfield b = max(k, sub=4)\nlet x = a * b\nselect none",
                {"3:11: ", "shape mismatch in mul: (1,2,D) and (1,4,D)"}},
        BadText{"field kmean = mean(k)\nselect topk(dot(q, kmean))",
                {"2:1: ", "score has shape (Hg,1,1): reduce over heads (e.g. max(x, heads))"}},
        BadText{"field kmean = mean(k)\nselect topk(q * kmean)",
                {"2:1: ", "score has shape (Hg,1,D): reduce over feat (e.g. sum(x, feat)); reduce over heads"}},
        BadText{"field kmean = mean(k)\nlet s = sum(dot(q, kmean), heads)\n", {"3:1: ", "no selection"}},
        BadText{"", {"1:1: ", "no selection"}},
        BadText{"select none\nselect topk(1)", {"2:1: ", "more than one selection (the first is at 1:1)"}},
        BadText{"select none\nlet x = 1", {"2:1: ", "'let' after the selection (at 1:1)"}},
        BadText{"select none\nfield kmax = max(k)", {"2:1: ", "'field' after the selection"}},
        BadText{"select none\nsave(acc, 1)", {"2:1: ", "'save' after the selection"}},
        BadText{"save(acc, q)\nselect none", {"1:1: ", "save(acc, ...) needs a (1,1,1) value per page, got (Hg,1,D)"}},
        BadText{"save(acc, 1)\nsave(acc, 2)\nselect none", {"2:1: ", "state 'acc' is saved twice (first at 1:1)"}},
        BadText{"select topk(load(acc))", {"1:13: ", "state 'acc' is loaded but never saved"}},
        BadText{"select topk(sum(max(q, heads), rows))", {"1:32: ", "unknown axis 'rows' (expected heads, sub or feat)"}},
        BadText{"select topk(mean(q, 2))", {"1:21: ", "expected an axis"}},
        BadText{"field k3 = max(k, sub=3)\nselect none", {"1:1: ", "field 'k3': sub=3 does not divide the page size"}},
        BadText{"field k0 = max(k, sub=0)\nselect none", {"1:23: ", "sub takes a positive integer or 'page', got '0'"}},
        BadText{"field kmax = max(k)\nlet kmax = q\nselect none", {"2:5: ", "redefining 'kmax' (first defined at 1:7)"}},
        BadText{"let a = 1\nlet a = 2\nselect none", {"2:5: ", "redefining 'a' (first defined at 1:5)"}},
        BadText{"let q = 1\nselect none", {"1:5: ", "cannot define 'q': it is a reserved name"}},
        BadText{"let max = 1\nselect none", {"1:5: ", "cannot define 'max'"}},
        BadText{"x = 1\nselect none", {"1:1: ", "expected a statement (field, let, save, stage or select), got 'x'"}},
        BadText{"let a = q @ 2", {"1:11: ", "unexpected character '@'"}},
        BadText{"select topk(1) 2", {"1:16: ", "unexpected '2' after the statement"}},
        BadText{"select topk(1", {"1:14: ", "expected ')'"}},
        BadText{"let a = ((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((1",
                {"1:137: ", "expressions nest deeper than 128 levels"}},
        BadText{"let a = ----------------------------------------------------------------------------------------------------------------------------------1",
                {"1:137: ", "expressions nest deeper than 128 levels"}},
        BadText{"select best(1)", {"1:8: ", "unknown selection 'best'"}},
        BadText{"select threshold(1, q)", {"1:21: ", "c must be a number"}},
        BadText{"let a = k\nselect none", {"1:9: ", "'k' (the page's keys) can only be reduced in a field"}},
        BadText{"let a = heads\nselect none", {"1:9: ", "'heads' is an axis"}},
        BadText{"let a = max(q, q)\nlet b = save(acc, 1)\nselect none", {"2:9: ", "'save' is a statement"}},
        BadText{"field s = std(k)\nlet a = norm(s)\nselect none", {"2:9: ", "'norm' is a field reduction"}},
        BadText{"let a = 2e\nselect none", {"1:9: ", "bad number '2e'"}},
        BadText{"field a = max(k, store=int3)\nselect none", {"1:24: ", "store takes f32, bf16, fp8, int8, int4 or sign, got 'int3'"}},
        BadText{"field a = max(k, store=int8, store=int4)\nselect none", {"1:30: ", "field option 'store' is given twice"}},
        BadText{"field a = max(k, size=2)\nselect none", {"1:18: ", "unknown field option 'size'"}},
        BadText{"field a = max(k)\nstage topk(max(dot(q, a), heads), 0.5)\nselect topk(1)",
                {"2:1: ", "factor must be a number from 1 to 1e6"}},
        BadText{"field a = max(k)\nstage topk(dot(q, a), 2)\nselect topk(1)", {"2:1: ", "stage score has shape (Hg,1,1)"}},
        BadText{"field a = max(k)\nstage topk(max(dot(q, a), heads), q)\nselect topk(1)", {"2:35: ", "factor must be a number"}},
        BadText{"field a = max(k)\nstage best(1, 2)\nselect topk(1)", {"2:7: ", "unknown stage 'best'"}},
        BadText{"select topk(1)\nstage topk(1, 2)", {"2:1: ", "'stage' after the selection"}},
        BadText{"field a = max(k)\nstage topk(max(dot(q, a), heads), 2)\nselect threshold(1, 0.5)",
                {"3:1: ", "a flow with stages (the first at 2:1) must end with select topk"}},
        BadText{"field a = max(k)\nstage topk(max(dot(q, a), heads), 2)\nsave(acc, 1)\nselect topk(load(acc))",
                {"2:1: ", "a flow with stages cannot keep state"}},
        BadText{"field a = max(k)\nstage topk(softmax(max(dot(q, a), heads)), 2)\nselect topk(1)",
                {"2:12: ", "softmax in a flow with stages"}}));

// Storage types and stages: the text and the builder give one IR, to_text round-trips them, and
// they are part of a flow's identity.
TEST(FlowText, StorageTypesAndStages) {
  const std::string text =
      "field kmax = max(k, store=bf16)\nfield kmin = min(k, store=bf16)\nfield keys = max(k, sub=page, store=int4)\n"
      "field sk = max(k, store=sign, sub=4)\n"
      "stage topk(sum(sum(max(q * kmax, q * kmin), feat), heads), 4)\nstage topk(max(max(dot(q, sk), sub), heads), 2.5)\n"
      "select topk(max(max(dot(q, keys), sub), heads))\n";
  const Flow parsed = parse_flow(text, "two");
  FlowBuilder f("two");
  FlowExpr kmax = f.field("kmax", FieldReduce::kMax, 1, FieldStorage::kBF16);
  FlowExpr kmin = f.field("kmin", FieldReduce::kMin, 1, FieldStorage::kBF16);
  FlowExpr keys = f.field("keys", FieldReduce::kMax, kFlowSubPage, FieldStorage::kInt4);
  FlowExpr sk = f.field("sk", FieldReduce::kMax, 4, FieldStorage::kSign);
  f.stage_topk(sum(sum(max(f.q() * kmax, f.q() * kmin), FlowAxis::kFeat), FlowAxis::kHeads), 4);
  f.stage_topk(max(max(dot(f.q(), sk), FlowAxis::kSub), FlowAxis::kHeads), 2.5);
  f.select_topk(max(max(dot(f.q(), keys), FlowAxis::kSub), FlowAxis::kHeads));
  const Flow built = f.build();
  EXPECT_EQ(parsed, built);
  ASSERT_EQ(parsed.stages.size(), 2u);
  EXPECT_EQ(parsed.stages[1].factor, 2.5f);
  EXPECT_EQ(parsed.fields[2].storage, FieldStorage::kInt4);
  EXPECT_EQ(parse_flow(to_text(parsed), "two"), parsed);
  EXPECT_THAT(to_text(parsed), HasSubstr("field keys = max(k, sub=page, store=int4)"));
  EXPECT_THAT(to_text(parsed), HasSubstr("stage topk("));
  Flow other = parsed;
  other.fields[0].storage = FieldStorage::kF32;
  EXPECT_FALSE(other == parsed);
  other = parsed;
  other.stages[0].factor = 3;
  EXPECT_FALSE(other == parsed);
}

// flow_stage: each pass is a flow of its own with the stage's score, every field at its index and
// only the instructions it needs; the last pass is the selection. A flow without stages is its own pass.
TEST(FlowText, StagesSplitIntoPasses) {
  const Flow flow = parse_flow("field a = mean(k)\nfield b = max(k, sub=page, store=int8)\n"
                               "stage topk(max(dot(q, a), heads), 4)\nselect topk(max(max(dot(q, b), sub), heads))\n", "two");
  const Flow first = flow_stage(flow, 0), last = flow_stage(flow, 1);
  EXPECT_EQ(first.name, "two.stage0");
  EXPECT_EQ(last.name, "two.select");
  EXPECT_TRUE(first.stages.empty() && last.stages.empty());
  EXPECT_EQ(first.fields.size(), 2u);
  EXPECT_EQ(first, parse_flow("field a = mean(k)\nfield b = max(k, sub=page, store=int8)\nselect topk(max(dot(q, a), heads))", "two.stage0"));
  EXPECT_EQ(last, parse_flow("field a = mean(k)\nfield b = max(k, sub=page, store=int8)\n"
                             "select topk(max(max(dot(q, b), sub), heads))", "two.select"));
  EXPECT_EQ(flow_stage(*find_builtin_flow("h2o"), 0), *find_builtin_flow("h2o"));
  EXPECT_THROW(flow_stage(flow, 2), Error);
}

TEST(FlowText, ErrorsStartWithTheOrigin) {
  EXPECT_THAT(error_of([] { parse_flow("select topk(nope)", "x", "flows/x.flow"); }),
              StartsWith("flows/x.flow:1:13: unknown name 'nope'"));
}

TEST(FlowText, SubMustDivideThePageSizeInUse) {
  Flow flow = parse_flow("field k32 = max(k, sub=32)\nselect topk(max(max(dot(q, k32), sub), heads))", "big", "big.flow");
  EXPECT_NO_THROW(check_flow_page_size(flow, 32));
  EXPECT_NO_THROW(check_flow_page_size(flow, 64));
  EXPECT_THAT(error_of([&] { check_flow_page_size(flow, 16); }),
              AllOf(StartsWith("big.flow:1:1: "), HasSubstr("field 'k32': sub=32 does not divide the page size 16")));
  EXPECT_NO_THROW(check_flow_page_size(*find_builtin_flow("oracle"), 16));
}

// docs/flows.md's worked example: the file parses, equals the C++ version the page shows, and the
// mistake the page describes gives the message it quotes.
TEST(FlowDocs, WorkedExampleIsRight) {
  std::string doc = test::read_file(test::source_dir() / "docs" / "flows.md");
  size_t start = doc.find("```flow\n");
  ASSERT_NE(start, std::string::npos);
  start += 8;
  std::string text = doc.substr(start, doc.find("```", start) - start);
  Flow parsed = parse_flow(text, "quest_half", "flows/quest_half.flow");
  FlowBuilder f("quest_half");
  FlowExpr kmax = f.field("kmax", FieldReduce::kMax, 2);
  FlowExpr kmin = f.field("kmin", FieldReduce::kMin, 2);
  FlowExpr half = sum(max(f.q() * kmax, f.q() * kmin), FlowAxis::kFeat);
  f.select_topk(max(max(half, FlowAxis::kSub), FlowAxis::kHeads));
  EXPECT_EQ(parsed, f.build());
  std::string broken = text.substr(0, text.find("select topk")) + "select topk(bound)\n";
  std::string message = error_of([&] { parse_flow(broken, "quest_half", "flows/quest_half.flow"); });
  EXPECT_THAT(doc, HasSubstr(message)) << message;
  EXPECT_THAT(message, StartsWith("flows/quest_half.flow:6:1: score has shape (Hg,1,1)"));
}

}  // namespace
}  // namespace vortex
