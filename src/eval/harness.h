// The accuracy harness: GSM-Infinite symbolic problems through the engine under several attention
// specs, graded, with the sparse-vs-dense agreement α of every sparse spec.
//
// Each problem, for each spec:
//   prompt  = the problem's `prompt` as one user message through the model's chat template with
//             the generation prompt (the raw text when the model has no chat template), tokenised;
//   output  = greedy generation (temperature 0) of at most max_tokens, ending at the model's eos,
//             with GenerateRequest::attention = spec;
//   correct = the grader's exact-set match of the parsed answer (eval/gsm_grader.h).
// For a sparse spec, α follows the sparse trajectory: tokens = prompt + generated are scored
// teacher-forced twice, densely and with the spec (prefill dense, generated queries sparse, as
// generation ran), and α_t is taken at every query position t the sparse decode computed
// (t = prompt_len … n − 2; row t is the distribution of token t + 1).
//
// With HarnessOptions::recall, the sparse scoring pass also measures every selection against the
// oracle's (selection recall and attention mass, sparse/selection_recall.h).
//
// Cost of α: the two scoring passes hold (n − 1) × V floats each (n = prompt + generated tokens,
// V = vocabulary), one problem at a time: 2 × 5K × 2K × 4 B = 80 MB for the embedded model, but
// 2 × 5K × 152K × 4 B = 6 GB for a Qwen-vocabulary model. HarnessOptions::alpha = false skips it.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "eval/agreement.h"
#include "eval/gsm_grader.h"
#include "vortex/request.h"
#include "eval/gsm_infinite.h"
#include "eval/selection_stats.h"

namespace vortex {

class Engine;

struct HarnessOptions {
  std::vector<std::string> attention;  // specs, each run on every problem, in this order
  int64_t max_tokens = 1024;           // generated tokens at most per problem
  bool alpha = true;                   // α of sparse specs against dense (two scoring passes a problem)
  // Selection recall of sparse specs (selection_stats.h), measured in the sparse scoring pass along
  // the sparse trajectory (α's, or one of its own with alpha off). CPU backend only.
  bool recall = false;
  // Self-speculation for the dense specs (GenerateRequest::speculate, gamma): the same greedy
  // output, faster; each dense result reports its drafts and acceptance.
  std::string speculate;
  int32_t gamma = 0;
  // The dense specs' α against this engine (the same model with its KV cache in another storage
  // type, e.g. f32 against fp8): both score the dense trajectory teacher-forced, in full; null: none.
  Engine* dense_alpha_reference = nullptr;
};

struct SpecResult {
  std::string attention;            // the spec as given
  std::string expanded;             // `auto`: the spec it expanded to; empty otherwise
  bool dense = false;               // the spec is "dense" (or empty): the reference, no α
  std::vector<OpAccuracy> by_op;    // (ops) ascending op
  int64_t examples = 0, correct = 0;
  double accuracy = 0.0;            // correct / examples
  double auc = 0.0;                 // accuracy_auc(by_op): 100 × trapezoid area under accuracy vs op
  AlphaStats alpha;                 // empty for dense (unless dense_alpha_reference) and when alpha is off
  SelectionStats recall;            // empty for dense and when recall is off
  std::string speculate;            // HarnessOptions::speculate when it applied to this (dense) spec
  SpeculationStats speculation;     // its drafts, summed over problems
  int64_t prompt_tokens = 0, generated_tokens = 0;
  double prefill_s = 0.0, decode_s = 0.0, score_s = 0.0;
  int64_t decode_tokens = 0;        // generated tokens after each problem's first (those decode_s paid for)
  // Sparse attentions of one (token, layer, kv head) in the generation runs, how many of them
  // dense_below made dense, the pages their lists held, and how many cover grew by how many pages
  // (ForwardCounters; CPU backend, 0 elsewhere).
  int64_t sparse_heads = 0, dense_below_heads = 0, sparse_pages = 0, cover_heads = 0, cover_pages = 0;
  // the same by layer
  std::vector<int64_t> sparse_heads_by_layer, dense_below_heads_by_layer, sparse_pages_by_layer, cover_pages_by_layer;
  // Decode throughput: decode_tokens / decode_s, the rate sparse attention changes; 0 without decode steps.
  double tokens_per_s() const { return decode_s > 0.0 ? static_cast<double>(decode_tokens) / decode_s : 0.0; }
};

// After each problem has run under every spec (problems run in order, each under the specs in turn).
struct HarnessProgress {
  size_t problem = 0, problems = 0;     // problems finished, of `problems`
  std::span<const SpecResult> results;  // every spec's result so far
};
using HarnessProgressCallback = std::function<void(const HarnessProgress&)>;

// "1-8" → {1, 8} (inclusive), "5" → {5, 5}. Throws vortex::Error naming --ops for anything else,
// an op below 1 or a first op above the last.
std::pair<int64_t, int64_t> parse_op_range(std::string_view text);
// The generator options for evaluating ops first … last inclusive (op_max = last + 1: upstream's
// max-op is exclusive), checked: throws vortex::Error naming --ops, --length or --examples-per-op.
SymbolicOptions eval_problem_options(int64_t seed, std::string_view length, std::string_view ops, int64_t examples_per_op);

// The problems `vortex gsm-inf symbolic` would write for these options, in the same order.
std::vector<SymbolicExample> generate_problems(const SymbolicOptions& options);
// One JSON line as `vortex gsm-inf symbolic` writes it → a problem. Needs "op" (integer ≥ 1),
// "prompt" (non-empty string) and "answer_list" (array of strings); the other fields are taken
// when present. Throws vortex::Error naming the field.
SymbolicExample parse_problem_json(std::string_view line);
// Every problem of a JSON-lines file; blank lines are skipped. Throws vortex::Error for a missing
// file, a bad line (with its line number) or a file with no problem.
std::vector<SymbolicExample> load_problems(const std::filesystem::path& path);

// The prompt token ids of one problem for this engine's model (see the file header). Throws when
// the model has no tokenizer, or has a chat template that does not parse.
std::vector<int32_t> problem_prompt_tokens(const Engine& engine, const std::string& prompt);

// Runs every spec on every problem; results in the order of options.attention. Throws
// vortex::Error before generating anything for a bad spec, an empty problem list, or a prompt
// that leaves no room to generate in the model's context.
std::vector<SpecResult> run_gsm_harness(Engine& engine, std::span<const SymbolicExample> problems,
                                        const HarnessOptions& options, const HarnessProgressCallback& progress = nullptr);

}  // namespace vortex
