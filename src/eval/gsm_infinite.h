// GSM-Infinite symbolic problems: a port of the public generator (Infini-AI-Lab/gsm_infinite,
// gsm-infinite/data/symbolic/generate_symbolic.py + generate_payload.py + utils.py) that gives the
// same examples, in the same order, for the same seed and arguments — bit for bit.
//
// One problem: N = op + int(length · 828 / 9668) variables are drawn from V000000…V999999. The
// first op of them form a random tree whose root is assigned a constant in 0..10 and every other
// node "parent", "parent + 1" or "parent - 1"; the other N − op form a second tree that is never
// rooted in a constant (noise that looks the same). All assignments are shuffled into the
// context; the question asks which variables equal a value taken by one of the op tree's nodes.
// The reference solution walks the tree depth-first from the constant.
//
// Upstream behaviour kept on purpose (it decides which examples come out):
//   - ops run over range(1, op_max, stride): op_max is exclusive, and ops below op_min are still
//     generated (drawing from the generator) and then dropped;
//   - lengths "8k" mean 8000, not 8192;
//   - upstream hard-codes seed 42: SymbolicOptions::seed = 42 reproduces the published generator.
// Limits: n ≤ 1,000,000 (the number of variable names), so length ≤ about 11.6M.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "eval/python_random.h"

namespace vortex {

constexpr int64_t kGsmVariableCount = 1000000;  // V000000 … V999999

struct SymbolicOptions {
  int64_t seed = 42;
  int64_t length = 0;          // noise context length; 8k = 8000 (see parse_gsm_length)
  int64_t op_min = 1;          // first op written (ops below it are generated and dropped)
  int64_t op_max = 40;         // exclusive, as upstream's range(1, max_op, stride)
  int64_t stride = 1;
  int64_t examples_per_op = 50;
};

struct SymbolicExample {
  int64_t op = 0, id = 0, length = 0, n = 0;
  std::string prompt;    // the user message: <context>…</context> and the question
  std::string problem;   // the context alone: "assign V… = …." sentences joined by spaces
  std::string question;  // the question alone
  std::string solution;  // the reference depth-first solution, ending "ANSWER:\nV…, V…\n"
  int64_t answer_q = 0;  // the value asked about
  std::vector<std::string> answer_list;  // variables equal to answer_q, in tree-node order
};

// "0", "8k"/"8K" (= 8000), "16k", "32k" or a decimal integer → length; vortex::Error otherwise.
int64_t parse_gsm_length(std::string_view text);
// int(length * 828 / 9668): noise variables added to op for a given length.
int64_t gsm_noise_variables(int64_t length);
// Throws vortex::Error naming the bad option (op range, stride, examples, length, n too large).
void validate_symbolic_options(const SymbolicOptions& options);

// One FindGraphGenerator: a seeded stream of problems. generate() draws exactly what upstream's
// get_benchmark_info(length, None, op, op, id, 1.0) draws.
class SymbolicGenerator {
 public:
  explicit SymbolicGenerator(int64_t seed) : rng_(seed) {}

  // One problem with `op` tree nodes and gsm_noise_variables(length) noise nodes.
  SymbolicExample generate(int64_t op, int64_t length, int64_t id);

 private:
  PyRandom rng_;  // FindGraphGenerator.rng: every draw of every problem comes from it, in order
};

// Every example of a dataset in upstream order (op ascending, then id), handed to `sink`.
void generate_symbolic(const SymbolicOptions& options, const std::function<void(const SymbolicExample&)>& sink);

// One example as Python's json.dumps writes it (ensure_ascii, ", " and ": "), keys in the order
// op, id, length, n, prompt, problem, question, solution, answer_q, answer_list; no newline.
std::string symbolic_example_json(const SymbolicExample& example);

}  // namespace vortex
