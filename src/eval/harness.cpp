// The GSM-Infinite accuracy harness (see harness.h).
#include "eval/harness.h"
#include "runtime/batch_engine.h"
#include "runtime/engine_access.h"

#include <charconv>
#include <chrono>
#include <fstream>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/chat_template.h"
#include "io/tokenizer.h"
#include "sparse/attention_spec.h"
#include "vortex/engine.h"

namespace vortex {
namespace {

using Seconds = std::chrono::duration<double>;

int64_t int_field(const nlohmann::json& j, const char* key, int64_t fallback) {
  if (!j.contains(key)) return fallback;
  check(j[key].is_number_integer(), "field \"{}\" must be an integer, got {}", key, j[key].dump());
  return j[key].get<int64_t>();
}

std::string string_field(const nlohmann::json& j, const char* key) {
  if (!j.contains(key)) return {};
  check(j[key].is_string(), "field \"{}\" must be a string, got {}", key, j[key].dump());
  return j[key].get<std::string>();
}

// True when require_chat_template() failed only because the model has none (not a broken one).
bool has_no_chat_template(const Engine& engine) {
  if (EngineAccess::chat_template(engine) != nullptr) return false;
  try {
    EngineAccess::require_chat_template(engine);
  } catch (const Error& e) {
    // Engine's message for an absent template; a template that fails to parse says something else.
    return std::string_view(e.what()).starts_with("this model directory has no chat template");
  }
  return false;
}

// The sparse run's tokens scored teacher-forced along its own trajectory: α_t at every query
// position the sparse decode computed (with `alpha`), and the selections it made (with `recall`).
void score_trajectory(Engine& engine, const std::vector<int32_t>& prompt, const GenerateResult& generated,
                      const std::string& spec, const HarnessOptions& options, SpecResult& result) {
  std::vector<int32_t> tokens = prompt;  // (n) prompt + generated
  tokens.insert(tokens.end(), generated.tokens.begin(), generated.tokens.end());
  const auto n = static_cast<int64_t>(tokens.size()), prompt_len = static_cast<int64_t>(prompt.size());
  if (n - 2 < prompt_len) return;  // at most one generated token: it came from the dense prefill
  ScoreOptions sparse_options;
  sparse_options.full_logprobs = options.alpha;
  sparse_options.attention = spec;
  sparse_options.sparse_from = prompt_len;
  sparse_options.selection_recall = options.recall;
  const ScoreResult sparse = engine.score(tokens, sparse_options);  // full: (n-1, V)
  // The last token's query never ran during generation (nothing was sampled from it).
  std::vector<SelectionSample> selection;
  for (const SelectionSample& s : sparse.selection)
    if (s.position <= n - 2) selection.push_back(s);
  result.recall.add(selection);
  if (!options.alpha) return;
  ScoreOptions dense_options;
  dense_options.full_logprobs = true;
  const ScoreResult dense = engine.score(tokens, dense_options);  // full: (n-1, V)
  const size_t vocab = dense.full.size() / static_cast<size_t>(n - 1);
  check(vocab > 0 && sparse.full.size() == dense.full.size(), "internal: score rows of {} and {} floats",
        dense.full.size(), sparse.full.size());
  for (int64_t row = prompt_len; row <= n - 2; ++row) {
    const size_t offset = static_cast<size_t>(row) * vocab;
    result.alpha.add(row, distribution_agreement({sparse.full.data() + offset, vocab}, {dense.full.data() + offset, vocab}));
  }
}

// A dense run's tokens scored teacher-forced by the engine and by `reference` (another KV storage
// type): α_t at every position the decode computed, as for a sparse spec.
void score_against_reference(Engine& engine, Engine& reference, const std::vector<int32_t>& prompt, const GenerateResult& generated,
                             SpecResult& result) {
  std::vector<int32_t> tokens = prompt;
  tokens.insert(tokens.end(), generated.tokens.begin(), generated.tokens.end());
  const auto n = static_cast<int64_t>(tokens.size()), prompt_len = static_cast<int64_t>(prompt.size());
  if (n - 2 < prompt_len) return;
  ScoreOptions full;
  full.full_logprobs = true;
  const ScoreResult got = engine.score(tokens, full), want = reference.score(tokens, full);  // full: (n-1, V)
  const size_t vocab = want.full.size() / static_cast<size_t>(n - 1);
  check(vocab > 0 && got.full.size() == want.full.size(), "internal: score rows of {} and {} floats", want.full.size(), got.full.size());
  for (int64_t row = prompt_len; row <= n - 2; ++row) {
    const size_t offset = static_cast<size_t>(row) * vocab;
    result.alpha.add(row, distribution_agreement({got.full.data() + offset, vocab}, {want.full.data() + offset, vocab}));
  }
}

// Every spec parses and can run on this engine: a generation of zero tokens is validated in full
// (spec included) and touches no model state. Returns whether each spec is dense.
std::vector<bool> check_specs(Engine& engine, const std::vector<std::string>& specs, const std::vector<int32_t>& prompt) {
  check(!specs.empty(), "give at least one --attention spec (e.g. --attention dense)");
  std::vector<bool> dense;
  for (const std::string& spec : specs) {
    GenerateRequest request;
    request.prompt = prompt;
    request.max_tokens = 0;
    request.attention = spec;
    engine.generate(request);
    dense.push_back(spec.empty() || spec == "dense");
  }
  return dense;
}

// Prompt ids of every problem, each checked to leave room to generate.
std::vector<std::vector<int32_t>> tokenize_problems(const Engine& engine, std::span<const SymbolicExample> problems) {
  std::vector<std::vector<int32_t>> prompts;
  for (const SymbolicExample& p : problems) {
    prompts.push_back(problem_prompt_tokens(engine, p.prompt));
    check(static_cast<int64_t>(prompts.back().size()) < engine.max_context(),
          "problem op {} id {}: its prompt is {} tokens, which leaves no room to generate in the model's context of {} "
          "tokens (use a shorter --length)", p.op, p.id, prompts.back().size(), engine.max_context());
  }
  return prompts;
}

// What the sparse attentions of one generation added to the spec's counts (ForwardCounters).
void add_counts(const ForwardCounters& before, const ForwardCounters& after, SpecResult& result) {
  result.sparse_heads += after.sparse_heads - before.sparse_heads;
  result.dense_below_heads += after.dense_below_heads - before.dense_below_heads;
  result.sparse_pages += after.sparse_pages - before.sparse_pages;
  result.cover_heads += after.cover_heads - before.cover_heads;
  result.cover_pages += after.cover_pages - before.cover_pages;
  auto add = [](const std::vector<int64_t>& from, const std::vector<int64_t>& to, std::vector<int64_t>& sum) {
    sum.resize(to.size());
    for (size_t l = 0; l < to.size(); ++l) sum[l] += to[l] - (l < from.size() ? from[l] : 0);
  };
  add(before.sparse_heads_by_layer, after.sparse_heads_by_layer, result.sparse_heads_by_layer);
  add(before.dense_below_heads_by_layer, after.dense_below_heads_by_layer, result.dense_below_heads_by_layer);
  add(before.sparse_pages_by_layer, after.sparse_pages_by_layer, result.sparse_pages_by_layer);
  add(before.cover_pages_by_layer, after.cover_pages_by_layer, result.cover_pages_by_layer);
}

// One problem under one spec: generate, grade, time, and (sparse) α.
void run_problem(Engine& engine, const SymbolicExample& problem, const std::vector<int32_t>& prompt,
                 const HarnessOptions& options, SpecResult& result, AccuracyByOp& accuracy) {
  GenerateRequest request;
  request.prompt = prompt;
  request.max_tokens = options.max_tokens;
  request.sampling.temperature = 0.0f;  // greedy
  request.attention = result.attention;
  if (result.dense && !options.speculate.empty()) request.speculate = options.speculate, request.gamma = options.gamma;
  const ForwardCounters before = EngineAccess::batch(engine).forward_counters();
  const GenerateResult generated = engine.generate(request);
  const ForwardCounters after = EngineAccess::batch(engine).forward_counters();
  add_counts(before, after, result);
  result.speculate = request.speculate;
  result.speculation.drafted += generated.speculation.drafted;
  result.speculation.accepted += generated.speculation.accepted;
  result.speculation.verifies += generated.speculation.verifies;
  const bool correct = symbolic_answer_correct(parse_symbolic_answer(generated.text), problem.answer_list);
  accuracy.add(problem.op, correct);
  result.examples += 1;
  result.correct += correct ? 1 : 0;
  result.prompt_tokens += generated.timing.prompt_tokens;
  result.generated_tokens += generated.timing.generated_tokens;
  result.decode_tokens += std::max<int64_t>(0, generated.timing.generated_tokens - 1);
  result.prefill_s += generated.timing.prefill_ms / 1e3;
  result.decode_s += generated.timing.decode_ms / 1e3;
  const auto start = std::chrono::steady_clock::now();
  if (result.dense) {
    if (options.alpha && options.dense_alpha_reference) score_against_reference(engine, *options.dense_alpha_reference, prompt, generated, result);
    result.score_s += Seconds(std::chrono::steady_clock::now() - start).count();
    return;
  }
  if (!options.alpha && !options.recall) return;
  score_trajectory(engine, prompt, generated, result.attention, options, result);
  result.score_s += Seconds(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

std::pair<int64_t, int64_t> parse_op_range(std::string_view text) {
  auto number = [&](std::string_view digits) {
    int64_t value = -1;
    const bool ok = !digits.empty() && digits.size() <= 9 && digits.find_first_not_of("0123456789") == std::string_view::npos;
    check(ok, "--ops: '{}' is not an op range (give first-last such as 1-8, or one op such as 5)", text);
    std::from_chars(digits.data(), digits.data() + digits.size(), value);
    return value;
  };
  const size_t dash = text.find('-');
  const int64_t first = number(text.substr(0, dash));
  const int64_t last = dash == std::string_view::npos ? first : number(text.substr(dash + 1));
  check(first >= 1, "--ops {}: op is out of range: ops start at 1 (op = operations in the problem)", text);
  check(last >= first, "--ops {}: op is out of range: the first op {} is above the last {}", text, first, last);
  return {first, last};
}

SymbolicOptions eval_problem_options(int64_t seed, std::string_view length, std::string_view ops, int64_t examples_per_op) {
  SymbolicOptions o;
  o.seed = seed;
  o.length = parse_gsm_length(length);
  const auto [first, last] = parse_op_range(ops);
  const int64_t n = last + gsm_noise_variables(o.length);
  check(n <= kGsmVariableCount, "--ops {}: op {} is out of range with --length {}: it needs {} variables, more than the {} "
        "names V000000…V999999", ops, last, length, n, kGsmVariableCount);
  check(examples_per_op >= 1, "--examples-per-op must be at least 1, got {}", examples_per_op);
  o.op_min = first;
  o.op_max = last + 1;  // upstream's range(1, max_op): exclusive
  o.stride = 1;
  o.examples_per_op = examples_per_op;
  validate_symbolic_options(o);
  return o;
}

std::vector<SymbolicExample> generate_problems(const SymbolicOptions& options) {
  std::vector<SymbolicExample> problems;
  generate_symbolic(options, [&](const SymbolicExample& e) { problems.push_back(e); });
  return problems;
}

SymbolicExample parse_problem_json(std::string_view line) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(line);
  } catch (const nlohmann::json::parse_error& e) {
    fail("invalid JSON ({})", e.what());
  }
  check(j.is_object(), "expected a JSON object such as `vortex gsm-inf symbolic` writes, got {}", j.type_name());
  for (const char* key : {"op", "prompt", "answer_list"}) check(j.contains(key), "missing field \"{}\"", key);
  SymbolicExample e;
  e.op = int_field(j, "op", 0);
  check(e.op >= 1, "field \"op\" must be at least 1, got {}", e.op);
  e.prompt = string_field(j, "prompt");
  check(!e.prompt.empty(), "field \"prompt\" is empty");
  check(j["answer_list"].is_array(), "field \"answer_list\" must be an array of variable names, got {}", j["answer_list"].dump());
  for (const auto& name : j["answer_list"]) {
    check(name.is_string(), "field \"answer_list\" must hold strings, got {}", name.dump());
    e.answer_list.push_back(name.get<std::string>());
  }
  e.id = int_field(j, "id", 0);
  e.length = int_field(j, "length", 0);
  e.n = int_field(j, "n", e.op);
  e.answer_q = int_field(j, "answer_q", 0);
  e.problem = string_field(j, "problem");
  e.question = string_field(j, "question");
  e.solution = string_field(j, "solution");
  return e;
}

std::vector<SymbolicExample> load_problems(const std::filesystem::path& path) {
  std::ifstream file(path, std::ios::binary);
  check(file.is_open(), "problems file {}: cannot open it (does it exist?)", path.string());
  std::vector<SymbolicExample> problems;
  std::string line;
  for (int64_t number = 1; std::getline(file, line); ++number) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    try {
      problems.push_back(parse_problem_json(line));
    } catch (const Error& e) {
      fail("problems file {} line {}: {}", path.string(), number, e.what());
    }
  }
  check(!file.bad(), "problems file {}: read error", path.string());
  check(!problems.empty(), "problems file {} has no problems (it is empty): write some with `vortex gsm-inf symbolic --out`",
        path.string());
  return problems;
}

std::vector<int32_t> problem_prompt_tokens(const Engine& engine, const std::string& prompt) {
  check(EngineAccess::tokenizer(engine) != nullptr,
        "this model directory has no tokenizer.json, which the harness needs to turn problem text into tokens");
  const Tokenizer& tokenizer = *EngineAccess::tokenizer(engine);
  if (has_no_chat_template(engine)) return tokenizer.encode(prompt);
  const ChatTemplate& chat = EngineAccess::require_chat_template(engine);  // throws when the template is broken
  const nlohmann::json messages = nlohmann::json::array({{{"role", "user"}, {"content", prompt}}});
  return tokenizer.encode(chat.apply(messages, ChatTemplateOptions{}));
}

std::vector<SpecResult> run_gsm_harness(Engine& engine, std::span<const SymbolicExample> problems,
                                        const HarnessOptions& options, const HarnessProgressCallback& progress) {
  check(!options.attention.empty(), "give at least one --attention spec (e.g. --attention dense)");
  check(!problems.empty(), "no problems to evaluate");
  check(options.max_tokens >= 1, "--max-tokens must be at least 1, got {}", options.max_tokens);
  const std::vector<std::vector<int32_t>> prompts = tokenize_problems(engine, problems);
  const std::vector<bool> dense = check_specs(engine, options.attention, prompts.front());
  if (options.recall && prompts.front().size() >= 2) {  // a backend that cannot measure says so before any generation
    ScoreOptions probe;
    probe.selection_recall = true;
    engine.score({prompts.front()[0], prompts.front()[1]}, probe);
  }
  // Problem by problem, every spec in turn: a problem's prompt is prefilled by its first spec and
  // taken from the prefix cache by the others (its pages are computed densely under every spec).
  std::vector<SpecResult> results(options.attention.size());
  std::vector<AccuracyByOp> accuracy(options.attention.size());
  for (size_t s = 0; s < results.size(); ++s) {
    results[s].attention = options.attention[s];
    results[s].dense = dense[s];
    if (!dense[s]) results[s].expanded = parse_attention_spec(results[s].attention).expanded;
  }
  for (size_t i = 0; i < problems.size(); ++i) {
    for (size_t s = 0; s < results.size(); ++s) run_problem(engine, problems[i], prompts[i], options, results[s], accuracy[s]);
    if (progress) progress({.problem = i + 1, .problems = problems.size(), .results = results});
  }
  for (size_t s = 0; s < results.size(); ++s) {
    SpecResult& result = results[s];
    result.by_op = accuracy[s].table();
    result.accuracy = static_cast<double>(result.correct) / static_cast<double>(result.examples);
    result.auc = accuracy_auc(result.by_op);
  }
  return results;
}

}  // namespace vortex
