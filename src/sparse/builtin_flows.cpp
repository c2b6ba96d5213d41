// The built-in flows, written with the C++ builder. Each has a twin in flows/NAME.flow, and a
// test checks that both give the same IR: keep the statements in the same order.
#include <functional>

#include "sparse/flow_node.h"

namespace vortex {
namespace {

constexpr FlowAxis kHeads = FlowAxis::kHeads, kSub = FlowAxis::kSub, kFeat = FlowAxis::kFeat;

// StreamingLLM: the sink and the local window only, which the planner always keeps.
Flow streaming() {
  FlowBuilder f("streaming");
  f.select_none();
  return f.build();
}

// Quest (Tang et al. 2024): an upper bound of q·k over the page's keys from the per-feature key
// max and min, Σ_d max(q_d·kmax_d, q_d·kmin_d); `reduce_heads` combines the group's query heads.
// The max and min of bf16 keys are bf16 values, so bf16 storage keeps them exactly on the GPU.
Flow quest(const char* name, FlowExpr (*reduce_heads)(const FlowExpr&, FlowAxis)) {
  FlowBuilder f(name);
  FlowExpr kmax = f.field("kmax", FieldReduce::kMax, 1, FieldStorage::kBF16);
  FlowExpr kmin = f.field("kmin", FieldReduce::kMin, 1, FieldStorage::kBF16);
  FlowExpr bound = sum(max(f.q() * kmax, f.q() * kmin), kFeat);  // (Hg,1,1)
  f.select_topk(reduce_heads(bound, kHeads));
  return f.build();
}

// Block top-k on mean keys: q·mean(k) of the page.
Flow centroid(const char* name, FlowExpr (*reduce_heads)(const FlowExpr&, FlowAxis)) {
  FlowBuilder f(name);
  FlowExpr kmean = f.field("kmean", FieldReduce::kMean);
  f.select_topk(reduce_heads(dot(f.q(), kmean), kHeads));
  return f.build();
}

// Mean plus an optimistic spread term: q·mean(k) + Σ_d |q_d|·std_d(k), max over the heads.
Flow meanstd() {
  FlowBuilder f("meanstd");
  FlowExpr kmean = f.field("kmean", FieldReduce::kMean);
  FlowExpr kstd = f.field("kstd", FieldReduce::kStd);
  FlowExpr score = dot(f.q(), kmean) + dot(abs(f.q()), kstd);  // (Hg,1,1)
  f.select_topk(max(score, kHeads));
  return f.build();
}

// H2O-style heavy hitters: the attention mass each page has received, accumulated over steps.
// The mass is estimated from the page's mean key (softmax over the candidate pages of the best
// head's scaled q·mean(k)), not from the exact per-token attention weights.
Flow h2o() {
  FlowBuilder f("h2o");
  FlowExpr kmean = f.field("kmean", FieldReduce::kMean);
  FlowExpr mass = softmax(max(dot(f.q(), kmean), kHeads) * f.scale());  // (1,1,1), sums to 1 over pages
  FlowExpr total = f.load("acc") + mass;
  f.save("acc", total);
  f.select_topk(total);
  return f.build();
}

// The exact score (every key kept): each query head's largest attention logit over the page's
// keys, summed over the group's heads. For evaluation only: its fields are as large as the keys.
// (Until 2026-12-06 the heads were combined by max; the sum keeps more answers, docs/accuracy.md.)
Flow oracle() {
  FlowBuilder f("oracle");
  FlowExpr keys = f.field("keys", FieldReduce::kMax, kFlowSubPage);
  FlowExpr logits = dot(f.q(), keys) * f.scale();  // (Hg,P,1)
  f.select_topk(sum(max(logits, kSub), kHeads));
  return f.build();
}

// Key proxies: every key of the page stored in `storage` (int4: a quarter of a bf16 key's bytes,
// plus a scale per key); each query head of the group scores the page by its largest q·k̂ (the
// oracle's rule on approximate keys) and the heads' scores are summed: a page many heads want
// beats one a single head wants a little more (docs/accuracy.md measured sum against max).
Flow proxy(const char* name, FieldStorage storage) {
  FlowBuilder f(name);
  FlowExpr keys = f.field("keys", FieldReduce::kMax, kFlowSubPage, storage);
  f.select_topk(sum(max(dot(f.q(), keys), kSub), kHeads));
  return f.build();
}

// Two-stage on key proxies: int4 keys keep the best 2·k pages, int8 keys (read for those only)
// pick k of them, each by proxy's rule; near the exact selection for int4's bytes plus a little.
Flow proxy_rerank() {
  FlowBuilder f("proxy_rerank");
  FlowExpr keys4 = f.field("keys4", FieldReduce::kMax, kFlowSubPage, FieldStorage::kInt4);
  FlowExpr keys8 = f.field("keys8", FieldReduce::kMax, kFlowSubPage, FieldStorage::kInt8);
  f.stage_topk(sum(max(dot(f.q(), keys4), kSub), kHeads), 2);
  f.select_topk(sum(max(dot(f.q(), keys8), kSub), kHeads));
  return f.build();
}

// Two-stage: Quest's bound (bf16, exact on the GPU) keeps 8·k pages, int4 key proxies pick k of them,
// so the proxies are read for the survivors alone.
Flow quest_proxy() {
  FlowBuilder f("quest_proxy");
  FlowExpr kmax = f.field("kmax", FieldReduce::kMax, 1, FieldStorage::kBF16);
  FlowExpr kmin = f.field("kmin", FieldReduce::kMin, 1, FieldStorage::kBF16);
  FlowExpr keys = f.field("keys", FieldReduce::kMax, kFlowSubPage, FieldStorage::kInt4);
  f.stage_topk(sum(sum(max(f.q() * kmax, f.q() * kmin), kFeat), kHeads), 8);
  f.select_topk(sum(max(dot(f.q(), keys), kSub), kHeads));
  return f.build();
}

struct Builtin {
  std::string name;
  Flow flow;
};

const std::vector<Builtin>& builtins() {
  static const std::vector<Builtin> table = [] {
    std::vector<Flow> flows = {streaming(),
                               quest("quest", sum),
                               quest("quest_gqa", max),
                               centroid("centroid", sum),
                               centroid("centroid_gqa", max),
                               meanstd(),
                               h2o(),
                               oracle(),
                               proxy("proxy", FieldStorage::kInt4),
                               proxy("proxy8", FieldStorage::kInt8),
                               proxy_rerank(),
                               quest_proxy()};
    std::vector<Builtin> out;
    for (Flow& flow : flows) out.push_back({flow.name, std::move(flow)});
    return out;
  }();
  return table;
}

}  // namespace

const Flow* find_builtin_flow(std::string_view name) {
  for (const Builtin& b : builtins())
    if (b.name == name) return &b.flow;
  return nullptr;
}

std::vector<std::string> builtin_flow_names() {
  std::vector<std::string> names;
  for (const Builtin& b : builtins()) names.push_back(b.name);
  return names;
}

}  // namespace vortex
