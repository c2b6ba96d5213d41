// GSM-Infinite symbolic generator. Each function names the upstream function whose draws it
// reproduces; the order of draws per problem is:
//   sample(N of 1,000,000) → shuffle(op nodes) → randint per op-tree edge → choices per edge →
//   randint(0, 10) for the root → choice(node values) → [noise: shuffle → randint per edge →
//   choices per edge] → shuffle(all assignments).
#include "eval/gsm_infinite.h"

#include <array>
#include <charconv>

#include "core/error.h"

namespace vortex {
namespace {

// Upstream's operations list ['', ' + 1', ' - 1'], in that order: choices() indexes into it.
enum class Step : uint8_t { kSame = 0, kPlusOne = 1, kMinusOne = 2 };
constexpr std::array<int32_t, 3> kStepDelta = {0, 1, -1};
constexpr std::array<std::string_view, 3> kStepText = {"", " + 1", " - 1"};

// One context statement: "assign <child> = <constant>" or "assign <child> = <parent><step>".
struct Assignment {
  int32_t child = 0;        // variable index: the name is V%06d
  int32_t parent = -1;      // variable index, or -1 when the right-hand side is a constant
  int32_t constant = 0;     // the constant, when parent < 0
  Step step = Step::kSame;
  int32_t child_node = -1;  // position in the op tree's node list; -1 for a noise statement
  int32_t parent_node = -1; // position of the parent in the op tree's node list
};

void append_variable(std::string& out, int32_t index) {
  char digits[6];
  for (int i = 5; i >= 0; --i, index /= 10) digits[i] = static_cast<char>('0' + index % 10);
  out += 'V';
  out.append(digits, 6);
}

std::string variable_name(int32_t index) {
  std::string name;
  append_variable(name, index);
  return name;
}

// create_forest(rng, nodes, 1): shuffles `nodes` in place and returns each node's parent position
// (node 0 is the root; parent[i] < i for i ≥ 1).
std::vector<int32_t> create_tree(PyRandom& rng, std::vector<int32_t>& nodes) {
  rng.shuffle(nodes);
  std::vector<int32_t> parent(nodes.size(), -1);
  for (size_t i = 1; i < nodes.size(); ++i) parent[i] = static_cast<int32_t>(rng.randint(0, static_cast<int64_t>(i) - 1));
  return parent;
}

std::vector<Step> draw_steps(PyRandom& rng, size_t edges) {
  std::vector<size_t> picks = rng.choices_indices(kStepText.size(), edges);
  std::vector<Step> steps(edges);
  for (size_t i = 0; i < edges; ++i) steps[i] = static_cast<Step>(picks[i]);
  return steps;
}

// The op tree after its draws: what generate_output returns.
struct OpTree {
  std::vector<int32_t> nodes;   // variable indices in node_values' (insertion) order
  std::vector<int32_t> values;  // value of each node (same order)
  std::vector<Assignment> statements;
  int32_t query_value = 0;
};

// generate_output: the root's constant, then every edge in order (each parent precedes its
// child, so upstream's repeat-until-all-processed loop finishes in one pass), then the query value.
OpTree build_op_tree(PyRandom& rng, std::vector<int32_t> nodes) {
  std::vector<int32_t> parent = create_tree(rng, nodes);
  std::vector<Step> steps = draw_steps(rng, nodes.size() - 1);
  OpTree tree;
  tree.values.assign(nodes.size(), 0);
  tree.values[0] = static_cast<int32_t>(rng.randint(0, 10));
  tree.statements.push_back({.child = nodes[0], .constant = tree.values[0], .child_node = 0});
  for (size_t i = 1; i < nodes.size(); ++i) {
    Step step = steps[i - 1];
    tree.values[i] = tree.values[parent[i]] + kStepDelta[static_cast<size_t>(step)];
    tree.statements.push_back({.child = nodes[i], .parent = nodes[parent[i]], .step = step,
                               .child_node = static_cast<int32_t>(i), .parent_node = parent[i]});
  }
  tree.query_value = tree.values[rng.choice_index(tree.values.size())];
  tree.nodes = std::move(nodes);
  return tree;
}

// create_forest + generate_filler for the noise variables: a tree whose root is never assigned.
void append_noise(PyRandom& rng, std::vector<int32_t> nodes, std::vector<Assignment>& statements) {
  std::vector<int32_t> parent = create_tree(rng, nodes);
  std::vector<Step> steps = draw_steps(rng, nodes.size() - 1);
  for (size_t i = 1; i < nodes.size(); ++i) {
    statements.push_back({.child = nodes[i], .parent = nodes[parent[i]], .step = steps[i - 1]});
  }
}

void append_right_side(std::string& out, const Assignment& a) {
  if (a.parent < 0) {
    out += std::to_string(a.constant);
  } else {
    append_variable(out, a.parent);
    out += kStepText[static_cast<size_t>(a.step)];
  }
}

// prepare_payload: "assign X = Y." sentences joined by single spaces.
std::string context_text(const std::vector<Assignment>& statements) {
  std::string out;
  out.reserve(statements.size() * 24);
  for (size_t i = 0; i < statements.size(); ++i) {
    if (i) out += ' ';
    out += "assign ";
    append_variable(out, statements[i].child);
    out += " = ";
    append_right_side(out, statements[i]);
    out += '.';
  }
  return out;
}

// generate_task's with_solution branch: constants first, then a depth-first walk from them in
// which each parent's pending statements are taken last-in-first-out (in context order).
std::string solution_text(const OpTree& tree, const std::vector<Assignment>& statements) {
  std::string s = "First, there are such direct assignment(s):\n";
  std::vector<int32_t> stack, order;
  std::vector<std::vector<const Assignment*>> pending(tree.nodes.size());
  for (const Assignment& a : statements) {
    if (a.child_node < 0) continue;  // noise: not in node_values
    if (a.parent < 0) {
      stack.push_back(a.child_node);
      order.push_back(a.child_node);
      append_variable(s, a.child);
      s += " = " + std::to_string(a.constant) + ";\n";
    } else {
      pending[a.parent_node].push_back(&a);
    }
  }
  s += "\nFrom these direct assignment(s), we have: \n";
  while (!stack.empty()) {
    int32_t top = stack.back();
    if (pending[top].empty()) {
      s += "No other variables can be derived from ";
      append_variable(s, tree.nodes[top]);
      s += ";\n";
      stack.pop_back();
      continue;
    }
    const Assignment& a = *pending[top].back();
    pending[top].pop_back();
    stack.push_back(a.child_node);
    order.push_back(a.child_node);
    append_variable(s, a.child);
    s += " = ";
    append_right_side(s, a);
    s += " = ";
    // Upstream writes "<parent value> + 1 =" and then the value with no space: "5 + 1 =6".
    if (a.step != Step::kSame) {
      s += std::to_string(tree.values[a.parent_node]);
      s += kStepText[static_cast<size_t>(a.step)];
      s += " =";
    }
    s += std::to_string(tree.values[a.child_node]) + ";\n";
  }
  s += "\nNow we have done all the calculations. Derived variables are:\n";
  std::string answer;
  for (int32_t node : order) {
    append_variable(s, tree.nodes[node]);
    s += " = " + std::to_string(tree.values[node]) + ";\n";
    if (tree.values[node] != tree.query_value) continue;
    if (!answer.empty()) answer += ", ";
    append_variable(answer, tree.nodes[node]);
  }
  s += "\nNow we have finished this problem. ANSWER:\n" + answer + "\n";
  return s;
}

// utils.get_symbolic_prompt_query.
std::string question_text(int32_t value) {
  return "The context contains relationships between variables. These relationships are independent mathematical "
         "equations that are all satisfied simultaneously.\nUsing only these relationships, determine which variables "
         "(if any) from which values can be derived are equal to " +
         std::to_string(value) +
         ".\nShow your step-by-step reasoning and calculations, and then conclude your final answer in a sentence.";
}

// Python json.dumps of a str with ensure_ascii=True: \" \\ \n \r \t \b \f, other controls and
// everything outside printable ASCII as \u00XX / UTF-16 units in lowercase hex.
void append_json_string(std::string& out, std::string_view text) {
  auto append_unit = [&out](uint32_t unit) {
    static constexpr char kHex[] = "0123456789abcdef";
    out += "\\u";
    for (int shift = 12; shift >= 0; shift -= 4) out += kHex[(unit >> shift) & 0xf];
  };
  out += '"';
  for (size_t i = 0; i < text.size(); ++i) {
    unsigned char c = static_cast<unsigned char>(text[i]);
    switch (c) {
      case '"': out += "\\\""; continue;
      case '\\': out += "\\\\"; continue;
      case '\n': out += "\\n"; continue;
      case '\r': out += "\\r"; continue;
      case '\t': out += "\\t"; continue;
      case '\b': out += "\\b"; continue;
      case '\f': out += "\\f"; continue;
      default: break;
    }
    if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
      continue;
    }
    if (c < 0x80) {
      append_unit(c);
      continue;
    }
    // UTF-8 sequence → code point → one or two UTF-16 units (text here is valid UTF-8).
    int extra = c >= 0xf0 ? 3 : c >= 0xe0 ? 2 : 1;
    uint32_t cp = c & (0x3f >> extra);
    for (int k = 0; k < extra && i + 1 < text.size(); ++k) cp = (cp << 6) | (static_cast<unsigned char>(text[++i]) & 0x3f);
    if (cp >= 0x10000) {
      cp -= 0x10000;
      append_unit(0xd800 + (cp >> 10));
      append_unit(0xdc00 + (cp & 0x3ff));
    } else {
      append_unit(cp);
    }
  }
  out += '"';
}

int64_t last_op(const SymbolicOptions& o) { return 1 + (o.op_max - 2) / o.stride * o.stride; }

}  // namespace

int64_t parse_gsm_length(std::string_view text) {
  std::string_view digits = text;
  int64_t scale = 1;
  if (!digits.empty() && (digits.back() == 'k' || digits.back() == 'K')) {
    digits.remove_suffix(1);
    scale = 1000;
  }
  int64_t value = 0;
  bool all_digits = !digits.empty() && digits.size() <= 12 && digits.find_first_not_of("0123456789") == std::string_view::npos;
  if (all_digits) std::from_chars(digits.data(), digits.data() + digits.size(), value);
  check(all_digits, "--length: '{}' is not a length (give 0, 8k, 16k, 32k or a non-negative integer; 8k = 8000)", text);
  return value * scale;
}

int64_t gsm_noise_variables(int64_t length) {
  return static_cast<int64_t>(static_cast<double>(length * 828) / 9668.0);
}

void validate_symbolic_options(const SymbolicOptions& o) {
  check(o.op_min >= 1, "--min-op must be at least 1, got {}", o.op_min);
  check(o.op_max > o.op_min && o.op_max <= kGsmVariableCount + 1,
        "--max-op {} must be above --min-op {} (max-op is exclusive, as upstream: ops are range(1, max-op, stride)) "
        "and at most {}", o.op_max, o.op_min, kGsmVariableCount + 1);
  check(o.stride >= 1, "--stride must be at least 1, got {}", o.stride);
  check(o.examples_per_op >= 0, "--examples-per-op must be non-negative, got {}", o.examples_per_op);
  check(o.length >= 0 && o.length <= int64_t{1} << 50, "--length must be between 0 and 2^50, got {}", o.length);
  check(last_op(o) >= o.op_min, "no op is written: range(1, {}, {}) has no op at or above --min-op {}", o.op_max,
        o.stride, o.op_min);
  int64_t n_max = last_op(o) + gsm_noise_variables(o.length);
  check(n_max <= kGsmVariableCount,
        "op {} with --length {} needs {} variables, more than the {} names V000000…V999999", last_op(o), o.length,
        n_max, kGsmVariableCount);
}

SymbolicExample SymbolicGenerator::generate(int64_t op, int64_t length, int64_t id) {
  int64_t n = op + gsm_noise_variables(length);
  check(op >= 1 && n <= kGsmVariableCount, "internal: symbolic problem with op {} and n {}", op, n);
  std::vector<uint64_t> drawn = rng_.sample_indices(kGsmVariableCount, static_cast<uint64_t>(n));
  std::vector<int32_t> variables(drawn.begin(), drawn.end());
  OpTree tree = build_op_tree(rng_, std::vector<int32_t>(variables.begin(), variables.begin() + op));
  std::vector<Assignment> statements = std::move(tree.statements);
  if (n > op) append_noise(rng_, std::vector<int32_t>(variables.begin() + op, variables.end()), statements);
  rng_.shuffle(statements);

  SymbolicExample ex;
  ex.op = op;
  ex.id = id;
  ex.length = length;
  ex.n = n;
  ex.problem = context_text(statements);
  ex.question = question_text(tree.query_value);
  ex.prompt = "<context>\n" + ex.problem + "\n</context>\n\n" + ex.question;
  ex.solution = solution_text(tree, statements);
  ex.answer_q = tree.query_value;
  for (size_t i = 0; i < tree.nodes.size(); ++i) {
    if (tree.values[i] == tree.query_value) ex.answer_list.push_back(variable_name(tree.nodes[i]));
  }
  return ex;
}

void generate_symbolic(const SymbolicOptions& options, const std::function<void(const SymbolicExample&)>& sink) {
  validate_symbolic_options(options);
  SymbolicGenerator generator(options.seed);
  for (int64_t op = 1; op < options.op_max; op += options.stride) {
    for (int64_t id = 0; id < options.examples_per_op; ++id) {
      SymbolicExample example = generator.generate(op, options.length, id);
      if (op >= options.op_min) sink(example);  // lower ops are drawn, then dropped, as upstream
    }
  }
}

std::string symbolic_example_json(const SymbolicExample& e) {
  std::string out = "{";
  out.reserve(e.prompt.size() + e.problem.size() + e.question.size() + e.solution.size() + 256);
  auto key = [&out](std::string_view name) {
    if (out.size() > 1) out += ", ";
    append_json_string(out, name);
    out += ": ";
  };
  auto string_field = [&](std::string_view name, std::string_view value) {
    key(name);
    append_json_string(out, value);
  };
  auto int_field = [&](std::string_view name, int64_t value) {
    key(name);
    out += std::to_string(value);
  };
  int_field("op", e.op);
  int_field("id", e.id);
  int_field("length", e.length);
  int_field("n", e.n);
  string_field("prompt", e.prompt);
  string_field("problem", e.problem);
  string_field("question", e.question);
  string_field("solution", e.solution);
  int_field("answer_q", e.answer_q);
  key("answer_list");
  out += '[';
  for (size_t i = 0; i < e.answer_list.size(); ++i) {
    if (i) out += ", ";
    append_json_string(out, e.answer_list[i]);
  }
  out += "]}";
  return out;
}

}  // namespace vortex
