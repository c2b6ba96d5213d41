#include "sparse/flow_interpreter.h"

#include <algorithm>
#include <cmath>

#include "sparse/flow_node.h"

namespace vortex {
namespace {

using Slot = FlowScratch::Slot;

// ---- kernels on one page's values --------------------------------------------------------------

// A contiguous (h, s, f) value; a dimension of size 1 broadcasts.
struct View {
  const float* p = nullptr;
  int64_t h = 1, s = 1, f = 1;
  const float* row(int64_t hi, int64_t si) const { return p + ((h > 1 ? hi : 0) * s + (s > 1 ? si : 0)) * f; }
};

template <class Op>
void unary_loop(const View& a, float* out, Op op) {
  const int64_t n = a.h * a.s * a.f;
  for (int64_t i = 0; i < n; ++i) out[i] = op(a.p[i]);
}

void unary(FlowOp op, const View& a, float* out) {
  switch (op) {
    case FlowOp::kNeg: return unary_loop(a, out, [](float x) { return -x; });
    case FlowOp::kAbs: return unary_loop(a, out, [](float x) { return std::fabs(x); });
    case FlowOp::kExp: return unary_loop(a, out, [](float x) { return std::exp(x); });
    case FlowOp::kLog: return unary_loop(a, out, [](float x) { return std::log(x); });
    case FlowOp::kRelu: return unary_loop(a, out, [](float x) { return x > 0.0f ? x : 0.0f; });
    case FlowOp::kSigmoid: return unary_loop(a, out, [](float x) { return 1.0f / (1.0f + std::exp(-x)); });
    default: fail("internal: '{}' is not a unary op", flow_op_name(op));
  }
}

// out (H, S, F) = op(a, b) with broadcasting.
template <class Op>
void binary_loop(const View& a, const View& b, float* out, const Slot& o, Op op) {
  for (int64_t h = 0; h < o.heads; ++h)
    for (int64_t s = 0; s < o.sub; ++s) {
      const float* x = a.row(h, s);
      const float* y = b.row(h, s);
      float* z = out + (h * o.sub + s) * o.feat;
      if (a.f == b.f) {
        for (int64_t f = 0; f < o.feat; ++f) z[f] = op(x[f], y[f]);
      } else if (a.f == 1) {
        const float x0 = x[0];
        for (int64_t f = 0; f < o.feat; ++f) z[f] = op(x0, y[f]);
      } else {
        const float y0 = y[0];
        for (int64_t f = 0; f < o.feat; ++f) z[f] = op(x[f], y0);
      }
    }
}

void binary(FlowOp op, const View& a, const View& b, float* out, const Slot& o) {
  switch (op) {
    case FlowOp::kAdd: return binary_loop(a, b, out, o, [](float x, float y) { return x + y; });
    case FlowOp::kSub: return binary_loop(a, b, out, o, [](float x, float y) { return x - y; });
    case FlowOp::kMul: return binary_loop(a, b, out, o, [](float x, float y) { return x * y; });
    case FlowOp::kDiv: return binary_loop(a, b, out, o, [](float x, float y) { return x / y; });
    case FlowOp::kMax: return binary_loop(a, b, out, o, [](float x, float y) { return x < y ? y : x; });
    case FlowOp::kMin: return binary_loop(a, b, out, o, [](float x, float y) { return y < x ? y : x; });
    case FlowOp::kGt: return binary_loop(a, b, out, o, [](float x, float y) { return x > y ? 1.0f : 0.0f; });
    case FlowOp::kGe: return binary_loop(a, b, out, o, [](float x, float y) { return x >= y ? 1.0f : 0.0f; });
    case FlowOp::kLt: return binary_loop(a, b, out, o, [](float x, float y) { return x < y ? 1.0f : 0.0f; });
    case FlowOp::kLe: return binary_loop(a, b, out, o, [](float x, float y) { return x <= y ? 1.0f : 0.0f; });
    case FlowOp::kEq: return binary_loop(a, b, out, o, [](float x, float y) { return x == y ? 1.0f : 0.0f; });
    default: fail("internal: '{}' is not a binary op", flow_op_name(op));
  }
}

float sum_row(const float* x, int64_t n) {
  float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
  for (int64_t i = 0; i < n; ++i) acc += x[i];
  return acc;
}

// out (H, S, 1) = Σ_f a * b.
void dot(const View& a, const View& b, float* out, const Slot& o) {
  const int64_t F = std::max(a.f, b.f);
  for (int64_t h = 0; h < o.heads; ++h)
    for (int64_t s = 0; s < o.sub; ++s) {
      const float* x = a.row(h, s);
      const float* y = b.row(h, s);
      float acc = 0.0f;
      if (a.f == b.f) {
#pragma omp simd reduction(+ : acc)
        for (int64_t f = 0; f < F; ++f) acc += x[f] * y[f];
      } else {
        acc = a.f == 1 ? x[0] * sum_row(y, F) : y[0] * sum_row(x, F);
      }
      out[h * o.sub + s] = acc;
    }
}

float reduce_row(FlowOp op, const float* x, int64_t n) {
  float acc = x[0];
  switch (op) {
    case FlowOp::kReduceSum: return sum_row(x, n);
    case FlowOp::kReduceMean: return sum_row(x, n) / static_cast<float>(n);
    case FlowOp::kReduceMax:
#pragma omp simd reduction(max : acc)
      for (int64_t i = 0; i < n; ++i) acc = std::max(acc, x[i]);
      return acc;
    default:
#pragma omp simd reduction(min : acc)
      for (int64_t i = 0; i < n; ++i) acc = std::min(acc, x[i]);
      return acc;
  }
}

// out (F) = op over rows of x (count rows of F, `stride` floats apart).
void reduce_rows(FlowOp op, const float* x, int64_t count, int64_t stride, int64_t F, float* out) {
  std::copy(x, x + F, out);
  for (int64_t r = 1; r < count; ++r) {
    const float* y = x + r * stride;
    if (op == FlowOp::kReduceMax)
      for (int64_t f = 0; f < F; ++f) out[f] = std::max(out[f], y[f]);
    else if (op == FlowOp::kReduceMin)
      for (int64_t f = 0; f < F; ++f) out[f] = std::min(out[f], y[f]);
    else
      for (int64_t f = 0; f < F; ++f) out[f] += y[f];
  }
  if (op == FlowOp::kReduceMean)
    for (int64_t f = 0; f < F; ++f) out[f] /= static_cast<float>(count);
}

void reduce(FlowOp op, FlowAxis axis, const View& a, float* out) {
  switch (axis) {
    case FlowAxis::kFeat:
      for (int64_t r = 0; r < a.h * a.s; ++r) out[r] = reduce_row(op, a.p + r * a.f, a.f);
      return;
    case FlowAxis::kSub:
      for (int64_t h = 0; h < a.h; ++h) reduce_rows(op, a.p + h * a.s * a.f, a.s, a.f, a.f, out + h * a.f);
      return;
    case FlowAxis::kHeads:
      for (int64_t s = 0; s < a.s; ++s) reduce_rows(op, a.p + s * a.f, a.h, a.s * a.f, a.f, out + s * a.f);
      return;
  }
}

// ---- planning ----------------------------------------------------------------------------------

int64_t resolve(int32_t dim, int64_t group, int64_t head_dim, int64_t page_size) {
  if (dim == kFlowDimGroup) return group;
  if (dim == kFlowDimHeadDim) return head_dim;
  if (dim == kFlowDimPage) return page_size;
  return dim;
}

bool is_page_leaf(FlowOp op) { return op == FlowOp::kField || op == FlowOp::kLoad; }

// -1: page-invariant; otherwise the number of softmaxes on the way from the page's values.
int32_t phase_of(const std::vector<Slot>& slots, const FlowInstr& x) {
  if (is_page_leaf(x.op)) return 0;
  if (flow_op_kind(x.op) == FlowOpKind::kLeaf) return -1;
  int32_t phase = slots[static_cast<size_t>(x.a)].phase;
  if (x.b >= 0) phase = std::max(phase, slots[static_cast<size_t>(x.b)].phase);
  return x.op == FlowOp::kSoftmax ? std::max(phase, 0) + 1 : phase;
}

void plan(const Flow& flow, int64_t group, int64_t head_dim, int64_t page_size, int64_t pages, FlowScratch& sc) {
  const std::vector<FlowInstr>& xs = flow.instrs;
  sc.slots.assign(xs.size(), Slot{});
  int64_t values = 0;
  for (size_t j = 0; j < xs.size(); ++j) {
    Slot& s = sc.slots[j];
    s.heads = resolve(xs[j].shape.heads, group, head_dim, page_size);
    s.sub = resolve(xs[j].shape.sub, group, head_dim, page_size);
    s.feat = resolve(xs[j].shape.feat, group, head_dim, page_size);
    s.size = s.heads * s.sub * s.feat;
    s.phase = phase_of(sc.slots, xs[j]);
    if (!is_page_leaf(xs[j].op) && xs[j].op != FlowOp::kQuery) s.offset = values, values += s.size;
    if (xs[j].op == FlowOp::kSoftmax) s.stats = values, values += 2 * s.size;
  }
  // A value is kept for every page when a later phase reads it (the input of a softmax, or an
  // operand of an instruction after one), or when the end of the call does (saves, the score).
  // Loads read by a save are copied too, so that writing one slot cannot change another's value.
  for (size_t j = 0; j < xs.size(); ++j)
    for (int32_t arg : {xs[j].a, xs[j].b})
      if (arg >= 0 && sc.slots[static_cast<size_t>(arg)].phase < sc.slots[j].phase) sc.slots[static_cast<size_t>(arg)].keep = true;
  for (const FlowSave& save : flow.saves) sc.slots[static_cast<size_t>(save.value)].keep = true;
  if (flow.select.value >= 0) sc.slots[static_cast<size_t>(flow.select.value)].keep = true;
  int64_t spills = 0;
  for (size_t j = 0; j < xs.size(); ++j) {
    Slot& s = sc.slots[j];
    if (s.keep && s.phase >= 0 && xs[j].op != FlowOp::kField) s.spill = spills, spills += pages * s.size;
  }
  if (sc.values.size() < static_cast<size_t>(values)) sc.values.resize(static_cast<size_t>(values));
  if (sc.spills.size() < static_cast<size_t>(spills)) sc.spills.resize(static_cast<size_t>(spills));
}

// ---- evaluation --------------------------------------------------------------------------------

class Evaluator {
 public:
  Evaluator(const Flow& flow, const FlowInputs& in, FlowScratch& sc) : flow_(flow), in_(in), sc_(sc) {}

  void run(std::span<float> scores) {
    int32_t last_phase = -1;
    for (size_t j = 0; j < flow_.instrs.size(); ++j) {
      if (sc_.slots[j].phase == -1 && computed(j)) compute(j, 0);
      last_phase = std::max(last_phase, sc_.slots[j].phase);
    }
    const int64_t N = static_cast<int64_t>(in_.pages.size());
    for (int32_t phase = 0; phase <= last_phase; ++phase) {
      for (size_t j = 0; j < flow_.instrs.size(); ++j)
        if (sc_.slots[j].phase == phase && flow_.instrs[j].op == FlowOp::kSoftmax) softmax_stats(j);
      for (int64_t i = 0; i < N; ++i)
        for (size_t j = 0; j < flow_.instrs.size(); ++j)
          if (sc_.slots[j].phase == phase && computed(j)) compute(j, i);
    }
    for (int64_t i = 0; i < N; ++i)
      scores[static_cast<size_t>(i)] = flow_.select.value >= 0 ? view(static_cast<size_t>(flow_.select.value), i).p[0] : 0.0f;
    for (const FlowSave& save : flow_.saves) {
      float* base = in_.state_base[static_cast<size_t>(save.slot)];
      for (int64_t i = 0; i < N; ++i)
        base[in_.pages[static_cast<size_t>(i)] * in_.state_page_stride] = view(static_cast<size_t>(save.value), i).p[0];
    }
  }

 private:
  // Whether instruction j is computed into the scratch (fields, and loads nobody copies, are read in place).
  bool computed(size_t j) const {
    FlowOp op = flow_.instrs[j].op;
    return op != FlowOp::kQuery && (!is_page_leaf(op) || sc_.slots[j].spill >= 0);
  }

  const float* external(size_t j, int64_t i) const {
    const FlowInstr& x = flow_.instrs[j];
    if (x.op == FlowOp::kQuery) return in_.q;  // also read by page-invariant values, with no page at all
    const int64_t page = in_.pages[static_cast<size_t>(i)];
    if (x.op == FlowOp::kField) {
      const FlowPageView& f = in_.fields[static_cast<size_t>(x.index)];
      return f.base + page * f.page_stride;
    }
    return in_.state_base[static_cast<size_t>(x.index)] + page * in_.state_page_stride;
  }

  float* output(size_t j, int64_t i) {
    const Slot& s = sc_.slots[j];
    return s.spill >= 0 ? sc_.spills.data() + s.spill + i * s.size : sc_.values.data() + s.offset;
  }

  View view(size_t j, int64_t i) const {
    const Slot& s = sc_.slots[j];
    const float* p = nullptr;
    if (s.spill >= 0) p = sc_.spills.data() + s.spill + i * s.size;
    else if (flow_.instrs[j].op == FlowOp::kQuery || is_page_leaf(flow_.instrs[j].op)) p = external(j, i);
    else p = sc_.values.data() + s.offset;
    return {p, s.heads, s.sub, s.feat};
  }

  void compute(size_t j, int64_t i) {
    const FlowInstr& x = flow_.instrs[j];
    const Slot& s = sc_.slots[j];
    float* out = output(j, i);
    switch (flow_op_kind(x.op)) {
      case FlowOpKind::kLeaf: return leaf(j, out, i);
      case FlowOpKind::kUnary: return unary(x.op, arg(x.a, i), out);
      case FlowOpKind::kBinary: return binary(x.op, arg(x.a, i), arg(x.b, i), out, s);
      case FlowOpKind::kDot: return dot(arg(x.a, i), arg(x.b, i), out, s);
      case FlowOpKind::kReduce: return reduce(x.op, x.axis, arg(x.a, i), out);
      case FlowOpKind::kSoftmax: return softmax(arg(x.a, i), sc_.values.data() + s.stats, s.size, out);
    }
  }

  View arg(int32_t id, int64_t i) const { return view(static_cast<size_t>(id), i); }

  void leaf(size_t j, float* out, int64_t i) const {
    const FlowInstr& x = flow_.instrs[j];
    const float D = static_cast<float>(in_.head_dim);
    switch (x.op) {
      case FlowOp::kNumber: out[0] = x.number; return;
      case FlowOp::kHeadDim: out[0] = D; return;
      case FlowOp::kScale: out[0] = 1.0f / std::sqrt(D); return;
      case FlowOp::kPageSize: out[0] = static_cast<float>(in_.page_size); return;
      default: {  // a field or load copied for every page
        const float* src = external(j, i);
        std::copy(src, src + sc_.slots[j].size, out);
      }
    }
  }

  // stats (2, E): per element, the max over pages and the sum of exp(x - max).
  void softmax_stats(size_t j) {
    const Slot& s = sc_.slots[j];
    float* m = sc_.values.data() + s.stats;
    float* z = m + s.size;
    std::fill(m, m + s.size, -INFINITY);
    std::fill(z, z + s.size, 0.0f);
    const int64_t N = static_cast<int64_t>(in_.pages.size());
    for (int64_t i = 0; i < N; ++i) {
      const float* x = arg(flow_.instrs[j].a, i).p;
      for (int64_t e = 0; e < s.size; ++e) m[e] = std::max(m[e], x[e]);
    }
    for (int64_t i = 0; i < N; ++i) {
      const float* x = arg(flow_.instrs[j].a, i).p;
      for (int64_t e = 0; e < s.size; ++e) z[e] += m[e] == -INFINITY ? 0.0f : std::exp(x[e] - m[e]);
    }
  }

  // A page's share; 0 where every page is -inf.
  static void softmax(const View& a, const float* stats, int64_t size, float* out) {
    const float* m = stats;
    const float* z = stats + size;
    for (int64_t e = 0; e < size; ++e) out[e] = m[e] == -INFINITY ? 0.0f : std::exp(a.p[e] - m[e]) / z[e];
  }

  const Flow& flow_;
  const FlowInputs& in_;
  FlowScratch& sc_;
};

void check_inputs(const Flow& flow, const FlowInputs& in, size_t scores) {
  check(in.fields.size() == flow.fields.size(), "flow '{}' has {} fields, the inputs give {}", flow.name,
        flow.fields.size(), in.fields.size());
  check(in.state_base.size() == flow.state.size(), "flow '{}' has {} state slots, the inputs give {}", flow.name,
        flow.state.size(), in.state_base.size());
  check(in.group >= 1 && in.head_dim >= 1 && in.page_size >= 1 && in.q != nullptr,
        "flow '{}': bad inputs (group {}, head dim {}, page size {})", flow.name, in.group, in.head_dim, in.page_size);
  check(scores == in.pages.size(), "flow '{}': {} scores for {} pages", flow.name, scores, in.pages.size());
  check_flow_page_size(flow, in.page_size);
}

}  // namespace

void FlowScratch::reserve(const Flow& flow, int64_t group, int64_t head_dim, int64_t page_size, int64_t max_pages) {
  plan(flow, group, head_dim, page_size, max_pages, *this);
}

void evaluate_flow(const Flow& flow, const FlowInputs& in, std::span<float> scores, FlowScratch& scratch) {
  check_inputs(flow, in, scores.size());
  plan(flow, in.group, in.head_dim, in.page_size, static_cast<int64_t>(in.pages.size()), scratch);
  Evaluator(flow, in, scratch).run(scores);
}

// ---- selection ---------------------------------------------------------------------------------

void select_pages(const Flow& flow, std::span<const float> scores, int64_t k, std::vector<int32_t>& selected) {
  selected.clear();
  if (flow.select.kind == FlowSelectKind::kNone || k <= 0) return;
  const bool threshold = flow.select.kind == FlowSelectKind::kThreshold;
  for (size_t i = 0; i < scores.size(); ++i) {
    float s = scores[i];
    if (!std::isnan(s) && (!threshold || s >= flow.select.threshold)) selected.push_back(static_cast<int32_t>(i));
  }
  auto better = [&](int32_t x, int32_t y) {
    float sx = scores[static_cast<size_t>(x)], sy = scores[static_cast<size_t>(y)];
    return sx > sy || (sx == sy && x < y);
  };
  const size_t keep = std::min(selected.size(), static_cast<size_t>(k));
  std::partial_sort(selected.begin(), selected.begin() + static_cast<std::ptrdiff_t>(keep), selected.end(), better);
  selected.resize(keep);
}

std::vector<int32_t> select_pages(const Flow& flow, std::span<const float> scores, int64_t k) {
  std::vector<int32_t> selected;
  select_pages(flow, scores, k, selected);
  return selected;
}

}  // namespace vortex
