// Jinja2's built-in filters and tests (jinja2/filters.py, jinja2/tests.py), with transformers'
// replacement `tojson` (json.dumps with ensure_ascii=False, no HTML escaping). Filters that
// return generators in Jinja (map, select, reject, unique, reverse ...) return lists here, which
// iterate and join the same way and differ only if printed directly.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <unordered_set>

#include "io/jinja_internal.h"

namespace vortex::jinja {
namespace {

bool is_integral(const Value& v) { return v.kind == Kind::kInt || v.kind == Kind::kBool; }
int64_t as_int(const Value& v) { return v.kind == Kind::kBool ? v.boolean : v.integer; }

bool flag(const CallArgs& a, size_t index, std::string_view name, bool fallback) {
  const Value* v = a.get(index, name);
  return v ? truthy(*v) : fallback;
}

const Value* arg(const CallArgs& a, size_t index, std::string_view name) { return a.get(index, name); }

const Value& required(const CallArgs& a, size_t index, std::string_view name,
                      std::string_view filter) {
  const Value* v = a.get(index, name);
  if (!v) issue("{}() missing required argument '{}'", filter, name);
  return *v;
}

// Jinja's make_attrgetter: "a.b.0" looks up each part as an item (an integer part as an index).
Value get_path(const Value& item, const Value* attribute) {
  if (!attribute || attribute->kind == Kind::kNone) return item;
  if (is_integral(*attribute)) return get_item(item, *attribute);
  if (!attribute->is_string()) issue("attribute must be a string or integer");
  Value v = item;
  size_t start = 0;
  const std::string& path = attribute->text();
  while (true) {
    size_t dot = path.find('.', start);
    std::string part = path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    bool digits = !part.empty() && std::all_of(part.begin(), part.end(), ::isdigit);
    v = get_item(v, digits ? Value::from_int(std::strtoll(part.c_str(), nullptr, 10))
                           : Value::from_string(part));
    if (dot == std::string::npos) return v;
    start = dot + 1;
  }
}

// The sort key Jinja's filters use: the attribute, lowered when case-insensitive.
Value sort_key(const Value& item, const Value* attribute, bool case_sensitive) {
  Value key = get_path(item, attribute);
  if (!case_sensitive && key.is_string()) return Value::from_string(py_lower(key.text()));
  return key;
}

// ---- string filters --------------------------------------------------------------------------

Value f_string(const Value& in, CallArgs&) { return Value::from_string(to_str(in)); }
Value f_upper(const Value& in, CallArgs&) { return Value::from_string(py_upper(to_str(in))); }
Value f_lower(const Value& in, CallArgs&) { return Value::from_string(py_lower(to_str(in))); }
Value f_capitalize(const Value& in, CallArgs&) {
  return Value::from_string(py_capitalize(to_str(in)));
}

// Jinja's title: in each run between `-`, whitespace and opening brackets, the first character
// upper-cased and the rest lowered.
Value f_title(const Value& in, CallArgs&) {
  std::string s = to_str(in), out, run;
  auto flush = [&] {
    if (run.empty()) return;
    size_t i = 0;
    decode_utf8_at(run, i);
    out += py_upper(run.substr(0, i)) + py_lower(run.substr(i));
    run.clear();
  };
  for (size_t i = 0; i < s.size();) {
    size_t start = i;
    uint32_t cp = decode_utf8_at(s, i);
    bool separator = cp == '-' || cp == '(' || cp == '{' || cp == '[' || cp == '<' || is_py_space(cp);
    if (separator) {
      flush();
      out.append(s, start, i - start);
    } else {
      run.append(s, start, i - start);
    }
  }
  flush();
  return Value::from_string(std::move(out));
}

Value f_trim(const Value& in, CallArgs& a) {
  a.expect("trim", 1, {"chars"});
  const Value* chars = arg(a, 0, "chars");
  const std::string* set = chars && chars->is_string() ? &chars->text() : nullptr;
  return Value::from_string(py_strip(to_str(in), set, true, true));
}

Value f_replace(const Value& in, CallArgs& a) {
  a.expect("replace", 3, {"old", "new", "count"});
  return py_replace(to_str(in), required(a, 0, "old", "replace"), required(a, 1, "new", "replace"),
                    arg(a, 2, "count"));
}

Value f_escape(const Value& in, CallArgs&) {
  std::string out;
  for (char c : to_str(in)) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&#34;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return Value::from_string(std::move(out));
}

Value f_safe(const Value& in, CallArgs&) { return in; }

Value f_center(const Value& in, CallArgs& a) {
  std::string s = to_str(in);
  const Value* w = arg(a, 0, "width");
  int64_t width = w && is_integral(*w) ? as_int(*w) : 80;
  int64_t len = static_cast<int64_t>(utf8_length(s));
  if (width <= len) return Value::from_string(s);
  width = std::min<int64_t>(width, kMaxOutputBytes);
  int64_t margin = width - len;
  int64_t left = margin / 2 + (margin & width & 1);  // CPython's str.center
  return Value::from_string(std::string(left, ' ') + s + std::string(margin - left, ' '));
}

Value f_indent(const Value& in, CallArgs& a) {
  a.expect("indent", 3, {"width", "first", "blank"});
  const Value* w = arg(a, 0, "width");
  std::string pad = !w ? "    " : w->is_string() ? w->text()
                               : std::string(std::clamp<int64_t>(is_integral(*w) ? as_int(*w) : 4, 0, 1000), ' ');
  bool first = flag(a, 1, "first", false), blank = flag(a, 2, "blank", false);
  std::string s = to_str(in) + "\n";  // Jinja appends a newline before splitlines
  List lines = py_splitlines(s, false);
  std::string out;
  for (size_t i = 0; i < lines.size(); ++i) {
    const std::string& line = lines[i].text();
    if (i > 0) out += "\n";
    if (i > 0 && (blank || !line.empty())) out += pad;
    out += line;
    if (out.size() > kMaxOutputBytes) issue("string longer than {} bytes", kMaxOutputBytes);
  }
  if (first) out = pad + out;
  return Value::from_string(std::move(out));
}

Value f_wordcount(const Value& in, CallArgs&) {
  std::string s = to_str(in);
  int64_t count = 0;
  bool in_word = false;
  for (size_t i = 0; i < s.size();) {
    bool word = is_py_word(decode_utf8_at(s, i));
    if (word && !in_word) ++count;
    in_word = word;
  }
  return Value::from_int(count);
}

Value f_format(const Value& in, CallArgs& a) {
  return binary_op("%", Value::from_string(to_str(in)), Value::from_list(a.positional, Kind::kTuple));
}

// transformers: json.dumps(x, ensure_ascii=False, indent=indent, separators=separators,
// sort_keys=sort_keys), so with indent the default separators are (',', ': ').
Value f_tojson(const Value& in, CallArgs& a) {
  a.expect("tojson", 4, {"ensure_ascii", "indent", "separators", "sort_keys"});
  JsonStyle style;
  style.ensure_ascii = flag(a, 0, "ensure_ascii", false);
  style.sort_keys = flag(a, 3, "sort_keys", false);
  const Value* indent = arg(a, 1, "indent");
  if (indent && indent->kind != Kind::kNone) {
    style.pretty = true;
    style.item_separator = ",";
    if (indent->is_string()) style.indent_text = indent->text();
    else if (is_integral(*indent)) style.indent_text = std::string(std::clamp<int64_t>(as_int(*indent), 0, 1000), ' ');
    else issue("tojson indent must be an integer or a string");
  }
  const Value* separators = arg(a, 2, "separators");
  if (separators && separators->kind != Kind::kNone) {
    if (!separators->is_sequence() || separators->list->size() != 2 ||
        !(*separators->list)[0].is_string() || !(*separators->list)[1].is_string()) {
      issue("tojson separators must be a pair of strings");
    }
    style.item_separator = (*separators->list)[0].text();
    style.key_separator = (*separators->list)[1].text();
  }
  return Value::from_string(to_json(in, style));
}

// ---- numbers ---------------------------------------------------------------------------------

// Python's int(str): optional sign, digits with single underscores between, surrounding space.
bool parse_py_int(const std::string& text, int base, int64_t* out) {
  std::string s = py_strip(text, nullptr, true, true), digits;
  size_t i = 0;
  if (i < s.size() && (s[i] == '+' || s[i] == '-')) digits += s[i++];
  for (; i < s.size(); ++i) {
    if (s[i] == '_' && i > 0 && i + 1 < s.size() && s[i + 1] != '_' && std::isalnum(static_cast<unsigned char>(s[i - 1]))) continue;
    digits += s[i];
  }
  if (digits.empty() || digits == "+" || digits == "-") return false;
  if (digits[0] == '+') digits.erase(0, 1);
  char* end = nullptr;
  errno = 0;
  long long v = std::strtoll(digits.c_str(), &end, base);
  if (errno || *end) return false;
  *out = v;
  return true;
}

bool parse_py_float(const std::string& text, double* out) {
  std::string s = py_strip(text, nullptr, true, true);
  if (s.empty() || s.find_first_of("xX_") != std::string::npos) return false;
  char* end = nullptr;
  *out = std::strtod(s.c_str(), &end);
  return *end == '\0';
}

Value f_int(const Value& in, CallArgs& a) {
  a.expect("int", 2, {"default", "base"});
  const Value* fallback = arg(a, 0, "default");
  const Value* base = arg(a, 1, "base");
  if (in.is_undefined()) fail_undefined(in);
  if (is_integral(in)) return Value::from_int(as_int(in));
  if (in.kind == Kind::kFloat) {
    if (!std::isfinite(in.real) || std::fabs(in.real) >= 9.2e18) issue("cannot convert float {} to integer", float_repr(in.real));
    return Value::from_int(static_cast<int64_t>(in.real));
  }
  if (in.is_string()) {
    int64_t v = 0;
    int b = base && is_integral(*base) ? static_cast<int>(as_int(*base)) : 10;
    if (b >= 2 && b <= 36 && parse_py_int(in.text(), b, &v)) return Value::from_int(v);
    double d = 0;  // Jinja's quirk: "42.23"|int is 42
    if (parse_py_float(in.text(), &d) && std::isfinite(d) && std::fabs(d) < 9.2e18) {
      return Value::from_int(static_cast<int64_t>(d));
    }
  }
  return fallback ? *fallback : Value::from_int(0);
}

Value f_float(const Value& in, CallArgs& a) {
  a.expect("float", 1, {"default"});
  if (in.is_undefined()) fail_undefined(in);
  if (in.is_number()) return Value::from_float(to_double(in));
  double d = 0;
  if (in.is_string() && parse_py_float(in.text(), &d)) return Value::from_float(d);
  const Value* fallback = arg(a, 0, "default");
  return fallback ? *fallback : Value::from_float(0.0);
}

Value f_abs(const Value& in, CallArgs&) {
  if (in.kind == Kind::kFloat) return Value::from_float(std::fabs(in.real));
  if (!is_integral(in)) issue("bad operand type for abs(): '{}'", type_name(in));
  return as_int(in) < 0 ? negate(in) : Value::from_int(as_int(in));
}

// Python's round(x, n): correctly rounded, ties to even (glibc's printf rounds the same way).
double py_round(double x, int64_t digits) {
  if (!std::isfinite(x)) return x;
  if (digits < 0) {
    double scale = std::pow(10.0, static_cast<double>(-digits));
    return std::nearbyint(x / scale) * scale;
  }
  char buffer[512];
  std::snprintf(buffer, sizeof buffer, "%.*f", static_cast<int>(std::min<int64_t>(digits, 300)), x);
  return std::strtod(buffer, nullptr);
}

Value f_round(const Value& in, CallArgs& a) {
  a.expect("round", 2, {"precision", "method"});
  const Value* p = arg(a, 0, "precision");
  int64_t precision = p && is_integral(*p) ? as_int(*p) : 0;
  const Value* m = arg(a, 1, "method");
  std::string method = m && m->is_string() ? m->text() : "common";
  if (!in.is_number()) issue("round() needs a number, got '{}'", type_name(in));
  if (method == "common") {
    if (is_integral(in)) return Value::from_int(as_int(in));  // round(int, n) stays int
    return Value::from_float(py_round(in.real, precision));
  }
  if (method != "ceil" && method != "floor") issue("round method must be common, ceil or floor");
  double scale = std::pow(10.0, static_cast<double>(precision));
  double scaled = to_double(in) * scale;
  return Value::from_float((method == "ceil" ? std::ceil(scaled) : std::floor(scaled)) / scale);
}

// ---- sequences -------------------------------------------------------------------------------

Value f_length(const Value& in, CallArgs&) { return Value::from_int(length(in)); }
Value f_list(const Value& in, CallArgs&) { return Value::from_list(iterate(in)); }

Value f_first(const Value& in, CallArgs&) {
  List items = iterate(in);
  return items.empty() ? Value::undefined("No first item, sequence was empty.") : items.front();
}

Value f_last(const Value& in, CallArgs&) {
  List items = iterate(in);
  return items.empty() ? Value::undefined("No last item, sequence was empty.") : items.back();
}

Value f_reverse(const Value& in, CallArgs&) {
  List items = iterate(in);
  std::reverse(items.begin(), items.end());
  if (!in.is_string()) return Value::from_list(std::move(items));
  std::string out;
  for (const auto& ch : items) out += ch.text();
  return Value::from_string(std::move(out));
}

Value f_join(const Value& in, CallArgs& a) {
  a.expect("join", 2, {"d", "attribute"});
  const Value* sep = arg(a, 0, "d");
  std::string separator = sep ? to_str(*sep) : "", out;
  List items = iterate(in);
  for (size_t i = 0; i < items.size(); ++i) {
    if (i) out += separator;
    out += to_str(get_path(items[i], arg(a, 1, "attribute")));
    if (out.size() > kMaxOutputBytes) issue("string longer than {} bytes", kMaxOutputBytes);
  }
  return Value::from_string(std::move(out));
}

Value f_default(const Value& in, CallArgs& a) {
  a.expect("default", 2, {"default_value", "boolean"});
  const Value* fallback = arg(a, 0, "default_value");
  bool use_default = in.is_undefined() || (flag(a, 1, "boolean", false) && !truthy(in));
  if (!use_default) return in;
  return fallback ? *fallback : Value::from_string("");
}

Value f_items(const Value& in, CallArgs&) {
  if (in.is_undefined()) return Value::from_list({});
  if (in.kind != Kind::kDict) issue("Can only get item pairs from a mapping.");
  List out;
  for (const auto& [k, v] : in.dict->entries) {
    out.push_back(Value::from_list({Value::from_string(k), v}, Kind::kTuple));
  }
  return Value::from_list(std::move(out));
}

// Python's sorted(items, key=..., reverse=...): stable, keys computed once each.
List sorted_by_key(List items, const Value* attribute, bool case_sensitive, bool reverse) {
  std::vector<Value> keys;
  keys.reserve(items.size());
  for (const auto& item : items) keys.push_back(sort_key(item, attribute, case_sensitive));
  std::vector<size_t> order(items.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t x, size_t y) {
    int c = compare(keys[x], keys[y]);
    return reverse ? c == 1 : c == -1;
  });
  List out;
  out.reserve(items.size());
  for (size_t i : order) out.push_back(std::move(items[i]));
  return out;
}

Value f_dictsort(const Value& in, CallArgs& a) {
  a.expect("dictsort", 3, {"case_sensitive", "by", "reverse"});
  if (in.is_undefined()) fail_undefined(in);
  CallArgs none;
  List items = *f_items(in, none).list;
  const Value* by = arg(a, 1, "by");
  Value index = Value::from_int(by && by->is_string() && by->text() == "value" ? 1 : 0);
  return Value::from_list(sorted_by_key(std::move(items), &index, flag(a, 0, "case_sensitive", false),
                                        flag(a, 2, "reverse", false)));
}

Value f_sort(const Value& in, CallArgs& a) {
  a.expect("sort", 3, {"reverse", "case_sensitive", "attribute"});
  return Value::from_list(sorted_by_key(iterate(in), arg(a, 2, "attribute"),
                                        flag(a, 1, "case_sensitive", false), flag(a, 0, "reverse", false)));
}

Value min_or_max(const Value& in, CallArgs& a, bool want_max) {
  a.expect(want_max ? "max" : "min", 2, {"case_sensitive", "attribute"});
  List items = iterate(in);
  if (items.empty()) return Value::undefined("No aggregated item, sequence was empty.");
  bool case_sensitive = flag(a, 0, "case_sensitive", false);
  const Value* attribute = arg(a, 1, "attribute");
  size_t best = 0;
  Value best_key = sort_key(items[0], attribute, case_sensitive);
  for (size_t i = 1; i < items.size(); ++i) {
    Value key = sort_key(items[i], attribute, case_sensitive);
    int c = compare(key, best_key);
    if (want_max ? c == 1 : c == -1) {
      best = i;
      best_key = std::move(key);
    }
  }
  return items[best];
}

Value f_min(const Value& in, CallArgs& a) { return min_or_max(in, a, false); }
Value f_max(const Value& in, CallArgs& a) { return min_or_max(in, a, true); }

Value f_sum(const Value& in, CallArgs& a) {
  a.expect("sum", 2, {"attribute", "start"});
  const Value* start = arg(a, 1, "start");
  Value total = start ? *start : Value::from_int(0);
  if (total.is_string()) issue("sum() can't sum strings [use ''.join(seq) instead]");
  uint64_t work = 0;  // summing lists copies the running total each time
  for (const auto& item : iterate(in)) {
    total = binary_op("+", total, get_path(item, arg(a, 0, "attribute")));
    work += total.weight;
    if (work > 4 * kMaxValueBytes) issue("sum() too expensive");
  }
  return total;
}

// A hashable identity for unique(): Python's set treats 1, 1.0 and True as one key.
std::string hash_key(const Value& v) {
  switch (v.kind) {
    case Kind::kString: return "s" + v.text();
    case Kind::kBool:
    case Kind::kInt: return "n" + std::to_string(as_int(v));
    case Kind::kFloat:
      if (std::floor(v.real) == v.real && std::fabs(v.real) < 9e18) {
        return "n" + std::to_string(static_cast<int64_t>(v.real));
      }
      return "f" + float_repr(v.real);
    case Kind::kNone: return "N";
    case Kind::kUndefined: return "U";
    case Kind::kTuple: {
      std::string key = "t(";
      for (const auto& item : *v.list) key += hash_key(item) + ",";
      return key + ")";
    }
    default: issue("unhashable type: '{}'", type_name(v));
  }
}

Value f_unique(const Value& in, CallArgs& a) {
  a.expect("unique", 2, {"case_sensitive", "attribute"});
  bool case_sensitive = flag(a, 0, "case_sensitive", false);
  std::unordered_set<std::string> seen;
  List out;
  for (const auto& item : iterate(in)) {
    if (seen.insert(hash_key(sort_key(item, arg(a, 1, "attribute"), case_sensitive))).second) {
      out.push_back(item);
    }
  }
  return Value::from_list(std::move(out));
}

Value f_map(const Value& in, CallArgs& a) {
  List out;
  if (const Value* attribute = a.get(SIZE_MAX, "attribute")) {
    const Value* fallback = a.get(SIZE_MAX, "default");
    for (const auto& item : iterate(in)) {
      Value v = get_path(item, attribute);
      out.push_back(v.is_undefined() && fallback ? *fallback : v);
    }
    return Value::from_list(std::move(out));
  }
  if (a.positional.empty() || !a.positional[0].is_string()) issue("map() needs a filter name or attribute=");
  FilterFn filter = find_filter(a.positional[0].text());
  if (!filter) issue("no filter named '{}'", a.positional[0].text());
  CallArgs rest;
  rest.positional.assign(a.positional.begin() + 1, a.positional.end());
  rest.keyword = a.keyword;
  uint64_t weight = 0;  // checked as results arrive: each may be large
  for (const auto& item : iterate(in)) {
    CallArgs copy = rest;
    out.push_back(filter(item, copy));
    weight += out.back().weight;
    if (weight > kMaxValueBytes) issue("value larger than {} bytes", kMaxValueBytes);
  }
  return Value::from_list(std::move(out));
}

// select/reject(test, args...) and selectattr/rejectattr(attribute, test, args...).
Value select_items(const Value& in, CallArgs& a, bool by_attribute, bool keep) {
  size_t first = by_attribute ? 1 : 0;
  if (by_attribute && a.positional.empty()) issue("selectattr/rejectattr need an attribute");
  TestFn test = nullptr;
  if (a.positional.size() > first) {
    if (!a.positional[first].is_string()) issue("test name must be a string");
    test = find_test(a.positional[first].text());
    if (!test) issue("no test named '{}'", a.positional[first].text());
  }
  CallArgs test_args;
  if (a.positional.size() > first + 1) {
    test_args.positional.assign(a.positional.begin() + first + 1, a.positional.end());
  }
  test_args.keyword = a.keyword;
  List out;
  for (const auto& item : iterate(in)) {
    Value subject = by_attribute ? get_path(item, &a.positional[0]) : item;
    CallArgs copy = test_args;
    bool passed = test ? test(subject, copy) : truthy(subject);
    if (passed == keep) out.push_back(item);
  }
  return Value::from_list(std::move(out));
}

Value f_select(const Value& in, CallArgs& a) { return select_items(in, a, false, true); }
Value f_reject(const Value& in, CallArgs& a) { return select_items(in, a, false, false); }
Value f_selectattr(const Value& in, CallArgs& a) { return select_items(in, a, true, true); }
Value f_rejectattr(const Value& in, CallArgs& a) { return select_items(in, a, true, false); }

Value f_attr(const Value& in, CallArgs& a) {
  const Value& name = required(a, 0, "name", "attr");
  if (!name.is_string()) issue("attr() name must be a string");
  return get_attr(in, name.text());
}

// ---- tests -----------------------------------------------------------------------------------

const Value& test_arg(const CallArgs& a, std::string_view test) {
  if (a.positional.empty()) issue("test '{}' needs an argument", test);
  return a.positional[0];
}

bool t_defined(const Value& v, CallArgs&) { return !v.is_undefined(); }
bool t_undefined(const Value& v, CallArgs&) { return v.is_undefined(); }
bool t_none(const Value& v, CallArgs&) { return v.kind == Kind::kNone; }
bool t_boolean(const Value& v, CallArgs&) { return v.kind == Kind::kBool; }
bool t_true(const Value& v, CallArgs&) { return v.kind == Kind::kBool && v.boolean; }
bool t_false(const Value& v, CallArgs&) { return v.kind == Kind::kBool && !v.boolean; }
bool t_integer(const Value& v, CallArgs&) { return v.kind == Kind::kInt; }
bool t_float(const Value& v, CallArgs&) { return v.kind == Kind::kFloat; }
bool t_number(const Value& v, CallArgs&) { return v.is_number(); }
bool t_string(const Value& v, CallArgs&) { return v.is_string(); }
bool t_mapping(const Value& v, CallArgs&) { return v.kind == Kind::kDict; }
bool t_iterable(const Value& v, CallArgs&) {
  return v.is_undefined() || v.is_string() || v.is_sequence() || v.kind == Kind::kDict;
}
bool t_sequence(const Value& v, CallArgs& a) { return t_iterable(v, a); }
bool t_callable(const Value& v, CallArgs&) { return v.kind == Kind::kCallable || v.is_undefined(); }

// Jinja: value % 2 == 1 (odd) and value % 2 == 0 (even), with Python's % on ints and floats.
bool t_odd(const Value& v, CallArgs&) { return equal(binary_op("%", v, Value::from_int(2)), Value::from_int(1)); }
bool t_even(const Value& v, CallArgs&) { return equal(binary_op("%", v, Value::from_int(2)), Value::from_int(0)); }
bool t_divisibleby(const Value& v, CallArgs& a) {
  Value r = binary_op("%", v, test_arg(a, "divisibleby"));
  return r.kind == Kind::kFloat ? r.real == 0.0 : as_int(r) == 0;
}
bool t_eq(const Value& v, CallArgs& a) { return equal(v, test_arg(a, "eq")); }
bool t_ne(const Value& v, CallArgs& a) { return !equal(v, test_arg(a, "ne")); }
bool t_lt(const Value& v, CallArgs& a) { return compare_op("<", v, test_arg(a, "lt")); }
bool t_le(const Value& v, CallArgs& a) { return compare_op("<=", v, test_arg(a, "le")); }
bool t_gt(const Value& v, CallArgs& a) { return compare_op(">", v, test_arg(a, "gt")); }
bool t_ge(const Value& v, CallArgs& a) { return compare_op(">=", v, test_arg(a, "ge")); }
bool t_in(const Value& v, CallArgs& a) { return contains(test_arg(a, "in"), v); }
bool t_sameas(const Value& v, CallArgs& a) {
  const Value& other = test_arg(a, "sameas");
  if (v.kind != other.kind) return false;
  if (v.is_sequence()) return v.list == other.list;
  if (v.is_mapping()) return v.dict == other.dict;
  return equal(v, other);
}
bool t_lower(const Value& v, CallArgs&) {
  std::string s = to_str(v);
  return s != py_upper(s) && s == py_lower(s);
}
bool t_upper(const Value& v, CallArgs&) {
  std::string s = to_str(v);
  return s != py_lower(s) && s == py_upper(s);
}
bool t_escaped(const Value&, CallArgs&) { return false; }
bool t_filter(const Value& v, CallArgs&) { return v.is_string() && find_filter(v.text()); }
bool t_test(const Value& v, CallArgs&) { return v.is_string() && find_test(v.text()); }

struct FilterEntry {
  std::string_view name;
  FilterFn fn;
};
struct TestEntry {
  std::string_view name;
  TestFn fn;
};

constexpr FilterEntry kFilters[] = {
    {"abs", f_abs},           {"attr", f_attr},         {"capitalize", f_capitalize},
    {"center", f_center},     {"count", f_length},      {"d", f_default},
    {"default", f_default},   {"dictsort", f_dictsort}, {"e", f_escape},
    {"escape", f_escape},     {"first", f_first},       {"float", f_float},
    {"forceescape", f_escape}, {"format", f_format},    {"indent", f_indent},
    {"int", f_int},           {"items", f_items},       {"join", f_join},
    {"last", f_last},         {"length", f_length},     {"list", f_list},
    {"lower", f_lower},       {"map", f_map},           {"max", f_max},
    {"min", f_min},           {"reject", f_reject},     {"rejectattr", f_rejectattr},
    {"replace", f_replace},   {"reverse", f_reverse},   {"round", f_round},
    {"safe", f_safe},         {"select", f_select},     {"selectattr", f_selectattr},
    {"sort", f_sort},         {"string", f_string},     {"sum", f_sum},
    {"title", f_title},       {"tojson", f_tojson},     {"trim", f_trim},
    {"unique", f_unique},     {"upper", f_upper},       {"wordcount", f_wordcount},
};

constexpr TestEntry kTests[] = {
    {"defined", t_defined},   {"undefined", t_undefined}, {"none", t_none},
    {"boolean", t_boolean},   {"true", t_true},           {"false", t_false},
    {"integer", t_integer},   {"float", t_float},         {"number", t_number},
    {"string", t_string},     {"mapping", t_mapping},     {"iterable", t_iterable},
    {"sequence", t_sequence}, {"callable", t_callable},   {"odd", t_odd},
    {"even", t_even},         {"divisibleby", t_divisibleby}, {"eq", t_eq},
    {"equalto", t_eq},        {"==", t_eq},               {"ne", t_ne},
    {"!=", t_ne},             {"lt", t_lt},               {"lessthan", t_lt},
    {"<", t_lt},              {"le", t_le},               {"<=", t_le},
    {"gt", t_gt},             {"greaterthan", t_gt},      {">", t_gt},
    {"ge", t_ge},             {">=", t_ge},               {"in", t_in},
    {"sameas", t_sameas},     {"lower", t_lower},         {"upper", t_upper},
    {"escaped", t_escaped},   {"filter", t_filter},       {"test", t_test},
};

}  // namespace

FilterFn find_filter(std::string_view name) {
  for (const auto& entry : kFilters) {
    if (entry.name == name) return entry.fn;
  }
  return nullptr;
}

TestFn find_test(std::string_view name) {
  for (const auto& entry : kTests) {
    if (entry.name == name) return entry.fn;
  }
  return nullptr;
}

}  // namespace vortex::jinja
