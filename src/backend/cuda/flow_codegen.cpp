// Flow → CUDA C++: plans where every SSA value lives (literal, shared memory, inlined, spilled) and
// prints one kernel. The design and its limits are in flow_codegen.h; the semantics are the
// interpreter's (src/sparse/flow_interpreter.cpp), whose phase and keep rules the plan copies.
#include "backend/cuda/flow_codegen.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <iterator>
#include <optional>

#include "core/error.h"
#include "sparse/field_storage.h"
#include "sparse/flow_node.h"

namespace vortex::cuda {
namespace {

constexpr int64_t kSharedLimitBytes = 48 * 1024;  // static shared memory, no opt-in
constexpr int32_t kMaxWarps = 4;
constexpr int32_t kPagesPerWarp = 4;              // a tile is warps · this many candidates (H100: 4 suits
                                                  // quest and proxy_rerank's 2K and 256-candidate passes)
constexpr int64_t kMaterialiseFloats = 256;       // elementwise values read twice are stored up to this size

// ---- the plan ----------------------------------------------------------------------------------

struct Dims {
  int64_t h = 1, s = 1, f = 1;  // (heads, sub, feat), resolved
  int64_t size() const { return h * s * f; }
};

enum class Storage : uint8_t {
  kConstant,  // a number or named constant: a literal
  kQuery,     // q, in shared memory (q_s)
  kField,     // the page's summary, read from global memory
  kLoad,      // the page's state, read from global memory
  kInline,    // elementwise or softmax: recomputed at each use
  kWarp,      // per page, in the warp's shared buffer (wb)
  kBlock,     // page-invariant, once per block in shared memory (pv)
};

struct Value {
  Dims dims{};
  int32_t phase = 0;     // -1: page-invariant; else the number of softmaxes on the way from the page's data
  Storage storage = Storage::kInline;
  int32_t uses = 0;      // operands, saves and the selection that read it
  int64_t offset = -1;   // kWarp: into wb; kBlock: into pv
  int64_t spill = -1;    // into a candidate's spill row, -1 = not spilled
  int64_t stats = -1;    // softmax: into st, (2, E) max and Σ exp
};

struct Plan {
  std::vector<Value> values;  // (instrs)
  int32_t last_phase = 0;     // the phase whose loop writes scores and saves
  int64_t warp_floats = 0, block_floats = 0, stats_floats = 0, spill_floats = 0;
  IndexerLayout layout{};
};

int64_t resolve(int32_t dim, const IndexerShape& shape) {
  if (dim == kFlowDimGroup) return shape.group;
  if (dim == kFlowDimHeadDim) return shape.head_dim;
  if (dim == kFlowDimPage) return shape.page_size;
  return dim;
}

bool is_page_leaf(FlowOp op) { return op == FlowOp::kField || op == FlowOp::kLoad; }

// The interpreter's phase rule: page leaves 0, other leaves -1, softmax one more than its input.
int32_t phase_of(const std::vector<Value>& values, const FlowInstr& x) {
  if (is_page_leaf(x.op)) return 0;
  if (flow_op_kind(x.op) == FlowOpKind::kLeaf) return -1;
  int32_t phase = values[static_cast<size_t>(x.a)].phase;
  if (x.b >= 0) phase = std::max(phase, values[static_cast<size_t>(x.b)].phase);
  return x.op == FlowOp::kSoftmax ? std::max(phase, 0) + 1 : phase;
}

Storage storage_of(const FlowInstr& x, const Value& v) {
  const FlowOpKind kind = flow_op_kind(x.op);
  if (x.op == FlowOp::kQuery) return Storage::kQuery;
  if (x.op == FlowOp::kField) return Storage::kField;
  if (x.op == FlowOp::kLoad) return Storage::kLoad;
  if (kind == FlowOpKind::kLeaf) return Storage::kConstant;
  if (v.phase < 0) return Storage::kBlock;
  if (kind == FlowOpKind::kDot || kind == FlowOpKind::kReduce) return Storage::kWarp;
  if (kind == FlowOpKind::kSoftmax) return Storage::kInline;
  return v.uses > 1 && v.dims.size() <= kMaterialiseFloats ? Storage::kWarp : Storage::kInline;
}

void check_shape(const Flow& flow, const IndexerShape& shape) {
  check(shape.group >= 1 && shape.head_dim >= 1 && shape.page_size >= 1,
        "flow '{}': bad indexer shape (group {}, head dim {}, page size {})", flow.name, shape.group, shape.head_dim,
        shape.page_size);
  check(flow_needs_indexer(flow), "flow '{}' selects no pages and saves nothing: it has no indexer kernel", flow.name);
  check(flow.fields.size() <= static_cast<size_t>(kFlowMaxFields), "flow '{}' has {} fields; the CUDA indexer takes at most {}",
        flow.name, flow.fields.size(), kFlowMaxFields);
  check(flow.state.size() <= static_cast<size_t>(kFlowMaxState), "flow '{}' has {} state slots; the CUDA indexer takes at most {}",
        flow.name, flow.state.size(), kFlowMaxState);
  check_flow_page_size(flow, shape.page_size);
}

// Whether value j must be kept for every page: a later phase reads it, or the end (score, saves)
// does from an earlier phase. Fields and loads are read again from global memory instead.
bool spilled(const Flow& flow, const Plan& plan, size_t j) {
  const Value& v = plan.values[j];
  if (v.phase < 0 || v.storage == Storage::kField || v.storage == Storage::kLoad) return false;
  for (size_t c = j + 1; c < flow.instrs.size(); ++c) {
    const FlowInstr& x = flow.instrs[c];
    if ((x.a == static_cast<int32_t>(j) || x.b == static_cast<int32_t>(j)) && plan.values[c].phase > v.phase) return true;
  }
  bool at_end = flow.select.value == static_cast<int32_t>(j);
  for (const FlowSave& save : flow.saves) at_end = at_end || save.value == static_cast<int32_t>(j);
  return at_end && v.phase < plan.last_phase;
}

void assign_storage(const Flow& flow, const IndexerShape& shape, Plan& plan) {
  plan.values.assign(flow.instrs.size(), Value{});
  for (const FlowInstr& x : flow.instrs)
    for (int32_t arg : {x.a, x.b})
      if (arg >= 0) ++plan.values[static_cast<size_t>(arg)].uses;
  for (const FlowSave& save : flow.saves) ++plan.values[static_cast<size_t>(save.value)].uses;
  if (flow.select.value >= 0) ++plan.values[static_cast<size_t>(flow.select.value)].uses;
  for (size_t j = 0; j < flow.instrs.size(); ++j) {
    const FlowInstr& x = flow.instrs[j];
    Value& v = plan.values[j];
    v.dims = {resolve(x.shape.heads, shape), resolve(x.shape.sub, shape), resolve(x.shape.feat, shape)};
    v.phase = phase_of(plan.values, x);
    v.storage = storage_of(x, v);
    plan.last_phase = std::max(plan.last_phase, v.phase);
  }
}

void assign_offsets(const Flow& flow, Plan& plan) {
  for (size_t j = 0; j < flow.instrs.size(); ++j) {
    Value& v = plan.values[j];
    if (v.storage == Storage::kWarp) v.offset = plan.warp_floats, plan.warp_floats += v.dims.size();
    if (v.storage == Storage::kBlock) v.offset = plan.block_floats, plan.block_floats += v.dims.size();
    if (flow.instrs[j].op == FlowOp::kSoftmax) v.stats = plan.stats_floats, plan.stats_floats += 2 * v.dims.size();
    if (spilled(flow, plan, j)) v.spill = plan.spill_floats, plan.spill_floats += v.dims.size();
  }
}

int64_t shared_bytes(const IndexerShape& shape, const Plan& plan, int32_t warps) {
  const int64_t reduce = plan.stats_floats > 0 ? 32 : 0;
  const int64_t block = int64_t{shape.group} * shape.head_dim + plan.block_floats + plan.stats_floats + reduce;
  return 4 * (block + warps * plan.warp_floats);
}

void choose_launch(const Flow& flow, const IndexerShape& shape, Plan& plan) {
  int32_t warps = kMaxWarps;
  while (warps > 1 && shared_bytes(shape, plan, warps) > kSharedLimitBytes) warps /= 2;
  const int64_t bytes = shared_bytes(shape, plan, warps);
  check(bytes <= kSharedLimitBytes,
        "flow '{}' at Hg={} D={} P={}: its per-page values need {} bytes of shared memory (limit {}); "
        "reduce large values (e.g. over feat) before combining them",
        flow.name, shape.group, shape.head_dim, shape.page_size, bytes, kSharedLimitBytes);
  plan.layout.warps = warps;
  plan.layout.tile_pages = plan.last_phase == 0 ? warps * kPagesPerWarp : 0;
  plan.layout.spill_floats = plan.spill_floats;
  plan.layout.shared_bytes = bytes;
  for (const FlowField& field : flow.fields)
    plan.layout.field_bytes.push_back(field_record_bytes(field.storage, field.rows(shape.page_size), field.width(shape.head_dim)));
}

Plan make_plan(const Flow& flow, const IndexerShape& shape) {
  check_shape(flow, shape);
  Plan plan;
  assign_storage(flow, shape, plan);
  assign_offsets(flow, plan);
  choose_launch(flow, shape, plan);
  return plan;
}

// ---- printing helpers --------------------------------------------------------------------------

// A float as an exact C++ literal (hexadecimal), or a bit pattern for the non-finite ones.
std::string literal(float x) {
  if (std::isnan(x)) return "__uint_as_float(0x7fc00000u)";
  if (std::isinf(x)) return x > 0 ? "__uint_as_float(0x7f800000u)" : "__uint_as_float(0xff800000u)";
  std::string text = fmt::format("{:a}f", x);
  return x < 0 ? "(" + text + ")" : text;
}

// The flat index of element (h, s, f) of a contiguous value; dimensions of size 1 broadcast.
std::string index_of(const Dims& d) {
  std::vector<std::string> terms;
  if (d.h > 1) terms.push_back(d.s * d.f > 1 ? fmt::format("h * {}", d.s * d.f) : "h");
  if (d.s > 1) terms.push_back(d.f > 1 ? fmt::format("s * {}", d.f) : "s");
  if (d.f > 1) terms.push_back("f");
  if (terms.empty()) return "0";
  std::string out = terms[0];
  for (size_t i = 1; i < terms.size(); ++i) out += " + " + terms[i];
  return out;
}

// "(int h, int, int f)": names only the indices the body reads.
std::string params_of(const Dims& d) {
  return fmt::format("(int{}, int{}, int{})", d.h > 1 ? " h" : "", d.s > 1 ? " s" : "", d.f > 1 ? " f" : "");
}

// Element e of a value → its (h, s, f); `skip` ('h' or 's') leaves out an index the caller replaces.
std::string decompose(const Dims& d, const char* e, char skip = ' ') {
  std::vector<std::string> parts;
  if (skip != 'h') parts.push_back(fmt::format("h = {} / {}", e, d.s * d.f));
  if (skip != 's') parts.push_back(fmt::format("s = {} / {} % {}", e, d.f, d.s));
  parts.push_back(fmt::format("f = {} % {}", e, d.f));
  return fmt::format("const int {};", fmt::join(parts, ", "));
}

std::string unary_expr(FlowOp op) {
  switch (op) {
    case FlowOp::kNeg: return "-x";
    case FlowOp::kAbs: return "fabsf(x)";
    case FlowOp::kExp: return "expf(x)";
    case FlowOp::kLog: return "logf(x)";
    case FlowOp::kRelu: return "x > 0.0f ? x : 0.0f";
    case FlowOp::kSigmoid: return "1.0f / (1.0f + expf(-x))";
    default: fail("internal: '{}' is not a unary op", flow_op_name(op));
  }
}

std::string binary_expr(FlowOp op) {
  switch (op) {
    case FlowOp::kAdd: return "x + y";
    case FlowOp::kSub: return "x - y";
    case FlowOp::kMul: return "x * y";
    case FlowOp::kDiv: return "x / y";
    case FlowOp::kMax: return "vx_max(x, y)";
    case FlowOp::kMin: return "vx_min(x, y)";
    case FlowOp::kGt: return "x > y ? 1.0f : 0.0f";
    case FlowOp::kGe: return "x >= y ? 1.0f : 0.0f";
    case FlowOp::kLt: return "x < y ? 1.0f : 0.0f";
    case FlowOp::kLe: return "x <= y ? 1.0f : 0.0f";
    case FlowOp::kEq: return "x == y ? 1.0f : 0.0f";
    default: fail("internal: '{}' is not a binary op", flow_op_name(op));
  }
}

// A reduction's combine function, identity, and whether the result is divided by the count.
struct Reducer {
  const char* combine;   // vx_add, vx_max, vx_min
  const char* warp;      // vx_warp_add, ...
  const char* identity;  // for lanes that hold no element
  bool mean = false;
};

Reducer reducer_of(FlowOp op) {
  switch (op) {
    case FlowOp::kReduceMax: return {"vx_max", "vx_warp_max", "vx_neg_inf()", false};
    case FlowOp::kReduceMin: return {"vx_min", "vx_warp_min", "-vx_neg_inf()", false};
    case FlowOp::kReduceMean: return {"vx_add", "vx_warp_add", "0.0f", true};
    default: return {"vx_add", "vx_warp_add", "0.0f", false};  // sum, dot
  }
}

// A dot product of a page-invariant value (q, or what q and constants make) with a field read
// straight from its record: the per-key q·k̂ of the key-proxy flows, nearly all of their work. The
// warp's lanes own (sub-row, every row_lanes-th load of the row): a warp's loads are vector loads
// of neighbouring bytes, each stored element is decoded once for all the heads, and the row's
// lanes end in a shuffle reduction. Taken when a row is a whole number of 32-bit words.
struct FieldDot {
  int32_t invariant = -1;  // value id of the page-invariant operand, (Ha, 1, W)
  int32_t field = -1;      // field index of the other operand, (1, S, W)
  int64_t per_word = 1;    // stored elements per 32-bit word
  int64_t row_words = 0;   // words of one sub-row
  int64_t vector = 1;      // words per load: 4, 2 or 1
  int64_t row_lanes = 1;   // lanes sharing a row, a power of two; 32 / row_lanes rows at a time
};

// ---- the emitter -------------------------------------------------------------------------------

// Which values one page loop (or softmax statistics loop) reads, and what that needs set up.
struct LoopNeeds {
  std::vector<int32_t> values;  // in SSA order
  std::vector<bool> fields, slots;
  bool spill = false;
};

class Emitter {
 public:
  Emitter(const Flow& flow, const IndexerShape& shape) : flow_(flow), shape_(shape), plan_(make_plan(flow, shape)) {}

  std::string run() {
    header();
    prelude();
    kernel();
    return std::move(out_);
  }

 private:
  template <typename... Args>
  void line(fmt::format_string<Args...> format, Args&&... args) {
    out_.append(static_cast<size_t>(2 * indent_), ' ');
    fmt::format_to(std::back_inserter(out_), format, std::forward<Args>(args)...);
    out_ += '\n';
  }
  void open(std::string_view text) { line("{}", text), ++indent_; }
  void close(std::string_view text = "}") { --indent_, line("{}", text); }

  const Value& value(int32_t j) const { return plan_.values[static_cast<size_t>(j)]; }
  const FlowInstr& instr(int32_t j) const { return flow_.instrs[static_cast<size_t>(j)]; }
  int64_t q_floats() const { return int64_t{shape_.group} * shape_.head_dim; }

  void header();
  void prelude();
  void params_struct();
  void helpers();
  void kernel();
  void kernel_setup();
  void page_invariants();
  void phase_loop(int32_t phase);
  void softmax_stats(int32_t j);
  void page_setup(const LoopNeeds& needs, const char* index);
  void accessor(int32_t j, int32_t phase);
  void materialise(int32_t j, const std::string& buffer);
  void feat_reduction(int32_t j, const std::string& buffer);
  void field_dot(int32_t j, const FieldDot& dot, const std::string& buffer);
  std::optional<FieldDot> field_dot_of(int32_t j) const;
  bool read_by_field_dots_only(int32_t j) const;
  void axis_reduction(int32_t j, const std::string& buffer);
  void spill_write(int32_t j);
  void finish();
  std::string inline_body(int32_t j) const;
  std::string field_read(int32_t i, const Dims& d, const std::string& index) const;
  LoopNeeds loop_needs(int32_t phase) const;
  LoopNeeds needs_of(std::vector<int32_t> values) const;

  const Flow& flow_;
  const IndexerShape& shape_;
  Plan plan_;
  std::string out_;
  int indent_ = 0;
};

std::string printable(std::string_view text) {
  std::string out;
  for (char c : text) out += (c >= 32 && c < 127) ? c : '?';
  return out;
}

void Emitter::header() {
  const bool bf16 = shape_.q_type == FlowQueryType::kBF16;
  line("// Generated by Vortex (src/backend/cuda/flow_codegen.cpp): the fused indexer of flow '{}'.", printable(flow_.name));
  line("// Hg={} D={} P={}, q {}; {} warps, tile {} (0: one block per (r, g)), spill {} floats per candidate.",
       shape_.group, shape_.head_dim, shape_.page_size, bf16 ? "bf16" : "fp32", plan_.layout.warps,
       plan_.layout.tile_pages, plan_.spill_floats);
  line("//");
  std::string text = to_text(flow_);
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    line("//   {}", printable(std::string_view(text).substr(start, end - start)));
    start = end + 1;
  }
}

void Emitter::params_struct() {
  open("struct FlowKernelParams {");
  line("const void* q;");
  line("const int* pages;");
  line("const int* offsets;");
  line("const int* counts;");
  line("const void* fields[{}];", kFlowMaxFields);
  line("float* state[{}];", kFlowMaxState);
  line("float* scores;");
  line("float* spill;");
  line("long long q_row_stride;");
  line("int rows;");
  line("int kv_heads;");
  close("};");
  line("static_assert(sizeof(FlowKernelParams) == {}, \"FlowKernelParams differs from the host's\");", sizeof(FlowKernelParams));
}

void Emitter::helpers() {
  line("constexpr int kWarps = {};", plan_.layout.warps);
  line("constexpr int kThreads = 32 * kWarps;");
  line("__device__ __forceinline__ float vx_neg_inf() {{ return __uint_as_float(0xff800000u); }}");
  line("__device__ __forceinline__ float vx_add(float x, float y) {{ return x + y; }}");
  line("__device__ __forceinline__ float vx_max(float x, float y) {{ return x < y ? y : x; }}  // std::max");
  line("__device__ __forceinline__ float vx_min(float x, float y) {{ return y < x ? y : x; }}  // std::min");
  line("// Stored field elements (src/sparse/field_storage.h): e4m3 bits, and a record's f32 scale.");
  open("__device__ __forceinline__ float vx_fp8(unsigned b) {");
  line("const int e = (b >> 3) & 15, m = b & 7;");
  line("const float a = e == 15 && m == 7 ? __uint_as_float(0x7fc00000u)");
  line("    : e == 0 ? static_cast<float>(m) * 0x1p-9f : __uint_as_float(static_cast<unsigned>(e + 120) << 23 | static_cast<unsigned>(m) << 20);");
  line("return (b & 0x80u) ? -a : a;");
  close();
  line("__device__ __forceinline__ float vx_scale(const unsigned char* record, int offset) {{ return *reinterpret_cast<const float*>(record + offset); }}");
  line("// Element k of a 32-bit word of a record's codes, before the scale. The integer codes become floats");
  line("// exactly through 2^23 + (code + bias), without a conversion instruction.");
  line("template <int N> struct alignas(4 * N) vx_words {{ unsigned w[N]; }};  // one vector load");
  line("__device__ __forceinline__ float vx_code_f32(unsigned w, int) {{ return __uint_as_float(w); }}");
  line("__device__ __forceinline__ float vx_code_bf16(unsigned w, int k) {{ return __uint_as_float(k ? w & 0xffff0000u : w << 16); }}");
  line("__device__ __forceinline__ float vx_code_fp8(unsigned w, int k) {{ return vx_fp8((w >> (8 * k)) & 255u); }}");
  line("__device__ __forceinline__ float vx_code_int8(unsigned w, int k) {{ "
       "return __uint_as_float(0x4b000000u | (((w >> (8 * k)) & 255u) ^ 128u)) - 8388736.0f; }}");
  line("__device__ __forceinline__ float vx_code_int4(unsigned w, int k) {{ "
       "return __uint_as_float(0x4b000000u | (((w >> (4 * k)) & 15u) ^ 8u)) - 8388616.0f; }}");
  line("__device__ __forceinline__ float vx_code_sign(unsigned w, int k) {{ return ((w >> k) & 1u) ? -1.0f : 1.0f; }}");
  line("// Butterfly reductions: every lane ends with the same value.");
  for (const char* op : {"add", "max", "min"}) {
    open(fmt::format("__device__ __forceinline__ float vx_warp_{}(float x) {{", op));
    line("for (int o = 16; o > 0; o >>= 1) x = vx_{}(x, __shfl_xor_sync(0xffffffffu, x, o));", op);
    line("return x;");
    close();
  }
  line("// Over the block; every thread gets the result. red: (32) shared floats.");
  for (const auto& [op, identity] : {std::pair{"add", "0.0f"}, std::pair{"max", "vx_neg_inf()"}}) {
    open(fmt::format("__device__ __forceinline__ float vx_block_{}(float x, float* red) {{", op));
    line("const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;");
    line("x = vx_warp_{}(x);", op);
    line("if (lane == 0) red[warp] = x;");
    line("__syncthreads();");
    line("x = vx_warp_{}(lane < kWarps ? red[lane] : {});", op, identity);
    line("__syncthreads();");
    line("return x;");
    close();
  }
}

// The helpers live in a named namespace: external linkage, so the unused ones draw no warning.
void Emitter::prelude() {
  line("");
  params_struct();
  line("");
  open("namespace vx {");
  helpers();
  close("}  // namespace vx");
  line("using namespace vx;");
  line("");
}

void Emitter::kernel() {
  line("// grid (tiles, G, R), block kThreads: scores of (r, g)'s candidates [begin, end).");
  open("extern \"C\" __global__ void __launch_bounds__(kThreads) vx_flow_indexer(const FlowKernelParams p) {");
  kernel_setup();
  page_invariants();
  for (int32_t phase = 0; phase <= plan_.last_phase; ++phase) phase_loop(phase);
  close();
}

void Emitter::kernel_setup() {
  const int32_t tile = plan_.layout.tile_pages;
  line("const int g = blockIdx.y, r = blockIdx.z;");
  line("const int off = p.offsets[r * p.kv_heads + g], count = p.counts[r * p.kv_heads + g];");
  if (tile > 0) {
    line("const int begin = blockIdx.x * {}, end = count < begin + {} ? count : begin + {};", tile, tile, tile);
  } else {
    line("const int begin = 0, end = count;");
  }
  line("if (begin >= end) return;");
  line("const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;");
  line("alignas(16) __shared__ float q_s[{}];  // (Hg, D); aligned for vector reads", q_floats());
  if (plan_.block_floats > 0) line("__shared__ float pv[{}];  // page-invariant values", plan_.block_floats);
  if (plan_.stats_floats > 0) line("__shared__ float st[{}];  // softmax statistics", plan_.stats_floats);
  if (plan_.stats_floats > 0) line("__shared__ float red[32];");
  if (plan_.warp_floats > 0) {
    line("__shared__ float wbuf[kWarps * {}];  // per warp: the current page's stored values", plan_.warp_floats);
    line("float* wb = wbuf + warp * {};", plan_.warp_floats);
  }
  if (shape_.q_type == FlowQueryType::kBF16) {
    line("const unsigned short* q = static_cast<const unsigned short*>(p.q) + r * p.q_row_stride + g * {};", q_floats());
    line("for (int e = tid; e < {}; e += kThreads) q_s[e] = __uint_as_float(static_cast<unsigned>(q[e]) << 16);", q_floats());
  } else {
    line("const float* q = static_cast<const float*>(p.q) + r * p.q_row_stride + g * {};", q_floats());
    line("for (int e = tid; e < {}; e += kThreads) q_s[e] = q[e];", q_floats());
  }
  line("__syncthreads();");
}

// Constants, q and everything computed from them alone: once per block, by warp 0.
void Emitter::page_invariants() {
  bool stored = false;
  for (int32_t j = 0; j < static_cast<int32_t>(flow_.instrs.size()); ++j) {
    if (value(j).phase >= 0) continue;
    if (value(j).storage == Storage::kBlock) {
      open("if (warp == 0) {");
      materialise(j, fmt::format("(pv + {})", value(j).offset));
      line("__syncwarp();");
      close();
      stored = true;
    }
    accessor(j, -1);
  }
  if (stored) line("__syncthreads();");
}

LoopNeeds Emitter::needs_of(std::vector<int32_t> values) const {
  std::sort(values.begin(), values.end());
  values.erase(std::unique(values.begin(), values.end()), values.end());
  LoopNeeds needs{.values = {}, .fields = std::vector<bool>(flow_.fields.size()), .slots = std::vector<bool>(flow_.state.size())};
  for (int32_t j : values) {
    if (value(j).phase < 0) continue;  // defined once, at the top of the kernel
    needs.values.push_back(j);
    if (instr(j).op == FlowOp::kField) needs.fields[static_cast<size_t>(instr(j).index)] = true;
    if (instr(j).op == FlowOp::kLoad) needs.slots[static_cast<size_t>(instr(j).index)] = true;
    needs.spill = needs.spill || value(j).spill >= 0;
  }
  return needs;
}

// Phase p's loop computes every value of phase p and reads the page data and earlier phases'
// values they use; the last phase's loop also reads the score and the saved values.
LoopNeeds Emitter::loop_needs(int32_t phase) const {
  std::vector<int32_t> values;
  for (int32_t j = 0; j < static_cast<int32_t>(flow_.instrs.size()); ++j) {
    if (value(j).phase != phase) continue;
    if (!is_page_leaf(instr(j).op)) values.push_back(j);  // fields and loads: where they are read
    for (int32_t arg : {instr(j).a, instr(j).b})
      if (arg >= 0) values.push_back(arg);
  }
  if (phase == plan_.last_phase) {
    if (flow_.select.value >= 0) values.push_back(flow_.select.value);
    for (const FlowSave& save : flow_.saves) values.push_back(save.value);
  }
  LoopNeeds needs = needs_of(std::move(values));
  if (phase == plan_.last_phase)
    for (const FlowSave& save : flow_.saves) needs.slots[static_cast<size_t>(save.slot)] = true;
  return needs;
}

void Emitter::page_setup(const LoopNeeds& needs, const char* index) {
  const bool page = std::find(needs.fields.begin(), needs.fields.end(), true) != needs.fields.end() ||
                    std::find(needs.slots.begin(), needs.slots.end(), true) != needs.slots.end();
  if (page) line("const long long page = p.pages[off + {}];", index);
  for (size_t i = 0; i < needs.fields.size(); ++i)
    if (needs.fields[i])
      line("const unsigned char* field{} = static_cast<const unsigned char*>(p.fields[{}]) + (page * p.kv_heads + g) * {}LL;  "
           "// (S, W) of '{}', {}", i, i, plan_.layout.field_bytes[i], printable(flow_.fields[i].name),
           field_storage_name(flow_.fields[i].storage));
  for (size_t i = 0; i < needs.slots.size(); ++i)
    if (needs.slots[i]) line("float* state{} = p.state[{}] + page * p.kv_heads + g;  // '{}'", i, i, printable(flow_.state[i]));
  if (needs.spill) line("float* sp = p.spill + static_cast<long long>(off + {}) * {};", index, plan_.spill_floats);
}

void Emitter::phase_loop(int32_t phase) {
  const LoopNeeds needs = loop_needs(phase);
  if (phase > 0) {
    line("__syncthreads();  // phase {} reads what phase {} wrote", phase, phase - 1);
    for (int32_t j = 0; j < static_cast<int32_t>(flow_.instrs.size()); ++j)
      if (value(j).phase == phase && instr(j).op == FlowOp::kSoftmax) softmax_stats(j);
  }
  line("// phase {}: one page per warp", phase);
  open("for (int i = begin + warp; i < end; i += kWarps) {");
  page_setup(needs, "i");
  for (int32_t j : needs.values) {
    if (read_by_field_dots_only(j)) continue;  // they read the record themselves
    accessor(j, phase);
    if (value(j).phase == phase && value(j).spill >= 0) spill_write(j);
  }
  if (phase == plan_.last_phase) finish();
  line("__syncwarp();  // the warp's buffer is reused by its next page");
  close();
}

// st[stats + e] = max over the candidates of element e of the input; st[stats + E + e] = Σ exp(x − max).
void Emitter::softmax_stats(int32_t j) {
  const Value& v = value(j);
  const int32_t a = instr(j).a;
  const LoopNeeds needs = needs_of({a});
  line("// statistics of softmax v{} over the candidates, per element", j);
  open(fmt::format("for (int e = 0; e < {}; ++e) {{", v.dims.size()));
  line("{}", decompose(v.dims, "e"));
  for (bool max : {true, false}) {  // the max pass, then the sum pass
    line("{}", max ? "float m = vx_neg_inf();" : "float z = 0.0f;");
    open("for (int c = begin + tid; c < end; c += kThreads) {");
    page_setup(needs, "c");
    if (!needs.values.empty()) accessor(a, value(a).phase + 1);
    line("const float x = v{}(h, s, f);", a);
    line("{}", max ? "m = vx_max(m, x);" : "z += m == vx_neg_inf() ? 0.0f : expf(x - m);");
    close();
    line("{}", max ? "m = vx_block_max(m, red);" : "z = vx_block_add(z, red);");
  }
  line("if (tid == 0) st[{} + e] = m, st[{} + e] = z;", v.stats, v.stats + v.dims.size());
  close();
  line("__syncthreads();");
}

// Defines v<j>(h, s, f) for a loop of `phase` (value j's own phase, or a later one that reads it).
void Emitter::accessor(int32_t j, int32_t phase) {
  const Value& v = value(j);
  const std::string head = fmt::format("auto v{} = [&]{} -> float {{", j, params_of(v.dims));
  const std::string index = index_of(v.dims);
  switch (v.storage) {
    case Storage::kConstant: {
      const FlowInstr& x = instr(j);
      const float D = static_cast<float>(shape_.head_dim);
      float number = x.number;
      if (x.op == FlowOp::kHeadDim) number = D;
      if (x.op == FlowOp::kScale) number = 1.0f / std::sqrt(D);
      if (x.op == FlowOp::kPageSize) number = static_cast<float>(shape_.page_size);
      return line("{} return {}; }};", head, literal(number));
    }
    case Storage::kQuery: return line("{} return q_s[{}]; }};", head, index);
    case Storage::kField: return line("{} {} }};", head, field_read(instr(j).index, v.dims, index));
    case Storage::kLoad: return line("{} return state{}[0]; }};", head, instr(j).index);
    case Storage::kBlock: return line("{} return pv[{} + {}]; }};", head, v.offset, index);
    default: break;
  }
  if (v.phase < phase) {  // computed in an earlier phase: kept in the spill row
    if (v.spill < 0) fail("internal: flow '{}' value {} read from a later phase but not kept", flow_.name, j);
    return line("{} return sp[{} + {}]; }};", head, v.spill, index);
  }
  if (v.storage == Storage::kInline) return line("auto v{} = [&](int h, int s, int f) -> float {{ {} }};", j, inline_body(j));
  materialise(j, fmt::format("(wb + {})", v.offset));
  line("__syncwarp();");
  line("{} return wb[{} + {}]; }};", head, v.offset, index);
}

// The body of a field's accessor: element `index` of its record, dequantised (field_storage.h).
std::string Emitter::field_read(int32_t i, const Dims& d, const std::string& index) const {
  const FlowField& field = flow_.fields[static_cast<size_t>(i)];
  const std::string scale = fmt::format("vx_scale(field{}, {}{})", i,
                                        field_scales_offset(field.storage, d.s, d.f), d.s > 1 ? " + 4 * s" : "");
  switch (field.storage) {
    case FieldStorage::kF32: return fmt::format("return reinterpret_cast<const float*>(field{})[{}];", i, index);
    case FieldStorage::kBF16:
      return fmt::format("return __uint_as_float(static_cast<unsigned>(reinterpret_cast<const unsigned short*>(field{})[{}]) << 16);",
                         i, index);
    case FieldStorage::kFP8: return fmt::format("return vx_fp8(field{}[{}]) * {};", i, index, scale);
    case FieldStorage::kInt8: return fmt::format("return static_cast<float>(static_cast<signed char>(field{}[{}])) * {};", i, index, scale);
    case FieldStorage::kInt4:
      return fmt::format("const int e = {}; const int c = (field{}[e >> 1] >> ((e & 1) * 4)) & 15; "
                         "return static_cast<float>(c >= 8 ? c - 16 : c) * {};", index, i, scale);
    case FieldStorage::kSign:
      return fmt::format("const int e = {}; const float m = {}; return ((field{}[e >> 3] >> (e & 7)) & 1) ? -m : m;", index, scale, i);
  }
  fail("internal: field storage {}", static_cast<int>(field.storage));
}

// The body of an inlined value's lambda (h, s, f in its own shape; operands broadcast themselves).
std::string Emitter::inline_body(int32_t j) const {
  const FlowInstr& x = instr(j);
  const Value& v = value(j);
  switch (flow_op_kind(x.op)) {
    case FlowOpKind::kUnary: return fmt::format("const float x = v{}(h, s, f); return {};", x.a, unary_expr(x.op));
    case FlowOpKind::kBinary:
      return fmt::format("const float x = v{}(h, s, f), y = v{}(h, s, f); return {};", x.a, x.b, binary_expr(x.op));
    case FlowOpKind::kSoftmax:
      return fmt::format("const int e = {}; const float m = st[{} + e]; "
                         "return m == vx_neg_inf() ? 0.0f : expf(v{}(h, s, f) - m) / st[{} + e];",
                         index_of(v.dims), v.stats, x.a, v.stats + v.dims.size());
    default: fail("internal: flow '{}' value {} ('{}') cannot be inlined", flow_.name, j, flow_op_name(x.op));
  }
}

// Computes value j into `buffer` with the lanes of one warp (no __syncwarp at the end).
void Emitter::materialise(int32_t j, const std::string& buffer) {
  const FlowInstr& x = instr(j);
  const FlowOpKind kind = flow_op_kind(x.op);
  if (const std::optional<FieldDot> dot = field_dot_of(j)) return field_dot(j, *dot, buffer);
  if (kind == FlowOpKind::kDot || (kind == FlowOpKind::kReduce && x.axis == FlowAxis::kFeat)) return feat_reduction(j, buffer);
  if (kind == FlowOpKind::kReduce) return axis_reduction(j, buffer);
  const Dims& d = value(j).dims;
  open("{");
  line("auto c = [&](int h, int s, int f) -> float {{ {} }};", inline_body(j));
  line("for (int e = lane; e < {}; e += 32) {{ {} {}[e] = c(h, s, f); }}", d.size(), decompose(d, "e"), buffer);
  close();
}

// The field-dot layout of value j (FieldDot), when it is one.
std::optional<FieldDot> Emitter::field_dot_of(int32_t j) const {
  if (instr(j).op != FlowOp::kDot) return std::nullopt;
  int32_t invariant = instr(j).a, field = instr(j).b;
  if (value(invariant).storage == Storage::kField) std::swap(invariant, field);
  const Dims& in = value(invariant).dims;
  const Dims& d = value(field).dims;  // (1, S, W)
  if (value(field).storage != Storage::kField || value(invariant).phase >= 0 || in.s != 1 || in.f != d.f || d.f == 1)
    return std::nullopt;
  const int32_t index = instr(field).index;
  const int64_t bits = field_storage_bits(flow_.fields[static_cast<size_t>(index)].storage);
  if (d.f * bits % 32 != 0) return std::nullopt;  // rows not word-aligned (int4 with W odd ...)
  FieldDot dot{.invariant = invariant, .field = index, .per_word = 32 / bits, .row_words = d.f * bits / 32};
  // The widest load that keeps every load aligned and spans at most 16 elements: the row's lanes
  // then read q 64 bytes apart or less, in different shared-memory banks.
  const int64_t record = plan_.layout.field_bytes[static_cast<size_t>(index)];
  for (int64_t v : {4, 2})
    if (dot.vector == 1 && dot.row_words % v == 0 && record % (4 * v) == 0 && v * dot.per_word <= 16) dot.vector = v;
  const int64_t loads = dot.row_words / dot.vector;
  while (dot.row_lanes * 2 * d.s <= 32 && dot.row_lanes * 2 <= loads) dot.row_lanes *= 2;
  return dot;
}

// Whether value j is a field that only field dots read (then it needs no accessor).
bool Emitter::read_by_field_dots_only(int32_t j) const {
  if (value(j).storage != Storage::kField) return false;
  int32_t reads = 0;
  for (int32_t c = j + 1; c < static_cast<int32_t>(flow_.instrs.size()); ++c) {
    const int32_t n = (instr(c).a == j) + (instr(c).b == j);
    if (n > 0 && !field_dot_of(c)) return false;
    reads += n;
  }
  return reads == value(j).uses;  // no save or selection reads it
}

// Value j = dot(invariant, field) as FieldDot lays it out: lane (s, part) sums the products of
// loads part, part + row_lanes, ... of row s for every head in registers; then the row's lanes add
// theirs. Each element is the stored code times the row's scale, as field_read gives it.
void Emitter::field_dot(int32_t j, const FieldDot& dot, const std::string& buffer) {
  const Dims& d = value(j).dims;  // (Ha, S, 1)
  const FlowField& field = flow_.fields[static_cast<size_t>(dot.field)];
  const int64_t rows = 32 / dot.row_lanes, loads = dot.row_words / dot.vector, span = dot.vector * dot.per_word;
  const bool scaled = field_storage_scaled(field.storage);
  open(fmt::format("{{  // v{} = dot over f of v{} and field {} ('{}', {}): lanes per sub-row {}, words per load {}", j,
                   dot.invariant, dot.field, printable(field.name), field_storage_name(field.storage), dot.row_lanes, dot.vector));
  line("const int part = lane % {};", dot.row_lanes);
  open(fmt::format("for (int s0 = 0; s0 < {}; s0 += {}) {{  // the same trip count in every lane: they shuffle", d.s, rows));
  line("const int s = s0 + lane / {};", dot.row_lanes);
  line("float acc[{}] = {{}};  // per head", d.h);
  open(fmt::format("if (s < {}) {{", d.s));
  line("const unsigned char* row = field{} + s * {};", dot.field, 4 * dot.row_words);
  if (scaled) line("const float scale = vx_scale(field{}, {} + 4 * s);", dot.field, field_scales_offset(field.storage, d.s, value(dot.invariant).dims.f));
  // A constant trip count, unrolled: a lane's loads of the row are in flight together.
  const int64_t trips = (loads + dot.row_lanes - 1) / dot.row_lanes;
  line("#pragma unroll 4");
  open(fmt::format("for (int k = 0; k < {}; ++k) {{", trips));
  line("const int c = part + {} * k;  // load c: elements [{} c, {} c + {})", dot.row_lanes, span, span, span);
  if (loads % dot.row_lanes != 0) line("if (c >= {}) break;", loads);
  line("const vx_words<{}> w = *reinterpret_cast<const vx_words<{}>*>(row + {} * c);", dot.vector, dot.vector, 4 * dot.vector);
  line("#pragma unroll");
  open(fmt::format("for (int e = 0; e < {}; ++e) {{", span));
  line("const int f = {} * c + e;", span);
  line("const float x = vx_code_{}(w.w[e / {}], e % {}){};", field_storage_name(field.storage), dot.per_word, dot.per_word,
       scaled ? " * scale" : "");
  line("#pragma unroll");
  line("for (int h = 0; h < {}; ++h) acc[h] += v{}(h, 0, f) * x;", d.h, dot.invariant);
  close();
  close();
  close();
  line("#pragma unroll");
  open(fmt::format("for (int h = 0; h < {}; ++h) {{", d.h));
  if (dot.row_lanes > 1) line("for (int o = 1; o < {}; o <<= 1) acc[h] += __shfl_xor_sync(0xffffffffu, acc[h], o);", dot.row_lanes);
  line("if (s < {} && part == 0) {}[h * {} + s] = acc[h];", d.s, buffer, d.s);
  close();
  close();
  close();
}

// Dot products and reductions over the features that are not field dots. With few outputs
// (h·s < 32: quest's per-head bounds) the lanes split f and end in a warp reduction; with many
// (Hg·P of them over a sub=page value) each lane owns outputs and walks f alone, so there is no
// reduction at all, but every lane reads its own row: slow for a field read element by element.
void Emitter::feat_reduction(int32_t j, const std::string& buffer) {
  const FlowInstr& x = instr(j);
  const Dims& d = value(j).dims;  // (H, S, 1)
  const bool dot = x.op == FlowOp::kDot;
  const int64_t n = dot ? std::max(value(x.a).dims.f, value(x.b).dims.f) : value(x.a).dims.f;
  const Reducer red = reducer_of(x.op);
  const std::string term = dot ? fmt::format("v{}(h, s, f) * v{}(h, s, f)", x.a, x.b) : fmt::format("v{}(h, s, f)", x.a);
  const std::string mean = red.mean ? fmt::format(" / {}", literal(static_cast<float>(n))) : "";
  if (d.h * d.s >= 32) {
    open(fmt::format("for (int hs = lane; hs < {}; hs += 32) {{  // {} over f of v{}, one output per lane", d.h * d.s,
                     dot ? "dot" : flow_op_name(x.op), x.a));
    line("const int h = hs / {}, s = hs % {};", d.s, d.s);
    line("float acc = {};", red.identity);
    line("for (int f = 0; f < {}; ++f) acc = {}(acc, {});", n, red.combine, term);
    line("{}[hs] = acc{};", buffer, mean);
    close();
    return;
  }
  open(fmt::format("for (int hs = 0; hs < {}; ++hs) {{  // {} over f of v{}", d.h * d.s, dot ? "dot" : flow_op_name(x.op), x.a));
  line("const int h = hs / {}, s = hs % {};", d.s, d.s);
  line("float acc = {};", red.identity);
  line("for (int f = lane; f < {}; f += 32) acc = {}(acc, {});", n, red.combine, term);
  line("acc = {}(acc);", red.warp);
  line("if (lane == 0) {}[hs] = acc{};", buffer, mean);
  close();
}

// Reductions over heads or sub-rows: each lane owns output elements and walks the reduced axis in
// order from index 0, as the interpreter does.
void Emitter::axis_reduction(int32_t j, const std::string& buffer) {
  const FlowInstr& x = instr(j);
  const Dims& d = value(j).dims;
  const Dims& in = value(x.a).dims;
  const bool heads = x.axis == FlowAxis::kHeads;
  const int64_t n = heads ? in.h : in.s;
  const Reducer red = reducer_of(x.op);
  const char* first = heads ? "0, s, f" : "h, 0, f";
  const char* at = heads ? "k, s, f" : "h, k, f";
  open(fmt::format("for (int e = lane; e < {}; e += 32) {{  // {} over {} of v{}", d.size(), flow_op_name(x.op),
                   flow_axis_name(x.axis), x.a));
  line("{}", decompose(d, "e", heads ? 'h' : 's'));
  line("float acc = v{}({});", x.a, first);
  line("for (int k = 1; k < {}; ++k) acc = {}(acc, v{}({}));", n, red.combine, x.a, at);
  line("{}[e] = acc{};", buffer, red.mean ? fmt::format(" / {}", literal(static_cast<float>(n))) : "");
  close();
}

void Emitter::spill_write(int32_t j) {
  const Value& v = value(j);
  line("for (int e = lane; e < {}; e += 32) {{ {} sp[{} + e] = v{}(h, s, f); }}", v.dims.size(), decompose(v.dims, "e"),
       v.spill, j);
}

// Score and saves of the page: every save value is read before any state is written.
void Emitter::finish() {
  open("if (lane == 0) {");
  line("const float score = {};", flow_.select.value >= 0 ? fmt::format("v{}(0, 0, 0)", flow_.select.value) : "0.0f");
  for (size_t i = 0; i < flow_.saves.size(); ++i) line("const float save{} = v{}(0, 0, 0);", i, flow_.saves[i].value);
  line("p.scores[off + i] = score;");
  for (size_t i = 0; i < flow_.saves.size(); ++i) line("state{}[0] = save{};", flow_.saves[i].slot, i);
  close();
}

}  // namespace

bool flow_needs_indexer(const Flow& flow) { return flow.select.kind != FlowSelectKind::kNone || !flow.saves.empty(); }

IndexerLayout indexer_layout(const Flow& flow, const IndexerShape& shape) { return make_plan(flow, shape).layout; }

std::string generate_indexer_source(const Flow& flow, const IndexerShape& shape) { return Emitter(flow, shape).run(); }

}  // namespace vortex::cuda
