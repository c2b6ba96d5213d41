// The text form of flows (flows/*.flow): a line-oriented lexer, a recursive-descent parser that
// drives FlowBuilder (so text and C++ give the same IR), and to_text, the canonical printer.
//
//   statement := 'field' NAME '=' REDUCE '(' 'k' {',' option} ')'
//              | 'let' NAME '=' expr
//              | 'save' '(' STATE ',' expr ')'
//              | 'stage' 'topk' '(' expr ',' NUMBER ')'
//              | 'select' ('topk' '(' expr ')' | 'threshold' '(' expr ',' NUMBER ')' | 'none')
//   expr      := sum [('>' | '>=' | '<' | '<=') sum]
//   sum       := term {('+' | '-') term}
//   term      := unary {('*' | '/') unary}
//   unary     := '-' unary | NUMBER | NAME | NAME '(' args ')' | '(' expr ')'
//   option    := 'sub' '=' (INT | 'page') | 'store' '=' ('f32' | 'bf16' | 'fp8' | 'int8' | 'int4' | 'sign')
// One statement per line; a newline inside parentheses continues the statement; '#' starts a comment.
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>

#include "sparse/flow_node.h"

namespace vortex {
namespace {

// ---- lexer -------------------------------------------------------------------------------------

enum class TokenKind : uint8_t { kName, kNumber, kPunct, kNewline, kEnd };

struct Token {
  TokenKind kind = TokenKind::kEnd;
  std::string text;
  double number = 0.0;
  FlowLoc loc;
};

class Lexer {
 public:
  explicit Lexer(std::string_view text) : text_(text) {}

  std::vector<Token> run() {
    std::vector<Token> tokens;
    int depth = 0;  // newlines inside parentheses do not end a statement
    while (pos_ < text_.size()) {
      char c = text_[pos_];
      FlowLoc loc{line_, static_cast<int32_t>(pos_ - line_start_) + 1};
      if (c == '\n') {
        if (depth == 0) tokens.push_back({TokenKind::kNewline, "newline", 0.0, loc});
        ++pos_, ++line_, line_start_ = pos_;
      } else if (c == ' ' || c == '\t' || c == '\r') {
        ++pos_;
      } else if (c == '#') {
        while (pos_ < text_.size() && text_[pos_] != '\n') ++pos_;
      } else if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
        tokens.push_back(name(loc));
      } else if (std::isdigit(static_cast<unsigned char>(c)) || (c == '.' && pos_ + 1 < text_.size() &&
                                                                  std::isdigit(static_cast<unsigned char>(text_[pos_ + 1])))) {
        tokens.push_back(number(loc));
      } else {
        tokens.push_back(punct(loc));
        depth += tokens.back().text == "(" ? 1 : tokens.back().text == ")" ? -1 : 0;
      }
    }
    tokens.push_back({TokenKind::kNewline, "end of file", 0.0, {line_, static_cast<int32_t>(pos_ - line_start_) + 1}});
    tokens.push_back({TokenKind::kEnd, "end of file", 0.0, {line_, static_cast<int32_t>(pos_ - line_start_) + 1}});
    return tokens;
  }

 private:
  Token name(FlowLoc loc) {
    size_t start = pos_;
    while (pos_ < text_.size() && (std::isalnum(static_cast<unsigned char>(text_[pos_])) || text_[pos_] == '_')) ++pos_;
    return {TokenKind::kName, std::string(text_.substr(start, pos_ - start)), 0.0, loc};
  }

  Token number(FlowLoc loc) {
    size_t start = pos_;
    auto digits = [&] { while (pos_ < text_.size() && std::isdigit(static_cast<unsigned char>(text_[pos_]))) ++pos_; };
    digits();
    if (pos_ < text_.size() && text_[pos_] == '.') ++pos_, digits();
    if (pos_ < text_.size() && (text_[pos_] == 'e' || text_[pos_] == 'E')) {
      ++pos_;
      if (pos_ < text_.size() && (text_[pos_] == '+' || text_[pos_] == '-')) ++pos_;
      digits();
    }
    std::string_view spelled = text_.substr(start, pos_ - start);
    double value = 0.0;
    auto [end, ec] = std::from_chars(spelled.data(), spelled.data() + spelled.size(), value);
    if (ec != std::errc() || end != spelled.data() + spelled.size()) flow_fail(loc, "bad number '{}'", spelled);
    return {TokenKind::kNumber, std::string(spelled), value, loc};
  }

  Token punct(FlowLoc loc) {
    static constexpr std::string_view kTwo[] = {">=", "<="};
    for (std::string_view p : kTwo)
      if (text_.substr(pos_, 2) == p) return pos_ += 2, Token{TokenKind::kPunct, std::string(p), 0.0, loc};
    char c = text_[pos_];
    if (std::strchr("(),=+-*/<>", c) == nullptr || c == '\0') flow_fail(loc, "unexpected character '{}'", c);
    ++pos_;
    return {TokenKind::kPunct, std::string(1, c), 0.0, loc};
  }

  std::string_view text_;
  size_t pos_ = 0, line_start_ = 0;
  int32_t line_ = 1;
};

// ---- names -------------------------------------------------------------------------------------

struct FunctionInfo {
  std::string_view name;
  FlowOp op;
  int arity;
};

// Functions with a fixed operand count; max/min (two forms), sum/mean (axis) and load are special.
constexpr FunctionInfo kFunctions[] = {
    {"neg", FlowOp::kNeg, 1},   {"abs", FlowOp::kAbs, 1},   {"exp", FlowOp::kExp, 1},
    {"log", FlowOp::kLog, 1},   {"relu", FlowOp::kRelu, 1}, {"sigmoid", FlowOp::kSigmoid, 1},
    {"softmax", FlowOp::kSoftmax, 1}, {"add", FlowOp::kAdd, 2}, {"sub", FlowOp::kSub, 2},
    {"mul", FlowOp::kMul, 2},   {"div", FlowOp::kDiv, 2},   {"gt", FlowOp::kGt, 2},
    {"ge", FlowOp::kGe, 2},     {"lt", FlowOp::kLt, 2},     {"le", FlowOp::kLe, 2},
    {"eq", FlowOp::kEq, 2},     {"dot", FlowOp::kDot, 2},
};
constexpr std::string_view kSpecialFunctions[] = {"max", "min", "sum", "mean", "load", "std", "norm"};
constexpr std::string_view kReservedNames[] = {"q", "k", "D", "P", "scale", "inf", "heads", "feat", "page",
                                               "field", "let", "save", "select", "stage", "topk", "threshold", "none"};

const FunctionInfo* find_function(std::string_view name) {
  for (const FunctionInfo& f : kFunctions)
    if (f.name == name) return &f;
  return nullptr;
}

bool is_reserved(std::string_view name) {
  for (std::string_view r : kReservedNames) if (r == name) return true;
  for (std::string_view r : kSpecialFunctions) if (r == name) return true;
  return find_function(name) != nullptr;  // includes "sub", also an axis
}

bool parse_axis(std::string_view name, FlowAxis& axis) {
  for (FlowAxis a : {FlowAxis::kHeads, FlowAxis::kSub, FlowAxis::kFeat})
    if (name == flow_axis_name(a)) return axis = a, true;
  return false;
}

bool parse_field_storage(std::string_view name, FieldStorage& storage) {
  for (FieldStorage s : {FieldStorage::kF32, FieldStorage::kBF16, FieldStorage::kFP8, FieldStorage::kInt8, FieldStorage::kInt4,
                         FieldStorage::kSign})
    if (name == field_storage_name(s)) return storage = s, true;
  return false;
}

bool parse_field_reduce(std::string_view name, FieldReduce& reduce) {
  for (FieldReduce r : {FieldReduce::kMax, FieldReduce::kMin, FieldReduce::kMean, FieldReduce::kStd, FieldReduce::kNorm})
    if (name == field_reduce_name(r)) return reduce = r, true;
  return false;
}

std::string plural(size_t n, const char* word) { return fmt::format("{} {}{}", n, word, n == 1 ? "" : "s"); }

// ---- parser ------------------------------------------------------------------------------------

// A call argument: a bare name (an axis or a value, decided by the function) or an expression.
struct Argument {
  std::string bare;  // non-empty: a lone name
  FlowExpr expr;     // otherwise
  FlowLoc loc;
};

class Parser {
 public:
  Parser(std::string_view text, std::string_view name, std::string_view origin)
      : tokens_(Lexer(text).run()), builder_(std::string(name), std::string(origin)) {}

  Flow run() {
    while (peek().kind != TokenKind::kEnd) {
      if (peek().kind != TokenKind::kNewline) statement();
      expect_end_of_statement();
    }
    if (!builder_.has_selection())
      flow_fail(peek().loc, "flow has no selection: end it with select topk(score), select threshold(score, c) or "
                "select none");
    return builder_.build();
  }

 private:
  struct Binding {
    FlowExpr value;
    FlowLoc loc;
  };

  const Token& peek(size_t ahead = 0) const { return tokens_[std::min(pos_ + ahead, tokens_.size() - 1)]; }
  const Token& next() { return tokens_[std::min(pos_++, tokens_.size() - 1)]; }
  bool is_punct(std::string_view p, size_t ahead = 0) const {
    return peek(ahead).kind == TokenKind::kPunct && peek(ahead).text == p;
  }
  bool accept(std::string_view p) { return is_punct(p) ? (++pos_, true) : false; }
  void expect(std::string_view p, std::string_view where) {
    if (!accept(p)) flow_fail(peek().loc, "expected '{}' {}, got '{}'", p, where, peek().text);
  }
  const Token& expect_name(std::string_view what) {
    if (peek().kind != TokenKind::kName) flow_fail(peek().loc, "expected {}, got '{}'", what, peek().text);
    return next();
  }
  void expect_end_of_statement() {
    if (peek().kind == TokenKind::kEnd) return;
    if (peek().kind != TokenKind::kNewline)
      flow_fail(peek().loc, "unexpected '{}' after the statement (one statement per line)", peek().text);
    ++pos_;
  }

  void statement() {
    const Token& keyword = expect_name("a statement (field, let, save, stage or select)");
    if (builder_.has_selection()) {
      if (keyword.text == "select") flow_fail(keyword.loc, "more than one selection (the first is at {}:{})",
                                             select_loc_.line, select_loc_.column);
      flow_fail(keyword.loc, "'{}' after the selection (at {}:{}): select must be the last statement", keyword.text,
                select_loc_.line, select_loc_.column);
    }
    if (keyword.text == "field") return field_statement(keyword.loc);
    if (keyword.text == "let") return let_statement();
    if (keyword.text == "save") return save_statement(keyword.loc);
    if (keyword.text == "select") return select_statement(keyword.loc);
    if (keyword.text == "stage") return stage_statement(keyword.loc);
    flow_fail(keyword.loc, "expected a statement (field, let, save, stage or select), got '{}'", keyword.text);
  }

  // Checks that `name` may be defined here.
  void check_new_name(const Token& name) {
    if (is_reserved(name.text)) flow_fail(name.loc, "cannot define '{}': it is a reserved name", name.text);
    auto it = names_.find(name.text);
    if (it != names_.end())
      flow_fail(name.loc, "redefining '{}' (first defined at {}:{})", name.text, it->second.loc.line, it->second.loc.column);
  }

  void field_statement(FlowLoc loc) {
    const Token& name = expect_name("a field name");
    check_new_name(name);
    expect("=", "after the field name");
    const Token& reduce_name = expect_name("a field reduction (max, min, mean, std or norm)");
    FieldReduce reduce;
    if (!parse_field_reduce(reduce_name.text, reduce))
      flow_fail(reduce_name.loc, "unknown field reduction '{}' (expected max, min, mean, std or norm)", reduce_name.text);
    expect("(", "after the reduction");
    const Token& keys = expect_name("k");
    if (keys.text != "k") flow_fail(keys.loc, "a field reduces the page's keys: write {}(k), not {}({})", reduce_name.text, reduce_name.text, keys.text);
    int32_t sub = 1;
    FieldStorage storage = FieldStorage::kF32;
    std::map<std::string, FlowLoc> seen;
    while (accept(",")) {
      const Token& key = expect_name("a field option (sub= or store=)");
      if (key.text != "sub" && key.text != "store")
        flow_fail(key.loc, "unknown field option '{}' (expected sub=N, sub=page or store=TYPE)", key.text);
      if (!seen.emplace(key.text, key.loc).second) flow_fail(key.loc, "field option '{}' is given twice", key.text);
      expect("=", "after " + key.text);
      if (key.text == "sub") sub = field_sub();
      else storage = field_storage();
    }
    expect(")", "to close the field reduction");
    names_[name.text] = {builder_.field(name.text, reduce, sub, storage, loc), name.loc};
  }

  FieldStorage field_storage() {
    const Token& value = next();
    FieldStorage storage = FieldStorage::kF32;
    if (value.kind != TokenKind::kName || !parse_field_storage(value.text, storage))
      flow_fail(value.loc, "store takes f32, bf16, fp8, int8, int4 or sign, got '{}'", value.text);
    return storage;
  }

  int32_t field_sub() {
    const Token& value = next();
    if (value.kind == TokenKind::kName && value.text == "page") return kFlowSubPage;
    if (value.kind != TokenKind::kNumber || value.number != std::floor(value.number) || value.number < 1 || value.number > 1e6)
      flow_fail(value.loc, "sub takes a positive integer or 'page', got '{}'", value.text);
    return static_cast<int32_t>(value.number);
  }

  void let_statement() {
    const Token& name = expect_name("a name");
    check_new_name(name);
    expect("=", "after the name");
    names_[name.text] = {expression(), name.loc};
  }

  void save_statement(FlowLoc loc) {
    expect("(", "after save");
    const Token& state = expect_name("a state name");
    expect(",", "after the state name");
    FlowExpr value = expression();
    expect(")", "to close save");
    builder_.save(state.text, value, loc);
  }

  void stage_statement(FlowLoc loc) {
    const Token& kind = expect_name("topk");
    if (kind.text != "topk") flow_fail(kind.loc, "unknown stage '{}' (expected stage topk(score, factor))", kind.text);
    expect("(", "after topk");
    FlowExpr score = expression();
    expect(",", "after the score (stage topk takes (score, factor))");
    const Token& at = peek();
    FlowExpr factor = expression();
    if (factor.node()->op != FlowOp::kNumber) flow_fail(at.loc, "stage topk(score, factor): factor must be a number");
    expect(")", "to close stage topk");
    builder_.stage_topk(score, factor.node()->number, loc);
  }

  void select_statement(FlowLoc loc) {
    const Token& kind = expect_name("topk, threshold or none");
    select_loc_ = loc;
    if (kind.text == "none") return builder_.select_none(loc);
    if (kind.text != "topk" && kind.text != "threshold")
      flow_fail(kind.loc, "unknown selection '{}' (expected topk, threshold or none)", kind.text);
    expect("(", "after " + kind.text);
    FlowExpr score = expression();
    if (kind.text == "topk") {
      expect(")", "to close topk (it takes one argument, the score)");
      return builder_.select_topk(score, loc);
    }
    expect(",", "after the score (threshold takes (score, c))");
    const Token& at = peek();
    FlowExpr threshold = expression();
    if (threshold.node()->op != FlowOp::kNumber) flow_fail(at.loc, "threshold(score, c): c must be a number");
    expect(")", "to close threshold");
    builder_.select_threshold(score, threshold.node()->number, loc);
  }

  // ---- expressions ----

  FlowExpr expression() {
    FlowExpr left = additive();
    static constexpr std::pair<std::string_view, FlowOp> kCompare[] = {
        {">", FlowOp::kGt}, {">=", FlowOp::kGe}, {"<", FlowOp::kLt}, {"<=", FlowOp::kLe}};
    for (auto [text, op] : kCompare)
      if (is_punct(text)) {
        FlowLoc loc = next().loc;
        return apply(op, left, additive(), loc);
      }
    return left;
  }

  FlowExpr additive() {
    FlowExpr left = term();
    while (is_punct("+") || is_punct("-")) {
      const Token& op = next();
      left = apply(op.text == "+" ? FlowOp::kAdd : FlowOp::kSub, left, term(), op.loc);
    }
    return left;
  }

  FlowExpr term() {
    FlowExpr left = unary();
    while (is_punct("*") || is_punct("/")) {
      const Token& op = next();
      left = apply(op.text == "*" ? FlowOp::kMul : FlowOp::kDiv, left, unary(), op.loc);
    }
    return left;
  }

  // Every nesting (parentheses, unary minus, a call's arguments) passes through unary(), so its
  // depth bounds the parser's recursion: 4 KB of '(' overflowed the stack (fuzz_flow_text).
  static constexpr int kMaxNesting = 128;

  FlowExpr unary() {
    const Token& token = next();
    struct Nesting {
      int& depth;
      ~Nesting() { --depth; }
    } nesting{++nesting_};
    if (nesting_ > kMaxNesting) flow_fail(token.loc, "expressions nest deeper than {} levels", kMaxNesting);
    if (token.kind == TokenKind::kPunct && token.text == "-") return apply(FlowOp::kNeg, unary(), {}, token.loc);
    if (token.kind == TokenKind::kNumber) return number(token.number, token.loc);
    if (token.kind == TokenKind::kPunct && token.text == "(") {
      FlowExpr inner = expression();
      expect(")", "to close '('");
      return inner;
    }
    if (token.kind != TokenKind::kName) flow_fail(token.loc, "expected an expression, got '{}'", token.text);
    if (is_punct("(")) return call(token);
    return value_of(token.text, token.loc);
  }

  FlowExpr value_of(const std::string& name, FlowLoc loc) {
    if (name == "q") return builder_.q(loc);
    if (name == "D") return builder_.head_dim(loc);
    if (name == "scale") return builder_.scale(loc);
    if (name == "P") return builder_.page_size(loc);
    if (name == "inf") return number(INFINITY, loc);
    auto it = names_.find(name);
    if (it != names_.end()) return it->second.value;
    if (name == "k") flow_fail(loc, "'k' (the page's keys) can only be reduced in a field, e.g. field kmax = max(k)");
    FlowAxis axis;
    if (parse_axis(name, axis)) flow_fail(loc, "'{}' is an axis: it can only be the second argument of sum, mean, max or min", name);
    if (is_reserved(name)) flow_fail(loc, "'{}' is a function: call it with arguments", name);
    flow_fail(loc, "unknown name '{}'{}", name, declared_fields());
  }

  std::string declared_fields() const {
    std::string list;
    for (const auto& [name, binding] : names_)
      if (binding.value.node()->op == FlowOp::kField) list += (list.empty() ? "" : ", ") + name;
    return list.empty() ? "" : " (fields: " + list + ")";
  }

  std::vector<Argument> arguments() {
    std::vector<Argument> args;
    expect("(", "after the function name");
    if (accept(")")) return args;
    do {
      if (peek().kind == TokenKind::kName && (is_punct(",", 1) || is_punct(")", 1))) {
        args.push_back({peek().text, FlowExpr(), peek().loc});
        ++pos_;
      } else {
        FlowLoc loc = peek().loc;
        args.push_back({std::string(), expression(), loc});
      }
    } while (accept(","));
    expect(")", "to close the argument list");
    return args;
  }

  FlowExpr operand(const Argument& arg) { return arg.bare.empty() ? arg.expr : value_of(arg.bare, arg.loc); }

  FlowExpr call(const Token& function) {
    const std::string& name = function.text;
    FlowLoc loc = function.loc;
    if (name == "field" || name == "let" || name == "save" || name == "select")
      flow_fail(loc, "'{}' is a statement: it must start its own line", name);
    if (name == "load") return load(loc);
    std::vector<Argument> args = arguments();
    if (const FunctionInfo* f = find_function(name)) {
      if (args.size() != static_cast<size_t>(f->arity))
        flow_fail(loc, "'{}' takes {}, got {}", name, plural(static_cast<size_t>(f->arity), "argument"), args.size());
      return apply(f->op, operand(args[0]), f->arity == 2 ? operand(args[1]) : FlowExpr(), loc);
    }
    if (name == "max" || name == "min") return max_min(name, args, loc);
    if (name == "sum" || name == "mean") {
      if (args.size() != 2) flow_fail(loc, "'{}' takes (x, axis), got {}", name, plural(args.size(), "argument"));
      return reduce(name == "sum" ? FlowOp::kReduceSum : FlowOp::kReduceMean, operand(args[0]), axis(args[1]), loc);
    }
    if (name == "std" || name == "norm") flow_fail(loc, "'{}' is a field reduction: declare field x = {}(k)", name, name);
    flow_fail(loc, "unknown function '{}'", name);
  }

  FlowExpr max_min(const std::string& name, const std::vector<Argument>& args, FlowLoc loc) {
    if (args.size() != 2) flow_fail(loc, "'{}' takes (a, b) or (x, axis), got {}", name, plural(args.size(), "argument"));
    FlowAxis ax;
    if (!args[1].bare.empty() && parse_axis(args[1].bare, ax))
      return reduce(name == "max" ? FlowOp::kReduceMax : FlowOp::kReduceMin, operand(args[0]), ax, loc);
    return apply(name == "max" ? FlowOp::kMax : FlowOp::kMin, operand(args[0]), operand(args[1]), loc);
  }

  FlowAxis axis(const Argument& arg) {
    FlowAxis ax;
    if (arg.bare.empty()) flow_fail(arg.loc, "expected an axis (heads, sub or feat)");
    if (!parse_axis(arg.bare, ax)) flow_fail(arg.loc, "unknown axis '{}' (expected heads, sub or feat)", arg.bare);
    return ax;
  }

  FlowExpr load(FlowLoc loc) {
    expect("(", "after load");
    const Token& state = expect_name("a state name");
    expect(")", "to close load (it takes one state name)");
    return builder_.load(state.text, loc);
  }

  std::vector<Token> tokens_;
  size_t pos_ = 0;
  int nesting_ = 0;  // unary()'s depth
  FlowBuilder builder_;
  std::map<std::string, Binding> names_;  // fields and lets
  FlowLoc select_loc_;
};

// ---- printer -----------------------------------------------------------------------------------

std::string number_text(float value) { return std::isinf(value) ? (value < 0 ? "-inf" : "inf") : fmt::format("{}", value); }

class Printer {
 public:
  explicit Printer(const Flow& flow) : flow_(flow) {
    auto clashes = [&] {
      for (const FlowField& f : flow.fields)
        if (f.name.size() > prefix_.size() && f.name.starts_with(prefix_) &&
            f.name.find_first_not_of("0123456789", prefix_.size()) == std::string::npos)
          return true;
      return false;
    };
    while (clashes()) prefix_ += "_";
  }

  std::string run() const {
    std::string out = fmt::format("# flow {}: canonical form\n", flow_.name);
    for (const FlowField& f : flow_.fields) {
      std::string sub = f.sub == 1 ? "" : f.sub == kFlowDimPage ? ", sub=page" : fmt::format(", sub={}", f.sub);
      if (f.storage != FieldStorage::kF32) sub += fmt::format(", store={}", field_storage_name(f.storage));
      out += fmt::format("field {} = {}(k{})\n", f.name, field_reduce_name(f.reduce), sub);
    }
    for (size_t i = 0; i < flow_.instrs.size(); ++i)
      if (flow_op_kind(flow_.instrs[i].op) != FlowOpKind::kLeaf)
        out += fmt::format("let {}{} = {}\n", prefix_, i, call(flow_.instrs[i]));
    for (const FlowSave& s : flow_.saves)
      out += fmt::format("save({}, {})\n", flow_.state[static_cast<size_t>(s.slot)], operand(s.value));
    for (const FlowStage& s : flow_.stages) out += fmt::format("stage topk({}, {})\n", operand(s.value), number_text(s.factor));
    switch (flow_.select.kind) {
      case FlowSelectKind::kNone: return out + "select none\n";
      case FlowSelectKind::kTopK: return out + fmt::format("select topk({})\n", operand(flow_.select.value));
      case FlowSelectKind::kThreshold:
        return out + fmt::format("select threshold({}, {})\n", operand(flow_.select.value), number_text(flow_.select.threshold));
    }
    return out;
  }

 private:
  std::string call(const FlowInstr& x) const {
    std::string args = operand(x.a);
    if (x.b >= 0) args += ", " + operand(x.b);
    if (flow_op_kind(x.op) == FlowOpKind::kReduce) args += fmt::format(", {}", flow_axis_name(x.axis));
    return fmt::format("{}({})", flow_op_name(x.op), args);
  }

  std::string operand(int32_t id) const {
    const FlowInstr& x = flow_.instrs[static_cast<size_t>(id)];
    switch (x.op) {
      case FlowOp::kField: return flow_.fields[static_cast<size_t>(x.index)].name;
      case FlowOp::kLoad: return fmt::format("load({})", flow_.state[static_cast<size_t>(x.index)]);
      case FlowOp::kNumber: return number_text(x.number);
      default: break;
    }
    if (flow_op_kind(x.op) == FlowOpKind::kLeaf) return flow_op_name(x.op);
    return fmt::format("{}{}", prefix_, id);
  }

  const Flow& flow_;
  std::string prefix_ = "t";
};

}  // namespace

Flow parse_flow(std::string_view text, std::string_view name, std::string_view origin) {
  try {
    return Parser(text, name, origin).run();
  } catch (const Error& e) {
    if (origin.empty()) throw;
    throw Error(fmt::format("{}:{}", origin, e.what()));
  }
}

Flow load_flow_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot read flow file '{}': {}", path.string(), std::strerror(errno));
  std::ostringstream text;
  text << in.rdbuf();
  return parse_flow(text.str(), path.stem().string(), path.string());
}

std::string to_text(const Flow& flow) { return Printer(flow).run(); }

}  // namespace vortex
