// JinjaTemplate: parse once, render many times. The globals are those transformers' chat
// environment provides: Jinja's range/namespace/dict plus raise_exception and strftime_now.
#include <cmath>
#include <ctime>

#include "core/error.h"
#include "io/chat_template.h"
#include "io/jinja_internal.h"

namespace vortex {
namespace jinja {
namespace {

bool is_integral(const Value& v) { return v.kind == Kind::kInt || v.kind == Kind::kBool; }
int64_t as_int(const Value& v) { return v.kind == Kind::kBool ? v.boolean : v.integer; }

Value builtin_range(Renderer&, CallArgs& a) {
  a.expect("range", 3, {});
  if (a.positional.empty()) issue("range expected at least 1 argument, got 0");
  for (const auto& v : a.positional) {
    if (!is_integral(v)) issue("'{}' object cannot be interpreted as an integer", type_name(v));
  }
  int64_t start = 0, stop = as_int(a.positional[0]), step = 1;
  if (a.positional.size() > 1) {
    start = stop;
    stop = as_int(a.positional[1]);
  }
  if (a.positional.size() > 2) step = as_int(a.positional[2]);
  if (step == 0) issue("range() arg 3 must not be zero");
  // Computed in long double so that extreme bounds cannot overflow.
  long double count = std::ceil((static_cast<long double>(stop) - start) / step);
  if (count > kMaxRange) {
    issue("range too big: the sandbox blocks ranges larger than {}", kMaxRange);
  }
  List items;
  for (int64_t i = 0; i < static_cast<int64_t>(count); ++i) items.push_back(Value::from_int(start + i * step));
  return Value::from_list(std::move(items));
}

std::shared_ptr<Dict> dict_from_args(const CallArgs& a, std::string_view function) {
  auto dict = std::make_shared<Dict>();
  if (a.positional.size() > 1) issue("{}() takes at most 1 positional argument", function);
  if (!a.positional.empty()) {
    if (a.positional[0].kind != Kind::kDict) issue("{}() argument must be a dict", function);
    *dict = *a.positional[0].dict;
  }
  for (const auto& [key, value] : a.keyword) dict->set(key, value);
  return dict;
}

Value builtin_namespace(Renderer&, CallArgs& a) {
  return Value::from_dict(dict_from_args(a, "namespace"), Kind::kNamespace);
}

Value builtin_dict(Renderer&, CallArgs& a) { return Value::from_dict(dict_from_args(a, "dict")); }

Value builtin_raise_exception(Renderer&, CallArgs& a) {
  issue("template error: {}", a.positional.empty() ? std::string() : to_str(a.positional[0]));
}

// transformers: datetime.now().strftime(format), i.e. the local time through C's strftime.
Value builtin_strftime_now(Renderer&, CallArgs& a) {
  a.expect("strftime_now", 1, {});
  if (a.positional.empty() || !a.positional[0].is_string()) issue("strftime_now() needs a format string");
  const std::string& format = a.positional[0].text();
  if (format.empty()) return Value::from_string("");
  if (format.size() > 1024) issue("strftime_now() format too long");
  std::time_t now = std::time(nullptr);
  std::tm local{};
  localtime_r(&now, &local);
  std::string buffer(format.size() * 16 + 64, '\0');
  size_t n = std::strftime(buffer.data(), buffer.size(), format.c_str(), &local);
  buffer.resize(n);
  return Value::from_string(std::move(buffer));
}

}  // namespace

Dict make_globals() {
  Dict globals;
  globals.set("range", Value::from_callable("range", builtin_range));
  globals.set("namespace", Value::from_callable("namespace", builtin_namespace));
  globals.set("dict", Value::from_callable("dict", builtin_dict));
  globals.set("raise_exception", Value::from_callable("raise_exception", builtin_raise_exception));
  globals.set("strftime_now", Value::from_callable("strftime_now", builtin_strftime_now));
  return globals;
}

}  // namespace jinja

struct JinjaTemplate::Impl {
  jinja::Program program;
  jinja::Dict globals;
};

JinjaTemplate::JinjaTemplate(std::string_view source) : impl_(std::make_unique<Impl>()) {
  try {
    impl_->program = jinja::parse_template(source);
  } catch (const jinja::Issue& e) {
    fail("jinja: {}", e.what());
  }
  impl_->globals = jinja::make_globals();
}

JinjaTemplate::JinjaTemplate(JinjaTemplate&&) noexcept = default;
JinjaTemplate& JinjaTemplate::operator=(JinjaTemplate&&) noexcept = default;
JinjaTemplate::~JinjaTemplate() = default;

template <typename Json>
static std::string render_json(const jinja::Program& program, const jinja::Dict& globals,
                               const Json& context) {
  check(context.is_object(), "jinja: the render context must be a JSON object");
  try {
    return jinja::render_program(program, globals, jinja::from_json(context));
  } catch (const jinja::Issue& e) {
    fail("jinja: {}", e.what());
  }
}

std::string JinjaTemplate::render(const nlohmann::json& context) const {
  return render_json(impl_->program, impl_->globals, context);
}

std::string JinjaTemplate::render(const nlohmann::ordered_json& context) const {
  return render_json(impl_->program, impl_->globals, context);
}

}  // namespace vortex
