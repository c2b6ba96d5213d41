#include "runtime/attention_spec.h"

#include <charconv>
#include <vector>

#include "core/error.h"

namespace vortex {
namespace {

struct MethodInfo {
  AttentionMethod method;
  const char* name;
  std::vector<std::string_view> keys;  // accepted key=value keys
};

const std::vector<MethodInfo>& methods() {
  static const std::vector<MethodInfo> table = {
      {AttentionMethod::kDense, "dense", {}},
      {AttentionMethod::kQuest, "quest", {"budget", "page", "sink", "window", "skip_layers"}},
      {AttentionMethod::kStreaming, "streaming", {"sink", "window", "skip_layers"}},
      {AttentionMethod::kFlow, "flow", {"budget", "page", "sink", "window", "skip_layers"}},
      {AttentionMethod::kSchedule, "schedule", {"table"}},
  };
  return table;
}

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

void parse_skip_layers(std::string_view spec, std::string_view value, AttentionSpec& out) {
  auto bounds = split(value, '-');
  check(bounds.size() <= 2, "attention spec '{}': skip_layers takes N or FIRST-LAST, got '{}'", spec, value);
  out.skip_layers_first = parse_count(spec, "skip_layers", bounds[0], 0);
  out.skip_layers_last = bounds.size() == 2 ? parse_count(spec, "skip_layers", bounds[1], 0) : out.skip_layers_first;
  check(out.skip_layers_first <= out.skip_layers_last, "attention spec '{}': skip_layers range '{}' is reversed", spec, value);
}

void parse_key_value(std::string_view spec, const MethodInfo& info, std::string_view item, AttentionSpec& out) {
  size_t eq = item.find('=');
  check(eq != std::string_view::npos && eq > 0 && eq + 1 < item.size(),
        "attention spec '{}': '{}' is not key=value", spec, item);
  std::string_view key = item.substr(0, eq), value = item.substr(eq + 1);
  bool known = false;
  for (std::string_view k : info.keys) known = known || k == key;
  check(known, "attention spec '{}': '{}' does not take '{}'", spec, info.name, key);
  if (key == "budget") out.budget = parse_count(spec, key, value, 1);
  else if (key == "page") out.page = parse_count(spec, key, value, 1);
  else if (key == "sink") out.sink = parse_count(spec, key, value, 0);
  else if (key == "window") out.window = parse_count(spec, key, value, 0);
  else if (key == "skip_layers") parse_skip_layers(spec, value, out);
  else if (key == "table") out.table_path = std::string(value);
}

}  // namespace

const char* attention_method_name(AttentionMethod method) {
  for (const MethodInfo& info : methods())
    if (info.method == method) return info.name;
  return "unknown";
}

AttentionSpec parse_attention_spec(std::string_view text) {
  check(!text.empty(), "the attention spec is empty (give e.g. 'dense' or 'quest:budget=1024')");
  size_t colon = text.find(':');
  std::string_view name = text.substr(0, colon);
  const MethodInfo* info = nullptr;
  for (const MethodInfo& m : methods())
    if (name == m.name) info = &m;
  check(info != nullptr, "attention spec '{}': unknown method '{}' (known: dense, quest, streaming, flow, schedule)", text, name);
  AttentionSpec out;
  out.method = info->method;
  out.text = std::string(text);
  if (colon == std::string_view::npos) {
    check(info->method == AttentionMethod::kDense || info->method == AttentionMethod::kStreaming,
          "attention spec '{}': '{}' needs parameters (e.g. '{}:budget=1024')", text, name, name);
    return out;
  }
  check(info->method != AttentionMethod::kDense, "attention spec '{}': 'dense' takes no parameters", text);
  auto items = split(text.substr(colon + 1), ',');
  size_t first = 0;
  if (info->method == AttentionMethod::kFlow) {  // flow:PATH[,key=value...]
    check(!items[0].empty() && items[0].find('=') == std::string_view::npos,
          "attention spec '{}': flow needs a .flow file first (flow:PATH,budget=N)", text);
    out.flow_path = std::string(items[0]);
    first = 1;
  }
  for (size_t i = first; i < items.size(); ++i) parse_key_value(text, *info, items[i], out);
  check(info->method != AttentionMethod::kSchedule || !out.table_path.empty(), "attention spec '{}': schedule needs table=PATH", text);
  return out;
}

void require_available_attention(const AttentionSpec& spec) {
  check(spec.method == AttentionMethod::kDense, "attention '{}' is not available yet (this build runs only 'dense')",
        attention_method_name(spec.method));
}

}  // namespace vortex
