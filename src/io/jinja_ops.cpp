// Python operators on Jinja values: arithmetic with Python's int/float rules (floor division and
// modulo round toward negative infinity, / is always true division, bool counts as int),
// sequence concatenation and repetition, printf-style `str % args`, comparisons and `in`.
// Python ints are unbounded; here they are int64 and overflow is an error, not a wrap.
#include <cmath>
#include <cstdio>

#include "io/jinja_internal.h"

namespace vortex::jinja {
namespace {

bool is_integral(const Value& v) { return v.kind == Kind::kInt || v.kind == Kind::kBool; }
int64_t as_int(const Value& v) { return v.kind == Kind::kBool ? v.boolean : v.integer; }

[[noreturn]] void unsupported(std::string_view op, const Value& a, const Value& b) {
  issue("unsupported operand type(s) for {}: '{}' and '{}'", op, type_name(a), type_name(b));
}

int64_t add_checked(int64_t x, int64_t y, std::string_view op) {
  int64_t r = 0;
  if (__builtin_add_overflow(x, y, &r)) issue("integer overflow in '{}'", op);
  return r;
}

int64_t sub_checked(int64_t x, int64_t y, std::string_view op) {
  int64_t r = 0;
  if (__builtin_sub_overflow(x, y, &r)) issue("integer overflow in '{}'", op);
  return r;
}

int64_t mul_checked(int64_t x, int64_t y, std::string_view op) {
  int64_t r = 0;
  if (__builtin_mul_overflow(x, y, &r)) issue("integer overflow in '{}'", op);
  return r;
}

int64_t int_pow(int64_t base, int64_t exponent) {
  int64_t result = 1;
  while (exponent > 0) {
    if (exponent & 1) result = mul_checked(result, base, "**");
    exponent >>= 1;
    if (exponent > 0) base = mul_checked(base, base, "**");
  }
  return result;
}

Value int_arith(std::string_view op, int64_t x, int64_t y) {
  if (op == "+") return Value::from_int(add_checked(x, y, op));
  if (op == "-") return Value::from_int(sub_checked(x, y, op));
  if (op == "*") return Value::from_int(mul_checked(x, y, op));
  if (op == "/") {
    if (y == 0) issue("division by zero");
    return Value::from_float(static_cast<double>(x) / static_cast<double>(y));
  }
  if (op == "**") {
    if (y >= 0) return Value::from_int(int_pow(x, y));
    if (x == 0) issue("0.0 cannot be raised to a negative power");
    return Value::from_float(std::pow(static_cast<double>(x), static_cast<double>(y)));
  }
  if (y == 0) issue("integer division or modulo by zero");
  if (y == -1) {  // avoids INT64_MIN / -1, which traps
    if (op == "%") return Value::from_int(0);
    return Value::from_int(sub_checked(0, x, op));
  }
  int64_t q = x / y, m = x % y;
  if (m != 0 && ((m < 0) != (y < 0))) {
    q -= 1;
    m += y;
  }
  return Value::from_int(op == "//" ? q : m);
}

// CPython's float_divmod, so // and % match Python on signs and edge cases.
std::pair<double, double> float_divmod(double x, double y) {
  if (y == 0.0) issue("float floor division or modulo by zero");
  double mod = std::fmod(x, y);
  double div = (x - mod) / y;
  if (mod != 0.0) {
    if ((y < 0) != (mod < 0)) {
      mod += y;
      div -= 1.0;
    }
  } else {
    mod = std::copysign(0.0, y);
  }
  double floordiv;
  if (div != 0.0) {
    floordiv = std::floor(div);
    if (div - floordiv > 0.5) floordiv += 1.0;
  } else {
    floordiv = std::copysign(0.0, x / y);
  }
  return {floordiv, mod};
}

Value float_arith(std::string_view op, double x, double y) {
  if (op == "+") return Value::from_float(x + y);
  if (op == "-") return Value::from_float(x - y);
  if (op == "*") return Value::from_float(x * y);
  if (op == "/") {
    if (y == 0.0) issue("float division by zero");
    return Value::from_float(x / y);
  }
  if (op == "//") return Value::from_float(float_divmod(x, y).first);
  if (op == "%") return Value::from_float(float_divmod(x, y).second);
  // "**"
  if (x == 0.0 && y < 0) issue("0.0 cannot be raised to a negative power");
  if (x < 0 && std::floor(y) != y) issue("negative number raised to a fractional power");
  double r = std::pow(x, y);
  if (std::isinf(r) && std::isfinite(x) && std::isfinite(y)) issue("numerical result out of range");
  return Value::from_float(r);
}

Value repeat(const Value& seq, int64_t times) {
  if (times <= 0) return seq.is_string() ? Value::from_string("") : Value::from_list({}, seq.kind);
  if (seq.is_string()) {
    if (seq.text().size() * static_cast<uint64_t>(times) > kMaxOutputBytes) {
      issue("string longer than {} bytes", kMaxOutputBytes);
    }
    std::string out;
    out.reserve(seq.text().size() * times);
    for (int64_t i = 0; i < times; ++i) out += seq.text();
    return Value::from_string(std::move(out));
  }
  // Checked before building: the copies share their items, but the list would not.
  if (seq.list->size() * static_cast<uint64_t>(times) > kMaxListItems) {
    issue("list longer than {} items", kMaxListItems);
  }
  if (seq.weight * static_cast<uint64_t>(times) > kMaxValueBytes) {
    issue("value larger than {} bytes", kMaxValueBytes);
  }
  List out;
  for (int64_t i = 0; i < times; ++i) out.insert(out.end(), seq.list->begin(), seq.list->end());
  return Value::from_list(std::move(out), seq.kind);
}

// The printf-style spec after a '%': flags, width, precision and conversion.
struct PercentSpec {
  std::string flags;
  int width = 0;
  int precision = -1;
  char conversion = 0;
};

PercentSpec parse_percent_spec(const std::string& format, size_t& i) {
  PercentSpec spec;
  if (i < format.size() && format[i] == '(') issue("%(name) formatting is not supported");
  while (i < format.size() && std::string_view("-+ #0").find(format[i]) != std::string_view::npos) {
    spec.flags += format[i++];
  }
  auto number = [&] {
    int n = 0;
    while (i < format.size() && std::isdigit(static_cast<unsigned char>(format[i]))) {
      n = n * 10 + (format[i++] - '0');
      if (n > 10000) issue("format width or precision too large");
    }
    return n;
  };
  spec.width = number();
  if (i < format.size() && format[i] == '.') {
    ++i;
    spec.precision = number();
  }
  if (i >= format.size()) issue("incomplete format");
  spec.conversion = format[i++];
  return spec;
}

std::string format_one(const PercentSpec& spec, const Value& v) {
  // Appended piece by piece: `"." + std::to_string(...)` trips GCC 12's false -Wrestrict.
  std::string c_format = "%";
  c_format += spec.flags;
  if (spec.width) c_format += std::to_string(spec.width);
  if (spec.precision >= 0) {
    c_format += '.';
    c_format += std::to_string(spec.precision);
  }
  char buffer[20100];
  switch (spec.conversion) {
    case 's':
    case 'r': {
      std::string text = spec.conversion == 's' ? to_str(v) : to_repr(v);
      if (spec.precision >= 0 && text.size() > static_cast<size_t>(spec.precision)) {
        text.resize(spec.precision);
      }
      size_t len = utf8_length(text);
      if (len >= static_cast<size_t>(spec.width)) return text;
      std::string pad(spec.width - len, ' ');
      return spec.flags.find('-') != std::string::npos ? text + pad : pad + text;
    }
    case 'd': case 'i': case 'x': case 'X': case 'o': {
      if (!v.is_number()) issue("%{} format: a real number is required, not {}", spec.conversion, type_name(v));
      int64_t n = is_integral(v) ? as_int(v) : static_cast<int64_t>(v.real);
      char conv = spec.conversion == 'i' ? 'd' : spec.conversion;
      std::snprintf(buffer, sizeof buffer, (c_format + "ll" + conv).c_str(), static_cast<long long>(n));
      return buffer;
    }
    case 'f': case 'F': case 'e': case 'E': case 'g': case 'G':
      if (!v.is_number()) issue("must be real number, not {}", type_name(v));
      std::snprintf(buffer, sizeof buffer, (c_format + spec.conversion).c_str(), to_double(v));
      return buffer;
    default: issue("unsupported format character '{}'", spec.conversion);
  }
}

Value format_percent(const std::string& format, const Value& args) {
  List values = args.kind == Kind::kTuple ? *args.list : List{args};
  size_t next = 0;
  std::string out;
  for (size_t i = 0; i < format.size();) {
    if (format[i] != '%') {
      out += format[i++];
      continue;
    }
    ++i;
    PercentSpec spec = parse_percent_spec(format, i);
    if (spec.conversion == '%') {
      out += '%';
      continue;
    }
    if (next >= values.size()) issue("not enough arguments for format string");
    out += format_one(spec, values[next++]);
  }
  // Python takes a list or dict operand as a mapping, which need not be used up.
  bool mapping = args.kind == Kind::kList || args.kind == Kind::kDict;
  if (next < values.size() && !mapping) issue("not all arguments converted during string formatting");
  return Value::from_string(std::move(out));
}

Value concatenate(const Value& a, const Value& b) {
  if (a.is_string()) {
    if (a.text().size() + b.text().size() > kMaxOutputBytes) {
      issue("string longer than {} bytes", kMaxOutputBytes);
    }
    return Value::from_string(a.text() + b.text());
  }
  if (a.list->size() + b.list->size() > kMaxListItems) issue("list longer than {} items", kMaxListItems);
  if (a.weight + b.weight > kMaxValueBytes) issue("value larger than {} bytes", kMaxValueBytes);
  List items = *a.list;
  items.insert(items.end(), b.list->begin(), b.list->end());
  return Value::from_list(std::move(items), a.kind);
}

}  // namespace

Value binary_op(std::string_view op, const Value& a, const Value& b) {
  if (a.is_undefined()) fail_undefined(a);
  if (b.is_undefined()) fail_undefined(b);
  if (a.is_number() && b.is_number()) {
    if (is_integral(a) && is_integral(b)) return int_arith(op, as_int(a), as_int(b));
    return float_arith(op, to_double(a), to_double(b));
  }
  if (op == "+" && a.kind == b.kind && (a.is_string() || a.is_sequence())) return concatenate(a, b);
  if (op == "*" && (a.is_string() || a.is_sequence()) && is_integral(b)) return repeat(a, as_int(b));
  if (op == "*" && (b.is_string() || b.is_sequence()) && is_integral(a)) return repeat(b, as_int(a));
  if (op == "%" && a.is_string()) return format_percent(a.text(), b);
  if (op == "+" && a.is_string()) {
    issue("can only concatenate str (not \"{}\") to str", type_name(b));
  }
  unsupported(op, a, b);
}

bool contains(const Value& container, const Value& item) {
  switch (container.kind) {
    case Kind::kString:
      if (!item.is_string()) {
        issue("'in <string>' requires string as left operand, not {}", type_name(item));
      }
      return find_substring(container.text(), item.text()) != std::string::npos;
    case Kind::kList:
    case Kind::kTuple:
      for (const auto& x : *container.list) {
        if (equal(x, item)) return true;
      }
      return false;
    case Kind::kDict:
    case Kind::kNamespace: return item.is_string() && container.dict->find(item.text()) != nullptr;
    case Kind::kUndefined: return false;  // Jinja's Undefined iterates as empty
    default: issue("argument of type '{}' is not iterable", type_name(container));
  }
}

bool compare_op(std::string_view op, const Value& a, const Value& b) {
  if (op == "==") return equal(a, b);
  if (op == "!=") return !equal(a, b);
  if (op == "in") return contains(b, a);
  if (op == "not in") return !contains(b, a);
  int c = compare(a, b);
  if (op == "<") return c == -1;
  if (op == "<=") return c == -1 || c == 0;
  if (op == ">") return c == 1;
  return c == 1 || c == 0;  // ">="
}

Value negate(const Value& v) {
  if (v.is_undefined()) fail_undefined(v);
  if (v.kind == Kind::kFloat) return Value::from_float(-v.real);
  if (!is_integral(v)) issue("bad operand type for unary -: '{}'", type_name(v));
  return Value::from_int(sub_checked(0, as_int(v), "-"));
}

Value positive(const Value& v) {
  if (v.is_undefined()) fail_undefined(v);
  if (v.kind == Kind::kFloat) return v;
  if (!is_integral(v)) issue("bad operand type for unary +: '{}'", type_name(v));
  return Value::from_int(as_int(v));
}

}  // namespace vortex::jinja
