// Internals of the Jinja2-subset interpreter behind JinjaTemplate (see chat_template.h).
//
// Pipeline: lex_template (jinja_lexer.cpp) turns source into text and tag segments, applying
// Jinja's whitespace rules (trim_blocks, lstrip_blocks, `-`/`+` markers); parse_template
// (jinja_parser.cpp) builds the AST; Renderer (jinja_eval.cpp) walks it; jinja.cpp holds the
// public JinjaTemplate and the globals. Values follow Python semantics (jinja_value.cpp,
// operators in jinja_ops.cpp); filters and tests live in jinja_filters.cpp, attribute access and
// str/dict/list methods in jinja_methods.cpp.
//
// Invariants: lists and dicts are immutable once built (transformers renders in Jinja's
// ImmutableSandboxedEnvironment), so Values share them freely; the mutable containers are
// namespace() objects and a for loop's `loop`, which advances in place. Nesting of values and of
// the AST is bounded (kMaxNesting), so recursion over either cannot exhaust the stack.
// Rendering never mutates the parsed Program, so one template may render on many threads.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace vortex::jinja {

// Limits that keep hostile templates from exhausting memory, stack or time.
inline constexpr size_t kMaxOutputBytes = 16u << 20;   // rendered text and any one string
inline constexpr size_t kMaxListItems = 1u << 20;      // any one list
inline constexpr uint64_t kMaxValueBytes = 64u << 20;  // weight of any one list or dict
inline constexpr int kMaxNesting = 128;                // AST depth, value depth
inline constexpr int kMaxCallDepth = 256;              // macro recursion
inline constexpr uint64_t kMaxSteps = 5'000'000;       // evaluation work units per render
inline constexpr int64_t kMaxRange = 100'000;          // as Jinja's sandbox MAX_RANGE

// A runtime failure without position; the renderer adds "line N" when it passes through an
// expression or statement. Never escapes the renderer.
class Issue : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

template <typename... Args>
[[noreturn]] void issue(fmt::format_string<Args...> format, Args&&... args) {
  throw Issue(fmt::format(format, std::forward<Args>(args)...));
}

struct Value;
struct Dict;
struct Callable;
class Renderer;
using List = std::vector<Value>;

enum class Kind : uint8_t {
  kUndefined, kNone, kBool, kInt, kFloat, kString, kList, kTuple, kDict, kNamespace, kCallable
};

// Strings, lists and dicts are shared, so copying a Value is O(1) whatever it holds. `weight`
// bounds the work any deep operation on a value can do (bytes of text plus items, counting
// shared parts each time they appear); the renderer charges it against the step budget.
struct Value {
  Kind kind = Kind::kUndefined;
  uint8_t depth = 0;                         // nesting of lists/dicts below this value
  bool boolean = false;                      // kBool
  int64_t integer = 0;                       // kInt
  double real = 0.0;                         // kFloat
  uint64_t weight = 1;
  std::shared_ptr<const std::string> str;    // kString; kUndefined: why it is undefined
  std::shared_ptr<const List> list;          // kList, kTuple
  std::shared_ptr<Dict> dict;                // kDict (frozen but for `loop`), kNamespace
  std::shared_ptr<const Callable> callable;  // kCallable

  const std::string& text() const;  // the string ("" when none)

  static Value undefined(std::string why);
  static Value none();
  static Value from_bool(bool b);
  static Value from_int(int64_t i);
  static Value from_float(double f);
  static Value from_string(std::string s);
  static Value from_list(List items, Kind kind = Kind::kList);
  static Value from_dict(std::shared_ptr<Dict> dict, Kind kind = Kind::kDict);
  // weight: what calling it may touch (a bound method's receiver).
  static Value from_callable(std::string name, std::function<Value(Renderer&, struct CallArgs&)> fn,
                             uint64_t weight = 1);

  bool is_undefined() const { return kind == Kind::kUndefined; }
  bool is_string() const { return kind == Kind::kString; }
  bool is_number() const { return kind == Kind::kInt || kind == Kind::kFloat || kind == Kind::kBool; }
  bool is_sequence() const { return kind == Kind::kList || kind == Kind::kTuple; }
  bool is_mapping() const { return kind == Kind::kDict || kind == Kind::kNamespace; }
};

// An insertion-ordered string-keyed map, as Python dicts iterate in insertion order.
struct Dict {
  std::vector<std::pair<std::string, Value>> entries;
  const Value* find(std::string_view key) const;
  void set(std::string key, Value value);
};

struct CallArgs {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keyword;
  // The argument at `index` or named `name`, or nullptr; consumed arguments are not re-checked.
  const Value* get(size_t index, std::string_view name) const;
  // Fails unless every argument is among the first `max_positional` or in `names`.
  void expect(std::string_view function, size_t max_positional,
              std::initializer_list<std::string_view> names) const;
};

struct Callable {
  std::string name;
  std::function<Value(Renderer&, CallArgs&)> fn;
};

// ---- value semantics (jinja_value.cpp) ----------------------------------------------------------
Value from_json(const nlohmann::json& json);
Value from_json(const nlohmann::ordered_json& json);
bool truthy(const Value& v);
std::string_view type_name(const Value& v);
std::string to_str(const Value& v);    // Python str(), as {{ x }} prints it
std::string to_repr(const Value& v);   // Python repr(), as items inside a printed list appear
std::string float_repr(double d);      // Python repr(float)
bool equal(const Value& a, const Value& b);
int compare(const Value& a, const Value& b);  // Python <, fails on unorderable types
double to_double(const Value& v);             // for numbers (incl. bool)
[[noreturn]] void fail_undefined(const Value& v);

struct JsonStyle {
  bool pretty = false;              // json.dumps(indent=...) given: one item per line
  std::string indent_text;          // one level of indentation when pretty
  std::string item_separator = ", ";
  std::string key_separator = ": ";
  bool sort_keys = false;
  bool ensure_ascii = false;
};
std::string to_json(const Value& v, const JsonStyle& style);  // Python json.dumps

// ---- UTF-8 and Python str helpers (jinja_value.cpp) ----------------------------------------------
std::vector<uint32_t> decode_utf8(std::string_view s);
uint32_t decode_utf8_at(std::string_view s, size_t& i);  // the code point at s[i]; advances i
void append_utf8(std::string& out, uint32_t cp);
size_t utf8_length(std::string_view s);
bool is_py_space(uint32_t cp);  // str.isspace()
// haystack.find(needle, from), linear-time even for long, repetitive needles.
size_t find_substring(std::string_view haystack, std::string_view needle, size_t from = 0);
// str.strip()/lstrip()/rstrip(); `chars` null means whitespace.
std::string py_strip(std::string_view s, const std::string* chars, bool left, bool right);

// ---- operators (jinja_ops.cpp) -------------------------------------------------------------------
Value binary_op(std::string_view op, const Value& a, const Value& b);  // + - * / // % **
bool compare_op(std::string_view op, const Value& a, const Value& b);  // == != < <= > >= in, not in
bool contains(const Value& container, const Value& item);             // item in container
Value negate(const Value& v);
Value positive(const Value& v);

// ---- attribute access, items, methods (jinja_methods.cpp) ---------------------------------------
Value get_attr(const Value& obj, std::string_view name);  // obj.name
Value get_item(const Value& obj, const Value& key);       // obj[key]
Value slice(const Value& obj, const Value* start, const Value* stop, const Value* step);
List iterate(const Value& v);  // for x in v
int64_t length(const Value& v);
bool is_py_alpha(uint32_t cp);
bool is_py_digit(uint32_t cp);
bool is_py_word(uint32_t cp);  // regex \w
std::string py_upper(std::string_view s);
std::string py_lower(std::string_view s);
std::string py_title(std::string_view s);       // str.title()
std::string py_capitalize(std::string_view s);  // str.capitalize()
List py_split(const std::string& s, const std::string* sep, int64_t maxsplit);
List py_splitlines(const std::string& s, bool keepends);
Value py_replace(const std::string& s, const Value& old, const Value& with, const Value* count);

// ---- lexer (jinja_lexer.cpp) ------------------------------------------------------------------
enum class TokKind : uint8_t { kName, kString, kInt, kFloat, kOp, kEnd };

struct Token {
  TokKind kind = TokKind::kEnd;
  std::string text;  // name, decoded string, or operator
  int64_t integer = 0;
  double real = 0.0;
  int line = 0;
};

enum class SegKind : uint8_t { kText, kOutput, kStatement };

struct Segment {
  SegKind kind = SegKind::kText;
  std::string text;           // kText
  std::vector<Token> tokens;  // tag contents, ending with a kEnd token
  int line = 0;
};

std::vector<Segment> lex_template(std::string_view source);

// ---- AST (jinja_parser.cpp) --------------------------------------------------------------------
using FilterFn = Value (*)(const Value& input, CallArgs& args);
using TestFn = bool (*)(const Value& input, CallArgs& args);
FilterFn find_filter(std::string_view name);  // nullptr when unknown (jinja_filters.cpp)
TestFn find_test(std::string_view name);

enum class ExprKind : uint8_t {
  kLiteral, kName, kList, kTuple, kDict, kAttr, kItem, kSlice, kCall, kFilter, kTest,
  kNeg, kPos, kNot, kAnd, kOr, kBinary, kCompare, kConcat, kCondition, kBlockValue
};

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct Expr {
  ExprKind kind = ExprKind::kLiteral;
  int line = 0;
  Value literal;                      // kLiteral
  std::string name;                   // kName, kAttr, kFilter, kTest; kBinary: the operator
  std::vector<ExprPtr> args;          // operands; for kAttr/kItem/kSlice/kCall/kFilter/kTest
                                      // args[0] is the subject; kSlice: null parts allowed
  std::vector<std::string> kw_names;  // keyword arguments of kCall/kFilter/kTest
  std::vector<ExprPtr> kw_values;
  std::vector<std::string> ops;       // kCompare: operator between args[i] and args[i+1]
  FilterFn filter = nullptr;          // kFilter, resolved while parsing
  TestFn test = nullptr;              // kTest
};

enum class NodeKind : uint8_t {
  kText, kOutput, kIf, kFor, kSet, kSetBlock, kMacro, kCallBlock, kFilterBlock, kWith,
  kBreak, kContinue, kScope
};

struct Node;
using Body = std::vector<std::unique_ptr<Node>>;

struct Node {
  NodeKind kind = NodeKind::kText;
  int line = 0;
  std::string text;                  // kText
  std::vector<ExprPtr> exprs;        // kOutput: value; kIf: conditions; kFor: iterable, filter;
                                     // kSet/kWith: values; kCallBlock: the call; filters: chain
  std::vector<Body> bodies;          // kIf: per condition (+ else); kFor: body, else; others: body
  std::vector<std::string> targets;  // kFor/kSet/kWith: names; kMacro/kCallBlock: parameters
  std::vector<ExprPtr> defaults;     // kMacro/kCallBlock: parameter defaults (null: none)
  std::string name;                  // kMacro: its name; kSet on a namespace: the attribute
  bool has_filter = false;           // kFor: `if` clause present; kSetBlock: filter chain present
};

struct Program {
  Body body;
};

Program parse_template(std::string_view source);

// ---- rendering (jinja_eval.cpp, jinja.cpp) --------------------------------------------------------
std::string render_program(const Program& program, const Dict& globals, const Value& context);
Dict make_globals();  // range, namespace, dict, raise_exception, strftime_now

}  // namespace vortex::jinja
