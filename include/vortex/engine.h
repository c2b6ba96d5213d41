// The Vortex engine: a loaded model (weights, tokenizer and chat template when present) on a
// backend, with generate() and score(). The public entry point of the library.
#pragma once

#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "vortex/error.h"
#include "vortex/request.h"

namespace vortex {

enum class Device { kCpu, kCuda };
enum class Precision { kBf16, kF32 };  // cuda: bf16 (fast) or f32 (the reference: matches the CPU)
// "cpu" / "cuda", "bf16" / "f32" (the command line's and Python's spellings); anything else is a
// vortex::OptionError naming the option ("device", "precision"). Every failure the library reports
// is a vortex::Error (vortex/error.h).
// What the KV cache stores (src/kv/kv_rounding.h has the rounding of each):
//   kAuto       the compute precision's type: f32 on the CPU, bf16 or f32 on cuda
//   kBf16       bfloat16 (on the CPU: fp32 rounded to bf16, as the GPU stores it)
//   kF32        fp32 (the CPU, or cuda with Precision::kF32)
//   kFp8        one byte per element with a power-of-two scale per (token, KV head) row: values
//               e4m3, keys int8 (Hadamard-rotated where head_dim is a power of two)
//   kFp8Tensor  fp8 e4m3 with no scale (one scale of 1 for the cache): CPU only, for comparison
enum class KvDtype { kAuto, kBf16, kF32, kFp8, kFp8Tensor };
Device parse_device(std::string_view name);
Precision parse_precision(std::string_view name);
KvDtype parse_kv_dtype(std::string_view name);  // "auto", "bf16", "f32", "fp8", "fp8-tensor"
std::string_view device_name(Device device);
std::string_view precision_name(Precision precision);
std::string_view kv_dtype_name(KvDtype kv_dtype);

struct EngineOptions {
  Device device = Device::kCpu;
  Precision precision = Precision::kBf16;  // cuda only
  KvDtype kv_dtype = KvDtype::kAuto;
  int64_t page_size = 16;       // KV page size: 16, 32 or 64 (8 on the CPU)
  int64_t max_context = 0;      // tokens per sequence; 0 = the model's max_position_embeddings
  int64_t prefill_chunk = 256;  // prompt tokens per forward (chunked prefill)
  int64_t max_batch = 1;        // sequences in the running batch at most (the server raises it)
  double kv_memory_gib = 0.0;   // KV cache size; 0 = max_context tokens per running sequence, capped at 4 GiB
  // Sequences share the KV pages of common prefixes (a prompt's samples, a system prompt, earlier
  // chat turns); cached pages nobody holds are evicted when the pool needs them.
  bool prefix_caching = true;
  // Ranks the model is split over, Megatron-style (heads, MLP features and vocabulary; issue #20).
  // On the CPU the ranks are threads of this process with their shards, joined by a shared-memory
  // all-reduce: the oracle a GPU's tensor parallelism is checked against, not a speed-up (one rank
  // already uses every core). On cuda (one GPU per rank over NCCL) only 1 runs today. The model must
  // split that way: ranks divide its query heads and MLP size, and divide its KV heads or are a
  // multiple of them (then sparse attention is refused: a rank would hold part of a head's queries,
  // and each rank caches its replica of a KV head, so the KV cache takes ranks / G times kv_memory_gib).
  int64_t tensor_parallel = 1;
};

// What a loaded model is (its config.json's shapes).
struct ModelInfo {
  std::string architecture;  // as config.json names it, e.g. "Qwen3ForCausalLM"
  int64_t vocab_size = 0, hidden_size = 0, num_layers = 0, num_heads = 0, num_kv_heads = 0, head_dim = 0;
  int64_t max_position_embeddings = 0;
  std::vector<int32_t> eos_token_ids;
};

// Receives text as it becomes final (never a broken UTF-8 sequence, never part of a stop string).
using TextCallback = std::function<void(std::string_view text)>;

class Engine {
 public:
  // Loads a Hugging Face model directory; tokenizer and chat template are optional.
  static std::unique_ptr<Engine> open(const std::filesystem::path& model_dir, const EngineOptions& options = {});
  ~Engine();

  // One thread at a time may call generate() and score(); while a server (ServingEngine) runs on
  // this engine they are refused with a vortex::Error (the server is the way to share an engine).
  GenerateResult generate(const GenerateRequest& request, const TextCallback& on_text = nullptr);
  // Teacher-forced log-probabilities; with a sparse `attention`, position i's distribution is what
  // a decode step at i would compute (the pages it selects depend only on tokens <= i).
  ScoreResult score(const std::vector<int32_t>& tokens, const ScoreOptions& options);
  ScoreResult score(const std::vector<int32_t>& tokens, int32_t top_n = 0) {
    ScoreOptions options;
    options.top_n = top_n;
    return score(tokens, options);
  }

  ModelInfo model_info() const;
  bool has_tokenizer() const;      // tokenizer.json was found
  bool has_chat_template() const;  // a chat template was found and parsed
  // Text ↔ token ids with the model's tokenizer; a vortex::Error when it has none.
  std::vector<int32_t> tokenize(std::string_view text) const;
  std::string detokenize(const std::vector<int32_t>& ids, bool skip_special_tokens = false) const;
  // The chat template applied to `messages_json` (an array of {"role", "content"} objects, as the
  // OpenAI API sends them) with the assistant's turn opened, tokenised; a vortex::Error when the
  // model has no template or the template rejects the messages.
  std::vector<int32_t> chat_tokens(std::string_view messages_json) const;
  int64_t max_context() const;  // tokens per sequence: the model's context, at most what the KV cache holds
  KvDtype kv_dtype() const;     // what the KV cache stores (kAuto resolved)

  struct Impl;

 private:
  friend struct EngineAccess;  // the library's own tools (src/runtime/engine_access.h)
  explicit Engine(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace vortex
