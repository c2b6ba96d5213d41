// Engine: model loading, chunked prefill, the decode loop with sampling and stop conditions, and
// teacher-forced scoring. One request at a time on the CPU backend; the scheduler of the CUDA
// issue generalises the same loop to a running batch.
#include "vortex/engine.h"

#include <algorithm>
#include <chrono>

#include "backend/cpu/forward.h"
#include "core/error.h"
#include "io/chat_template.h"
#include "io/hf_config.h"
#include "io/tokenizer.h"
#include "model/weights.h"
#include "runtime/sampler.h"
#include "runtime/stop.h"

namespace vortex {

const char* finish_reason_name(FinishReason reason) { return reason == FinishReason::kStop ? "stop" : "length"; }

struct Engine::Impl {
  EngineOptions options;
  std::shared_ptr<const ModelWeights> weights;
  std::unique_ptr<Tokenizer> tokenizer;
  std::unique_ptr<ChatTemplate> chat_template;
  std::unique_ptr<cpu::CpuModel> model;
  int64_t max_context = 0;
  std::vector<float> logits;      // (R, V) scratch for forward()
  std::vector<float> logprobs;    // (V) scratch

  void init() {
    const ModelConfig& c = weights->config;
    check(options.device == "cpu", "device '{}' is not available in this build (supported: cpu)", options.device);
    check(options.prefill_chunk > 0, "prefill chunk must be positive, got {}", options.prefill_chunk);
    max_context = options.max_context > 0 ? std::min(options.max_context, c.max_position_embeddings) : c.max_position_embeddings;
    KvCacheShape shape{.num_layers = c.num_layers, .num_pages = 0, .num_kv_heads = c.num_kv_heads,
                       .page_size = options.page_size, .head_dim = c.head_dim};
    shape.num_pages = (max_context + options.page_size - 1) / options.page_size;
    model = std::make_unique<cpu::CpuModel>(weights, shape, options.prefill_chunk);
  }

  void check_prompt(const std::vector<int32_t>& tokens, int64_t extra) const {
    check(!tokens.empty(), "the prompt is empty: give at least one token");
    const int64_t vocab = weights->config.vocab_size;
    for (int32_t id : tokens) check(id >= 0 && id < vocab, "token id {} is out of range: the vocabulary has {} ids", id, vocab);
    check(static_cast<int64_t>(tokens.size()) + extra <= max_context,
          "the prompt has {} tokens, which with {} more exceeds the context of {} tokens", tokens.size(), extra, max_context);
  }

  // Runs tokens[start..] through the model in chunks; `all_logits` keeps (n, V) logits of every
  // token in `out_logits`, else only the last token's row stays in `logits`.
  void prefill(const std::vector<int32_t>& tokens, std::vector<int32_t>& pages, bool all_logits, std::vector<float>* out_logits) {
    auto& kv = model->kv();
    check(kv.reserve(pages, static_cast<int64_t>(tokens.size())), "the KV cache is full");
    const int64_t n = static_cast<int64_t>(tokens.size());
    for (int64_t start = 0; start < n; start += options.prefill_chunk) {
      cpu::SequenceChunk chunk{.tokens = tokens.data() + start, .count = std::min(options.prefill_chunk, n - start),
                               .start = start, .page_table = &pages, .all_logits = all_logits};
      model->forward({&chunk, 1}, logits);
      if (out_logits) out_logits->insert(out_logits->end(), logits.begin(), logits.end());
    }
  }

  void decode_one(int32_t token, int64_t position, std::vector<int32_t>& pages) {
    check(model->kv().reserve(pages, position + 1), "the KV cache is full");
    cpu::SequenceChunk chunk{.tokens = &token, .count = 1, .start = position, .page_table = &pages, .all_logits = false};
    model->forward({&chunk, 1}, logits);
  }
};

Engine::Engine(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Engine::~Engine() = default;

std::unique_ptr<Engine> Engine::open(const std::filesystem::path& model_dir, const EngineOptions& options) {
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  ModelConfig config = load_model_config(model_dir);
  impl->weights = std::make_shared<ModelWeights>(load_model_weights(model_dir, config));
  if (std::filesystem::exists(model_dir / "tokenizer.json")) {
    impl->tokenizer = std::make_unique<Tokenizer>(Tokenizer::load(model_dir));
    check(impl->tokenizer->vocab_size() <= config.vocab_size,
          "{}: tokenizer.json has {} ids but config.json's vocab_size is {}", model_dir.string(),
          impl->tokenizer->vocab_size(), config.vocab_size);
  }
  if (std::filesystem::exists(model_dir / "tokenizer_config.json") || std::filesystem::exists(model_dir / "chat_template.jinja")) {
    try {
      impl->chat_template = std::make_unique<ChatTemplate>(ChatTemplate::load(model_dir));
    } catch (const Error&) {
      impl->chat_template.reset();  // no chat template: `--chat` reports it when asked
    }
  }
  impl->init();
  return std::unique_ptr<Engine>(new Engine(std::move(impl)));
}

std::unique_ptr<Engine> Engine::from_weights(std::shared_ptr<const ModelWeights> weights, const EngineOptions& options) {
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->weights = std::move(weights);
  impl->init();
  return std::unique_ptr<Engine>(new Engine(std::move(impl)));
}

const ModelConfig& Engine::config() const { return impl_->weights->config; }
const ModelWeights& Engine::weights() const { return *impl_->weights; }
const Tokenizer* Engine::tokenizer() const { return impl_->tokenizer.get(); }
const ChatTemplate* Engine::chat_template() const { return impl_->chat_template.get(); }
int64_t Engine::max_context() const { return impl_->max_context; }

const Tokenizer& Engine::require_tokenizer() const {
  check(impl_->tokenizer != nullptr, "this model directory has no tokenizer.json: give token ids (--prompt-tokens) instead of text");
  return *impl_->tokenizer;
}

namespace {

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }

}  // namespace

GenerateResult Engine::generate(const GenerateRequest& request, const TextCallback& on_text) {
  Impl& m = *impl_;
  check(request.max_tokens >= 0, "max_tokens must be >= 0, got {}", request.max_tokens);
  m.check_prompt(request.prompt, 0);
  check(static_cast<int64_t>(request.prompt.size()) < m.max_context,
        "the prompt has {} tokens and fills the context of {} tokens: no room to generate", request.prompt.size(), m.max_context);
  Sampler sampler(request.sampling);
  StopStringMatcher stops(request.stop_strings);
  std::vector<int32_t> stop_ids = request.stop_token_ids;
  if (!request.ignore_eos) stop_ids.insert(stop_ids.end(), config().eos_token_ids.begin(), config().eos_token_ids.end());
  std::unique_ptr<IncrementalDecoder> detok;
  if (m.tokenizer) detok = std::make_unique<IncrementalDecoder>(*m.tokenizer, /*skip_special_tokens=*/true);

  GenerateResult result;
  result.timing.prompt_tokens = static_cast<int64_t>(request.prompt.size());
  std::vector<int32_t> pages;
  auto t0 = Clock::now();
  m.prefill(request.prompt, pages, false, nullptr);
  auto emit = [&](const std::string& text) { if (on_text && !text.empty()) on_text(text); };
  int64_t position = static_cast<int64_t>(request.prompt.size());
  Clock::time_point decode_start;
  result.finish_reason = FinishReason::kLength;
  while (static_cast<int64_t>(result.tokens.size()) < request.max_tokens && position < m.max_context) {
    int32_t token = sampler.sample({m.logits.data(), static_cast<size_t>(config().vocab_size)});
    if (result.tokens.empty()) { result.timing.prefill_ms = ms_since(t0); decode_start = Clock::now(); }
    result.tokens.push_back(token);
    if (std::find(stop_ids.begin(), stop_ids.end(), token) != stop_ids.end()) { result.finish_reason = FinishReason::kStop; break; }
    if (detok) {
      emit(stops.push(detok->push(token)));
      if (stops.stopped()) { result.finish_reason = FinishReason::kStop; break; }
    }
    if (static_cast<int64_t>(result.tokens.size()) == request.max_tokens || position + 1 >= m.max_context) break;
    m.decode_one(token, position++, pages);
  }
  if (detok && !stops.stopped()) emit(stops.push(detok->finish()));
  emit(stops.flush());
  result.text = stops.text();
  if (!result.tokens.empty()) result.timing.decode_ms = ms_since(decode_start);
  result.timing.generated_tokens = static_cast<int64_t>(result.tokens.size());
  m.model->kv().allocator().release_all(pages);
  return result;
}

ScoreResult Engine::score(const std::vector<int32_t>& tokens, int32_t top_n) {
  Impl& m = *impl_;
  m.check_prompt(tokens, 0);
  check(tokens.size() >= 2, "scoring needs at least two tokens, got {}", tokens.size());
  check(top_n >= 0, "--top must be >= 0, got {}", top_n);
  std::vector<int32_t> pages;
  std::vector<float> all_logits;
  m.prefill(tokens, pages, true, &all_logits);
  m.model->kv().allocator().release_all(pages);
  const size_t vocab = static_cast<size_t>(config().vocab_size);
  ScoreResult result;
  m.logprobs.resize(vocab);
  for (size_t i = 0; i + 1 < tokens.size(); ++i) {
    log_softmax({all_logits.data() + i * vocab, vocab}, m.logprobs);
    result.logprobs.push_back(m.logprobs[static_cast<size_t>(tokens[i + 1])]);
    if (top_n > 0) result.top.push_back(top_logprobs(m.logprobs, top_n));
  }
  return result;
}

}  // namespace vortex
