// Segments → AST, following Jinja2's grammar and operator precedence (jinja2/parser.py):
//   condexpr: or ('if' or ('else' condexpr)?)*
//   or/and/not, compare (chained; in, not in), + -, ~, * / // %, ** (left-assoc, as Jinja),
//   unary (- +) then postfix (.name [sub] (call)) then filters and tests (| name, is name),
//   which therefore bind tighter than every binary operator: a + b | trim == a + (b | trim).
// Unknown filters and tests are errors here, as Jinja reports them when compiling.
#include <algorithm>

#include "core/error.h"
#include "io/jinja_internal.h"

namespace vortex::jinja {
namespace {

class Parser {
 public:
  explicit Parser(std::vector<Segment> segments) : segs_(std::move(segments)) {}

  Program run() {
    Program program;
    std::string found;
    program.body = parse_body({}, "", 0, &found);
    return program;
  }

 private:
  // ---- tokens --------------------------------------------------------------------------------

  const Token& cur() const { return (*toks_)[tok_]; }
  const Token& peek() const { return (*toks_)[std::min(tok_ + 1, toks_->size() - 1)]; }
  void advance() {
    if (cur().kind != TokKind::kEnd) ++tok_;
  }
  bool at_op(std::string_view op) const { return cur().kind == TokKind::kOp && cur().text == op; }
  bool at_name(std::string_view name) const {
    return cur().kind == TokKind::kName && cur().text == name;
  }
  bool skip_op(std::string_view op) {
    if (!at_op(op)) return false;
    advance();
    return true;
  }
  bool skip_name(std::string_view name) {
    if (!at_name(name)) return false;
    advance();
    return true;
  }

  static std::string describe(const Token& t) {
    switch (t.kind) {
      case TokKind::kEnd: return "end of tag";
      case TokKind::kString: return "string literal";
      default: return "'" + t.text + "'";
    }
  }

  [[noreturn]] void fail_here(const std::string& message) const {
    vortex::fail("jinja: line {}: {}", cur().line, message);
  }
  void expect_op(std::string_view op) {
    if (!skip_op(op)) fail_here(fmt::format("expected '{}', got {}", op, describe(cur())));
  }
  std::string expect_name() {
    if (cur().kind != TokKind::kName) fail_here("expected a name, got " + describe(cur()));
    std::string name = cur().text;
    advance();
    return name;
  }
  void expect_end() {
    if (cur().kind != TokKind::kEnd) {
      fail_here("expected end of tag, got " + describe(cur()));
    }
  }

  // Bounds recursion so hostile input cannot exhaust the stack.
  struct DepthGuard {
    DepthGuard(Parser& p) : parser(p) {
      if (++parser.depth_ > kMaxNesting) parser.fail_here("template nested too deeply");
    }
    ~DepthGuard() { --parser.depth_; }
    Parser& parser;
  };

  ExprPtr make(ExprKind kind, int line) {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->line = line;
    return e;
  }

  // ---- statements ----------------------------------------------------------------------------

  // Parses nodes until a statement whose keyword is in `stops`; returns with that statement's
  // tokens current (after the keyword) and its keyword in *found.
  Body parse_body(std::initializer_list<std::string_view> stops, std::string_view opener,
                  int open_line, std::string* found) {
    DepthGuard guard(*this);
    Body body;
    while (seg_ < segs_.size()) {
      Segment& seg = segs_[seg_++];
      toks_ = &seg.tokens;
      tok_ = 0;
      if (seg.kind == SegKind::kText) {
        auto node = std::make_unique<Node>();
        node->kind = NodeKind::kText;
        node->line = seg.line;
        node->text = std::move(seg.text);
        body.push_back(std::move(node));
        continue;
      }
      if (seg.kind == SegKind::kOutput) {
        auto node = std::make_unique<Node>();
        node->kind = NodeKind::kOutput;
        node->line = seg.line;
        node->exprs.push_back(parse_tuple(true));
        expect_end();
        body.push_back(std::move(node));
        continue;
      }
      std::string keyword = expect_name();
      if (std::find(stops.begin(), stops.end(), keyword) != stops.end()) {
        *found = keyword;
        return body;
      }
      body.push_back(parse_statement(keyword, seg.line));
    }
    if (stops.size() > 0) {
      std::string wanted;
      for (auto s : stops) wanted += (wanted.empty() ? "'" : " or '") + std::string(s) + "'";
      vortex::fail("jinja: line {}: unclosed '{}' block: reached the end of the template looking "
                   "for {}", open_line, opener, wanted);
    }
    return body;
  }

  std::unique_ptr<Node> parse_statement(const std::string& keyword, int line) {
    auto node = std::make_unique<Node>();
    node->line = line;
    if (keyword == "if") parse_if(*node);
    else if (keyword == "for") parse_for(*node);
    else if (keyword == "set") parse_set(*node);
    else if (keyword == "macro") parse_macro(*node);
    else if (keyword == "call") parse_call_block(*node);
    else if (keyword == "filter") parse_filter_block(*node);
    else if (keyword == "with") parse_with(*node);
    else if (keyword == "generation") parse_scope(*node, "generation", "endgeneration");
    else if (keyword == "break" || keyword == "continue") parse_loop_control(*node, keyword);
    else if (keyword.rfind("end", 0) == 0 || keyword == "elif" || keyword == "else") {
      vortex::fail("jinja: line {}: unexpected '{}' (no open block expects it)", line, keyword);
    } else {
      vortex::fail("jinja: line {}: unknown or unsupported statement '{}'", line, keyword);
    }
    return node;
  }

  void parse_if(Node& node) {
    node.kind = NodeKind::kIf;
    node.exprs.push_back(parse_expression());
    expect_end();
    std::string found;
    node.bodies.push_back(parse_body({"elif", "else", "endif"}, "if", node.line, &found));
    while (found == "elif") {
      node.exprs.push_back(parse_expression());
      expect_end();
      node.bodies.push_back(parse_body({"elif", "else", "endif"}, "if", node.line, &found));
    }
    if (found == "else") {
      expect_end();
      node.bodies.push_back(parse_body({"endif"}, "if", node.line, &found));
    }
    expect_end();
  }

  std::vector<std::string> parse_targets() {
    std::vector<std::string> names;
    bool parens = skip_op("(");
    do {
      if (parens && at_op(")")) break;
      names.push_back(expect_name());
    } while (skip_op(","));
    if (parens) expect_op(")");
    return names;
  }

  void parse_for(Node& node) {
    node.kind = NodeKind::kFor;
    node.targets = parse_targets();
    if (!skip_name("in")) fail_here("expected 'in' in for loop, got " + describe(cur()));
    node.exprs.push_back(parse_tuple(false));
    if (skip_name("if")) {
      node.has_filter = true;
      node.exprs.push_back(parse_expression());
    }
    if (at_name("recursive")) fail_here("recursive for loops are not supported");
    expect_end();
    std::string found;
    ++loop_depth_;
    node.bodies.push_back(parse_body({"else", "endfor"}, "for", node.line, &found));
    --loop_depth_;
    if (found == "else") {
      expect_end();
      node.bodies.push_back(parse_body({"endfor"}, "for", node.line, &found));
    }
    expect_end();
  }

  void parse_set(Node& node) {
    node.kind = NodeKind::kSet;
    std::string first = expect_name();
    if (skip_op(".")) {
      node.targets = {first};
      node.name = expect_name();  // `set ns.attr = value`
    } else {
      node.targets = {first};
      while (skip_op(",")) node.targets.push_back(expect_name());
    }
    if (skip_op("=")) {
      node.exprs.push_back(parse_tuple(true));
      expect_end();
      return;
    }
    if (!node.name.empty() || node.targets.size() != 1) fail_here("expected '=' in set");
    node.kind = NodeKind::kSetBlock;
    if (at_op("|")) {
      node.has_filter = true;
      node.exprs.push_back(parse_filters(make(ExprKind::kBlockValue, cur().line), false));
    }
    expect_end();
    std::string found;
    node.bodies.push_back(parse_body({"endset"}, "set", node.line, &found));
    expect_end();
  }

  // Macro and call-block parameters: `(a, b=default, ...)`.
  void parse_parameters(Node& node) {
    expect_op("(");
    while (!skip_op(")")) {
      if (!node.targets.empty()) expect_op(",");
      if (skip_op(")")) break;
      node.targets.push_back(expect_name());
      node.defaults.push_back(skip_op("=") ? parse_expression() : nullptr);
    }
  }

  Body parse_function_body(std::string_view opener, std::string_view closer, int line) {
    int saved = loop_depth_;
    loop_depth_ = 0;  // break/continue cannot cross a macro boundary
    std::string found;
    Body body = parse_body({closer}, opener, line, &found);
    loop_depth_ = saved;
    expect_end();
    return body;
  }

  void parse_macro(Node& node) {
    node.kind = NodeKind::kMacro;
    node.name = expect_name();
    parse_parameters(node);
    expect_end();
    node.bodies.push_back(parse_function_body("macro", "endmacro", node.line));
  }

  void parse_call_block(Node& node) {
    node.kind = NodeKind::kCallBlock;
    if (at_op("(")) parse_parameters(node);
    ExprPtr call = parse_expression();
    if (call->kind != ExprKind::kCall) fail_here("expected a call in 'call' block");
    node.exprs.push_back(std::move(call));
    expect_end();
    node.bodies.push_back(parse_function_body("call", "endcall", node.line));
  }

  void parse_filter_block(Node& node) {
    node.kind = NodeKind::kFilterBlock;
    node.exprs.push_back(parse_filters(make(ExprKind::kBlockValue, cur().line), true));
    expect_end();
    std::string found;
    node.bodies.push_back(parse_body({"endfilter"}, "filter", node.line, &found));
    expect_end();
  }

  void parse_with(Node& node) {
    node.kind = NodeKind::kWith;
    while (cur().kind != TokKind::kEnd) {
      if (!node.targets.empty()) expect_op(",");
      node.targets.push_back(expect_name());
      expect_op("=");
      node.exprs.push_back(parse_expression());
    }
    std::string found;
    node.bodies.push_back(parse_body({"endwith"}, "with", node.line, &found));
    expect_end();
  }

  // transformers' {% generation %} marks assistant text; rendering is unaffected.
  void parse_scope(Node& node, std::string_view opener, std::string_view closer) {
    node.kind = NodeKind::kScope;
    expect_end();
    std::string found;
    node.bodies.push_back(parse_body({closer}, opener, node.line, &found));
    expect_end();
  }

  void parse_loop_control(Node& node, const std::string& keyword) {
    if (loop_depth_ == 0) fail_here("'" + keyword + "' outside a for loop");
    node.kind = keyword == "break" ? NodeKind::kBreak : NodeKind::kContinue;
    expect_end();
  }

  // ---- expressions ---------------------------------------------------------------------------

  // `a, b` makes a tuple; with_condexpr false stops before `if` (for-loop iterables).
  ExprPtr parse_tuple(bool with_condexpr, bool explicit_parens = false) {
    int line = cur().line;
    std::vector<ExprPtr> items;
    bool is_tuple = false;
    while (true) {
      if (!items.empty()) {
        if (!skip_op(",")) break;
        is_tuple = true;
      }
      if (cur().kind == TokKind::kEnd || at_op(")")) break;
      items.push_back(with_condexpr ? parse_expression() : parse_or());
    }
    if (!is_tuple) {
      if (!items.empty()) return std::move(items[0]);
      if (!explicit_parens) fail_here("expected an expression, got " + describe(cur()));
    }
    auto e = make(ExprKind::kTuple, line);
    e->args = std::move(items);
    return e;
  }

  ExprPtr parse_expression() {
    DepthGuard guard(*this);
    ExprPtr expr = parse_or();
    while (at_name("if")) {
      int line = cur().line;
      advance();
      auto cond = make(ExprKind::kCondition, line);
      cond->args.push_back(std::move(expr));
      cond->args.push_back(parse_or());
      if (skip_name("else")) cond->args.push_back(parse_expression());
      expr = std::move(cond);
    }
    return expr;
  }

  ExprPtr parse_logical(ExprKind kind, std::string_view keyword, ExprPtr (Parser::*operand)()) {
    ExprPtr left = (this->*operand)();
    while (at_name(keyword)) {
      auto e = make(kind, cur().line);
      advance();
      e->args.push_back(std::move(left));
      e->args.push_back((this->*operand)());
      left = std::move(e);
    }
    return left;
  }

  ExprPtr parse_or() { return parse_logical(ExprKind::kOr, "or", &Parser::parse_and); }
  ExprPtr parse_and() { return parse_logical(ExprKind::kAnd, "and", &Parser::parse_not); }

  ExprPtr parse_not() {
    if (!at_name("not")) return parse_compare();
    DepthGuard guard(*this);
    auto e = make(ExprKind::kNot, cur().line);
    advance();
    e->args.push_back(parse_not());
    return e;
  }

  // The comparison operator at the cursor ("" when none); consumes it.
  std::string take_compare_op() {
    static constexpr std::string_view kOps[] = {"==", "!=", "<", ">", "<=", ">="};
    if (cur().kind == TokKind::kOp &&
        std::find(std::begin(kOps), std::end(kOps), cur().text) != std::end(kOps)) {
      std::string op = cur().text;
      advance();
      return op;
    }
    if (skip_name("in")) return "in";
    if (at_name("not") && peek().kind == TokKind::kName && peek().text == "in") {
      advance();
      advance();
      return "not in";
    }
    return "";
  }

  ExprPtr parse_compare() {
    int line = cur().line;
    ExprPtr first = parse_math1();
    std::string op = take_compare_op();
    if (op.empty()) return first;
    auto e = make(ExprKind::kCompare, line);
    e->args.push_back(std::move(first));
    while (!op.empty()) {
      e->ops.push_back(op);
      e->args.push_back(parse_math1());
      op = take_compare_op();
    }
    return e;
  }

  ExprPtr parse_binary(std::initializer_list<std::string_view> ops, ExprPtr (Parser::*operand)()) {
    ExprPtr left = (this->*operand)();
    while (cur().kind == TokKind::kOp &&
           std::find(ops.begin(), ops.end(), cur().text) != ops.end()) {
      auto e = make(ExprKind::kBinary, cur().line);
      e->name = cur().text;
      advance();
      e->args.push_back(std::move(left));
      e->args.push_back((this->*operand)());
      left = std::move(e);
    }
    return left;
  }

  ExprPtr parse_math1() { return parse_binary({"+", "-"}, &Parser::parse_concat); }

  ExprPtr parse_concat() {
    int line = cur().line;
    ExprPtr first = parse_math2();
    if (!at_op("~")) return first;
    auto e = make(ExprKind::kConcat, line);
    e->args.push_back(std::move(first));
    while (skip_op("~")) e->args.push_back(parse_math2());
    return e;
  }

  ExprPtr parse_math2() { return parse_binary({"*", "/", "//", "%"}, &Parser::parse_pow); }
  ExprPtr parse_pow() { return parse_binary({"**"}, &Parser::parse_unary_filtered); }
  ExprPtr parse_unary_filtered() { return parse_unary(true); }

  ExprPtr parse_unary(bool with_filter) {
    DepthGuard guard(*this);
    ExprPtr node;
    if (at_op("-") || at_op("+")) {
      node = make(at_op("-") ? ExprKind::kNeg : ExprKind::kPos, cur().line);
      advance();
      node->args.push_back(parse_unary(false));
    } else {
      node = parse_primary();
    }
    node = parse_postfix(std::move(node));
    return with_filter ? parse_filter_expr(std::move(node)) : std::move(node);
  }

  ExprPtr parse_primary() {
    const Token& t = cur();
    int line = t.line;
    if (t.kind == TokKind::kName) return parse_name();
    if (t.kind == TokKind::kString) {
      auto e = make(ExprKind::kLiteral, line);
      std::string text;
      while (cur().kind == TokKind::kString) {  // adjacent literals concatenate
        text += cur().text;
        advance();
      }
      e->literal = Value::from_string(std::move(text));
      return e;
    }
    if (t.kind == TokKind::kInt || t.kind == TokKind::kFloat) {
      auto e = make(ExprKind::kLiteral, line);
      e->literal = t.kind == TokKind::kInt ? Value::from_int(t.integer) : Value::from_float(t.real);
      advance();
      return e;
    }
    if (skip_op("(")) {
      ExprPtr e = parse_tuple(true, true);
      expect_op(")");
      return e;
    }
    if (at_op("[")) return parse_list();
    if (at_op("{")) return parse_dict();
    fail_here("unexpected " + describe(t));
  }

  ExprPtr parse_name() {
    auto e = make(ExprKind::kLiteral, cur().line);
    const std::string& name = cur().text;
    if (name == "true" || name == "True") e->literal = Value::from_bool(true);
    else if (name == "false" || name == "False") e->literal = Value::from_bool(false);
    else if (name == "none" || name == "None") e->literal = Value::none();
    else {
      e->kind = ExprKind::kName;
      e->name = name;
    }
    advance();
    return e;
  }

  ExprPtr parse_list() {
    auto e = make(ExprKind::kList, cur().line);
    expect_op("[");
    while (!skip_op("]")) {
      if (!e->args.empty()) expect_op(",");
      if (skip_op("]")) break;
      e->args.push_back(parse_expression());
    }
    return e;
  }

  ExprPtr parse_dict() {
    auto e = make(ExprKind::kDict, cur().line);
    expect_op("{");
    while (!skip_op("}")) {
      if (!e->args.empty()) expect_op(",");
      if (skip_op("}")) break;
      e->args.push_back(parse_expression());
      expect_op(":");
      e->args.push_back(parse_expression());
    }
    return e;
  }

  ExprPtr parse_postfix(ExprPtr node) {
    while (true) {
      int line = cur().line;
      if (skip_op(".")) {
        auto e = make(cur().kind == TokKind::kInt ? ExprKind::kItem : ExprKind::kAttr, line);
        e->args.push_back(std::move(node));
        if (cur().kind == TokKind::kInt) {  // x.0 is x[0]
          auto index = make(ExprKind::kLiteral, line);
          index->literal = Value::from_int(cur().integer);
          e->args.push_back(std::move(index));
          advance();
        } else {
          e->name = expect_name();
        }
        node = std::move(e);
      } else if (at_op("[")) {
        node = parse_subscript(std::move(node));
      } else if (at_op("(")) {
        node = parse_call(std::move(node));
      } else {
        return node;
      }
    }
  }

  ExprPtr parse_subscript(ExprPtr node) {
    int line = cur().line;
    expect_op("[");
    std::vector<ExprPtr> items;
    while (!skip_op("]")) {
      if (!items.empty()) expect_op(",");
      items.push_back(parse_subscribed());
    }
    if (items.empty()) fail_here("expected a subscript");
    if (items.size() == 1 && items[0]->kind == ExprKind::kSlice) {
      items[0]->args[0] = std::move(node);
      return std::move(items[0]);
    }
    auto e = make(ExprKind::kItem, line);
    e->args.push_back(std::move(node));
    if (items.size() == 1) {
      e->args.push_back(std::move(items[0]));
      return e;
    }
    auto tuple = make(ExprKind::kTuple, line);
    for (auto& item : items) {
      if (item->kind == ExprKind::kSlice) fail_here("multi-dimensional slices are not supported");
      tuple->args.push_back(std::move(item));
    }
    e->args.push_back(std::move(tuple));
    return e;
  }

  // One subscript: an expression or a slice `start:stop:step` (args[0] left for the subject).
  ExprPtr parse_subscribed() {
    int line = cur().line;
    ExprPtr start;
    if (!at_op(":")) {
      start = parse_expression();
      if (!at_op(":")) return start;
    }
    advance();
    auto e = make(ExprKind::kSlice, line);
    e->args.push_back(nullptr);
    e->args.push_back(std::move(start));
    auto part = [&]() -> ExprPtr {
      return (at_op("]") || at_op(",") || at_op(":")) ? nullptr : parse_expression();
    };
    e->args.push_back(part());
    e->args.push_back(skip_op(":") ? part() : nullptr);
    return e;
  }

  ExprPtr parse_call(ExprPtr node) {
    auto e = make(ExprKind::kCall, cur().line);
    e->args.push_back(std::move(node));
    parse_call_args(*e);
    return e;
  }

  void parse_call_args(Expr& e) {
    expect_op("(");
    bool first = true;
    while (!skip_op(")")) {
      if (!first) expect_op(",");
      first = false;
      if (skip_op(")")) break;
      if (at_op("*") || at_op("**")) fail_here("*args and **kwargs in calls are not supported");
      if (cur().kind == TokKind::kName && peek().kind == TokKind::kOp && peek().text == "=") {
        e.kw_names.push_back(cur().text);
        advance();
        advance();
        e.kw_values.push_back(parse_expression());
      } else {
        if (!e.kw_names.empty()) fail_here("positional argument after keyword argument");
        e.args.push_back(parse_expression());
      }
    }
  }

  ExprPtr parse_filter_expr(ExprPtr node) {
    while (true) {
      if (at_op("|")) node = parse_filters(std::move(node), false);
      else if (at_name("is")) node = parse_test(std::move(node));
      else if (at_op("(")) node = parse_call(std::move(node));
      else return node;
    }
  }

  std::string parse_dotted_name() {
    std::string name = expect_name();
    while (skip_op(".")) {
      name += '.';
      name += expect_name();
    }
    return name;
  }

  // `| f(args) | g ...`; inline: the first filter has no leading `|` ({% filter f %}).
  ExprPtr parse_filters(ExprPtr node, bool inline_first) {
    while (inline_first || at_op("|")) {
      if (!inline_first) advance();
      inline_first = false;
      int line = cur().line;
      std::string name = parse_dotted_name();
      FilterFn fn = find_filter(name);
      if (!fn) vortex::fail("jinja: line {}: no filter named '{}'", line, name);
      auto e = make(ExprKind::kFilter, line);
      e->name = name;
      e->filter = fn;
      e->args.push_back(std::move(node));
      if (at_op("(")) parse_call_args(*e);
      node = std::move(e);
    }
    return node;
  }

  ExprPtr parse_test(ExprPtr node) {
    int line = cur().line;
    advance();  // `is`
    bool negated = skip_name("not");
    std::string name = parse_dotted_name();
    TestFn fn = find_test(name);
    if (!fn) vortex::fail("jinja: line {}: no test named '{}'", line, name);
    auto e = make(ExprKind::kTest, line);
    e->name = name;
    e->test = fn;
    e->args.push_back(std::move(node));
    const Token& t = cur();
    bool bare_arg = t.kind == TokKind::kString || t.kind == TokKind::kInt ||
                    t.kind == TokKind::kFloat || at_op("[") || at_op("{") ||
                    (t.kind == TokKind::kName && t.text != "else" && t.text != "or" &&
                     t.text != "and");
    if (at_op("(")) {
      parse_call_args(*e);
    } else if (bare_arg) {  // `x is divisibleby 3`
      if (at_name("is")) fail_here("tests cannot be chained with 'is'");
      e->args.push_back(parse_postfix(parse_primary()));
    }
    if (!negated) return e;
    auto neg = make(ExprKind::kNot, line);
    neg->args.push_back(std::move(e));
    return neg;
  }

  std::vector<Segment> segs_;
  size_t seg_ = 0;
  const std::vector<Token>* toks_ = nullptr;
  size_t tok_ = 0;
  int depth_ = 0;
  int loop_depth_ = 0;
};

}  // namespace

Program parse_template(std::string_view source) { return Parser(lex_template(source)).run(); }

}  // namespace vortex::jinja
