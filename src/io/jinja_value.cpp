// Python value semantics for the Jinja interpreter: construction from JSON, truthiness, str()
// and repr(), equality and ordering, json.dumps, and the UTF-8 view of str that Python's code
// point indexing and whitespace rules need.
#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>

#include "io/jinja_internal.h"

namespace vortex::jinja {

// ---- construction --------------------------------------------------------------------------------

const std::string& Value::text() const {
  static const std::string kEmpty;
  return str ? *str : kEmpty;
}

Value Value::undefined(std::string why) {
  Value v;
  v.str = std::make_shared<const std::string>(std::move(why));
  return v;
}

Value Value::none() {
  Value v;
  v.kind = Kind::kNone;
  return v;
}

Value Value::from_bool(bool b) {
  Value v;
  v.kind = Kind::kBool;
  v.boolean = b;
  return v;
}

Value Value::from_int(int64_t i) {
  Value v;
  v.kind = Kind::kInt;
  v.integer = i;
  return v;
}

Value Value::from_float(double f) {
  Value v;
  v.kind = Kind::kFloat;
  v.real = f;
  return v;
}

Value Value::from_string(std::string s) {
  if (s.size() > kMaxOutputBytes) issue("string longer than {} bytes", kMaxOutputBytes);
  Value v;
  v.kind = Kind::kString;
  v.weight = s.size() + 1;
  v.str = std::make_shared<const std::string>(std::move(s));
  return v;
}

Value Value::from_list(List items, Kind kind) {
  if (items.size() > kMaxListItems) issue("list longer than {} items", kMaxListItems);
  Value v;
  v.kind = kind;
  int depth = 0;
  uint64_t weight = 1;
  for (const auto& item : items) {
    depth = std::max<int>(depth, item.depth + 1);
    weight += item.weight;
  }
  // Bounding depth keeps every recursive walk (str, ==, json, destruction) off the stack limit.
  if (depth > kMaxNesting) issue("values nested more than {} deep", kMaxNesting);
  if (weight > kMaxValueBytes) issue("value larger than {} bytes", kMaxValueBytes);
  v.depth = static_cast<uint8_t>(depth);
  v.weight = weight;
  v.list = std::make_shared<const List>(std::move(items));
  return v;
}

Value Value::from_dict(std::shared_ptr<Dict> dict, Kind kind) {
  Value v;
  v.kind = kind;
  int depth = 0;
  uint64_t weight = 1;
  for (const auto& [key, item] : dict->entries) {
    depth = std::max<int>(depth, item.depth + 1);
    weight += key.size() + item.weight;
  }
  if (depth > kMaxNesting) issue("values nested more than {} deep", kMaxNesting);
  if (weight > kMaxValueBytes) issue("value larger than {} bytes", kMaxValueBytes);
  v.depth = static_cast<uint8_t>(depth);
  v.weight = weight;
  v.dict = std::move(dict);
  return v;
}

Value Value::from_callable(std::string name, std::function<Value(Renderer&, CallArgs&)> fn,
                           uint64_t weight) {
  Value v;
  v.kind = Kind::kCallable;
  v.weight = weight;
  v.callable = std::make_shared<const Callable>(Callable{std::move(name), std::move(fn)});
  return v;
}

const Value* Dict::find(std::string_view key) const {
  for (const auto& [k, v] : entries) {
    if (k == key) return &v;
  }
  return nullptr;
}

void Dict::set(std::string key, Value value) {
  for (auto& [k, v] : entries) {
    if (k == key) {
      v = std::move(value);
      return;
    }
  }
  entries.emplace_back(std::move(key), std::move(value));
}

const Value* CallArgs::get(size_t index, std::string_view name) const {
  if (index < positional.size()) return &positional[index];
  for (const auto& [k, v] : keyword) {
    if (k == name) return &v;
  }
  return nullptr;
}

void CallArgs::expect(std::string_view function, size_t max_positional,
                      std::initializer_list<std::string_view> names) const {
  if (positional.size() > max_positional) {
    issue("{}() takes at most {} positional argument(s), {} given", function, max_positional,
          positional.size());
  }
  for (const auto& [k, v] : keyword) {
    if (std::find(names.begin(), names.end(), k) == names.end()) {
      issue("{}() got an unexpected keyword argument '{}'", function, k);
    }
  }
}

template <typename Json>
static Value from_json_impl(const Json& json, int depth) {
  if (depth > kMaxNesting) issue("JSON nested more than {} deep", kMaxNesting);
  switch (json.type()) {
    case nlohmann::json::value_t::null: return Value::none();
    case nlohmann::json::value_t::boolean: return Value::from_bool(json.template get<bool>());
    case nlohmann::json::value_t::number_integer:
      return Value::from_int(json.template get<int64_t>());
    case nlohmann::json::value_t::number_unsigned: {
      auto u = json.template get<uint64_t>();
      if (u > static_cast<uint64_t>(INT64_MAX)) return Value::from_float(static_cast<double>(u));
      return Value::from_int(static_cast<int64_t>(u));
    }
    case nlohmann::json::value_t::number_float: return Value::from_float(json.template get<double>());
    case nlohmann::json::value_t::string: return Value::from_string(json.template get<std::string>());
    case nlohmann::json::value_t::array: {
      List items;
      items.reserve(json.size());
      for (const auto& item : json) items.push_back(from_json_impl(item, depth + 1));
      return Value::from_list(std::move(items));
    }
    case nlohmann::json::value_t::object: {
      auto dict = std::make_shared<Dict>();
      dict->entries.reserve(json.size());
      for (auto it = json.begin(); it != json.end(); ++it) {
        dict->entries.emplace_back(it.key(), from_json_impl(it.value(), depth + 1));
      }
      return Value::from_dict(std::move(dict));
    }
    default: issue("unsupported JSON value (binary or discarded)");
  }
}

Value from_json(const nlohmann::json& json) { return from_json_impl(json, 0); }
Value from_json(const nlohmann::ordered_json& json) { return from_json_impl(json, 0); }

// ---- truthiness, names, str() and repr() -------------------------------------------------------

bool truthy(const Value& v) {
  switch (v.kind) {
    case Kind::kUndefined:
    case Kind::kNone: return false;
    case Kind::kBool: return v.boolean;
    case Kind::kInt: return v.integer != 0;
    case Kind::kFloat: return v.real != 0.0;
    case Kind::kString: return !v.text().empty();
    case Kind::kList:
    case Kind::kTuple: return !v.list->empty();
    case Kind::kDict: return !v.dict->entries.empty();
    case Kind::kNamespace:
    case Kind::kCallable: return true;
  }
  return false;
}

std::string_view type_name(const Value& v) {
  switch (v.kind) {
    case Kind::kUndefined: return "Undefined";
    case Kind::kNone: return "NoneType";
    case Kind::kBool: return "bool";
    case Kind::kInt: return "int";
    case Kind::kFloat: return "float";
    case Kind::kString: return "str";
    case Kind::kList: return "list";
    case Kind::kTuple: return "tuple";
    case Kind::kDict: return "dict";
    case Kind::kNamespace: return "Namespace";
    case Kind::kCallable: return "function";
  }
  return "object";
}

std::string float_repr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d < 0 ? "-inf" : "inf";
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof buf, d, std::chars_format::scientific);
  std::string sci(buf, res.ptr);  // shortest round-trip digits: "-1.2345e+02"
  std::string sign;
  if (sci[0] == '-') {
    sign = "-";
    sci.erase(0, 1);
  }
  size_t e_pos = sci.find('e');
  int exponent = std::stoi(sci.substr(e_pos + 1));
  std::string digits = sci.substr(0, e_pos);
  digits.erase(std::remove(digits.begin(), digits.end(), '.'), digits.end());
  // Python's repr: positional notation when -4 <= exponent < 16, else scientific.
  if (exponent < -4 || exponent >= 16) {
    std::string mantissa = digits.substr(0, 1);
    if (digits.size() > 1) mantissa += "." + digits.substr(1);
    return fmt::format("{}{}e{}{:02d}", sign, mantissa, exponent < 0 ? '-' : '+', std::abs(exponent));
  }
  int point = exponent + 1;  // digits before the decimal point
  int n = static_cast<int>(digits.size());
  if (point <= 0) return sign + "0." + std::string(-point, '0') + digits;
  if (point < n) return sign + digits.substr(0, point) + "." + digits.substr(point);
  return sign + digits + std::string(point - n, '0') + ".0";
}

// Python's str.isprintable(), for the characters repr() writes literally.
static bool py_printable(uint32_t cp) {
  if (cp < 0x20 || cp == 0x7f) return false;
  if (cp >= 0x80 && cp <= 0xa0) return false;
  if (cp == 0xad || cp == 0x1680 || cp == 0x180e || cp == 0x3000 || cp == 0xfeff) return false;
  if ((cp >= 0x2000 && cp <= 0x200f) || (cp >= 0x2028 && cp <= 0x202f)) return false;
  if (cp >= 0x205f && cp <= 0x2064) return false;
  if (cp >= 0xd800 && cp <= 0xdfff) return false;
  return true;
}

static std::string string_repr(const std::string& s) {
  bool has_single = s.find('\'') != std::string::npos;
  bool has_double = s.find('"') != std::string::npos;
  char quote = (has_single && !has_double) ? '"' : '\'';
  std::string out(1, quote);
  for (uint32_t cp : decode_utf8(s)) {
    if (cp == static_cast<uint32_t>(quote) || cp == '\\') {
      out += '\\';
      out += static_cast<char>(cp);
    } else if (cp == '\n') {
      out += "\\n";
    } else if (cp == '\r') {
      out += "\\r";
    } else if (cp == '\t') {
      out += "\\t";
    } else if (py_printable(cp)) {
      append_utf8(out, cp);
    } else if (cp < 0x100) {
      out += fmt::format("\\x{:02x}", cp);
    } else {
      out += fmt::format("\\u{:04x}", cp);
    }
  }
  out += quote;
  return out;
}

// Printing recurses through containers; only namespaces can form cycles or unbounded chains
// (they are the only mutable containers), so they are tracked like CPython's Py_ReprEnter.
struct PrintState {
  std::vector<const Dict*> open_namespaces;
  int depth = 0;
};

static std::string str_impl(const Value& v, PrintState& state, bool repr);

static std::string sequence_str(const Value& v, PrintState& state) {
  const bool tuple = v.kind == Kind::kTuple;
  std::string out = tuple ? "(" : "[";
  for (size_t i = 0; i < v.list->size(); ++i) {
    if (i) out += ", ";
    out += str_impl((*v.list)[i], state, true);
    if (out.size() > kMaxOutputBytes) issue("printed value longer than {} bytes", kMaxOutputBytes);
  }
  if (tuple && v.list->size() == 1) out += ",";
  out += tuple ? ")" : "]";
  return out;
}

static std::string dict_str(const Dict& d, PrintState& state) {
  std::string out = "{";
  for (size_t i = 0; i < d.entries.size(); ++i) {
    if (i) out += ", ";
    out += string_repr(d.entries[i].first) + ": " + str_impl(d.entries[i].second, state, true);
    if (out.size() > kMaxOutputBytes) issue("printed value longer than {} bytes", kMaxOutputBytes);
  }
  return out + "}";
}

static std::string namespace_str(const Dict& d, PrintState& state) {
  auto& open = state.open_namespaces;
  if (std::find(open.begin(), open.end(), &d) != open.end()) return "<Namespace {...}>";
  open.push_back(&d);
  std::string out = "<Namespace " + dict_str(d, state) + ">";
  open.pop_back();
  return out;
}

static std::string str_impl(const Value& v, PrintState& state, bool repr) {
  if (++state.depth > 2 * kMaxNesting) issue("value nested too deeply to print");
  std::string out;
  switch (v.kind) {
    case Kind::kUndefined: out = repr ? "Undefined" : ""; break;
    case Kind::kNone: out = "None"; break;
    case Kind::kBool: out = v.boolean ? "True" : "False"; break;
    case Kind::kInt: out = std::to_string(v.integer); break;
    case Kind::kFloat: out = float_repr(v.real); break;
    case Kind::kString: out = repr ? string_repr(v.text()) : v.text(); break;
    case Kind::kList:
    case Kind::kTuple: out = sequence_str(v, state); break;
    case Kind::kDict: out = dict_str(*v.dict, state); break;
    case Kind::kNamespace: out = namespace_str(*v.dict, state); break;
    case Kind::kCallable: out = "<function " + v.callable->name + ">"; break;
  }
  --state.depth;
  return out;
}

std::string to_str(const Value& v) {
  if (v.kind == Kind::kString) return v.text();
  PrintState state;
  return str_impl(v, state, false);
}

std::string to_repr(const Value& v) {
  PrintState state;
  return str_impl(v, state, true);
}

[[noreturn]] void fail_undefined(const Value& v) {
  issue("{}", v.text().empty() ? std::string("value is undefined") : v.text());
}

// ---- equality and ordering -------------------------------------------------------------------

double to_double(const Value& v) {
  switch (v.kind) {
    case Kind::kBool: return v.boolean ? 1.0 : 0.0;
    case Kind::kInt: return static_cast<double>(v.integer);
    case Kind::kFloat: return v.real;
    default: issue("expected a number, got '{}'", type_name(v));
  }
}

static bool is_integral(const Value& v) { return v.kind == Kind::kInt || v.kind == Kind::kBool; }
static int64_t as_int(const Value& v) { return v.kind == Kind::kBool ? v.boolean : v.integer; }

bool equal(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (is_integral(a) && is_integral(b)) return as_int(a) == as_int(b);
    return to_double(a) == to_double(b);
  }
  if (a.kind != b.kind) return false;
  switch (a.kind) {
    case Kind::kUndefined:
    case Kind::kNone: return true;
    case Kind::kString: return a.str == b.str || a.text() == b.text();
    case Kind::kList:
    case Kind::kTuple:
      if (a.list == b.list) return true;
      return a.list->size() == b.list->size() &&
             std::equal(a.list->begin(), a.list->end(), b.list->begin(), equal);
    case Kind::kDict: {
      if (a.dict == b.dict) return true;
      if (a.dict->entries.size() != b.dict->entries.size()) return false;
      for (const auto& [key, value] : a.dict->entries) {
        const Value* other = b.dict->find(key);
        if (!other || !equal(value, *other)) return false;
      }
      return true;
    }
    case Kind::kNamespace: return a.dict == b.dict;
    case Kind::kCallable: return a.callable == b.callable;
    default: return false;
  }
}

// Returns -1, 0 or 1; 2 when unordered (a NaN is involved), which makes every < false.
int compare(const Value& a, const Value& b) {
  if (a.is_undefined()) fail_undefined(a);
  if (b.is_undefined()) fail_undefined(b);
  if (a.is_number() && b.is_number()) {
    if (is_integral(a) && is_integral(b)) return (as_int(a) > as_int(b)) - (as_int(a) < as_int(b));
    double x = to_double(a), y = to_double(b);
    if (std::isnan(x) || std::isnan(y)) return 2;
    return (x > y) - (x < y);
  }
  if (a.kind == Kind::kString && b.kind == Kind::kString) {
    int c = a.text().compare(b.text());  // UTF-8 byte order is code point order
    return (c > 0) - (c < 0);
  }
  if (a.is_sequence() && a.kind == b.kind) {
    size_t n = std::min(a.list->size(), b.list->size());
    for (size_t i = 0; i < n; ++i) {
      if (!equal((*a.list)[i], (*b.list)[i])) return compare((*a.list)[i], (*b.list)[i]);
    }
    return (a.list->size() > n) - (b.list->size() > n);
  }
  issue("'<' not supported between instances of '{}' and '{}'", type_name(a), type_name(b));
}

// ---- json.dumps ----------------------------------------------------------------------------------

static void json_quote(const std::string& s, bool ensure_ascii, std::string& out) {
  out += '"';
  for (uint32_t cp : decode_utf8(s)) {
    switch (cp) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (cp < 0x20 || (ensure_ascii && cp >= 0x7f)) {
          if (cp > 0xffff) {  // a surrogate pair, as Python writes it
            uint32_t u = cp - 0x10000;
            out += fmt::format("\\u{:04x}\\u{:04x}", 0xd800 + (u >> 10), 0xdc00 + (u & 0x3ff));
          } else {
            out += fmt::format("\\u{:04x}", cp);
          }
        } else {
          append_utf8(out, cp);
        }
    }
  }
  out += '"';
}

static void json_dump(const Value& v, const JsonStyle& style, int level, std::string& out);

// Writes the newline and indentation that precede an item (or the closing bracket) when pretty.
static void json_break(const JsonStyle& style, int level, std::string& out) {
  if (!style.pretty) return;
  out += '\n';
  for (int i = 0; i < level; ++i) out += style.indent_text;
}

static void json_dump_list(const List& items, const JsonStyle& style, int level, std::string& out) {
  if (items.empty()) {
    out += "[]";
    return;
  }
  out += '[';
  for (size_t i = 0; i < items.size(); ++i) {
    if (i) out += style.item_separator;
    json_break(style, level + 1, out);
    json_dump(items[i], style, level + 1, out);
  }
  json_break(style, level, out);
  out += ']';
}

static void json_dump_dict(const Dict& dict, const JsonStyle& style, int level, std::string& out) {
  if (dict.entries.empty()) {
    out += "{}";
    return;
  }
  std::vector<const std::pair<std::string, Value>*> entries;
  for (const auto& entry : dict.entries) entries.push_back(&entry);
  if (style.sort_keys) {
    std::stable_sort(entries.begin(), entries.end(),
                     [](const auto* a, const auto* b) { return a->first < b->first; });
  }
  out += '{';
  for (size_t i = 0; i < entries.size(); ++i) {
    if (i) out += style.item_separator;
    json_break(style, level + 1, out);
    json_quote(entries[i]->first, style.ensure_ascii, out);
    out += style.key_separator;
    json_dump(entries[i]->second, style, level + 1, out);
  }
  json_break(style, level, out);
  out += '}';
}

static void json_dump(const Value& v, const JsonStyle& style, int level, std::string& out) {
  if (out.size() > kMaxOutputBytes) issue("JSON output longer than {} bytes", kMaxOutputBytes);
  switch (v.kind) {
    case Kind::kNone: out += "null"; return;
    case Kind::kBool: out += v.boolean ? "true" : "false"; return;
    case Kind::kInt: out += std::to_string(v.integer); return;
    case Kind::kFloat:
      if (std::isnan(v.real)) out += "NaN";
      else if (std::isinf(v.real)) out += v.real < 0 ? "-Infinity" : "Infinity";
      else out += float_repr(v.real);
      return;
    case Kind::kString: json_quote(v.text(), style.ensure_ascii, out); return;
    case Kind::kList:
    case Kind::kTuple: json_dump_list(*v.list, style, level, out); return;
    case Kind::kDict: json_dump_dict(*v.dict, style, level, out); return;
    default: issue("Object of type {} is not JSON serializable", type_name(v));
  }
}

std::string to_json(const Value& v, const JsonStyle& style) {
  std::string out;
  json_dump(v, style, 0, out);
  return out;
}

// ---- UTF-8 ------------------------------------------------------------------------------------

// Decodes one code point at s[i]; a byte that does not start valid UTF-8 becomes U+DC80+byte
// (Python's surrogateescape), so that append_utf8 restores the exact bytes.
uint32_t decode_utf8_at(std::string_view s, size_t& i) {
  auto byte = [&](size_t k) { return static_cast<uint8_t>(s[k]); };
  uint8_t b0 = byte(i);
  int extra = b0 < 0x80 ? 0 : (b0 >> 5) == 6 ? 1 : (b0 >> 4) == 14 ? 2 : (b0 >> 3) == 30 ? 3 : -1;
  if (extra > 0 && i + extra < s.size()) {
    uint32_t cp = b0 & (0x3f >> extra);
    bool ok = true;
    for (int k = 1; ok && k <= extra; ++k) {
      if ((byte(i + k) & 0xc0) != 0x80) ok = false;
      else cp = (cp << 6) | (byte(i + k) & 0x3f);
    }
    static constexpr uint32_t kMin[4] = {0, 0x80, 0x800, 0x10000};
    if (ok && cp >= kMin[extra] && cp <= 0x10ffff && !(cp >= 0xd800 && cp <= 0xdfff)) {
      i += extra + 1;
      return cp;
    }
  }
  i += 1;
  return extra == 0 ? b0 : 0xdc00 + b0;
}

std::vector<uint32_t> decode_utf8(std::string_view s) {
  std::vector<uint32_t> out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) out.push_back(decode_utf8_at(s, i));
  return out;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp >= 0xdc80 && cp <= 0xdcff) {
    out += static_cast<char>(cp - 0xdc00);  // an escaped invalid byte
  } else if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xc0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xe0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else {
    out += static_cast<char>(0xf0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  }
}

size_t utf8_length(std::string_view s) {
  size_t n = 0;
  for (size_t i = 0; i < s.size(); ++n) decode_utf8_at(s, i);
  return n;
}

bool is_py_space(uint32_t cp) {
  return (cp >= 0x09 && cp <= 0x0d) || (cp >= 0x1c && cp <= 0x20) || cp == 0x85 || cp == 0xa0 ||
         cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200a) || cp == 0x2028 || cp == 0x2029 ||
         cp == 0x202f || cp == 0x205f || cp == 0x3000;
}

size_t find_substring(std::string_view haystack, std::string_view needle, size_t from) {
  if (from > haystack.size()) return std::string_view::npos;
  // glibc's memmem is linear (two-way) where std::string_view::find is O(n·m) on inputs such as
  // "aaa…ab" in "aaa…a".
  const void* at = memmem(haystack.data() + from, haystack.size() - from, needle.data(), needle.size());
  return at ? static_cast<size_t>(static_cast<const char*>(at) - haystack.data()) : std::string_view::npos;
}

std::string py_strip(std::string_view s, const std::string* chars, bool left, bool right) {
  std::vector<uint32_t> strip_set;
  if (chars) strip_set = decode_utf8(*chars);
  std::sort(strip_set.begin(), strip_set.end());
  auto strips = [&](uint32_t cp) {
    if (!chars) return is_py_space(cp);
    return std::binary_search(strip_set.begin(), strip_set.end(), cp);
  };
  // Byte offsets of each code point, so the result is a substring of the original bytes.
  std::vector<size_t> offsets;
  std::vector<uint32_t> cps;
  for (size_t i = 0; i < s.size();) {
    offsets.push_back(i);
    cps.push_back(decode_utf8_at(s, i));
  }
  offsets.push_back(s.size());
  size_t begin = 0, end = cps.size();
  if (left) while (begin < end && strips(cps[begin])) ++begin;
  if (right) while (end > begin && strips(cps[end - 1])) --end;
  return std::string(s.substr(offsets[begin], offsets[end] - offsets[begin]));
}

}  // namespace vortex::jinja
