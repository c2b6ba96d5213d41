// vortex generate | score | chat | info — commands that load a model.
#include <iostream>
#include <memory>

#include "cli/cli.h"
#include "core/error.h"
#include "io/chat_template.h"
#include "io/hf_config.h"
#include "io/tokenizer.h"
#include "model/weights.h"
#include "runtime/engine_access.h"
#include "vortex/engine.h"

namespace vortex::cli {
namespace {

struct SamplingArgs {
  int64_t max_tokens = 256;
  float temperature = 1.0f, top_p = 1.0f, min_p = 0.0f;
  int32_t top_k = 0;
  uint64_t seed = 0;
  std::vector<std::string> stop;
  std::string stop_tokens;
  bool ignore_eos = false;
};

struct GenerateArgs {
  std::string model, prompt, prompt_tokens, device = "cpu", precision = "bf16", kv_dtype = "auto", attention = "dense";
  int64_t page_size = 16, tensor_parallel = 1;
  bool chat = false, json = false;
  SamplingArgs sampling;
  SpeculateArgs speculate;
  CLI::Option* prompt_option = nullptr;
  CLI::Option* tokens_option = nullptr;
};

struct ScoreArgs {
  std::string model, tokens, device = "cpu", precision = "bf16", kv_dtype = "auto", attention = "dense";
  int64_t page_size = 16, sparse_from = 0, tensor_parallel = 1;
  int32_t top = 0;
  bool json = false;
};
struct InfoArgs { std::string model; bool json = false; };
struct ChatArgs { std::string model, system, enable_thinking, device = "cpu"; SamplingArgs sampling; };

void add_sampling_options(CLI::App* sub, SamplingArgs& s) {
  sub->add_option("--max-tokens", s.max_tokens, "Generated tokens at most")->capture_default_str();
  sub->add_option("--temperature", s.temperature, "0 = greedy")->capture_default_str();
  sub->add_option("--top-p", s.top_p, "Nucleus sampling mass (1 = off)")->capture_default_str();
  sub->add_option("--top-k", s.top_k, "Keep the k most likely tokens (0 = off)")->capture_default_str();
  sub->add_option("--min-p", s.min_p, "Drop tokens below min-p x the best probability")->capture_default_str();
  sub->add_option("--seed", s.seed, "Random seed: same seed, same output")->capture_default_str();
  sub->add_option("--stop", s.stop, "Stop string (repeatable); the text ends before it");
  sub->add_option("--stop-tokens", s.stop_tokens, "Comma-separated token ids that end generation");
  sub->add_flag("--ignore-eos", s.ignore_eos, "Do not stop at the model's eos tokens");
}

GenerateRequest make_request(const SamplingArgs& s, std::vector<int32_t> prompt) {
  GenerateRequest request;
  request.prompt = std::move(prompt);
  request.max_tokens = s.max_tokens;
  request.sampling = {.temperature = s.temperature, .top_k = s.top_k, .top_p = s.top_p, .min_p = s.min_p, .seed = s.seed};
  request.stop_strings = s.stop;
  if (!s.stop_tokens.empty()) request.stop_token_ids = parse_id_list(s.stop_tokens, "--stop-tokens");
  request.ignore_eos = s.ignore_eos;
  return request;
}

std::unique_ptr<Engine> open_engine(const std::string& model, const std::string& device, const std::string& precision,
                                    const std::string& kv_dtype, int64_t page_size, int64_t tensor_parallel = 1) {
  EngineOptions options;
  options.device = parse_device(device);
  options.precision = parse_precision(precision);
  options.kv_dtype = parse_kv_dtype(kv_dtype);
  options.page_size = page_size;
  options.tensor_parallel = tensor_parallel;
  return Engine::open(model, options);
}

std::vector<int32_t> prompt_ids(const GenerateArgs& a, const Engine& engine) {
  bool has_text = a.prompt_option->count() > 0, has_tokens = a.tokens_option->count() > 0;
  check(has_text != has_tokens, "give exactly one of --prompt and --prompt-tokens");
  if (has_tokens) {
    check(!a.chat, "--chat needs --prompt text, not --prompt-tokens");
    return parse_id_list(a.prompt_tokens, "--prompt-tokens");
  }
  check(engine.has_tokenizer(), "this model directory has no tokenizer.json: give token ids (--prompt-tokens) instead of --prompt text");
  const Tokenizer& tokenizer = EngineAccess::require_tokenizer(engine);
  if (!a.chat) return tokenizer.encode(a.prompt);
  const ChatTemplate& chat = EngineAccess::require_chat_template(engine);
  nlohmann::json messages = nlohmann::json::array({{{"role", "user"}, {"content", a.prompt}}});
  return tokenizer.encode(chat.apply(messages, ChatTemplateOptions{}));
}

void run_generate(const GenerateArgs& a) {
  auto engine = open_engine(a.model, a.device, a.precision, a.kv_dtype, a.page_size, a.tensor_parallel);
  GenerateRequest request = make_request(a.sampling, prompt_ids(a, *engine));
  request.attention = a.attention;
  apply_speculate(a.speculate, request);
  bool stream = !a.json && EngineAccess::tokenizer(*engine) != nullptr;
  GenerateResult result = engine->generate(request, [&](std::string_view text) {
    if (stream) std::cout << text << std::flush;
  });
  if (a.json) {
    const GenerateTiming& t = result.timing;
    nlohmann::json out = {{"tokens", result.tokens},
                          {"text", result.text},
                          {"finish_reason", finish_reason_name(result.finish_reason)},
                          {"timing", {{"prompt_tokens", t.prompt_tokens}, {"generated_tokens", t.generated_tokens},
                                      {"prefill_ms", t.prefill_ms}, {"decode_ms", t.decode_ms},
                                      {"decode_tokens_per_s", t.decode_tokens_per_s()}}}};
    if (!request.speculate.empty()) out["speculation"] = speculation_json(result.speculation);
    print_json(out);
  } else if (!stream) {  // no tokenizer: print the ids
    for (size_t i = 0; i < result.tokens.size(); ++i) std::cout << (i ? "," : "") << result.tokens[i];
    std::cout << std::endl;
  } else {
    std::cout << std::endl;
  }
}

void run_score(const ScoreArgs& a) {
  auto engine = open_engine(a.model, a.device, a.precision, a.kv_dtype, a.page_size, a.tensor_parallel);
  std::vector<int32_t> tokens = parse_id_list(a.tokens, "--tokens");
  ScoreOptions options;
  options.top_n = a.top;
  options.attention = a.attention;
  options.sparse_from = a.sparse_from;
  ScoreResult result = engine->score(tokens, options);
  if (a.json) {
    nlohmann::json top = nlohmann::json::array();
    for (const auto& row : result.top) {
      nlohmann::json pairs = nlohmann::json::array();
      for (const auto& [id, lp] : row) pairs.push_back({id, lp});
      top.push_back(pairs);
    }
    print_json({{"logprobs", result.logprobs}, {"top", top}});
    return;
  }
  for (size_t i = 0; i < result.logprobs.size(); ++i) {
    std::cout << fmt::format("{:6d} token {:8d}  logprob {:10.5f}", i + 1, tokens[i + 1], result.logprobs[i]);
    if (i < result.top.size())
      for (const auto& [id, lp] : result.top[i]) std::cout << fmt::format("  {}:{:.4f}", id, lp);
    std::cout << "\n";
  }
}

void run_info(const InfoArgs& a) {
  ModelConfig config = load_model_config(a.model);
  ModelWeights weights = load_model_weights(a.model, config);
  nlohmann::json info = {
      {"architecture", config.architecture_name}, {"parameters", weights.parameter_count()},
      {"dtype", weights.dtype_summary}, {"context_length", config.max_position_embeddings},
      {"layers", config.num_layers}, {"hidden_size", config.hidden_size}, {"heads", config.num_heads},
      {"kv_heads", config.num_kv_heads}, {"head_dim", config.head_dim}, {"vocab_size", config.vocab_size},
      {"tied_embeddings", config.tie_word_embeddings}, {"rope_theta", config.rope.theta},
      {"kv_bytes_per_token_bf16", config.kv_bytes_per_token(2)},
      {"kv_bytes_per_token_fp32", config.kv_bytes_per_token(4)},
      {"eos_token_ids", config.eos_token_ids}};
  if (a.json) { print_json(info); return; }
  for (const auto& [key, value] : info.items()) std::cout << fmt::format("{:<26}{}\n", key, value.dump());
}

}  // namespace

void run_chat(const ChatArgs& a);

void add_model_commands(CLI::App& app) {
  auto gen = std::make_shared<GenerateArgs>();
  auto* g = app.add_subcommand("generate", "Generate a continuation of a prompt");
  g->add_option("--model", gen->model, "Hugging Face model directory")->required();
  gen->prompt_option = g->add_option("--prompt", gen->prompt, "Prompt text");
  gen->tokens_option = g->add_option("--prompt-tokens", gen->prompt_tokens, "Prompt as comma-separated token ids");
  g->add_flag("--chat", gen->chat, "Wrap the prompt as a user message with the chat template");
  g->add_option("--device", gen->device, "cpu or cuda")->capture_default_str();
  g->add_option("--precision", gen->precision, "cuda: bf16 (fast) or f32 (matches the CPU)")->capture_default_str();
  g->add_option("--kv-dtype", gen->kv_dtype, kKvDtypeHelp)->capture_default_str();
  g->add_option("--attention", gen->attention, "Attention spec for generated tokens, e.g. quest:budget=1024,sink=16,window=64 (docs/flows.md)")
      ->capture_default_str();
  g->add_option("--page-size", gen->page_size, "KV page size: 16, 32 or 64 (8 on the CPU)")->capture_default_str();
  add_tensor_parallel_option(g, gen->tensor_parallel);
  add_speculate_options(g, gen->speculate);
  g->add_flag("--json", gen->json, "Print one JSON object instead of streaming text");
  add_sampling_options(g, gen->sampling);
  g->callback([gen] { run_generate(*gen); });

  auto sc = std::make_shared<ScoreArgs>();
  auto* s = app.add_subcommand("score", "Per-token log-probabilities of a token sequence (teacher-forced)");
  s->add_option("--model", sc->model, "Hugging Face model directory")->required();
  s->add_option("--tokens", sc->tokens, "Comma-separated token ids (at least two)")->required();
  s->add_option("--top", sc->top, "Also give the N most likely tokens at each position")->capture_default_str();
  s->add_option("--device", sc->device, "cpu or cuda")->capture_default_str();
  s->add_option("--precision", sc->precision, "cuda: bf16 (fast) or f32 (matches the CPU)")->capture_default_str();
  s->add_option("--kv-dtype", sc->kv_dtype, kKvDtypeHelp)->capture_default_str();
  s->add_option("--attention", sc->attention, "Attention spec: sparse log-probs, each position as a decode step would attend")
      ->capture_default_str();
  s->add_option("--sparse-from", sc->sparse_from, "Positions before this attend densely (e.g. the prompt length)")
      ->capture_default_str();
  s->add_option("--page-size", sc->page_size, "KV page size: 16, 32 or 64 (8 on the CPU)")->capture_default_str();
  add_tensor_parallel_option(s, sc->tensor_parallel);
  s->add_flag("--json", sc->json, "Print {\"logprobs\": [...], \"top\": [...]}");
  s->callback([sc] { run_score(*sc); });

  auto in = std::make_shared<InfoArgs>();
  auto* i = app.add_subcommand("info", "Architecture, parameters, dtype, context length, KV bytes per token");
  i->add_option("--model", in->model, "Hugging Face model directory")->required();
  i->add_flag("--json", in->json, "Print one JSON object");
  i->callback([in] { run_info(*in); });

  auto ch = std::make_shared<ChatArgs>();
  auto* c = app.add_subcommand("chat", "Interactive chat: streams replies and keeps the conversation");
  c->add_option("--model", ch->model, "Hugging Face model directory")->required();
  c->add_option("--system", ch->system, "System message");
  c->add_option("--enable-thinking", ch->enable_thinking, "true|false (Qwen3)");
  c->add_option("--device", ch->device, "cpu")->capture_default_str();
  add_sampling_options(c, ch->sampling);
  c->callback([ch] { run_chat(*ch); });
}

// Reads user turns from stdin until EOF or /exit; /reset starts a new conversation.
void run_chat(const ChatArgs& a) {
  auto engine = open_engine(a.model, a.device, "bf16", "auto", 16);
  const Tokenizer& tokenizer = EngineAccess::require_tokenizer(*engine);
  const ChatTemplate& chat = EngineAccess::require_chat_template(*engine);
  ChatTemplateOptions options;
  if (!a.enable_thinking.empty()) {
    check(a.enable_thinking == "true" || a.enable_thinking == "false", "--enable-thinking takes true or false");
    options.extra_context["enable_thinking"] = a.enable_thinking == "true";
  }
  nlohmann::json messages = nlohmann::json::array();
  if (!a.system.empty()) messages.push_back({{"role", "system"}, {"content", a.system}});
  std::cerr << "vortex chat: type a message; /reset starts over, /exit (or Ctrl-D) quits." << std::endl;
  std::string line;
  while (std::cerr << "> " << std::flush, std::getline(std::cin, line)) {
    if (line == "/exit") break;
    if (line == "/reset") {
      messages = nlohmann::json::array();
      if (!a.system.empty()) messages.push_back({{"role", "system"}, {"content", a.system}});
      continue;
    }
    if (line.empty()) continue;
    messages.push_back({{"role", "user"}, {"content", line}});
    std::vector<int32_t> prompt = tokenizer.encode(chat.apply(messages, options));
    GenerateResult result;
    try {
      result = engine->generate(make_request(a.sampling, prompt), [](std::string_view text) { std::cout << text << std::flush; });
    } catch (const Error& e) {
      std::cerr << "error: " << e.what() << std::endl;
      messages.erase(messages.end() - 1);
      continue;
    }
    std::cout << std::endl;
    messages.push_back({{"role", "assistant"}, {"content", result.text}});
  }
}

}  // namespace vortex::cli
