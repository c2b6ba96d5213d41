// The flow IR and its C++ builder: expression nodes with eager shape inference, statements, and
// the lowering of the expression DAG to straight-line SSA.
#include <algorithm>
#include <bit>
#include <cctype>
#include <cmath>
#include <map>
#include <tuple>
#include <unordered_map>

#include "sparse/flow_node.h"

namespace vortex {

// ---- names and shapes --------------------------------------------------------------------------

const char* flow_op_name(FlowOp op) {
  switch (op) {
    case FlowOp::kQuery: return "q";
    case FlowOp::kField: return "field";
    case FlowOp::kLoad: return "load";
    case FlowOp::kNumber: return "number";
    case FlowOp::kHeadDim: return "D";
    case FlowOp::kScale: return "scale";
    case FlowOp::kPageSize: return "P";
    case FlowOp::kNeg: return "neg";
    case FlowOp::kAbs: return "abs";
    case FlowOp::kExp: return "exp";
    case FlowOp::kLog: return "log";
    case FlowOp::kRelu: return "relu";
    case FlowOp::kSigmoid: return "sigmoid";
    case FlowOp::kAdd: return "add";
    case FlowOp::kSub: return "sub";
    case FlowOp::kMul: return "mul";
    case FlowOp::kDiv: return "div";
    case FlowOp::kMax: return "max";
    case FlowOp::kMin: return "min";
    case FlowOp::kGt: return "gt";
    case FlowOp::kGe: return "ge";
    case FlowOp::kLt: return "lt";
    case FlowOp::kLe: return "le";
    case FlowOp::kEq: return "eq";
    case FlowOp::kDot: return "dot";
    case FlowOp::kReduceSum: return "sum";
    case FlowOp::kReduceMean: return "mean";
    case FlowOp::kReduceMax: return "max";
    case FlowOp::kReduceMin: return "min";
    case FlowOp::kSoftmax: return "softmax";
  }
  return "?";
}

FlowOpKind flow_op_kind(FlowOp op) {
  if (op <= FlowOp::kPageSize) return FlowOpKind::kLeaf;
  if (op <= FlowOp::kSigmoid) return FlowOpKind::kUnary;
  if (op <= FlowOp::kEq) return FlowOpKind::kBinary;
  if (op == FlowOp::kDot) return FlowOpKind::kDot;
  if (op <= FlowOp::kReduceMin) return FlowOpKind::kReduce;
  return FlowOpKind::kSoftmax;
}

const char* field_reduce_name(FieldReduce reduce) {
  switch (reduce) {
    case FieldReduce::kMax: return "max";
    case FieldReduce::kMin: return "min";
    case FieldReduce::kMean: return "mean";
    case FieldReduce::kStd: return "std";
    case FieldReduce::kNorm: return "norm";
  }
  return "?";
}

const char* field_storage_name(FieldStorage storage) {
  switch (storage) {
    case FieldStorage::kF32: return "f32";
    case FieldStorage::kBF16: return "bf16";
    case FieldStorage::kFP8: return "fp8";
    case FieldStorage::kInt8: return "int8";
    case FieldStorage::kInt4: return "int4";
    case FieldStorage::kSign: return "sign";
  }
  return "?";
}

const char* flow_axis_name(FlowAxis axis) {
  switch (axis) {
    case FlowAxis::kHeads: return "heads";
    case FlowAxis::kSub: return "sub";
    case FlowAxis::kFeat: return "feat";
  }
  return "?";
}

namespace {

std::string dim_name(int32_t dim) {
  if (dim == kFlowDimGroup) return "Hg";
  if (dim == kFlowDimPage) return "P";
  if (dim == kFlowDimHeadDim) return "D";
  return std::to_string(dim);
}

// Broadcasts one dimension; false when neither is 1 and they differ.
bool broadcast_dim(int32_t x, int32_t y, int32_t& out) {
  out = x == 1 ? y : x;
  return x == y || x == 1 || y == 1;
}

bool valid_sub(int32_t sub) { return sub == kFlowDimPage || (sub >= 1 && sub <= 64 && std::has_single_bit(static_cast<uint32_t>(sub))); }

bool valid_identifier(std::string_view name) {
  if (name.empty() || !(std::isalpha(static_cast<unsigned char>(name[0])) || name[0] == '_')) return false;
  for (char c : name)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_')) return false;
  return true;
}

std::string loc_text(FlowLoc loc) { return fmt::format("{}:{}", loc.line, loc.column); }

// " (first at 3:1)" for a location from the text form, "" for one from C++.
std::string where(const char* what, FlowLoc loc) { return loc.line > 0 ? fmt::format(" ({} {})", what, loc_text(loc)) : ""; }

FlowExpr make_node(FlowNode node) { return FlowExpr(std::make_shared<const FlowNode>(std::move(node))); }

FlowNode node_with(FlowOp op, FlowShape shape, FlowLoc loc) {
  FlowNode node;
  node.op = op;
  node.shape = shape;
  node.loc = loc;
  return node;
}

FlowExpr make_leaf(FlowOp op, FlowShape shape, FlowLoc loc) { return make_node(node_with(op, shape, loc)); }

const FlowNode& node_of(const FlowExpr& x, const char* what, FlowLoc loc) {
  if (!x.valid()) flow_fail(loc, "an empty FlowExpr is an operand of '{}'", what);
  return *x.node();
}

}  // namespace

std::string to_string(const FlowShape& shape) {
  return fmt::format("({},{},{})", dim_name(shape.heads), dim_name(shape.sub), dim_name(shape.feat));
}

std::string flow_loc_prefix(FlowLoc loc) { return loc.line > 0 ? loc_text(loc) + ": " : std::string(); }

FlowShape FlowField::shape() const {
  return {.heads = 1, .sub = sub, .feat = reduce == FieldReduce::kNorm ? 1 : kFlowDimHeadDim};
}

// ---- expressions -------------------------------------------------------------------------------

FlowExpr::FlowExpr(double value) : FlowExpr(number(value)) {}

const FlowShape& FlowExpr::shape() const {
  check(valid(), "internal: shape() of an empty FlowExpr");
  return node_->shape;
}

FlowExpr number(double value, FlowLoc loc) {
  if (std::isnan(value)) flow_fail(loc, "a flow constant must not be NaN");
  FlowNode node = node_with(FlowOp::kNumber, {}, loc);
  node.number = static_cast<float>(value);
  return make_node(std::move(node));
}

FlowExpr apply(FlowOp op, const FlowExpr& a, const FlowExpr& b, FlowLoc loc) {
  const FlowOpKind kind = flow_op_kind(op);
  check(kind != FlowOpKind::kLeaf && kind != FlowOpKind::kReduce, "internal: apply() of '{}'", flow_op_name(op));
  const FlowNode& x = node_of(a, flow_op_name(op), loc);
  const bool two = kind == FlowOpKind::kBinary || kind == FlowOpKind::kDot;
  check(two == b.valid(), "internal: '{}' given {} operands", flow_op_name(op), b.valid() ? 2 : 1);
  if (op == FlowOp::kNeg && x.op == FlowOp::kNumber) return number(-static_cast<double>(x.number), loc);
  FlowShape shape = x.shape;
  if (two) {
    const FlowShape& y = node_of(b, flow_op_name(op), loc).shape;
    bool ok = broadcast_dim(x.shape.heads, y.heads, shape.heads) && broadcast_dim(x.shape.sub, y.sub, shape.sub) &&
              broadcast_dim(x.shape.feat, y.feat, shape.feat);
    if (!ok) flow_fail(loc, "shape mismatch in {}: {} and {}", flow_op_name(op), to_string(x.shape), to_string(y));
    if (kind == FlowOpKind::kDot) shape.feat = 1;
  }
  FlowNode node = node_with(op, shape, loc);
  node.a = a.node();
  if (two) node.b = b.node();
  return make_node(std::move(node));
}

FlowExpr reduce(FlowOp op, const FlowExpr& x, FlowAxis axis, FlowLoc loc) {
  check(flow_op_kind(op) == FlowOpKind::kReduce, "internal: reduce() of '{}'", flow_op_name(op));
  FlowShape shape = node_of(x, flow_op_name(op), loc).shape;
  (axis == FlowAxis::kHeads ? shape.heads : axis == FlowAxis::kSub ? shape.sub : shape.feat) = 1;
  FlowNode node = node_with(op, shape, loc);
  node.a = x.node();
  node.axis = axis;
  return make_node(std::move(node));
}

FlowExpr operator+(const FlowExpr& a, const FlowExpr& b) { return apply(FlowOp::kAdd, a, b); }
FlowExpr operator-(const FlowExpr& a, const FlowExpr& b) { return apply(FlowOp::kSub, a, b); }
FlowExpr operator*(const FlowExpr& a, const FlowExpr& b) { return apply(FlowOp::kMul, a, b); }
FlowExpr operator/(const FlowExpr& a, const FlowExpr& b) { return apply(FlowOp::kDiv, a, b); }
FlowExpr operator-(const FlowExpr& x) { return apply(FlowOp::kNeg, x); }
FlowExpr operator>(const FlowExpr& a, const FlowExpr& b) { return apply(FlowOp::kGt, a, b); }
FlowExpr operator>=(const FlowExpr& a, const FlowExpr& b) { return apply(FlowOp::kGe, a, b); }
FlowExpr operator<(const FlowExpr& a, const FlowExpr& b) { return apply(FlowOp::kLt, a, b); }
FlowExpr operator<=(const FlowExpr& a, const FlowExpr& b) { return apply(FlowOp::kLe, a, b); }
FlowExpr max(const FlowExpr& a, const FlowExpr& b) { return apply(FlowOp::kMax, a, b); }
FlowExpr min(const FlowExpr& a, const FlowExpr& b) { return apply(FlowOp::kMin, a, b); }
FlowExpr eq(const FlowExpr& a, const FlowExpr& b) { return apply(FlowOp::kEq, a, b); }
FlowExpr abs(const FlowExpr& x) { return apply(FlowOp::kAbs, x); }
FlowExpr exp(const FlowExpr& x) { return apply(FlowOp::kExp, x); }
FlowExpr log(const FlowExpr& x) { return apply(FlowOp::kLog, x); }
FlowExpr relu(const FlowExpr& x) { return apply(FlowOp::kRelu, x); }
FlowExpr sigmoid(const FlowExpr& x) { return apply(FlowOp::kSigmoid, x); }
FlowExpr dot(const FlowExpr& a, const FlowExpr& b) { return apply(FlowOp::kDot, a, b); }
FlowExpr sum(const FlowExpr& x, FlowAxis axis) { return reduce(FlowOp::kReduceSum, x, axis); }
FlowExpr mean(const FlowExpr& x, FlowAxis axis) { return reduce(FlowOp::kReduceMean, x, axis); }
FlowExpr max(const FlowExpr& x, FlowAxis axis) { return reduce(FlowOp::kReduceMax, x, axis); }
FlowExpr min(const FlowExpr& x, FlowAxis axis) { return reduce(FlowOp::kReduceMin, x, axis); }
FlowExpr softmax(const FlowExpr& x) { return apply(FlowOp::kSoftmax, x); }

// ---- statements --------------------------------------------------------------------------------

FlowBuilder::FlowBuilder(std::string name, std::string origin) : name_(std::move(name)), origin_(std::move(origin)) {
  check(!name_.empty(), "a flow needs a name");
}

FlowExpr FlowBuilder::q(FlowLoc loc) const { return make_leaf(FlowOp::kQuery, {kFlowDimGroup, 1, kFlowDimHeadDim}, loc); }
FlowExpr FlowBuilder::head_dim(FlowLoc loc) const { return make_leaf(FlowOp::kHeadDim, {}, loc); }
FlowExpr FlowBuilder::scale(FlowLoc loc) const { return make_leaf(FlowOp::kScale, {}, loc); }
FlowExpr FlowBuilder::page_size(FlowLoc loc) const { return make_leaf(FlowOp::kPageSize, {}, loc); }

void FlowBuilder::check_open(FlowLoc loc, std::string_view what) const {
  if (selected_)
    flow_fail(loc, "{} after the selection{}: select must be the last statement", what, where("at", select_.loc));
}

FlowExpr FlowBuilder::field(std::string_view name, FieldReduce reduce, int32_t sub, FieldStorage storage, FlowLoc loc) {
  check_open(loc, "field");
  if (!valid_identifier(name)) flow_fail(loc, "'{}' is not a valid field name", name);
  for (const FlowField& f : fields_)
    if (f.name == name) flow_fail(loc, "redefining '{}'{}", name, where("first defined at", f.loc));
  if (!valid_sub(sub))
    flow_fail(loc, "field '{}': sub={} does not divide the page size (8, 16, 32 or 64): use a power of two up to 64, "
              "or sub=page", name, sub);
  FlowField field{.name = std::string(name), .reduce = reduce, .sub = sub == 1 ? 1 : sub, .storage = storage, .loc = loc};
  fields_.push_back(field);
  FlowNode node = node_with(FlowOp::kField, field.shape(), loc);
  node.field = static_cast<int32_t>(fields_.size() - 1);
  node.name = field.name;
  node.owner = this;
  return make_node(std::move(node));
}

FlowExpr FlowBuilder::load(std::string_view state, FlowLoc loc) const {
  if (!valid_identifier(state)) flow_fail(loc, "'{}' is not a valid state name", state);
  FlowNode node = node_with(FlowOp::kLoad, {}, loc);
  node.name = std::string(state);
  node.owner = this;
  return make_node(std::move(node));
}

void FlowBuilder::save(std::string_view state, const FlowExpr& value, FlowLoc loc) {
  check_open(loc, "save");
  if (!valid_identifier(state)) flow_fail(loc, "'{}' is not a valid state name", state);
  const FlowShape& shape = node_of(value, "save", loc).shape;
  if (!shape.scalar())
    flow_fail(loc, "save({}, ...) needs a (1,1,1) value per page, got {}: reduce it first", state, to_string(shape));
  for (const PendingSave& s : saves_)
    if (s.state == state) flow_fail(loc, "state '{}' is saved twice{}", state, where("first at", s.loc));
  saves_.push_back({std::string(state), value, loc});
}

namespace {
// "reduce over heads (e.g. max(x, heads))" for each dimension of a score that is not 1.
std::string score_hint(const FlowShape& shape) {
  std::string hint;
  auto add = [&](bool wide, const char* axis, const char* example) {
    if (!wide) return;
    hint += fmt::format("{}reduce over {} (e.g. {})", hint.empty() ? "" : "; ", axis, example);
  };
  add(shape.feat != 1, "feat", "sum(x, feat)");
  add(shape.sub != 1, "sub", "max(x, sub)");
  add(shape.heads != 1, "heads", "max(x, heads)");
  return hint;
}
}  // namespace

void FlowBuilder::stage_topk(const FlowExpr& score, double factor, FlowLoc loc) {
  check_open(loc, "stage");
  const FlowShape& shape = node_of(score, "stage", loc).shape;
  if (!shape.scalar()) flow_fail(loc, "stage score has shape {}: {}", to_string(shape), score_hint(shape));
  if (!(factor >= 1.0 && factor <= 1e6))
    flow_fail(loc, "stage topk(score, factor): factor must be a number from 1 to 1e6 (survivors per selected page), got {}", factor);
  stages_.push_back({score, static_cast<float>(factor), loc});
}

void FlowBuilder::select_topk(const FlowExpr& score, FlowLoc loc) { select_scored(FlowSelectKind::kTopK, score, 0.0f, loc); }

void FlowBuilder::select_threshold(const FlowExpr& score, float threshold, FlowLoc loc) {
  if (std::isnan(threshold)) flow_fail(loc, "the threshold must not be NaN");
  select_scored(FlowSelectKind::kThreshold, score, threshold, loc);
}

void FlowBuilder::select_scored(FlowSelectKind kind, const FlowExpr& score, float threshold, FlowLoc loc) {
  if (selected_) flow_fail(loc, "more than one selection{}", where("the first is at", select_.loc));
  const FlowShape& shape = node_of(score, "select", loc).shape;
  if (!shape.scalar()) flow_fail(loc, "score has shape {}: {}", to_string(shape), score_hint(shape));
  select_ = {.kind = kind, .threshold = threshold, .loc = loc};
  score_ = score;
  selected_ = true;
}

void FlowBuilder::select_none(FlowLoc loc) {
  if (selected_) flow_fail(loc, "more than one selection{}", where("the first is at", select_.loc));
  select_ = {.kind = FlowSelectKind::kNone, .loc = loc};
  selected_ = true;
}

// ---- lowering ----------------------------------------------------------------------------------

namespace {

// Post-order over the DAG; structurally identical nodes become one instruction.
class Lowering {
 public:
  Lowering(const void* owner, const std::vector<FlowField>& fields, Flow& flow) : owner_(owner), fields_(fields), flow_(flow) {}

  int32_t emit(const std::shared_ptr<const FlowNode>& node) {
    auto seen = by_node_.find(node.get());
    if (seen != by_node_.end()) return seen->second;
    const FlowNode& n = *node;
    FlowInstr instr{.op = n.op, .axis = n.axis, .number = n.number, .shape = n.shape, .loc = n.loc};
    if (n.a) instr.a = emit(n.a);
    if (n.b) instr.b = emit(n.b);
    if (n.op == FlowOp::kField) instr.index = field_index(n);
    if (n.op == FlowOp::kLoad) {
      check(n.owner == owner_, "flow loads state '{}' of another FlowBuilder", n.name);
      instr.index = slot(n.name, n.loc, /*loaded=*/true);
    }
    if (flow_op_kind(n.op) != FlowOpKind::kReduce) instr.axis = FlowAxis::kFeat;
    auto key = std::make_tuple(static_cast<int>(instr.op), instr.a, instr.b, instr.index, static_cast<int>(instr.axis),
                               std::bit_cast<uint32_t>(instr.number));
    auto [it, fresh] = by_key_.emplace(key, static_cast<int32_t>(flow_.instrs.size()));
    if (fresh) flow_.instrs.push_back(instr);
    by_node_.emplace(node.get(), it->second);
    return it->second;
  }

  int32_t slot(const std::string& name, FlowLoc loc, bool loaded) {
    for (size_t i = 0; i < flow_.state.size(); ++i)
      if (flow_.state[i] == name) return static_cast<int32_t>(i);
    flow_.state.push_back(name);
    if (loaded) first_load_.emplace(name, loc);
    return static_cast<int32_t>(flow_.state.size() - 1);
  }

  // Every loaded slot must be saved by the flow, or it would always read 0.
  void check_loads_saved() const {
    for (const auto& [name, loc] : first_load_) {
      bool saved = false;
      for (const FlowSave& s : flow_.saves) saved = saved || flow_.state[static_cast<size_t>(s.slot)] == name;
      if (!saved) flow_fail(loc, "state '{}' is loaded but never saved (add save({}, ...))", name, name);
    }
  }

 private:
  int32_t field_index(const FlowNode& n) const {
    check(n.owner == owner_ && n.field >= 0 && static_cast<size_t>(n.field) < fields_.size() &&
              fields_[static_cast<size_t>(n.field)].name == n.name,
          "flow uses field '{}' of another FlowBuilder", n.name);
    return n.field;
  }

  const void* owner_;
  const std::vector<FlowField>& fields_;
  Flow& flow_;
  std::unordered_map<const FlowNode*, int32_t> by_node_;
  std::map<std::tuple<int, int32_t, int32_t, int32_t, int, uint32_t>, int32_t> by_key_;
  std::map<std::string, FlowLoc> first_load_;
};

}  // namespace

namespace {

// Stages narrow the candidates before a top-k; state and softmax would need a rule for the pages a
// stage drops, so a flow with stages has neither.
void check_stages(const Flow& flow) {
  if (flow.stages.empty()) return;
  const FlowLoc at = flow.stages.front().loc;
  if (flow.select.kind != FlowSelectKind::kTopK)
    flow_fail(flow.select.loc, "a flow with stages (the first at {}:{}) must end with select topk(...)", at.line, at.column);
  if (!flow.state.empty()) flow_fail(at, "a flow with stages cannot keep state (load/save): the pages a stage drops would save nothing");
  for (const FlowInstr& x : flow.instrs)
    if (x.op == FlowOp::kSoftmax)
      flow_fail(x.loc, "softmax in a flow with stages: it would normalise over a different set of pages at each stage");
}

}  // namespace

Flow FlowBuilder::build() const {
  check(selected_, "flow '{}' has no selection: end it with select topk(score), select threshold(score, c) or "
        "select none", name_);
  Flow flow;
  flow.name = name_;
  flow.origin = origin_;
  flow.fields = fields_;
  flow.select = select_;
  Lowering lowering(this, fields_, flow);
  for (const PendingSave& s : saves_) {
    int32_t value = lowering.emit(s.value.node());
    flow.saves.push_back({.slot = lowering.slot(s.state, s.loc, false), .value = value, .loc = s.loc});
  }
  for (const PendingStage& st : stages_) flow.stages.push_back({.value = lowering.emit(st.score.node()), .factor = st.factor, .loc = st.loc});
  if (select_.kind != FlowSelectKind::kNone) flow.select.value = lowering.emit(score_.node());
  lowering.check_loads_saved();
  check_stages(flow);
  return flow;
}

// ---- equality and checks -----------------------------------------------------------------------

namespace {
bool same_instr(const FlowInstr& x, const FlowInstr& y) {
  return x.op == y.op && x.a == y.a && x.b == y.b && x.index == y.index && x.axis == y.axis && x.number == y.number &&
         x.shape == y.shape;
}
}  // namespace

bool operator==(const Flow& x, const Flow& y) {
  auto same_field = [](const FlowField& f, const FlowField& g) {
    return f.name == g.name && f.reduce == g.reduce && f.sub == g.sub && f.storage == g.storage;
  };
  auto same_stage = [](const FlowStage& s, const FlowStage& t) { return s.value == t.value && s.factor == t.factor; };
  auto same_save = [](const FlowSave& s, const FlowSave& t) { return s.slot == t.slot && s.value == t.value; };
  return x.name == y.name && std::equal(x.fields.begin(), x.fields.end(), y.fields.begin(), y.fields.end(), same_field) &&
         std::equal(x.instrs.begin(), x.instrs.end(), y.instrs.begin(), y.instrs.end(), same_instr) &&
         x.state == y.state && std::equal(x.saves.begin(), x.saves.end(), y.saves.begin(), y.saves.end(), same_save) &&
         std::equal(x.stages.begin(), x.stages.end(), y.stages.begin(), y.stages.end(), same_stage) &&
         x.select.kind == y.select.kind && x.select.value == y.select.value && x.select.threshold == y.select.threshold;
}

void check_flow_page_size(const Flow& flow, int64_t page_size) {
  for (const FlowField& f : flow.fields) {
    if (f.sub == kFlowDimPage || (f.sub <= page_size && page_size % f.sub == 0)) continue;
    std::string where = flow.origin.empty() ? "" : flow.origin + ":";
    throw Error(fmt::format("{}{}flow '{}': field '{}': sub={} does not divide the page size {}", where,
                            flow_loc_prefix(f.loc), flow.name, f.name, f.sub, page_size));
  }
}

Flow flow_stage(const Flow& flow, size_t stage) {
  check(stage <= flow.stages.size(), "internal: flow '{}' has {} stages, asked for pass {}", flow.name, flow.stages.size(), stage);
  if (flow.stages.empty()) return flow;  // one pass: the flow itself (its saves included)
  const bool final_pass = stage == flow.stages.size();
  const int32_t root = final_pass ? flow.select.value : flow.stages[stage].value;
  Flow out;
  out.name = final_pass ? flow.name + ".select" : fmt::format("{}.stage{}", flow.name, stage);
  out.origin = flow.origin;
  out.fields = flow.fields;
  out.select = final_pass ? flow.select : FlowSelect{.kind = FlowSelectKind::kTopK, .loc = flow.stages[stage].loc};
  if (root < 0) return out;  // select none
  // The instructions the root reaches, renumbered in their original (topological) order.
  std::vector<int32_t> renumber(flow.instrs.size(), -1);
  std::vector<uint8_t> needed(flow.instrs.size(), 0);
  needed[static_cast<size_t>(root)] = 1;
  for (size_t j = flow.instrs.size(); j-- > 0;) {
    if (!needed[j]) continue;
    for (int32_t arg : {flow.instrs[j].a, flow.instrs[j].b})
      if (arg >= 0) needed[static_cast<size_t>(arg)] = 1;
  }
  for (size_t j = 0; j < flow.instrs.size(); ++j) {
    if (!needed[j]) continue;
    FlowInstr x = flow.instrs[j];
    if (x.a >= 0) x.a = renumber[static_cast<size_t>(x.a)];
    if (x.b >= 0) x.b = renumber[static_cast<size_t>(x.b)];
    renumber[j] = static_cast<int32_t>(out.instrs.size());
    out.instrs.push_back(x);
  }
  out.select.value = renumber[static_cast<size_t>(root)];
  return out;
}

}  // namespace vortex
