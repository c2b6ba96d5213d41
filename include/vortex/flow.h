// Vortex flows: page-centric sparse-attention algorithms as small programs over KV pages.
//
// Each decode step, for every (sequence, KV head, layer), a flow scores the sequence's candidate
// pages and selects the pages to attend (the planner adds the always-kept sink and window pages).
// A flow sees
//   q       the query heads of one KV-head group after RoPE        shape (Hg, 1, D)
//   fields  per-page reductions of the page's keys after RoPE      shape (1, S, D), norm: (1, S, 1)
//   numbers and the named constants D (head dim), scale = 1/sqrt(D), P (page size)   (1, 1, 1)
// and computes, per page, values of symbolic shape (h, s, f): h ∈ {1, Hg} query heads of the
// group, s ∈ {1, S} sub-page rows, f ∈ {1, D} features. A 1 broadcasts against anything; other
// sizes must match. The score handed to the selection must be (1, 1, 1) per page.
//
// A flow is written with the C++ builder below or in the text form (flows/*.flow, docs/flows.md);
// both produce the same IR: fields, a straight-line SSA list of instructions with inferred shapes,
// state slots, saves and one selection. The CPU interpreter (src/sparse/flow_interpreter.h) runs
// the IR; a code generator can emit one fused kernel per flow from it.
//
// Every user error throws vortex::Error (vortex/error.h). Errors from the text form start with
// "origin:line:column:"; errors from the builder name the op and the shapes.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace vortex {

// ---- shapes ------------------------------------------------------------------------------------

// Symbolic sizes, known only at run time. A dimension is 1, a literal sub-row count, or one of these.
inline constexpr int32_t kFlowDimGroup = -1;    // Hg: query heads per KV head
inline constexpr int32_t kFlowDimPage = -2;     // P: page size (a field with sub=page has S = P)
inline constexpr int32_t kFlowDimHeadDim = -3;  // D: head dim

// The symbolic shape (h, s, f) of a per-page value.
struct FlowShape {
  int32_t heads = 1;  // 1 or kFlowDimGroup
  int32_t sub = 1;    // 1, a literal S ≥ 2, or kFlowDimPage
  int32_t feat = 1;   // 1 or kFlowDimHeadDim
  bool scalar() const { return heads == 1 && sub == 1 && feat == 1; }
  bool operator==(const FlowShape&) const = default;
};
std::string to_string(const FlowShape& shape);  // "(Hg,1,D)", "(1,2,D)", "(1,P,1)"

// ---- the IR ------------------------------------------------------------------------------------

enum class FieldReduce : uint8_t { kMax, kMin, kMean, kStd, kNorm };  // std: population std per feature

// How a field is stored per (page, KV head). Below f32 a field holds its values rounded as stored:
// bf16 (round to nearest even), fp8 e4m3 / int8 / int4 with one f32 scale per sub-row (the
// sub-row's largest magnitude maps to the type's largest value: 448, 127, 7), or sign: one bit per
// value, read back as ±(the sub-row's mean magnitude). Both backends round the same way
// (src/sparse/field_storage.h), so the CPU stays the oracle of the GPU's summaries.
enum class FieldStorage : uint8_t { kF32, kBF16, kFP8, kInt8, kInt4, kSign };
enum class FlowAxis : uint8_t { kHeads, kSub, kFeat };

enum class FlowOp : uint8_t {
  // leaves
  kQuery,     // q                                      (Hg,1,D)
  kField,     // FlowInstr::index = field               (1,S,D) or (1,S,1)
  kLoad,      // FlowInstr::index = state slot          (1,1,1), 0 for a page never saved
  kNumber,    // FlowInstr::number                      (1,1,1)
  kHeadDim,   // D                                      (1,1,1)
  kScale,     // 1/sqrt(D)                              (1,1,1)
  kPageSize,  // P                                      (1,1,1)
  // elementwise, one operand
  kNeg, kAbs, kExp, kLog, kRelu, kSigmoid,
  // elementwise with broadcasting, two operands; comparisons give 1.0 / 0.0
  kAdd, kSub, kMul, kDiv, kMax, kMin, kGt, kGe, kLt, kLe, kEq,
  // sum over f of a*b (broadcast h and s)    → (h,s,1)
  kDot,
  // reductions over FlowInstr::axis          → that dimension becomes 1
  kReduceSum, kReduceMean, kReduceMax, kReduceMin,
  // softmax over the candidate pages, per element of the per-page shape
  kSoftmax,
};

// The text form's name of an op ("mul", "sum", "softmax", ...); leaves give their token.
const char* flow_op_name(FlowOp op);
const char* field_reduce_name(FieldReduce reduce);  // "max", "min", "mean", "std", "norm"
const char* flow_axis_name(FlowAxis axis);          // "heads", "sub", "feat"
const char* field_storage_name(FieldStorage storage);  // "f32", "bf16", "fp8", "int8", "int4", "sign"

// Where the text form wrote something; line 0 = built in C++. Never part of IR equality.
struct FlowLoc {
  int32_t line = 0;
  int32_t column = 0;
};

// A per-page summary of the keys of one (page, KV head): S sub-rows of width W, stored (S, W).
// Key slot r of the page goes to sub-row r % S.
struct FlowField {
  std::string name{};
  FieldReduce reduce = FieldReduce::kMax;
  int32_t sub = 1;  // S: a literal dividing P, or kFlowDimPage (S = P: every key itself)
  FieldStorage storage = FieldStorage::kF32;
  FlowLoc loc{};
  int64_t rows(int64_t page_size) const { return sub == kFlowDimPage ? page_size : sub; }         // S
  int64_t width(int64_t head_dim) const { return reduce == FieldReduce::kNorm ? 1 : head_dim; }  // W
  FlowShape shape() const;
};

// One SSA instruction; its value id is its position in Flow::instrs, operands come before it.
struct FlowInstr {
  FlowOp op = FlowOp::kNumber;
  int32_t a = -1, b = -1;            // operand value ids; -1 = unused
  int32_t index = -1;                // kField: field index; kLoad: state slot
  FlowAxis axis = FlowAxis::kFeat;   // reductions only (kFeat otherwise)
  float number = 0.0f;               // kNumber only
  FlowShape shape{};                 // inferred
  FlowLoc loc{};
};

struct FlowSave {
  int32_t slot = -1;   // state slot
  int32_t value = -1;  // value id, shape (1,1,1)
  FlowLoc loc{};
};

enum class FlowSelectKind : uint8_t {
  kTopK,       // the k best pages (the planner gives k = budget / P)
  kThreshold,  // pages with score ≥ threshold, best first, at most k
  kNone,       // no pages beyond sink and window (the indexer does not run)
};

struct FlowSelect {
  FlowSelectKind kind = FlowSelectKind::kNone;
  int32_t value = -1;       // score value id, shape (1,1,1); -1 for kNone
  float threshold = 0.0f;   // kThreshold only
  FlowLoc loc{};
};

// A pruning stage before the selection (`stage topk(score, factor)`): of the candidates that reach
// it, the best ceil(factor · k) by `value` survive (all of them when they are no more); later stages
// and the selection score only the survivors, so their fields are read for the survivors alone.
struct FlowStage {
  int32_t value = -1;     // score value id, shape (1,1,1)
  float factor = 1.0f;    // ≥ 1: survivors per page the selection keeps
  FlowLoc loc{};
};

struct Flow {
  std::string name{};
  std::string origin{};              // the file it came from, or "" (messages only; not compared)
  std::vector<FlowField> fields{};   // in declaration order
  std::vector<FlowInstr> instrs{};   // straight-line SSA; only what the saves and selection use
  std::vector<std::string> state{};  // state slot names, in order of first use
  std::vector<FlowSave> saves{};     // written after the whole step is evaluated
  std::vector<FlowStage> stages{};   // in order; only with select topk, no state and no softmax
  FlowSelect select{};
};

// Semantic equality: everything but locations and origin.
bool operator==(const Flow& x, const Flow& y);

// Throws a vortex::Error naming the field and its line unless every field's S divides page_size.
void check_flow_page_size(const Flow& flow, int64_t page_size);

// One scoring pass of a flow with stages, as a flow of its own: stage i's score selected by topk
// for i < flow.stages.size(), the flow's own selection for i == flow.stages.size(). It keeps every
// field (at the same index) and only the instructions its score needs; it has no stages. Named
// "<name>.stage<i>" and "<name>.select". A flow without stages is its own only pass (stage 0).
Flow flow_stage(const Flow& flow, size_t stage);

// ---- the C++ builder ---------------------------------------------------------------------------

struct FlowNode;  // an expression node (flow_ir.cpp)

// A per-page value under construction: an immutable node of an expression DAG, cheap to copy.
// Shapes are inferred as nodes are made, so a mismatch throws at the line that wrote it.
class FlowExpr {
 public:
  FlowExpr() = default;
  explicit FlowExpr(double number);  // a (1,1,1) constant; operators below also take plain numbers
  explicit FlowExpr(std::shared_ptr<const FlowNode> node) : node_(std::move(node)) {}

  bool valid() const { return node_ != nullptr; }
  const FlowShape& shape() const;
  const std::shared_ptr<const FlowNode>& node() const { return node_; }

 private:
  std::shared_ptr<const FlowNode> node_;
};

// The generic constructors every helper below uses (the text parser passes locations).
FlowExpr apply(FlowOp op, const FlowExpr& a, const FlowExpr& b = {}, FlowLoc loc = {});
FlowExpr reduce(FlowOp op, const FlowExpr& x, FlowAxis axis, FlowLoc loc = {});
FlowExpr number(double value, FlowLoc loc = {});

FlowExpr operator+(const FlowExpr& a, const FlowExpr& b);
FlowExpr operator-(const FlowExpr& a, const FlowExpr& b);
FlowExpr operator*(const FlowExpr& a, const FlowExpr& b);
FlowExpr operator/(const FlowExpr& a, const FlowExpr& b);
FlowExpr operator-(const FlowExpr& x);
FlowExpr operator>(const FlowExpr& a, const FlowExpr& b);
FlowExpr operator>=(const FlowExpr& a, const FlowExpr& b);
FlowExpr operator<(const FlowExpr& a, const FlowExpr& b);
FlowExpr operator<=(const FlowExpr& a, const FlowExpr& b);
FlowExpr max(const FlowExpr& a, const FlowExpr& b);
FlowExpr min(const FlowExpr& a, const FlowExpr& b);
FlowExpr eq(const FlowExpr& a, const FlowExpr& b);
FlowExpr abs(const FlowExpr& x);
FlowExpr exp(const FlowExpr& x);
FlowExpr log(const FlowExpr& x);
FlowExpr relu(const FlowExpr& x);
FlowExpr sigmoid(const FlowExpr& x);
FlowExpr dot(const FlowExpr& a, const FlowExpr& b);  // sum over f of a*b: (h,s,f) → (h,s,1)
FlowExpr sum(const FlowExpr& x, FlowAxis axis);
FlowExpr mean(const FlowExpr& x, FlowAxis axis);
FlowExpr max(const FlowExpr& x, FlowAxis axis);
FlowExpr min(const FlowExpr& x, FlowAxis axis);
FlowExpr softmax(const FlowExpr& x);  // over the candidate pages

// Numbers mix with expressions in the operators and in max/min: `x * 2.0`, `max(x, 0.0)`.
inline FlowExpr operator+(const FlowExpr& a, double b) { return a + FlowExpr(b); }
inline FlowExpr operator+(double a, const FlowExpr& b) { return FlowExpr(a) + b; }
inline FlowExpr operator-(const FlowExpr& a, double b) { return a - FlowExpr(b); }
inline FlowExpr operator-(double a, const FlowExpr& b) { return FlowExpr(a) - b; }
inline FlowExpr operator*(const FlowExpr& a, double b) { return a * FlowExpr(b); }
inline FlowExpr operator*(double a, const FlowExpr& b) { return FlowExpr(a) * b; }
inline FlowExpr operator/(const FlowExpr& a, double b) { return a / FlowExpr(b); }
inline FlowExpr operator/(double a, const FlowExpr& b) { return FlowExpr(a) / b; }
inline FlowExpr operator>(const FlowExpr& a, double b) { return a > FlowExpr(b); }
inline FlowExpr operator>=(const FlowExpr& a, double b) { return a >= FlowExpr(b); }
inline FlowExpr operator<(const FlowExpr& a, double b) { return a < FlowExpr(b); }
inline FlowExpr operator<=(const FlowExpr& a, double b) { return a <= FlowExpr(b); }
inline FlowExpr max(const FlowExpr& a, double b) { return max(a, FlowExpr(b)); }
inline FlowExpr min(const FlowExpr& a, double b) { return min(a, FlowExpr(b)); }

inline constexpr int32_t kFlowSubPage = kFlowDimPage;  // field(..., sub = kFlowSubPage): S = P

// Declares a flow's fields, state and selection. Statements are recorded in call order (write
// them in the order of the text form so both give the same IR); expressions are free functions.
class FlowBuilder {
 public:
  explicit FlowBuilder(std::string name, std::string origin = {});
  FlowBuilder(const FlowBuilder&) = delete;  // leaves remember their builder
  FlowBuilder& operator=(const FlowBuilder&) = delete;

  FlowExpr q(FlowLoc loc = {}) const;          // (Hg,1,D)
  FlowExpr head_dim(FlowLoc loc = {}) const;   // D
  FlowExpr scale(FlowLoc loc = {}) const;      // 1/sqrt(D)
  FlowExpr page_size(FlowLoc loc = {}) const;  // P
  // Declares a field: `reduce` over the page's keys in `sub` interleaved sub-rows (1, a power of
  // two ≤ 64, or kFlowSubPage), stored as `storage`.
  FlowExpr field(std::string_view name, FieldReduce reduce, int32_t sub = 1, FieldStorage storage = FieldStorage::kF32,
                 FlowLoc loc = {});
  FlowExpr load(std::string_view state, FlowLoc loc = {}) const;  // (1,1,1)
  void save(std::string_view state, const FlowExpr& value, FlowLoc loc = {});
  // A pruning stage (FlowStage): the best ceil(factor · k) candidates by `score` go on.
  void stage_topk(const FlowExpr& score, double factor, FlowLoc loc = {});
  void select_topk(const FlowExpr& score, FlowLoc loc = {});
  void select_threshold(const FlowExpr& score, float threshold, FlowLoc loc = {});
  void select_none(FlowLoc loc = {});

  bool has_selection() const { return selected_; }
  // Validates (a selection, every loaded state saved) and lowers to the IR: the DAG reachable from
  // the saves and the selection, in post order, identical subexpressions merged.
  Flow build() const;

 private:
  struct PendingSave {
    std::string state;
    FlowExpr value;
    FlowLoc loc;
  };
  struct PendingStage {
    FlowExpr score;
    float factor;
    FlowLoc loc;
  };
  void check_open(FlowLoc loc, std::string_view what) const;
  void select_scored(FlowSelectKind kind, const FlowExpr& score, float threshold, FlowLoc loc);

  std::string name_, origin_;
  std::vector<FlowField> fields_;
  std::vector<PendingSave> saves_;
  std::vector<PendingStage> stages_;
  FlowExpr score_;
  FlowSelect select_;
  bool selected_ = false;
};

// ---- the text form -----------------------------------------------------------------------------

// Parses a flow's text; `origin` (a path, or "") starts every error message.
Flow parse_flow(std::string_view text, std::string_view name, std::string_view origin = {});
// Reads and parses a .flow file; the flow is named after the file's stem.
Flow load_flow_file(const std::filesystem::path& path);
// A canonical text form: fields, one `let` per instruction, saves, selection. parse_flow of it
// (with the same name) gives back an equal Flow.
std::string to_text(const Flow& flow);

// ---- built-in flows (src/sparse/builtin_flows.cpp) ---------------------------------------------

// streaming, quest, quest_gqa, centroid, centroid_gqa, meanstd, h2o, oracle; null if unknown.
const Flow* find_builtin_flow(std::string_view name);
std::vector<std::string> builtin_flow_names();

}  // namespace vortex
