// vortex gsm-inf symbolic — GSM-Infinite symbolic problems as JSON lines, identical to the public
// generator's for the same seed and arguments (see src/eval/gsm_infinite.h).
// vortex eval gsm-inf — the accuracy harness: those problems through the engine under several
// attention specs; accuracy, AUC, sparse-vs-dense agreement α, tokens/s (see src/eval/harness.h).
#include "cli/commands_eval.h"

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>

#include <omp.h>

#include "cli/cli.h"
#include "core/error.h"
#include "eval/gsm_infinite.h"
#include "eval/harness.h"
#include "eval/harness_report.h"
#include "runtime/run_info.h"
#include "vortex/engine.h"

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

struct EvalArgs {
  std::string model, length = "0", ops = "1-8", problems, svg, device = "cpu", precision = "bf16", kv_dtype = "auto", alpha_kv_dtype;
  int64_t seed = 1, examples_per_op = 10, max_tokens = 1024, page_size = 16, tensor_parallel = 1;
  int threads = 0;
  std::vector<std::string> attention;
  bool json = false, no_alpha = false, recall = false;
  SpeculateArgs speculate;
};

// A one-line progress bar, redrawn in place (stderr is a terminal): problems done, and each spec's
// accuracy so far.
void draw_progress(const HarnessProgress& p) {
  constexpr size_t kWidth = 30;
  const size_t filled = kWidth * p.problem / p.problems;
  std::string specs;
  for (const SpecResult& r : p.results)
    specs += fmt::format("  {} {:.1f}%", r.attention, 100.0 * static_cast<double>(r.correct) / static_cast<double>(std::max<int64_t>(r.examples, 1)));
  std::cerr << fmt::format("\r\x1b[K[{}{}] {}/{}{}", std::string(filled, '#'), std::string(kWidth - filled, '.'), p.problem, p.problems, specs);
  if (p.problem == p.problems) std::cerr << '\n';
  std::cerr << std::flush;
}

void write_file(const std::filesystem::path& path, const std::string& text) {
  std::ofstream file(path, std::ios::binary | std::ios::trunc);
  check(file.is_open(), "--svg: cannot create {}", path.string());
  file << text;
  file.flush();
  check(static_cast<bool>(file), "--svg: writing {} failed", path.string());
}

void write_plots(const std::string& dir, const std::vector<SpecResult>& results) {
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  check(!error && std::filesystem::is_directory(dir), "--svg: cannot create the directory {} ({})", dir, error.message());
  write_file(std::filesystem::path(dir) / "accuracy.svg", accuracy_plot_svg(results));
  write_file(std::filesystem::path(dir) / "alpha.svg", alpha_plot_svg(results));
  if (std::any_of(results.begin(), results.end(), [](const SpecResult& r) { return r.recall.count() > 0; })) {
    write_file(std::filesystem::path(dir) / "recall_by_layer.svg", recall_plot_svg(results, true));
    write_file(std::filesystem::path(dir) / "recall_by_position.svg", recall_plot_svg(results, false));
  }
}

std::string eval_heading(const EvalArgs& a, size_t problems) {
  const std::string source = a.problems.empty()
      ? fmt::format("seed {}, length {}, ops {}, {} per op", a.seed, a.length, a.ops, a.examples_per_op)
      : fmt::format("from {}", a.problems);
  return fmt::format("GSM-Infinite symbolic on {}: {} problems ({}), greedy, at most {} tokens each", a.model, problems,
                     source, a.max_tokens);
}

void run_eval(const EvalArgs& a) {
  check(a.threads >= 0, "--threads must be >= 0, got {}", a.threads);
  if (a.threads > 0) omp_set_num_threads(a.threads);
  // Problems first: a bad --ops/--length/--problems fails before the model loads.
  const std::vector<SymbolicExample> problems =
      a.problems.empty() ? generate_problems(eval_problem_options(a.seed, a.length, a.ops, a.examples_per_op))
                         : load_problems(a.problems);
  EngineOptions engine_options;
  engine_options.device = parse_device(a.device);
  engine_options.precision = parse_precision(a.precision);
  engine_options.kv_dtype = parse_kv_dtype(a.kv_dtype);
  engine_options.page_size = a.page_size;
  engine_options.tensor_parallel = a.tensor_parallel;
  auto engine = Engine::open(a.model, engine_options);
  std::unique_ptr<Engine> reference;  // --alpha-kv-dtype: the same model, another KV storage type
  if (!a.alpha_kv_dtype.empty()) {
    check(!a.no_alpha, "--alpha-kv-dtype measures α: drop --no-alpha");
    EngineOptions reference_options = engine_options;
    reference_options.kv_dtype = parse_kv_dtype(a.alpha_kv_dtype);
    reference = Engine::open(a.model, reference_options);
  }
  HarnessOptions options;
  options.dense_alpha_reference = reference.get();
  options.attention = a.attention;
  options.max_tokens = a.max_tokens;
  options.alpha = !a.no_alpha;
  options.recall = a.recall;
  if (!a.speculate.speculate.empty() || a.speculate.gamma != "auto") {
    GenerateRequest probe;
    apply_speculate(a.speculate, probe);
    check(std::any_of(a.attention.begin(), a.attention.end(), [](const std::string& s) { return s.empty() || s == "dense"; }),
          "--speculate drafts for the dense runs, and no --attention is dense: add --attention dense");
    options.speculate = probe.speculate;
    options.gamma = probe.gamma;
  }
  const bool bar = isatty(STDERR_FILENO) != 0;
  std::vector<SpecResult> results;
  try {
    results = run_gsm_harness(*engine, problems, options, bar ? draw_progress : HarnessProgressCallback{});
  } catch (const Error&) {
    if (bar) std::cerr << std::endl;  // the error goes below the progress bar, not onto it
    throw;
  }
  if (!a.svg.empty()) write_plots(a.svg, results);
  if (a.json) {
    nlohmann::json out = harness_results_json(results);
    out["run"] = run_info_json(current_run_info(a.device));
    out["kv_dtype"] = kv_dtype_name(engine->kv_dtype());
    if (reference) out["dense_alpha_kv_dtype"] = kv_dtype_name(reference->kv_dtype());
    print_json(out);
  } else {
    std::string heading = eval_heading(a, problems.size());
    if (engine_options.kv_dtype != KvDtype::kAuto) heading += fmt::format(", KV cache {}", kv_dtype_name(engine->kv_dtype()));
    if (reference) heading += fmt::format(" (dense α against KV cache {})", kv_dtype_name(reference->kv_dtype()));
    std::cout << harness_results_table(results, heading) << std::flush;
  }
}

constexpr const char* kEvalHelp =
    "Accuracy of attention specs on GSM-Infinite symbolic problems: every spec runs greedy generation on the same\n"
    "problems; reports accuracy per op and overall, AUC of accuracy vs op, tokens/s, and for each sparse spec the\n"
    "agreement α = Σ_v min(p_sparse(v), p_dense(v)) with dense along the sparse run's own tokens (mean, and 5th\n"
    "percentile per 2048-position bin). Evaluation seeds are < 1000000: the embedded model's training data uses\n"
    "seeds >= 1000000. α costs two extra scoring passes per problem holding (tokens x vocabulary) floats each\n"
    "(80 MB for the embedded model, GBs for a 152K vocabulary): --no-alpha skips them.";

void add_eval_gsm(CLI::App* eval) {
  auto a = std::make_shared<EvalArgs>();
  auto* g = eval->add_subcommand("gsm-inf", kEvalHelp);
  g->add_option("--model", a->model, "Hugging Face model directory (needs tokenizer.json)")->required();
  g->add_option("--attention", a->attention, "Attention spec (repeatable): dense, quest:budget=…, streaming:sink=…,window=…")
      ->required();
  auto* seed = g->add_option("--seed", a->seed, "Problem generator seed (keep below 1000000: held out from training)")
      ->capture_default_str();
  auto* length = g->add_option("--length", a->length, "Noise context length: 0, 4k, 8k, 16k, 32k or an integer (8k = 8000)")
      ->capture_default_str();
  auto* ops = g->add_option("--ops", a->ops, "Ops evaluated, inclusive: first-last (1-8) or one op (5)")->capture_default_str();
  auto* per_op = g->add_option("--examples-per-op", a->examples_per_op, "Problems per op")->capture_default_str();
  g->add_option("--problems", a->problems, "Evaluate the problems of this JSON-lines file (as `vortex gsm-inf symbolic` "
                "writes) instead of generating them")->excludes(seed)->excludes(length)->excludes(ops)->excludes(per_op);
  g->add_option("--max-tokens", a->max_tokens, "Generated tokens at most per problem (ends earlier at eos)")->capture_default_str();
  g->add_flag("--no-alpha", a->no_alpha, "Skip α (the two scoring passes per problem of each sparse spec)");
  add_speculate_options(g, a->speculate);
  g->add_flag("--recall", a->recall, "Measure every sparse selection against the oracle's: selection recall and attention "
              "mass, per layer and position bin (CPU only; a dense attention pass beside each selection)");
  g->add_option("--svg", a->svg, "Write DIR/accuracy.svg (accuracy vs op), DIR/alpha.svg (α vs position) and, with "
                "--recall, DIR/recall_by_layer.svg and DIR/recall_by_position.svg");
  g->add_flag("--json", a->json, "Print {\"results\": [one object per spec]} instead of the table");
  g->add_option("--device", a->device, "cpu or cuda")->capture_default_str();
  g->add_option("--page-size", a->page_size, "KV page size: 16, 32 or 64, 8 on the CPU (a spec's page= must equal it)")->capture_default_str();
  add_tensor_parallel_option(g, a->tensor_parallel);
  g->add_option("--precision", a->precision, "cuda: bf16 (fast) or f32 (matches the CPU)")->capture_default_str();
  g->add_option("--alpha-kv-dtype", a->alpha_kv_dtype, "Also give the dense specs an α: against the same model with its KV "
                "cache in this type (e.g. f32 with --kv-dtype fp8), along the dense run's own tokens");
  g->add_option("--kv-dtype", a->kv_dtype, kKvDtypeHelp)->capture_default_str();
  g->add_option("--threads", a->threads, "CPU threads (0 = every core)")->capture_default_str();
  g->callback([a] { run_eval(*a); });
}

}  // namespace

void add_eval_commands(CLI::App& app) {
  auto* eval = app.add_subcommand("eval", "Accuracy harnesses: eval gsm-inf");
  eval->require_subcommand(1);
  add_eval_gsm(eval);
}

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
