// The renderer: walks the AST with Jinja2's scoping rules.
//
// Scopes: the template scope (child of globals + context) holds top-level `set`s; every for-loop
// iteration, macro call and `with` block gets a fresh child scope, so a `set` inside a loop body
// is gone by the next iteration (hence namespace()). Macros resolve free names in the scope they
// were defined in, at call time.
//
// Errors: helpers throw Issue without a position; eval() and render_node() turn the first Issue
// they see into vortex::Error "jinja: line N: ...". Work, output size and macro recursion are
// bounded (kMaxSteps, kMaxOutputBytes, kMaxCallDepth).
#include <algorithm>

#include "core/error.h"
#include "io/jinja_internal.h"

namespace vortex::jinja {

struct Scope {
  std::shared_ptr<Scope> parent;
  Dict vars;
};

namespace {

enum class Flow { kNormal, kBreak, kContinue };

}  // namespace

class Renderer {
 public:
  Renderer(const Dict& globals, const Value& context) {
    auto root = std::make_shared<Scope>();
    root->vars = globals;
    for (const auto& [key, value] : context.dict->entries) root->vars.set(key, value);
    template_scope_ = std::make_shared<Scope>();
    template_scope_->parent = std::move(root);
    scope_ = template_scope_;
    out_ = &result_;
  }

  // Namespaces are the only mutable containers, so every reference cycle runs through one;
  // emptying them breaks the cycles (and long chains, which would otherwise be freed
  // recursively).
  ~Renderer() {
    for (auto& ns : namespaces_) ns->entries.clear();
  }

  std::string run(const Program& program) {
    render_body(program.body);
    return std::move(result_);
  }

  Value call_function(const Node& fn, const std::weak_ptr<Scope>& defined_in, CallArgs& args);

 private:
  class ScopeGuard {
   public:
    ScopeGuard(Renderer& r, std::shared_ptr<Scope> scope) : r_(r), saved_(std::move(r.scope_)) {
      r_.scope_ = std::move(scope);
    }
    ~ScopeGuard() { r_.scope_ = std::move(saved_); }

   private:
    Renderer& r_;
    std::shared_ptr<Scope> saved_;
  };

  std::shared_ptr<Scope> child_scope() {
    auto scope = std::make_shared<Scope>();
    scope->parent = scope_;
    return scope;
  }

  void charge(uint64_t units) {
    steps_ += units;
    if (steps_ > kMaxSteps) issue("template exceeds its evaluation budget ({} steps)", kMaxSteps);
  }

  void output(std::string_view text) {
    if (out_->size() + text.size() > kMaxOutputBytes) {
      issue("rendered output exceeds {} bytes", kMaxOutputBytes);
    }
    out_->append(text);
  }

  Value lookup(const std::string& name) const {
    for (const Scope* s = scope_.get(); s; s = s->parent.get()) {
      if (const Value* v = s->vars.find(name)) return *v;
    }
    return Value::undefined("'" + name + "' is undefined");
  }

  // ---- statements ----------------------------------------------------------------------------

  Flow render_body(const Body& body) {
    for (const auto& node : body) {
      Flow flow = render_node(*node);
      if (flow != Flow::kNormal) return flow;
    }
    return Flow::kNormal;
  }

  Flow render_node(const Node& node) {
    try {
      charge(1);
      return render_node_inner(node);
    } catch (const Issue& e) {
      vortex::fail("jinja: line {}: {}", node.line, e.what());
    }
  }

  Flow render_node_inner(const Node& node) {
    switch (node.kind) {
      case NodeKind::kText: output(node.text); return Flow::kNormal;
      case NodeKind::kOutput: output(to_str(operand(*node.exprs[0]))); return Flow::kNormal;
      case NodeKind::kIf: return render_if(node);
      case NodeKind::kFor: return render_for(node);
      case NodeKind::kSet: assign(node, eval(*node.exprs[0])); return Flow::kNormal;
      case NodeKind::kSetBlock: assign(node, render_block(node)); return Flow::kNormal;
      case NodeKind::kMacro: define_macro(node); return Flow::kNormal;
      case NodeKind::kCallBlock: output(to_str(render_call_block(node))); return Flow::kNormal;
      case NodeKind::kFilterBlock: output(to_str(render_block(node))); return Flow::kNormal;
      case NodeKind::kWith: return render_with(node);
      case NodeKind::kScope: {
        ScopeGuard guard(*this, child_scope());
        return render_body(node.bodies[0]);
      }
      case NodeKind::kBreak: return Flow::kBreak;
      case NodeKind::kContinue: return Flow::kContinue;
    }
    return Flow::kNormal;
  }

  Flow render_if(const Node& node) {
    for (size_t i = 0; i < node.exprs.size(); ++i) {
      if (truthy(eval(*node.exprs[i]))) return render_body(node.bodies[i]);
    }
    if (node.bodies.size() > node.exprs.size()) return render_body(node.bodies.back());
    return Flow::kNormal;
  }

  void bind(Scope& scope, const std::vector<std::string>& names, const Value& value) {
    if (names.size() == 1) {
      scope.vars.set(names[0], value);
      return;
    }
    List parts = iterate(value);
    if (parts.size() != names.size()) {
      issue("cannot unpack {} values into {} names", parts.size(), names.size());
    }
    for (size_t i = 0; i < names.size(); ++i) scope.vars.set(names[i], parts[i]);
  }

  // The `if` clause of a for loop filters items before the loop starts (loop.length counts
  // only the kept ones).
  List loop_items(const Node& node) {
    List items = iterate(operand(*node.exprs[0]));
    if (!node.has_filter) return items;
    List kept;
    for (auto& item : items) {
      auto scope = child_scope();
      bind(*scope, node.targets, item);
      ScopeGuard guard(*this, scope);
      if (truthy(eval(*node.exprs[1]))) kept.push_back(std::move(item));
    }
    return kept;
  }

  // Jinja's `loop` is one object that advances with the loop (a captured `loop` sees later
  // iterations too), so it is built once and updated in place; entry positions are fixed.
  static Value make_loop_object(int64_t length) {
    auto loop = std::make_shared<Dict>();
    for (const char* key : {"index", "index0", "revindex", "revindex0", "first", "last",
                            "previtem", "nextitem"}) {
      loop->entries.emplace_back(key, Value());
    }
    loop->entries.emplace_back("length", Value::from_int(length));
    loop->entries.emplace_back("depth", Value::from_int(1));
    loop->entries.emplace_back("depth0", Value::from_int(0));
    std::weak_ptr<Dict> self = loop;  // weak: the dict holds this function
    loop->entries.emplace_back("cycle", Value::from_callable("loop.cycle", [self](Renderer&, CallArgs& a) {
      auto dict = self.lock();
      if (!dict || a.positional.empty()) issue("loop.cycle() needs at least one argument");
      int64_t index0 = dict->entries[1].second.integer;
      return a.positional[index0 % static_cast<int64_t>(a.positional.size())];
    }));
    return Value::from_dict(std::move(loop));
  }

  static void advance_loop(Dict& loop, const List& items, size_t i) {
    const int64_t n = static_cast<int64_t>(items.size());
    const int64_t k = static_cast<int64_t>(i);
    auto& e = loop.entries;
    e[0].second = Value::from_int(k + 1);
    e[1].second = Value::from_int(k);
    e[2].second = Value::from_int(n - k);
    e[3].second = Value::from_int(n - k - 1);
    e[4].second = Value::from_bool(k == 0);
    e[5].second = Value::from_bool(k == n - 1);
    e[6].second = k > 0 ? items[i - 1] : Value::undefined("there is no previous item");
    e[7].second = k + 1 < n ? items[i + 1] : Value::undefined("there is no next item");
  }

  Flow render_for(const Node& node) {
    const List items = loop_items(node);
    Value loop = make_loop_object(static_cast<int64_t>(items.size()));
    for (size_t i = 0; i < items.size(); ++i) {
      charge(1);
      auto scope = child_scope();
      bind(*scope, node.targets, items[i]);
      advance_loop(*loop.dict, items, i);
      scope->vars.entries.emplace_back("loop", loop);
      ScopeGuard guard(*this, scope);
      if (render_body(node.bodies[0]) == Flow::kBreak) break;
    }
    if (items.empty() && node.bodies.size() > 1) return render_body(node.bodies[1]);
    return Flow::kNormal;
  }

  void assign(const Node& node, const Value& value) {
    if (node.name.empty()) {
      bind(*scope_, node.targets, value);
      return;
    }
    Value ns = lookup(node.targets[0]);
    if (ns.kind != Kind::kNamespace) issue("cannot assign attribute on non-namespace object");
    ns.dict->set(node.name, value);
    if (namespaces_.empty() || namespaces_.back() != ns.dict) namespaces_.push_back(ns.dict);
  }

  std::string capture(const Body& body) {
    std::string buffer;
    std::string* saved = out_;
    out_ = &buffer;
    try {
      render_body(body);
    } catch (...) {
      out_ = saved;
      throw;
    }
    out_ = saved;
    return buffer;
  }

  // {% set x %}...{% endset %} and {% filter f %}...{% endfilter %}: the body's text, passed
  // through the filter chain when there is one.
  Value render_block(const Node& node) {
    Value text = Value::from_string(capture(node.bodies[0]));
    if (node.exprs.empty()) return text;
    const Value* saved = block_value_;
    block_value_ = &text;
    Value result = eval(*node.exprs[0]);
    block_value_ = saved;
    return result;
  }

  Value make_function(const Node& node, std::string name) {
    std::weak_ptr<Scope> defined_in = scope_;  // weak: the scope holds the function
    const Node* fn = &node;
    return Value::from_callable(std::move(name), [fn, defined_in](Renderer& r, CallArgs& args) {
      return r.call_function(*fn, defined_in, args);
    });
  }

  void define_macro(const Node& node) { scope_->vars.set(node.name, make_function(node, node.name)); }

  Value render_call_block(const Node& node) {
    const Expr& call = *node.exprs[0];
    Value callee = eval(*call.args[0]);
    CallArgs args = eval_args(call);
    args.keyword.emplace_back("caller", make_function(node, "caller"));
    return invoke(callee, args);
  }

  Flow render_with(const Node& node) {
    auto scope = child_scope();
    for (size_t i = 0; i < node.targets.size(); ++i) {
      scope->vars.set(node.targets[i], eval(*node.exprs[i]));
    }
    ScopeGuard guard(*this, scope);
    return render_body(node.bodies[0]);
  }

  // ---- expressions ---------------------------------------------------------------------------

  Value eval(const Expr& e) {
    Value v;
    try {
      charge(1);
      v = eval_inner(e);
      if (creates_value(e.kind)) charge(v.weight / 256);  // building it cost about that much
    } catch (const Issue& issue) {
      vortex::fail("jinja: line {}: {}", e.line, issue.what());
    }
    return v;
  }

  static bool creates_value(ExprKind kind) {
    return kind == ExprKind::kFilter || kind == ExprKind::kCall || kind == ExprKind::kBinary ||
           kind == ExprKind::kConcat || kind == ExprKind::kSlice;
  }

  // A value an operation works on: operations may cost up to the size of their operands (a
  // comparison, a filter, a method), so each operand is charged by its weight. Plain accesses
  // (names, attributes, list items) are O(1) and not charged.
  Value operand(const Expr& e) {
    Value v = eval(e);
    charge(v.weight / 256);
    return v;
  }

  CallArgs eval_args(const Expr& e) {
    CallArgs args;
    for (size_t i = 1; i < e.args.size(); ++i) args.positional.push_back(operand(*e.args[i]));
    for (size_t i = 0; i < e.kw_names.size(); ++i) {
      args.keyword.emplace_back(e.kw_names[i], operand(*e.kw_values[i]));
    }
    return args;
  }

  Value invoke(const Value& callee, CallArgs& args) {
    if (callee.is_undefined()) fail_undefined(callee);
    if (callee.kind != Kind::kCallable) issue("'{}' object is not callable", type_name(callee));
    return callee.callable->fn(*this, args);
  }

  Value eval_sequence(const Expr& e, Kind kind) {
    List items;
    items.reserve(e.args.size());
    for (const auto& arg : e.args) items.push_back(eval(*arg));
    return Value::from_list(std::move(items), kind);
  }

  Value eval_dict(const Expr& e) {
    auto dict = std::make_shared<Dict>();
    for (size_t i = 0; i + 1 < e.args.size(); i += 2) {
      Value key = eval(*e.args[i]);
      if (!key.is_string()) issue("dict keys must be strings, got '{}'", type_name(key));
      dict->set(key.text(), eval(*e.args[i + 1]));
    }
    return Value::from_dict(std::move(dict));
  }

  Value eval_slice(const Expr& e) {
    Value subject = operand(*e.args[0]);
    Value parts[3];
    const Value* ptrs[3] = {nullptr, nullptr, nullptr};
    for (int i = 0; i < 3; ++i) {
      if (e.args[i + 1]) {
        parts[i] = eval(*e.args[i + 1]);
        ptrs[i] = &parts[i];
      }
    }
    return slice(subject, ptrs[0], ptrs[1], ptrs[2]);
  }

  Value eval_compare(const Expr& e) {
    Value left = operand(*e.args[0]);
    for (size_t i = 0; i < e.ops.size(); ++i) {
      Value right = operand(*e.args[i + 1]);
      if (!compare_op(e.ops[i], left, right)) return Value::from_bool(false);
      left = std::move(right);
    }
    return Value::from_bool(true);
  }

  Value eval_condition(const Expr& e) {
    if (truthy(eval(*e.args[1]))) return eval(*e.args[0]);
    if (e.args.size() > 2) return eval(*e.args[2]);
    return Value::undefined("the inline if-expression evaluated to false and has no else");
  }

  Value eval_concat(const Expr& e) {
    std::string text;
    for (const auto& arg : e.args) {
      text += to_str(operand(*arg));
      if (text.size() > kMaxOutputBytes) issue("string longer than {} bytes", kMaxOutputBytes);
    }
    return Value::from_string(std::move(text));
  }

  Value eval_inner(const Expr& e) {
    switch (e.kind) {
      case ExprKind::kLiteral: return e.literal;
      case ExprKind::kName: return lookup(e.name);
      case ExprKind::kList: return eval_sequence(e, Kind::kList);
      case ExprKind::kTuple: return eval_sequence(e, Kind::kTuple);
      case ExprKind::kDict: return eval_dict(e);
      case ExprKind::kAttr: return get_attr(eval(*e.args[0]), e.name);
      case ExprKind::kItem: {
        Value subject = eval(*e.args[0]);
        if (subject.is_string()) charge(subject.weight / 256);  // indexing decodes UTF-8
        return get_item(subject, eval(*e.args[1]));
      }
      case ExprKind::kSlice: return eval_slice(e);
      case ExprKind::kCall: {
        Value callee = operand(*e.args[0]);
        CallArgs args = eval_args(e);
        return invoke(callee, args);
      }
      case ExprKind::kFilter: {
        Value input = operand(*e.args[0]);
        CallArgs args = eval_args(e);
        return e.filter(input, args);
      }
      case ExprKind::kTest: {
        Value input = operand(*e.args[0]);
        CallArgs args = eval_args(e);
        return Value::from_bool(e.test(input, args));
      }
      case ExprKind::kNeg: return negate(eval(*e.args[0]));
      case ExprKind::kPos: return positive(eval(*e.args[0]));
      case ExprKind::kNot: return Value::from_bool(!truthy(eval(*e.args[0])));
      case ExprKind::kAnd: {
        Value left = eval(*e.args[0]);
        return truthy(left) ? eval(*e.args[1]) : left;
      }
      case ExprKind::kOr: {
        Value left = eval(*e.args[0]);
        return truthy(left) ? left : eval(*e.args[1]);
      }
      case ExprKind::kBinary: return binary_op(e.name, operand(*e.args[0]), operand(*e.args[1]));
      case ExprKind::kCompare: return eval_compare(e);
      case ExprKind::kConcat: return eval_concat(e);
      case ExprKind::kCondition: return eval_condition(e);
      case ExprKind::kBlockValue: return block_value_ ? *block_value_ : Value();
    }
    return Value();
  }

  std::shared_ptr<Scope> template_scope_;
  std::shared_ptr<Scope> scope_;
  std::string result_;
  std::string* out_ = nullptr;        // where output goes: result_ or a block being captured
  const Value* block_value_ = nullptr;  // the captured text a block's filter chain applies to
  int call_depth_ = 0;
  uint64_t steps_ = 0;
  std::vector<std::shared_ptr<Dict>> namespaces_;  // namespaces assigned into, see ~Renderer
};

// Macros and call-block callers: parameters bind positionally, then by keyword, then from
// defaults (evaluated in the new scope, so they may refer to earlier parameters).
Value Renderer::call_function(const Node& fn, const std::weak_ptr<Scope>& defined_in,
                              CallArgs& args) {
  if (call_depth_ >= kMaxCallDepth) issue("macro calls nested deeper than {}", kMaxCallDepth);
  const std::string& name = fn.kind == NodeKind::kMacro ? fn.name : std::string("caller");
  if (args.positional.size() > fn.targets.size()) {
    issue("macro '{}' takes {} argument(s), {} given", name, fn.targets.size(),
          args.positional.size());
  }
  auto scope = std::make_shared<Scope>();
  scope->parent = defined_in.lock();
  if (!scope->parent) scope->parent = template_scope_;
  for (const auto& [key, value] : args.keyword) {
    bool known = key == "caller" ||
                 std::find(fn.targets.begin(), fn.targets.end(), key) != fn.targets.end();
    if (!known) issue("macro '{}' has no parameter named '{}'", name, key);
    scope->vars.set(key, value);
  }
  ScopeGuard guard(*this, scope);
  for (size_t i = 0; i < fn.targets.size(); ++i) {
    if (i < args.positional.size()) scope->vars.set(fn.targets[i], args.positional[i]);
    else if (scope->vars.find(fn.targets[i])) continue;
    else if (fn.defaults[i]) scope->vars.set(fn.targets[i], eval(*fn.defaults[i]));
    else scope->vars.set(fn.targets[i], Value::undefined("parameter '" + fn.targets[i] + "' was not provided"));
  }
  ++call_depth_;
  std::string text;
  try {
    text = capture(fn.bodies[0]);
  } catch (...) {
    --call_depth_;
    throw;
  }
  --call_depth_;
  return Value::from_string(std::move(text));
}

std::string render_program(const Program& program, const Dict& globals, const Value& context) {
  if (context.kind != Kind::kDict) vortex::fail("jinja: the render context must be a JSON object");
  Renderer renderer(globals, context);
  return renderer.run(program);
}

}  // namespace vortex::jinja
