#include "sparse/sparse_attention.h"

#include <cmath>
#include <fstream>
#include <limits>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "sparse/field_storage.h"

namespace vortex {

int64_t BudgetPolicy::budget_tokens(int64_t length) const {
  if (bin_tokens > 0) {
    const auto bin = static_cast<size_t>(std::min<int64_t>(length / bin_tokens, static_cast<int64_t>(table.size()) - 1));
    return table[bin];
  }
  if (fraction > 0.0) {
    // ceil(fraction · length) as if exact: 0.07 · 900 is 63.00000000000001 in doubles, which must
    // give 63 tokens, not 64. The rounding error is a few ulps; the slack is far below 1/length.
    const double exact = fraction * static_cast<double>(length);
    return static_cast<int64_t>(std::ceil(exact - exact * 1e-12));
  }
  return tokens;
}

int64_t SparseAttention::stage_keep(size_t stage, int64_t k) const {
  const double keep = std::ceil(static_cast<double>(flow->stages[stage].factor) * static_cast<double>(k));
  return keep >= 9e18 ? std::numeric_limits<int64_t>::max() : static_cast<int64_t>(keep);
}

double SparseAttention::field_bytes_read(int64_t candidates, int64_t k, int64_t head_dim, bool stored) const {
  if (k >= candidates || flow->select.kind == FlowSelectKind::kNone) return 0.0;
  double bytes = 0.0;
  int64_t scored = candidates;
  for (size_t p = 0; p < passes.size(); ++p) {
    std::vector<uint8_t> used(flow->fields.size(), 0);
    for (const FlowInstr& x : passes[p]->instrs)
      if (x.op == FlowOp::kField) used[static_cast<size_t>(x.index)] = 1;
    for (size_t f = 0; f < flow->fields.size(); ++f) {
      if (!used[f]) continue;
      const FlowField& field = flow->fields[f];
      const int64_t rows = field.rows(page_size), width = field.width(head_dim);
      const int64_t record = stored ? field_record_bytes(field.storage, rows, width) : 4 * rows * width;
      bytes += static_cast<double>(scored) * static_cast<double>(record);
    }
    if (p + 1 < passes.size()) scored = std::min(scored, stage_keep(p, k));
  }
  return bytes;
}

namespace {

// {"attention": SPEC, "bin_tokens": N, "budgets": [..]}: the table replaces the spec's budget.
std::shared_ptr<SparseAttention> resolve_schedule(const AttentionSpec& spec, int64_t kv_page_size) {
  std::ifstream file(spec.table_path);
  check(file.is_open(), "attention spec '{}': cannot open the budget table {}", spec.text, spec.table_path);
  nlohmann::json j = nlohmann::json::parse(file, nullptr, false);
  check(!j.is_discarded() && j.is_object(), "budget table {}: not a JSON object", spec.table_path);
  check(j.contains("attention") && j["attention"].is_string(), "budget table {}: needs \"attention\": a spec string such as \"quest:page=16,sink=16,window=64\"", spec.table_path);
  check(j.contains("bin_tokens") && j["bin_tokens"].is_number_integer() && j["bin_tokens"].get<int64_t>() > 0,
        "budget table {}: needs \"bin_tokens\": a positive integer (e.g. 2048)", spec.table_path);
  check(j.contains("budgets") && j["budgets"].is_array() && !j["budgets"].empty(),
        "budget table {}: needs \"budgets\": a non-empty array of token budgets", spec.table_path);
  AttentionSpec base = parse_attention_spec(j["attention"].get<std::string>());
  check(base.method == AttentionMethod::kFlow, "budget table {}: \"attention\" must name a flow, got '{}'", spec.table_path, base.text);
  base.budget = 0;  // the table decides
  base.budget_fraction = 0.0;
  auto out = std::const_pointer_cast<SparseAttention>(resolve_attention(base, kv_page_size));
  out->budget = BudgetPolicy{};
  out->budget.bin_tokens = j["bin_tokens"].get<int64_t>();
  for (const auto& b : j["budgets"]) {
    check(b.is_number_integer() && b.get<int64_t>() >= 0, "budget table {}: budgets must be integers >= 0, got {}", spec.table_path, b.dump());
    out->budget.table.push_back(b.get<int64_t>());
  }
  out->text = spec.text;
  return out;
}

std::shared_ptr<const Flow> find_flow(const AttentionSpec& spec) {
  if (!spec.flow_path.empty()) return std::make_shared<const Flow>(load_flow_file(spec.flow_path));
  const Flow* builtin = find_builtin_flow(spec.flow_name);
  check(builtin != nullptr, "attention spec '{}': no built-in flow '{}'", spec.text, spec.flow_name);
  return std::shared_ptr<const Flow>(builtin, [](const Flow*) {});  // built-ins live for the program
}

}  // namespace

std::shared_ptr<const SparseAttention> resolve_attention(const AttentionSpec& spec, int64_t kv_page_size) {
  if (spec.method == AttentionMethod::kDense) return nullptr;
  if (spec.method == AttentionMethod::kSchedule) return resolve_schedule(spec, kv_page_size);
  check(spec.page == 0 || spec.page == kv_page_size,
        "attention spec '{}': page={} must equal the KV page size {} (set the engine's page size, e.g. --page-size {})",
        spec.text, spec.page, kv_page_size, spec.page);
  auto out = std::make_shared<SparseAttention>();
  out->text = spec.text;
  out->flow = find_flow(spec);
  if (out->flow->stages.empty()) {
    out->passes.push_back(out->flow);
  } else {
    for (size_t i = 0; i <= out->flow->stages.size(); ++i)
      out->passes.push_back(std::make_shared<const Flow>(flow_stage(*out->flow, i)));
  }
  out->page_size = kv_page_size;
  out->sink = spec.sink;
  out->window = spec.window;
  out->skip_layers_first = spec.skip_layers_first;
  out->skip_layers_last = spec.skip_layers_last;
  out->lsh = spec.lsh;
  out->rest = spec.rest;
  out->dense_below = spec.dense_below;
  out->cover = spec.cover;
  check_flow_page_size(*out->flow, kv_page_size);
  const bool selects = out->flow->select.kind != FlowSelectKind::kNone;
  check(!selects || spec.budget_set(), "attention spec '{}': '{}' selects pages and needs a budget (e.g. budget=2048 or budget=25%)",
        spec.text, spec.name);
  out->budget.tokens = std::max<int64_t>(spec.budget, 0);
  out->budget.fraction = spec.budget_fraction;
  return out;
}

void check_attention_fits(const SparseAttention& a, int64_t num_layers) {
  check(a.skip_layers_first < num_layers, "attention spec '{}': skip_layers {}-{} is past the model's {} layers (0-{})", a.text,
        a.skip_layers_first, a.skip_layers_last, num_layers, num_layers - 1);
}

std::shared_ptr<const SparseAttention> resolve_attention(std::string_view spec_text, int64_t kv_page_size) {
  return resolve_attention(parse_attention_spec(spec_text), kv_page_size);
}

}  // namespace vortex
