#include "sparse/attention_spec.h"

#include <algorithm>
#include <charconv>

#include <fmt/format.h>

#include "core/error.h"
#include "vortex/flow.h"

namespace vortex {
namespace {

const std::vector<std::string_view> kFlowKeys = {"budget", "page", "sink", "window", "skip_layers", "rest", "dense_below", "cover"};

std::vector<std::string_view> split(std::string_view text, char separator) {
  std::vector<std::string_view> parts;
  size_t start = 0;
  while (true) {
    size_t end = text.find(separator, start);
    parts.push_back(text.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start));
    if (end == std::string_view::npos) return parts;
    start = end + 1;
  }
}

int64_t parse_count(std::string_view spec, std::string_view key, std::string_view value, int64_t min) {
  int64_t out = 0;
  auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), out);
  check(ec == std::errc() && end == value.data() + value.size() && out >= min,
        "attention spec '{}': {} must be an integer >= {}, got '{}'", spec, key, min, value);
  return out;
}

// budget=N tokens, budget=F with 0 < F < 1, or budget=P% (a fraction of the sequence length).
void parse_budget(std::string_view spec, std::string_view value, AttentionSpec& out) {
  const bool percent = !value.empty() && value.back() == '%';
  std::string_view number = percent ? value.substr(0, value.size() - 1) : value;
  if (!percent && number.find('.') == std::string_view::npos) {
    out.budget = parse_count(spec, "budget", number, 0);
    return;
  }
  double fraction = 0.0;
  auto [end, ec] = std::from_chars(number.data(), number.data() + number.size(), fraction);
  if (percent) fraction /= 100.0;
  check(ec == std::errc() && end == number.data() + number.size() && fraction > 0.0 && fraction <= 1.0,
        "attention spec '{}': budget takes tokens (2048), a fraction in (0, 1] (0.25) or a percentage (25%), got '{}'",
        spec, value);
  out.budget_fraction = fraction;
}

// dense_below=F or cover=F with 0 < F <= 1.
double parse_coverage(std::string_view spec, std::string_view key, std::string_view value) {
  double out = 0.0;
  auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), out);
  check(ec == std::errc() && end == value.data() + value.size() && out > 0.0 && out <= 1.0,
        "attention spec '{}': {} takes a fraction of the attention mass in (0, 1], e.g. 0.5, got '{}'", spec, key, value);
  return out;
}

void parse_skip_layers(std::string_view spec, std::string_view value, AttentionSpec& out) {
  auto bounds = split(value, '-');
  check(bounds.size() <= 2, "attention spec '{}': skip_layers takes N or FIRST-LAST, got '{}'", spec, value);
  out.skip_layers_first = parse_count(spec, "skip_layers", bounds[0], 0);
  out.skip_layers_last = bounds.size() == 2 ? parse_count(spec, "skip_layers", bounds[1], 0) : out.skip_layers_first;
  check(out.skip_layers_first <= out.skip_layers_last, "attention spec '{}': skip_layers range '{}' is reversed", spec, value);
}

void parse_key_value(std::string_view spec, const std::vector<std::string_view>& keys, std::string_view item,
                     AttentionSpec& out) {
  size_t eq = item.find('=');
  check(eq != std::string_view::npos && eq > 0 && eq + 1 < item.size(),
        "attention spec '{}': '{}' is not key=value", spec, item);
  std::string_view key = item.substr(0, eq), value = item.substr(eq + 1);
  check(std::find(keys.begin(), keys.end(), key) != keys.end(), "attention spec '{}': '{}' does not take '{}'", spec,
        out.name, key);
  if (key == "budget") parse_budget(spec, value, out);
  else if (key == "page") out.page = parse_count(spec, key, value, 1);
  else if (key == "sink") out.sink = parse_count(spec, key, value, 0);
  else if (key == "window") out.window = parse_count(spec, key, value, 0);
  else if (key == "skip_layers") parse_skip_layers(spec, value, out);
  else if (key == "table") out.table_path = std::string(value);
  else if (key == "k") out.lsh.bits = static_cast<int32_t>(parse_count(spec, key, value, 1));
  else if (key == "l") out.lsh.tables = static_cast<int32_t>(parse_count(spec, key, value, 2));
  else if (key == "seed") out.lsh.seed = static_cast<uint64_t>(parse_count(spec, key, value, 0));
  else if (key == "dense_below") out.dense_below = parse_coverage(spec, key, value);
  else if (key == "cover") out.cover = parse_coverage(spec, key, value);
  else if (key == "rest") {
    check(value == "drop" || value == "mean" || value == "proxy" || value == "exact",
          "attention spec '{}': rest takes drop, mean, proxy or exact, got '{}'", spec, value);
    out.rest = value == "mean" ? RestEstimate::kMean : value == "proxy" ? RestEstimate::kProxy
               : value == "exact" ? RestEstimate::kExact : RestEstimate::kDrop;
  }
}

std::string known_methods() {
  std::string out = "dense, auto, lsh";
  for (const std::string& name : builtin_flow_names()) out += ", " + name;
  return out + ", flow, schedule";
}

std::string budget_text(const AttentionSpec& spec) {
  return spec.budget_fraction > 0.0 ? fmt::format("{}%", spec.budget_fraction * 100.0) : std::to_string(spec.budget);
}

// auto:budget=N → the chosen flow with its settings; `text` stays as written.
void expand_auto(AttentionSpec& spec) {
  check(spec.budget_set(), "attention spec '{}': auto needs a budget (e.g. auto:budget=1024 or auto:budget=10%)", spec.text);
  const AutoChoice choice = auto_choice(spec);
  spec.method = AttentionMethod::kFlow;
  spec.flow_name = choice.flow;
  spec.sink = choice.sink;
  spec.window = choice.window;
  if (spec.skip_layers_first < 0) {  // dense layers the spec names win over the choice's
    spec.skip_layers_first = choice.skip_layers_first;
    spec.skip_layers_last = choice.skip_layers_last;
  }
  spec.expanded = fmt::format("{}:budget={}{},sink={},window={}", choice.flow, budget_text(spec),
                              spec.page > 0 ? fmt::format(",page={}", spec.page) : "", choice.sink, choice.window);
  if (spec.skip_layers_first >= 0)
    spec.expanded += fmt::format(",skip_layers={}-{}", spec.skip_layers_first, spec.skip_layers_last);
  if (spec.rest != RestEstimate::kDrop) spec.expanded += ",rest=" + std::string(rest_name(spec.rest));
  if (spec.dense_below > 0.0) spec.expanded += fmt::format(",dense_below={}", spec.dense_below);
  if (spec.cover > 0.0) spec.expanded += fmt::format(",cover={}", spec.cover);
}

}  // namespace

std::string_view rest_name(RestEstimate rest) {
  switch (rest) {
    case RestEstimate::kDrop: return "drop";
    case RestEstimate::kMean: return "mean";
    case RestEstimate::kProxy: return "proxy";
    case RestEstimate::kExact: return "exact";
  }
  return "drop";
}

// The sweeps behind this choice: docs/accuracy.md, "auto".
AutoChoice auto_choice(const AttentionSpec& /*budget_only*/) {
  return {.flow = "proxy_rerank", .sink = 16, .window = 64, .skip_layers_first = -1, .skip_layers_last = -1};
}

AttentionSpec parse_attention_spec(std::string_view text) {
  check(!text.empty(), "the attention spec is empty (give e.g. 'dense' or 'quest:budget=1024')");
  const size_t colon = text.find(':');
  const std::string_view name = text.substr(0, colon);
  const bool builtin = find_builtin_flow(name) != nullptr;
  check(builtin || name == "dense" || name == "auto" || name == "flow" || name == "schedule" || name == "lsh",
        "attention spec '{}': unknown method '{}' (known: {})", text, name, known_methods());
  AttentionSpec out;
  out.text = std::string(text);
  out.name = std::string(name);
  out.method = name == "dense" ? AttentionMethod::kDense : name == "schedule" ? AttentionMethod::kSchedule : AttentionMethod::kFlow;
  if (builtin) out.flow_name = out.name;
  if (name == "lsh") {  // MagicPIG's defaults; the flow keeps the sink and window
    out.flow_name = "streaming";
    out.lsh = {.bits = 10, .tables = 150, .seed = 0};
    out.sink = 4, out.window = 64;
  }
  if (colon == std::string_view::npos) {
    check(name == "dense" || name == "streaming" || name == "lsh", "attention spec '{}': '{}' needs parameters (e.g. '{}:budget=1024')", text,
          name, name == "flow" ? "flow:flows/my.flow,budget=1024" : name == "schedule" ? "schedule:table=grow.json" : out.name);
    return out;
  }
  check(name != "dense", "attention spec '{}': 'dense' takes no parameters", text);
  auto items = split(text.substr(colon + 1), ',');
  size_t first = 0;
  if (name == "flow") {  // flow:PATH[,key=value...]
    check(!items[0].empty() && items[0].find('=') == std::string_view::npos,
          "attention spec '{}': flow needs a .flow file first (flow:PATH,budget=N)", text);
    out.flow_path = std::string(items[0]);
    first = 1;
  }
  static const std::vector<std::string_view> streaming_keys = {"sink", "window", "skip_layers", "rest", "dense_below", "cover"},
                                             table_keys = {"table"},
                                             auto_keys = {"budget", "page", "rest", "skip_layers", "dense_below", "cover"}, lsh_keys = {"k", "l", "seed", "sink", "window", "skip_layers"};
  const auto& keys = name == "streaming" ? streaming_keys : name == "schedule" ? table_keys : name == "auto" ? auto_keys
                     : name == "lsh"     ? lsh_keys : kFlowKeys;
  std::vector<std::string_view> seen;  // a key given twice is a mistake (budget=64,budget=25% set both)
  for (size_t i = first; i < items.size(); ++i) {
    const std::string_view key = items[i].substr(0, items[i].find('='));
    check(std::find(seen.begin(), seen.end(), key) == seen.end(), "attention spec '{}': '{}' is given twice", text, key);
    seen.push_back(key);
    parse_key_value(text, keys, items[i], out);
  }
  check(out.method != AttentionMethod::kSchedule || !out.table_path.empty(), "attention spec '{}': schedule needs table=PATH",
        text);
  check(out.dense_below <= 0.0 || out.cover <= 0.0,
        "attention spec '{}': dense_below and cover are two answers to the same shortfall; give one", text);
  if (name == "auto") expand_auto(out);
  // Bounded: a client chooses them, and the hash codes take K bits in 16, L per key.
  check(!out.lsh.on() || (out.lsh.bits <= 16 && out.lsh.tables <= 1024),
        "attention spec '{}': lsh takes k in 1..16 bits and l in 2..1024 tables, got k={} l={}", text, out.lsh.bits, out.lsh.tables);
  return out;
}

}  // namespace vortex
