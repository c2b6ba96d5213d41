// The decoder on the GPU: weights, paged KV cache and scratch in device memory, forward() over a
// batch of sequence chunks, like cpu::CpuModel. This header has no CUDA types so that host code
// (the engine, the CLI) includes it freely.
//
// Two precisions: kBF16 (bf16 weights, bf16 GEMM inputs and KV cache, fp32 accumulation and
// residual stream — the fast path) and kF32 (everything fp32, no TF32 — the reference mode that
// matches the CPU backend to within fp32 rounding).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/chunk.h"
#include "core/dtype.h"
#include "io/hf_config.h"
#include "kv/page_allocator.h"

namespace vortex {
struct ModelWeights;
}

namespace vortex::cuda {

struct CudaModelOptions {
  DType precision = DType::kBF16;  // kBF16 or kF32
  bool fp8_kv = false;             // K and V in fp8 e4m3 with a scale per row (kv_fp8.cuh); precision kBF16 only
  int64_t page_size = 16;
  int64_t num_pages = 0;           // KV pages (each holds page_size tokens of every layer)
  int64_t max_tokens = 256;        // tokens per forward (prefill chunk + decode tokens)
  // Page-table entries per forward (Σ over its chunks of their sequences' pages); 0 = num_pages · 2,
  // enough only when sequences share no pages. The engine passes max_batch · pages per context.
  int64_t max_page_entries = 0;
};

struct CudaDeviceInfo {
  std::string name;
  int multiprocessors = 0;
  size_t memory_bytes = 0;
};
CudaDeviceInfo cuda_device_info();  // throws vortex::Error when there is no usable GPU

class CudaModel : public ModelBackend {
 public:
  // Uploads host weights (any checkpoint dtype) converted to `options.precision`.
  CudaModel(std::shared_ptr<const ModelWeights> weights, const CudaModelOptions& options);
  // Random weights made on the GPU (benchmarks of real shapes without a checkpoint).
  CudaModel(const ModelConfig& config, const CudaModelOptions& options, uint64_t seed);
  ~CudaModel();

  // Logits (R, V) to the host: one row per requested position, chunk by chunk.
  void forward(std::span<const SequenceChunk> chunks, std::vector<float>& logits) override;
  // Greedy ids (R) computed on the GPU; only the ids come back.
  void forward_greedy(std::span<const SequenceChunk> chunks, std::vector<int32_t>& ids);
  // Token ids (R) sampled on the GPU (sample.cuh), one draw per logits row; only the ids come back.
  void forward_sample(std::span<const SequenceChunk> chunks, std::span<const TokenDraw> draws, std::vector<int32_t>& tokens,
                      RowReductions* reductions = nullptr) override;
  bool samples_on_device() const override { return true; }
  bool reduces_on_device() const override { return true; }

  PageAllocator& allocator() override;
  bool supports_sparse() const override;
  // Compiles the spec's flow indexers (NVRTC; any thread, beside a running forward).
  void compile_sparse(const SparseAttention& attention) override;
  // Loads the indexers and allocates the flow's page summaries and state (idempotent).
  void prepare_sparse(const SparseAttention& attention) override;
  // Decode graphs held now (at most 512, the most recently used).
  size_t cached_graphs() const;
  ForwardCounters forward_counters() const override;
  // Benchmarks (random KV without prefill): summarises every page for every prepared flow.
  void summarise_kv();
  // Benchmarks: runs one forward eagerly with a CUDA event between phases and returns the ms spent
  // per phase ("attention", "rest" = everything else of the dense model; sparse: "plan",
  // "summaries", "indexer", "topk", "page_lists"). Launch gaps count towards the phase after them.
  std::map<std::string, double> profile_forward(std::span<const SequenceChunk> chunks);
  bool reserve(std::vector<int32_t>& pages, int64_t tokens) override;
  int64_t max_tokens() const override;
  int64_t page_size() const override;
  const ModelConfig& config() const;
  size_t weight_bytes() const;  // bytes of every weight matrix (what a decode step reads)
  size_t kv_bytes_per_token() const;
  void fill_kv_random(uint64_t seed) override;  // benchmarks: random K and V in every page
  void synchronize();
  void* stream();  // the cudaStream_t the model runs on

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace vortex::cuda
