// Engine: model loading, chunked prefill, the decode loop with sampling and stop conditions, and
// teacher-forced scoring. generate() runs on the continuous-batching core (BatchEngine), the
// same path the server's requests take, as a batch of one.
#include "vortex/engine.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <tuple>

#include "backend/cpu/forward.h"
#include "backend/cpu/tensor_parallel.h"
#ifdef VORTEX_HAVE_CUDA
#include "backend/cuda/cuda_model.h"
#endif
#include "core/error.h"
#include "io/chat_template.h"
#include "io/hf_config.h"
#include "io/tokenizer.h"
#include "kv/kv_rounding.h"
#include "model/weights.h"
#include "runtime/batch_engine.h"
#include "runtime/engine_access.h"
#include "runtime/sampler.h"
#include "runtime/stop.h"
#include "sparse/selection_recall.h"
#include "sparse/sparse_attention.h"

namespace vortex {
namespace {

// The rounding the CPU emulates (and the GPU stores) for a resolved KvDtype.
KvStorage kv_storage(KvDtype kv_dtype) {
  switch (kv_dtype) {
    case KvDtype::kBf16: return KvStorage::kBf16;
    case KvDtype::kFp8: return KvStorage::kFp8;
    case KvDtype::kFp8Tensor: return KvStorage::kFp8Tensor;
    case KvDtype::kAuto:
    case KvDtype::kF32: break;
  }
  return KvStorage::kF32;
}

}  // namespace


const char* finish_reason_name(FinishReason reason) { return reason == FinishReason::kStop ? "stop" : "length"; }

struct Engine::Impl {
  EngineOptions options;
  std::shared_ptr<const ModelWeights> weights;
  std::unique_ptr<Tokenizer> tokenizer;
  std::unique_ptr<ChatTemplate> chat_template;
  std::string chat_template_error;  // why there is no chat template, when loading one failed
  std::unique_ptr<ModelBackend> model;
  int64_t max_context = 0;
  KvDtype kv_dtype = KvDtype::kAuto;  // resolved by init()
  std::vector<float> logits;      // (R, V) scratch for forward()
  std::vector<float> logprobs;    // (V) scratch
  std::unique_ptr<BatchEngine> batch;  // after `model`: destroyed first

  void init() {
    const ModelConfig& c = weights->config;
    check_option(options.prefill_chunk > 0, "prefill_chunk", "must be positive, got {}", options.prefill_chunk);
    check_option(options.page_size == 8 || options.page_size == 16 || options.page_size == 32 || options.page_size == 64, "page_size",
                 "takes 8, 16, 32 or 64, got {}", options.page_size);
    // Pages of 8 exist for selection studies on the CPU; the GPU kernels tile keys by 16 and more.
    check_option(options.page_size != 8 || options.device == Device::kCpu, "page_size",
                 "8 runs on the CPU only (device '{}' takes 16, 32 or 64)", device_name(options.device));
    check_option(options.max_batch > 0, "max_batch", "must be positive, got {}", options.max_batch);
    max_context = options.max_context > 0 ? std::min(options.max_context, c.max_position_embeddings) : c.max_position_embeddings;
    kv_dtype = resolve_kv_dtype();
    // The CPU keeps fp32 whatever it emulates; the GPU's pages hold the stored type.
    const int64_t num_pages = kv_pages(options.device == Device::kCpu ? 4 * c.head_dim : kv_row_bytes(kv_storage(kv_dtype), c.head_dim));
    // A sequence alone must always fit the pool, so preemption can always make progress.
    max_context = std::min(max_context, num_pages * options.page_size);
    const int64_t step_tokens = std::max(options.prefill_chunk, options.max_batch);
    check_option(options.tensor_parallel >= 1, "tensor_parallel", "must be at least 1, got {}", options.tensor_parallel);
    if (options.device == Device::kCpu) {
      KvCacheShape shape{.num_layers = c.num_layers, .num_pages = num_pages, .num_kv_heads = c.num_kv_heads,
                         .page_size = options.page_size, .head_dim = c.head_dim, .storage = kv_storage(kv_dtype)};
      if (options.tensor_parallel > 1) model = std::make_unique<cpu::TensorParallelModel>(*weights, options.tensor_parallel, shape, step_tokens);
      else model = std::make_unique<cpu::CpuModel>(weights, shape, step_tokens);
    } else {
      check_option(options.tensor_parallel == 1, "tensor_parallel",
                   "{} ranks on cuda: tensor parallelism over GPUs is not built yet (issue #20; the CPU runs it)", options.tensor_parallel);
      model = make_cuda_model(num_pages, step_tokens);
    }
    batch = std::make_unique<BatchEngine>(*model, c, tokenizer.get(), max_context, options.max_batch, options.prefix_caching);
  }

  // What the options ask the KV cache to store, checked against the device and precision.
  KvDtype resolve_kv_dtype() const {
    const KvDtype asked = options.kv_dtype;
    if (options.device == Device::kCpu) return asked == KvDtype::kAuto ? KvDtype::kF32 : asked;  // all emulated
    check_option(asked != KvDtype::kFp8Tensor, "kv_dtype", "fp8-tensor is emulated on the CPU only (for comparison with fp8)");
    if (options.precision == Precision::kF32) {
      check_option(asked == KvDtype::kAuto || asked == KvDtype::kF32, "kv_dtype",
                   "{} needs precision bf16 on cuda (precision f32 keeps an f32 cache)", kv_dtype_name(asked));
      return KvDtype::kF32;
    }
    check_option(asked != KvDtype::kF32, "kv_dtype", "f32 on cuda needs precision f32");
    return asked == KvDtype::kFp8 ? KvDtype::kFp8 : KvDtype::kBf16;
  }

  // KV pages: kv_memory_gib when given, else one full context per running sequence capped at
  // kDefaultKvCapGiB (the CPU cache is touched only as pages are written), never below one context.
  int64_t kv_pages(int64_t row_bytes) const {
    constexpr double kDefaultKvCapGiB = 4.0;
    const ModelConfig& c = weights->config;
    const double page_bytes = static_cast<double>(2 * c.num_layers * c.num_kv_heads * row_bytes * options.page_size);
    const int64_t context_pages = (max_context + options.page_size - 1) / options.page_size;
    check_option(options.kv_memory_gib >= 0.0, "kv_memory_gib", "must be >= 0 GiB, got {}", options.kv_memory_gib);
    if (options.kv_memory_gib > 0.0) {
      auto pages = static_cast<int64_t>(options.kv_memory_gib * (1 << 30) / page_bytes);
      check_option(pages >= 1, "kv_memory_gib", "{} GiB holds no KV page ({} bytes each)", options.kv_memory_gib, page_bytes);
      return pages;
    }
    const auto cap = static_cast<int64_t>(kDefaultKvCapGiB * (1 << 30) / page_bytes);
    return std::max(context_pages, std::min(context_pages * options.max_batch, cap));
  }

  std::unique_ptr<ModelBackend> make_cuda_model([[maybe_unused]] int64_t num_pages, [[maybe_unused]] int64_t step_tokens) {
#ifdef VORTEX_HAVE_CUDA
    // A step's page table lists every page of each of its sequences (one chunk each, at most
    // max_batch); with prefix caching they share pages, so only this bounds it (not the pool).
    const int64_t entries = options.max_batch * ((max_context + options.page_size - 1) / options.page_size);
    cuda::CudaModelOptions o{.precision = options.precision == Precision::kF32 ? DType::kF32 : DType::kBF16,
                             .fp8_kv = kv_dtype == KvDtype::kFp8, .page_size = options.page_size,
                             .num_pages = num_pages, .max_tokens = step_tokens, .max_page_entries = entries};
    return std::make_unique<cuda::CudaModel>(weights, o);
#else
    fail("device 'cuda' is not available in this build (built without CUDA)");
#endif
  }

  void check_prompt(const std::vector<int32_t>& tokens, int64_t extra) const {
    check_prompt_ids(tokens, weights->config.vocab_size);
    check(static_cast<int64_t>(tokens.size()) + extra <= max_context,
          "the prompt has {} tokens, which with {} more exceeds the context of {} tokens", tokens.size(), extra, max_context);
  }

  // Runs tokens[start..] through the model in chunks; `all_logits` keeps (n, V) logits of every
  // token in `out_logits`, else only the last token's row stays in `logits`.
  void prefill(const std::vector<int32_t>& tokens, std::vector<int32_t>& pages, bool all_logits, std::vector<float>* out_logits,
               const SparseAttention* attention = nullptr, int64_t sparse_from = 0, SelectionRecorder* recorder = nullptr) {
    check(model->reserve(pages, static_cast<int64_t>(tokens.size())), "the KV cache is full");
    const int64_t n = static_cast<int64_t>(tokens.size());
    for (int64_t start = 0; start < n; start += options.prefill_chunk) {
      cpu::SequenceChunk chunk{.tokens = tokens.data() + start, .count = std::min(options.prefill_chunk, n - start),
                               .start = start, .page_table = &pages, .all_logits = all_logits,
                               .attention = attention, .sparse_from = sparse_from, .recorder = recorder};
      model->forward({&chunk, 1}, logits);
      if (out_logits) out_logits->insert(out_logits->end(), logits.begin(), logits.end());
    }
  }

};

Engine::Engine(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Device parse_device(std::string_view name) {
  if (name == "cpu") return Device::kCpu;
  if (name == "cuda") return Device::kCuda;
  throw OptionError("device", fmt::format("takes cpu or cuda, got '{}'", name));
}

Precision parse_precision(std::string_view name) {
  if (name == "bf16") return Precision::kBf16;
  if (name == "f32") return Precision::kF32;
  throw OptionError("precision", fmt::format("takes bf16 or f32, got '{}'", name));
}

KvDtype parse_kv_dtype(std::string_view name) {
  if (name == "auto") return KvDtype::kAuto;
  if (name == "bf16") return KvDtype::kBf16;
  if (name == "f32") return KvDtype::kF32;
  if (name == "fp8") return KvDtype::kFp8;
  if (name == "fp8-tensor") return KvDtype::kFp8Tensor;
  throw OptionError("kv_dtype", fmt::format("takes auto, bf16, f32, fp8 or fp8-tensor, got '{}'", name));
}

std::string_view kv_dtype_name(KvDtype kv_dtype) {
  switch (kv_dtype) {
    case KvDtype::kAuto: return "auto";
    case KvDtype::kBf16: return "bf16";
    case KvDtype::kF32: return "f32";
    case KvDtype::kFp8: return "fp8";
    case KvDtype::kFp8Tensor: return "fp8-tensor";
  }
  return "auto";
}

std::string_view device_name(Device device) { return device == Device::kCpu ? "cpu" : "cuda"; }
std::string_view precision_name(Precision precision) { return precision == Precision::kBf16 ? "bf16" : "f32"; }

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
    } catch (const Error& e) {
      impl->chat_template.reset();  // reported when a chat template is asked for
      impl->chat_template_error = e.what();
    }
  }
  impl->init();
  return std::unique_ptr<Engine>(new Engine(std::move(impl)));
}

std::unique_ptr<Engine> EngineAccess::from_weights(std::shared_ptr<const ModelWeights> weights, const EngineOptions& options) {
  auto impl = std::make_unique<Engine::Impl>();
  impl->options = options;
  impl->weights = std::move(weights);
  impl->init();
  return std::unique_ptr<Engine>(new Engine(std::move(impl)));
}

int64_t Engine::max_context() const { return impl_->max_context; }
KvDtype Engine::kv_dtype() const { return impl_->kv_dtype; }

ModelInfo Engine::model_info() const {
  const ModelConfig& c = impl_->weights->config;
  return {.architecture = c.architecture_name, .vocab_size = c.vocab_size, .hidden_size = c.hidden_size, .num_layers = c.num_layers,
          .num_heads = c.num_heads, .num_kv_heads = c.num_kv_heads, .head_dim = c.head_dim,
          .max_position_embeddings = c.max_position_embeddings, .eos_token_ids = c.eos_token_ids};
}

bool Engine::has_tokenizer() const { return impl_->tokenizer != nullptr; }
bool Engine::has_chat_template() const { return impl_->chat_template != nullptr; }
std::vector<int32_t> Engine::tokenize(std::string_view text) const { return EngineAccess::require_tokenizer(*this).encode(text); }
std::string Engine::detokenize(const std::vector<int32_t>& ids, bool skip_special_tokens) const {
  return EngineAccess::require_tokenizer(*this).decode(ids, skip_special_tokens);
}

std::vector<int32_t> Engine::chat_tokens(std::string_view messages_json) const {
  nlohmann::json messages = nlohmann::json::parse(messages_json, nullptr, false);
  check(!messages.is_discarded() && messages.is_array(), "chat_tokens: messages must be a JSON array of {{\"role\", \"content\"}} objects");
  return tokenize(EngineAccess::require_chat_template(*this).apply(messages, ChatTemplateOptions{}));
}

BatchEngine& EngineAccess::batch(Engine& engine) { return *engine.impl_->batch; }
const ModelConfig& EngineAccess::config(const Engine& engine) { return engine.impl_->weights->config; }
const Tokenizer* EngineAccess::tokenizer(const Engine& engine) { return engine.impl_->tokenizer.get(); }
const ChatTemplate* EngineAccess::chat_template(const Engine& engine) { return engine.impl_->chat_template.get(); }

const ChatTemplate& EngineAccess::require_chat_template(const Engine& engine) {
  const Engine::Impl& m = *engine.impl_;
  if (m.chat_template) return *m.chat_template;
  check(m.chat_template_error.empty(), "{}", m.chat_template_error);
  fail("this model directory has no chat template (tokenizer_config.json \"chat_template\" or chat_template.jinja)");
}

const Tokenizer& EngineAccess::require_tokenizer(const Engine& engine) {
  check(engine.impl_->tokenizer != nullptr, "this model directory has no tokenizer.json: give token ids instead of text");
  return *engine.impl_->tokenizer;
}

GenerateResult Engine::generate(const GenerateRequest& request, const TextCallback& on_text) {
  BatchEngine& batch = *impl_->batch;
  const BatchEngine::Lease lease(batch, "Engine::generate");
  check(!batch.has_work(), "Engine::generate runs one request on an idle engine, and this engine's batch has other sequences "
        "(a server or another caller is stepping it): submit through that caller instead");
  GenerateResult result;
  std::string error;
  bool done = false;
  SequenceCallbacks callbacks{
      .on_token = [&](const TokenOutput& out) { if (on_text && !out.text.empty()) on_text(out.text); },
      .on_finish = [&](const SequenceFinish& finish) {
        if (on_text && !finish.text.empty()) on_text(finish.text);
        result = finish.result;
        error = finish.error;
        done = true;
      }};
  batch.submit(request, std::move(callbacks));
  // Each step computes at least one token of the sequence, so this ends within prompt + max_tokens steps.
  while (!done) batch.step();
  check(error.empty(), "{}", error);
  return result;
}

ScoreResult Engine::score(const std::vector<int32_t>& tokens, const ScoreOptions& options) {
  Impl& m = *impl_;
  const BatchEngine::Lease lease(*m.batch, "Engine::score");
  m.check_prompt(tokens, 0);
  check(tokens.size() >= 2, "scoring needs at least two tokens, got {}", tokens.size());
  check_option(options.top_n >= 0, "top_n", "must be >= 0, got {}", options.top_n);
  check_option(options.sparse_from >= 0, "sparse_from", "must be >= 0, got {}", options.sparse_from);
  const std::shared_ptr<const SparseAttention> attention = m.batch->resolve_checked(options.attention);
  check(!options.selection_recall || m.model->supports_selection_recall(),
        "selection recall is measured on the CPU backend only (device '{}'): use device cpu", device_name(m.options.device));
  SelectionRecorder recorder;
  std::vector<int32_t> pages;
  std::vector<float> all_logits;
  try {
    m.prefill(tokens, pages, true, &all_logits, attention.get(), options.sparse_from,
              options.selection_recall ? &recorder : nullptr);
  } catch (...) {
    m.model->allocator().release_all(pages);
    throw;
  }
  m.model->allocator().release_all(pages);
  const size_t vocab = static_cast<size_t>(m.weights->config.vocab_size);
  ScoreResult result;
  m.logprobs.resize(vocab);
  if (options.full_logprobs) result.full.reserve((tokens.size() - 1) * vocab);
  for (size_t i = 0; i + 1 < tokens.size(); ++i) {
    log_softmax({all_logits.data() + i * vocab, vocab}, m.logprobs);
    result.logprobs.push_back(m.logprobs[static_cast<size_t>(tokens[i + 1])]);
    if (options.top_n > 0) result.top.push_back(top_logprobs(m.logprobs, options.top_n));
    if (options.full_logprobs) result.full.insert(result.full.end(), m.logprobs.begin(), m.logprobs.end());
  }
  result.selection = recorder.take();
  std::sort(result.selection.begin(), result.selection.end(), [](const SelectionSample& a, const SelectionSample& b) {
    return std::tie(a.position, a.layer, a.kv_head) < std::tie(b.position, b.layer, b.kv_head);
  });
  return result;
}

}  // namespace vortex
