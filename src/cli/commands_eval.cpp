// vortex gsm-inf symbolic — GSM-Infinite symbolic problems as JSON lines, identical to the public
// generator's for the same seed and arguments (see src/eval/gsm_infinite.h).
#include "cli/commands_eval.h"

#include <fstream>
#include <iostream>
#include <memory>

#include "core/error.h"
#include "eval/gsm_infinite.h"

namespace vortex::cli {
namespace {

struct SymbolicArgs {
  int64_t seed = 42;
  std::string length = "0";
  int64_t min_op = 1, max_op = 40, stride = 1, examples_per_op = 50;
  std::string out;
};

void run_symbolic(const SymbolicArgs& a) {
  SymbolicOptions options;
  options.seed = a.seed;
  options.length = parse_gsm_length(a.length);
  options.op_min = a.min_op;
  options.op_max = a.max_op;
  options.stride = a.stride;
  options.examples_per_op = a.examples_per_op;
  validate_symbolic_options(options);  // before creating the output file

  std::ofstream file;
  if (!a.out.empty()) {
    file.open(a.out, std::ios::binary | std::ios::trunc);
    check(file.is_open(), "--out: cannot create {}", a.out);
  }
  std::ostream& out = a.out.empty() ? std::cout : file;
  generate_symbolic(options, [&](const SymbolicExample& example) {
    out << symbolic_example_json(example) << '\n';
    check(static_cast<bool>(out), "--out: writing {} failed", a.out.empty() ? "stdout" : a.out);
  });
  out.flush();
  check(static_cast<bool>(out), "--out: writing {} failed", a.out.empty() ? "stdout" : a.out);
}

}  // namespace

void add_gsm_commands(CLI::App& app) {
  auto* gsm = app.add_subcommand("gsm-inf", "GSM-Infinite: generate problems of any difficulty and context length");
  gsm->require_subcommand(1);
  auto sym = std::make_shared<SymbolicArgs>();
  auto* s = gsm->add_subcommand(
      "symbolic", "Symbolic problems as JSON lines, bit-identical to the public generator's (ops min-op … max-op−1)");
  s->add_option("--seed", sym->seed, "Generator seed (the published datasets use 42)")->capture_default_str();
  s->add_option("--length", sym->length, "Noise context length: 0, 8k, 16k, 32k or an integer (8k = 8000)")
      ->capture_default_str();
  s->add_option("--min-op", sym->min_op, "First op written (lower ops are still drawn, as upstream)")->capture_default_str();
  s->add_option("--max-op", sym->max_op, "Exclusive upper op, as upstream's range(1, max-op, stride)")->capture_default_str();
  s->add_option("--stride", sym->stride, "Step between ops")->capture_default_str();
  s->add_option("--examples-per-op", sym->examples_per_op, "Examples generated for each op")->capture_default_str();
  s->add_option("--out", sym->out, "Write the JSON lines to this file instead of stdout");
  s->callback([sym] { run_symbolic(*sym); });
}

}  // namespace vortex::cli
