// Attribute and item access as Jinja's sandbox resolves them, Python slicing, iteration, and
// the str/dict/list methods templates call (content.strip(), d.get('k'), s.split(',') ...).
//
// Resolution order follows jinja2.sandbox: `x.name` tries Python attributes (methods) first,
// then x['name']; `x[key]` tries the item first, then the attribute. Missing values become
// Undefined, but touching an Undefined's attribute or item fails, as in Jinja. Methods that would
// mutate (list.append, dict.update ...) are unsafe in the immutable sandbox: they resolve to an
// Undefined whose use fails with Jinja's message.
//
// Case conversion uses Unicode simple case mappings (utf8proc); Python's few one-to-many
// mappings (ß → SS) are not applied.
#include <algorithm>

#include <utf8proc.h>

#include "io/jinja_internal.h"

namespace vortex::jinja {
namespace {

bool is_integral(const Value& v) { return v.kind == Kind::kInt || v.kind == Kind::kBool; }
int64_t as_int(const Value& v) { return v.kind == Kind::kBool ? v.boolean : v.integer; }

bool is_ascii(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return static_cast<uint8_t>(c) < 0x80; });
}

// The code points of a str as separate strings (what iterating a str yields).
List characters(std::string_view s) {
  if (s.size() > kMaxListItems && utf8_length(s) > kMaxListItems) {
    issue("str of more than {} characters cannot be split into a list", kMaxListItems);
  }
  List out;
  for (size_t i = 0; i < s.size();) {
    std::string ch;
    append_utf8(ch, decode_utf8_at(s, i));
    out.push_back(Value::from_string(std::move(ch)));
  }
  return out;
}

Value unsafe(std::string_view name, const Value& obj) {
  return Value::undefined(fmt::format("access to attribute '{}' of '{}' object is unsafe.", name,
                                      type_name(obj)));
}

Value no_attribute(const Value& obj, std::string_view name) {
  return Value::undefined(fmt::format("'{} object' has no attribute '{}'", type_name(obj), name));
}

const std::string* optional_string(const Value* v, std::string_view what) {
  if (!v || v->kind == Kind::kNone) return nullptr;
  if (!v->is_string()) issue("{} must be a str or None, not {}", what, type_name(*v));
  return &v->text();
}

int64_t int_arg(const Value* v, int64_t fallback, std::string_view what) {
  if (!v || v->kind == Kind::kNone) return fallback;
  if (!is_integral(*v)) issue("{} must be an integer, not {}", what, type_name(*v));
  return as_int(*v);
}

}  // namespace

// ---- case conversion (utf8proc's simple case mappings) -----------------------------------------

static std::string map_code_points(std::string_view s, utf8proc_int32_t (*map)(utf8proc_int32_t)) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    uint32_t cp = decode_utf8_at(s, i);
    bool escaped_byte = cp >= 0xdc80 && cp <= 0xdcff;
    append_utf8(out, escaped_byte ? cp : static_cast<uint32_t>(map(static_cast<utf8proc_int32_t>(cp))));
  }
  return out;
}

static bool is_cased(uint32_t cp) {
  auto category = utf8proc_category(static_cast<utf8proc_int32_t>(cp));
  return category == UTF8PROC_CATEGORY_LU || category == UTF8PROC_CATEGORY_LL ||
         category == UTF8PROC_CATEGORY_LT;
}

bool is_py_alpha(uint32_t cp) {
  auto category = utf8proc_category(static_cast<utf8proc_int32_t>(cp));
  return category >= UTF8PROC_CATEGORY_LU && category <= UTF8PROC_CATEGORY_LO;
}

bool is_py_digit(uint32_t cp) {
  return utf8proc_category(static_cast<utf8proc_int32_t>(cp)) == UTF8PROC_CATEGORY_ND;
}

bool is_py_word(uint32_t cp) {  // regex \w
  auto category = utf8proc_category(static_cast<utf8proc_int32_t>(cp));
  return cp == '_' || (category >= UTF8PROC_CATEGORY_LU && category <= UTF8PROC_CATEGORY_LO) ||
         (category >= UTF8PROC_CATEGORY_ND && category <= UTF8PROC_CATEGORY_NO);
}

std::string py_upper(std::string_view s) { return map_code_points(s, utf8proc_toupper); }
std::string py_lower(std::string_view s) { return map_code_points(s, utf8proc_tolower); }

// str.title(): a character after a cased one is lowered, any other is title-cased.
std::string py_title(std::string_view s) {
  std::string out;
  bool previous_cased = false;
  for (size_t i = 0; i < s.size();) {
    uint32_t cp = decode_utf8_at(s, i);
    auto c = static_cast<utf8proc_int32_t>(cp);
    bool escaped_byte = cp >= 0xdc80 && cp <= 0xdcff;
    append_utf8(out, escaped_byte ? cp : static_cast<uint32_t>(previous_cased ? utf8proc_tolower(c) : utf8proc_totitle(c)));
    previous_cased = !escaped_byte && is_cased(cp);
  }
  return out;
}

// str.capitalize(): the first character title-cased, the rest lowered.
std::string py_capitalize(std::string_view s) {
  if (s.empty()) return "";
  size_t i = 0;
  uint32_t first = decode_utf8_at(s, i);
  std::string out;
  bool escaped_byte = first >= 0xdc80 && first <= 0xdcff;
  append_utf8(out, escaped_byte ? first : static_cast<uint32_t>(utf8proc_totitle(static_cast<utf8proc_int32_t>(first))));
  return out + py_lower(s.substr(i));
}

static bool all_code_points(const std::string& s, bool (*pred)(uint32_t)) {
  if (s.empty()) return false;
  for (size_t i = 0; i < s.size();) {
    if (!pred(decode_utf8_at(s, i))) return false;
  }
  return true;
}

static bool is_py_alnum(uint32_t cp) { return is_py_alpha(cp) || is_py_digit(cp); }

// ---- split -------------------------------------------------------------------------------------

// Appends one piece of a split, refusing lists past the item limit before they are built.
static void add_piece(List& out, std::string piece) {
  if (out.size() >= kMaxListItems) issue("split produces more than {} items", kMaxListItems);
  out.push_back(Value::from_string(std::move(piece)));
}

// str.split(sep, maxsplit): with sep=None, runs of whitespace separate and ends are ignored.
List py_split(const std::string& s, const std::string* sep, int64_t maxsplit) {
  List out;
  if (sep) {
    if (sep->empty()) issue("empty separator");
    size_t start = 0;
    while (maxsplit < 0 || static_cast<int64_t>(out.size()) < maxsplit) {
      size_t at = find_substring(s, *sep, start);
      if (at == std::string::npos) break;
      add_piece(out, s.substr(start, at - start));
      start = at + sep->size();
    }
    out.push_back(Value::from_string(s.substr(start)));
    return out;
  }
  size_t i = 0;
  auto skip_ws = [&] {
    while (i < s.size()) {
      size_t next = i;
      if (!is_py_space(decode_utf8_at(s, next))) break;
      i = next;
    }
  };
  skip_ws();
  while (i < s.size()) {
    if (maxsplit >= 0 && static_cast<int64_t>(out.size()) >= maxsplit) {
      out.push_back(Value::from_string(s.substr(i)));  // the rest, trailing space included
      break;
    }
    size_t start = i;
    while (i < s.size()) {
      size_t next = i;
      if (is_py_space(decode_utf8_at(s, next))) break;
      i = next;
    }
    add_piece(out, s.substr(start, i - start));
    skip_ws();
  }
  return out;
}

static List py_rsplit(const std::string& s, const std::string* sep, int64_t maxsplit) {
  if (!sep || maxsplit < 0) return py_split(s, sep, maxsplit);
  if (sep->empty()) issue("empty separator");
  List out;
  size_t end = s.size();
  while (static_cast<int64_t>(out.size()) < maxsplit && end > 0) {
    size_t at = end >= sep->size() ? s.rfind(*sep, end - sep->size()) : std::string::npos;
    if (at == std::string::npos) break;
    out.insert(out.begin(), Value::from_string(s.substr(at + sep->size(), end - at - sep->size())));
    end = at;
  }
  out.insert(out.begin(), Value::from_string(s.substr(0, end)));
  return out;
}

List py_splitlines(const std::string& s, bool keepends) {
  List out;
  std::vector<uint32_t> cps = decode_utf8(s);
  std::string line;
  for (size_t i = 0; i < cps.size(); ++i) {
    uint32_t c = cps[i];
    bool is_break = c == '\n' || c == '\r' || c == 0x0b || c == 0x0c || (c >= 0x1c && c <= 0x1e) ||
                    c == 0x85 || c == 0x2028 || c == 0x2029;
    if (!is_break) {
      append_utf8(line, c);
      continue;
    }
    std::string ending;
    append_utf8(ending, c);
    if (c == '\r' && i + 1 < cps.size() && cps[i + 1] == '\n') {
      ending += '\n';
      ++i;
    }
    add_piece(out, keepends ? line + ending : line);
    line.clear();
  }
  if (!line.empty()) out.push_back(Value::from_string(line));
  return out;
}

// ---- methods -----------------------------------------------------------------------------------

static bool affix_matches(const std::string& s, const Value& affix, bool prefix) {
  auto one = [&](const Value& v) {
    if (!v.is_string()) issue("startswith/endswith arguments must be str or a tuple of str");
    if (v.text().size() > s.size()) return false;
    return prefix ? s.compare(0, v.text().size(), v.text()) == 0
                  : s.compare(s.size() - v.text().size(), v.text().size(), v.text()) == 0;
  };
  if (affix.kind != Kind::kTuple) return one(affix);
  return std::any_of(affix.list->begin(), affix.list->end(), one);
}

static Value replace_all(const std::string& s, const std::string& old, const std::string& with,
                         int64_t count) {
  std::string out;
  size_t start = 0;
  int64_t done = 0;
  if (old.empty()) {  // Python inserts `with` around every character
    List chars = characters(s);
    for (const auto& ch : chars) {
      if (count >= 0 && done >= count) break;
      out += with;
      out += ch.text();
      if (out.size() > kMaxOutputBytes) issue("string longer than {} bytes", kMaxOutputBytes);
      start += ch.text().size();
      ++done;
    }
    if (count < 0 || done < count) out += with;
    out += s.substr(start);
    return Value::from_string(std::move(out));
  }
  while (count < 0 || done < count) {
    size_t at = find_substring(s, old, start);
    if (at == std::string::npos) break;
    out.append(s, start, at - start);
    out += with;
    if (out.size() > kMaxOutputBytes) issue("string longer than {} bytes", kMaxOutputBytes);
    start = at + old.size();
    ++done;
  }
  out.append(s, start);
  return Value::from_string(std::move(out));
}

Value py_replace(const std::string& s, const Value& old, const Value& with, const Value* count) {
  if (!old.is_string() || !with.is_string()) issue("replace() arguments must be str");
  return replace_all(s, old.text(), with.text(), int_arg(count, -1, "replace() count"));
}

static Value join_strings(const std::string& sep, const Value& items) {
  std::string out;
  List list = iterate(items);
  for (size_t i = 0; i < list.size(); ++i) {
    if (!list[i].is_string()) {
      issue("sequence item {}: expected str instance, {} found", i, type_name(list[i]));
    }
    if (i) out += sep;
    out += list[i].text();
    if (out.size() > kMaxOutputBytes) issue("string longer than {} bytes", kMaxOutputBytes);
  }
  return Value::from_string(std::move(out));
}

static Value find_index(const std::string& s, const Value& sub, bool reverse) {
  if (!sub.is_string()) issue("find() argument must be str");
  size_t at = reverse ? s.rfind(sub.text()) : find_substring(s, sub.text());
  if (at == std::string::npos) return Value::from_int(-1);
  return Value::from_int(static_cast<int64_t>(utf8_length(std::string_view(s).substr(0, at))));
}

static Value count_substring(const std::string& s, const Value& sub) {
  if (!sub.is_string()) issue("count() argument must be str");
  if (sub.text().empty()) return Value::from_int(static_cast<int64_t>(utf8_length(s)) + 1);
  int64_t n = 0;
  for (size_t at = find_substring(s, sub.text()); at != std::string::npos;
       at = find_substring(s, sub.text(), at + sub.text().size())) {
    ++n;
  }
  return Value::from_int(n);
}

static const Value& required(const CallArgs& args, size_t index, std::string_view method) {
  const Value* v = args.get(index, "");
  if (!v) issue("{}() missing a required argument", method);
  return *v;
}

static Value str_method(const std::string& s, std::string_view name, CallArgs& a) {
  if (name == "strip" || name == "lstrip" || name == "rstrip") {
    a.expect(name, 1, {});
    const std::string* chars = optional_string(a.get(0, ""), name);
    return Value::from_string(py_strip(s, chars, name != "rstrip", name != "lstrip"));
  }
  if (name == "split" || name == "rsplit") {
    a.expect(name, 2, {"sep", "maxsplit"});
    const std::string* sep = optional_string(a.get(0, "sep"), "separator");
    int64_t maxsplit = int_arg(a.get(1, "maxsplit"), -1, "maxsplit");
    return Value::from_list(name == "split" ? py_split(s, sep, maxsplit) : py_rsplit(s, sep, maxsplit));
  }
  if (name == "splitlines") {
    a.expect(name, 1, {"keepends"});
    const Value* keep = a.get(0, "keepends");
    return Value::from_list(py_splitlines(s, keep && truthy(*keep)));
  }
  if (name == "startswith" || name == "endswith") {
    a.expect(name, 1, {});
    return Value::from_bool(affix_matches(s, required(a, 0, name), name == "startswith"));
  }
  if (name == "upper") return Value::from_string(py_upper(s));
  if (name == "lower") return Value::from_string(py_lower(s));
  if (name == "title") return Value::from_string(py_title(s));
  if (name == "capitalize") return Value::from_string(py_capitalize(s));
  if (name == "replace") {
    a.expect(name, 3, {});
    return py_replace(s, required(a, 0, name), required(a, 1, name), a.get(2, ""));
  }
  if (name == "find" || name == "rfind") return find_index(s, required(a, 0, name), name == "rfind");
  if (name == "count") return count_substring(s, required(a, 0, name));
  if (name == "join") return join_strings(s, required(a, 0, name));
  if (name == "isdigit") return Value::from_bool(all_code_points(s, is_py_digit));
  if (name == "isalpha") return Value::from_bool(all_code_points(s, is_py_alpha));
  if (name == "isalnum") return Value::from_bool(all_code_points(s, is_py_alnum));
  if (name == "isspace") return Value::from_bool(all_code_points(s, is_py_space));
  if (name == "islower") return Value::from_bool(s != py_upper(s) && s == py_lower(s));
  if (name == "isupper") return Value::from_bool(s != py_lower(s) && s == py_upper(s));
  if (name == "removeprefix" || name == "removesuffix") {
    const Value& affix = required(a, 0, name);
    if (!affix.is_string()) issue("{}() argument must be str", name);
    bool prefix = name == "removeprefix";
    if (!affix_matches(s, affix, prefix)) return Value::from_string(s);
    return Value::from_string(prefix ? s.substr(affix.text().size())
                                     : s.substr(0, s.size() - affix.text().size()));
  }
  issue("str.{}() is not supported", name);
}

static bool is_str_method(std::string_view name) {
  static constexpr std::string_view kNames[] = {
      "strip", "lstrip", "rstrip", "split", "rsplit", "splitlines", "startswith", "endswith",
      "upper", "lower", "title", "capitalize", "replace", "find", "rfind", "count", "join",
      "isdigit", "isalpha", "isalnum", "isspace", "islower", "isupper", "removeprefix",
      "removesuffix"};
  return std::find(std::begin(kNames), std::end(kNames), name) != std::end(kNames);
}

static List dict_items(const Dict& d) {
  List out;
  for (const auto& [k, v] : d.entries) {
    out.push_back(Value::from_list({Value::from_string(k), v}, Kind::kTuple));
  }
  return out;
}

static Value dict_method(const Value& self, std::string_view name, CallArgs& a) {
  const Dict& d = *self.dict;
  if (name == "get") {
    a.expect(name, 2, {});
    const Value& key = required(a, 0, name);
    const Value* found = key.is_string() ? d.find(key.text()) : nullptr;
    if (found) return *found;
    const Value* fallback = a.get(1, "");
    return fallback ? *fallback : Value::none();
  }
  a.expect(name, 0, {});
  if (name == "items") return Value::from_list(dict_items(d));
  List out;
  for (const auto& [k, v] : d.entries) out.push_back(name == "keys" ? Value::from_string(k) : v);
  return Value::from_list(std::move(out));
}

static Value list_method(const Value& self, std::string_view name, CallArgs& a) {
  const Value& x = required(a, 0, name);
  int64_t n = 0;
  for (size_t i = 0; i < self.list->size(); ++i) {
    if (!equal((*self.list)[i], x)) continue;
    if (name == "index") return Value::from_int(static_cast<int64_t>(i));
    ++n;
  }
  if (name == "index") issue("{} is not in list", to_repr(x));
  return Value::from_int(n);
}

static Value bind(const Value& self, std::string_view name,
                  Value (*method)(const Value&, std::string_view, CallArgs&)) {
  std::string method_name(name);
  return Value::from_callable(std::string(type_name(self)) + "." + method_name,
                              [self, method_name, method](Renderer&, CallArgs& args) {
                                return method(self, method_name, args);
                              },
                              self.weight);
}

static Value str_method_of(const Value& self, std::string_view name, CallArgs& a) {
  return str_method(self.text(), name, a);
}

// ---- attribute and item access -----------------------------------------------------------------

Value get_attr(const Value& obj, std::string_view name) {
  switch (obj.kind) {
    case Kind::kUndefined: fail_undefined(obj);
    case Kind::kDict:
      if (name == "get" || name == "items" || name == "keys" || name == "values") {
        return bind(obj, name, dict_method);
      }
      if (name == "pop" || name == "popitem" || name == "update" || name == "setdefault" ||
          name == "clear") {
        return unsafe(name, obj);
      }
      if (const Value* v = obj.dict->find(name)) return *v;
      return no_attribute(obj, name);
    case Kind::kNamespace:
      if (const Value* v = obj.dict->find(name)) return *v;
      return no_attribute(obj, name);
    case Kind::kString:
      if (is_str_method(name)) return bind(obj, name, str_method_of);
      return no_attribute(obj, name);
    case Kind::kList:
    case Kind::kTuple:
      if (name == "index" || name == "count") return bind(obj, name, list_method);
      if (obj.kind == Kind::kList &&
          (name == "append" || name == "extend" || name == "insert" || name == "pop" ||
           name == "remove" || name == "sort" || name == "reverse" || name == "clear")) {
        return unsafe(name, obj);
      }
      return no_attribute(obj, name);
    default: return no_attribute(obj, name);
  }
}

static int64_t normalize_index(int64_t index, size_t size) {
  return index < 0 ? index + static_cast<int64_t>(size) : index;
}

Value get_item(const Value& obj, const Value& key) {
  if (obj.is_undefined()) fail_undefined(obj);
  if (obj.kind == Kind::kDict && key.is_string()) {
    if (const Value* v = obj.dict->find(key.text())) return *v;
  }
  if (obj.is_sequence() && is_integral(key)) {
    int64_t i = normalize_index(as_int(key), obj.list->size());
    if (i >= 0 && i < static_cast<int64_t>(obj.list->size())) return (*obj.list)[i];
    return Value::undefined(fmt::format("{} object has no element {}", type_name(obj), as_int(key)));
  }
  if (obj.is_string() && is_integral(key)) {
    const std::string& text = obj.text();
    std::vector<uint32_t> cps = is_ascii(text) ? std::vector<uint32_t>{} : decode_utf8(text);
    size_t size = is_ascii(text) ? text.size() : cps.size();
    int64_t i = normalize_index(as_int(key), size);
    if (i < 0 || i >= static_cast<int64_t>(size)) {
      return Value::undefined(fmt::format("str object has no element {}", as_int(key)));
    }
    if (cps.empty()) return Value::from_string(std::string(1, text[i]));
    std::string ch;
    append_utf8(ch, cps[i]);
    return Value::from_string(std::move(ch));
  }
  if (key.is_string()) return get_attr(obj, key.text());
  return Value::undefined(fmt::format("'{} object' has no attribute {}", type_name(obj), to_repr(key)));
}

Value slice(const Value& obj, const Value* start_v, const Value* stop_v, const Value* step_v) {
  if (obj.is_undefined()) fail_undefined(obj);
  // Jinja compiles slices to a plain Python subscript (not the sandbox's getitem), so slicing
  // anything else raises.
  if (!obj.is_string() && !obj.is_sequence()) issue("'{}' object is not subscriptable", type_name(obj));
  int64_t step = int_arg(step_v, 1, "slice step");
  if (step == 0) issue("slice step cannot be zero");
  // Python indexes str by code point: non-ASCII text is decoded first.
  const bool by_byte = obj.is_string() && is_ascii(obj.text());
  std::vector<uint32_t> cps = obj.is_string() && !by_byte ? decode_utf8(obj.text()) : std::vector<uint32_t>{};
  const int64_t n = static_cast<int64_t>(by_byte ? obj.text().size()
                                                 : obj.is_string() ? cps.size() : obj.list->size());
  // CPython's PySlice_AdjustIndices.
  auto adjust = [&](const Value* v, int64_t fallback) {
    int64_t i = int_arg(v, fallback, "slice index");
    if (!v || v->kind == Kind::kNone) return fallback;
    if (i < 0) {
      i += n;
      if (i < 0) i = step < 0 ? -1 : 0;
    } else if (i >= n) {
      i = step < 0 ? n - 1 : n;
    }
    return i;
  };
  int64_t start = adjust(start_v, step < 0 ? n - 1 : 0);
  int64_t stop = adjust(stop_v, step < 0 ? -1 : n);
  List items;
  std::string text;
  for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
    if (by_byte) text += obj.text()[i];
    else if (obj.is_string()) append_utf8(text, cps[i]);
    else items.push_back((*obj.list)[i]);
  }
  if (obj.is_string()) return Value::from_string(std::move(text));
  return Value::from_list(std::move(items), obj.kind);
}

List iterate(const Value& v) {
  switch (v.kind) {
    case Kind::kUndefined: return {};
    case Kind::kList:
    case Kind::kTuple: return *v.list;
    case Kind::kDict: {
      List keys;
      for (const auto& [k, value] : v.dict->entries) keys.push_back(Value::from_string(k));
      return keys;
    }
    case Kind::kString: return characters(v.text());
    default: issue("'{}' object is not iterable", type_name(v));
  }
}

int64_t length(const Value& v) {
  switch (v.kind) {
    case Kind::kUndefined: return 0;
    case Kind::kString: return static_cast<int64_t>(utf8_length(v.text()));
    case Kind::kList:
    case Kind::kTuple: return static_cast<int64_t>(v.list->size());
    case Kind::kDict: return static_cast<int64_t>(v.dict->entries.size());
    default: issue("object of type '{}' has no len()", type_name(v));
  }
}

}  // namespace vortex::jinja
