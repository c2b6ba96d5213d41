#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>
#include <span>
#include <vector>

#include "backend/cuda/cuda_bench.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_model.h"
#include "backend/cuda/device_buffer.h"
#include "backend/cuda/fill_random.cuh"
#include "backend/cuda/gemm.cuh"

namespace vortex::cuda {
namespace {

// A timed step means something only if it computed something: one more forward of the last
// timed chunks must give finite logits (random weights and KV do; NaN or inf means a kernel went
// wrong, and an argmax over NaNs is timed as fast), and the timed steps' greedy ids must be tokens.
void check_output(CudaModel& model, std::span<const SequenceChunk> chunks, const std::vector<int32_t>& ids, const char* what) {
  const int64_t V = model.config().vocab_size;
  for (size_t i = 0; i < ids.size(); ++i)
    check(ids[i] >= 0 && ids[i] < V, "bench {}: row {} chose token {}, outside [0, {})", what, i, ids[i], V);
  std::vector<float> logits;
  model.forward(chunks, logits);
  for (size_t i = 0; i < logits.size(); ++i)
    check(std::isfinite(logits[i]), "bench {}: logit {} of row {} is {}: the step computed garbage", what, static_cast<int64_t>(i) % V,
          static_cast<int64_t>(i) / V, logits[i]);
}

// Times `body` with CUDA events on `stream`: median of `repeats` runs after 2 warm-ups.
template <typename Body>
double median_ms(cudaStream_t stream, int repeats, Body body) {
  cudaEvent_t start, stop;
  VX_CUDA(cudaEventCreate(&start));
  VX_CUDA(cudaEventCreate(&stop));
  for (int i = 0; i < 2; ++i) body();
  std::vector<float> times;
  for (int i = 0; i < repeats; ++i) {
    VX_CUDA(cudaEventRecord(start, stream));
    body();
    VX_CUDA(cudaEventRecord(stop, stream));
    VX_CUDA(cudaEventSynchronize(stop));
    float ms = 0;
    VX_CUDA(cudaEventElapsedTime(&ms, start, stop));
    times.push_back(ms);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

}  // namespace

std::string device_name() {
  cudaDeviceProp prop{};
  VX_CUDA(cudaGetDeviceProperties(&prop, 0));
  return prop.name;
}

DeviceCeilings measure_device_ceilings() {
  DeviceCeilings c;
  cudaDeviceProp prop{};
  VX_CUDA(cudaGetDeviceProperties(&prop, 0));
  c.gpu = prop.name;
  cudaStream_t stream;
  VX_CUDA(cudaStreamCreate(&stream));
  {
    const size_t bytes = size_t{2} << 30;  // 2 GiB, far beyond the 60 MB L2
    DeviceBuffer<uint8_t> a(bytes), b(bytes);
    launch_fill_random(reinterpret_cast<float*>(a.get()), static_cast<int64_t>(bytes / 4), 1.0f, 1, stream);
    double ms = median_ms(stream, 10, [&] { VX_CUDA(cudaMemcpyAsync(b.get(), a.get(), bytes, cudaMemcpyDeviceToDevice, stream)); });
    c.copy_GBps = 2.0 * static_cast<double>(bytes) / (ms / 1e3) / 1e9;
  }
  {
    const int64_t n = 8192;
    DeviceBuffer<__nv_bfloat16> x(static_cast<size_t>(n * n)), w(static_cast<size_t>(n * n));
    DeviceBuffer<float> y(static_cast<size_t>(n * n));
    launch_fill_random(x.get(), n * n, 1.0f, 2, stream);
    launch_fill_random(w.get(), n * n, 1.0f, 3, stream);
    Gemm gemm;
    GemmArgs args{.x = x.get(), .w = w.get(), .y = y.get(), .m = n, .n = n, .k = n, .dtype = DType::kBF16};
    double ms = median_ms(stream, 10, [&] { gemm.run(args, stream); });
    c.gemm_TFLOPs = 2.0 * n * n * n / (ms / 1e3) / 1e12;
  }
  cudaStreamDestroy(stream);
  return c;
}

double time_decode_step(CudaModel& model, int64_t batch, int64_t context, int64_t steps, const SparseAttention* attention,
                        std::map<std::string, double>* breakdown) {
  const int64_t tokens = context + steps + 4;
  std::vector<std::vector<int32_t>> pages(static_cast<size_t>(batch));
  for (auto& table : pages) check(model.reserve(table, tokens), "bench: the KV cache cannot hold {} × {} tokens", batch, tokens);
  model.fill_kv_random(11);
  if (attention) {  // the random keys get their summaries, as a prefill would have made them
    model.prepare_sparse(*attention);
    model.summarise_kv();
  }
  std::vector<int32_t> next(static_cast<size_t>(batch), 1), ids;
  std::vector<SequenceChunk> chunks(static_cast<size_t>(batch));
  int64_t position = context;
  auto step = [&] {
    for (size_t b = 0; b < chunks.size(); ++b)
      chunks[b] = {.tokens = &next[b], .count = 1, .start = position, .page_table = &pages[b], .attention = attention, .sparse_from = 0};
    model.forward_greedy(std::span<const SequenceChunk>(chunks.data(), chunks.size()), ids);
    position = std::min(position + 1, tokens - 1);
  };
  double ms = median_ms(static_cast<cudaStream_t>(model.stream()), static_cast<int>(steps), step);
  check_output(model, chunks, ids, "decode");
  if (breakdown) *breakdown = model.profile_forward(std::span<const SequenceChunk>(chunks.data(), chunks.size()));
  for (auto& table : pages) model.allocator().release_all(table);
  return ms;
}

double time_verify_step(CudaModel& model, int64_t batch, int64_t context, int64_t gamma, int64_t steps) {
  const int64_t tokens = context + gamma + 1;
  std::vector<std::vector<int32_t>> pages(static_cast<size_t>(batch));
  for (auto& table : pages) check(model.reserve(table, tokens), "bench: the KV cache cannot hold {} × {} tokens", batch, tokens);
  model.fill_kv_random(11);
  std::vector<int32_t> drafted(static_cast<size_t>(gamma + 1), 1), ids;
  std::vector<SequenceChunk> chunks(static_cast<size_t>(batch));
  for (size_t b = 0; b < chunks.size(); ++b)
    chunks[b] = {.tokens = drafted.data(), .count = gamma + 1, .start = context, .page_table = &pages[b], .all_logits = true};
  double ms = median_ms(static_cast<cudaStream_t>(model.stream()), static_cast<int>(steps),
                        [&] { model.forward_greedy(std::span<const SequenceChunk>(chunks.data(), chunks.size()), ids); });
  check_output(model, chunks, ids, "verify");
  for (auto& table : pages) model.allocator().release_all(table);
  return ms;
}

double time_prefill(CudaModel& model, int64_t prompt_len, int64_t repeats) {
  std::vector<int32_t> pages, ids;
  check(model.reserve(pages, prompt_len), "bench: the KV cache cannot hold {} tokens", prompt_len);
  std::vector<int32_t> prompt(static_cast<size_t>(prompt_len));
  for (size_t i = 0; i < prompt.size(); ++i) prompt[i] = static_cast<int32_t>((i * 7919) % 1000 + 10);
  const int64_t chunk_tokens = model.max_tokens();
  auto run = [&] {
    for (int64_t start = 0; start < prompt_len; start += chunk_tokens) {
      SequenceChunk chunk{.tokens = prompt.data() + start, .count = std::min(chunk_tokens, prompt_len - start), .start = start, .page_table = &pages};
      model.forward_greedy(std::span<const SequenceChunk>(&chunk, 1), ids);
    }
  };
  double ms = median_ms(static_cast<cudaStream_t>(model.stream()), static_cast<int>(repeats), run);
  const int64_t last = (prompt_len - 1) / chunk_tokens * chunk_tokens;
  const SequenceChunk tail{.tokens = prompt.data() + last, .count = prompt_len - last, .start = last, .page_table = &pages};
  check_output(model, std::span<const SequenceChunk>(&tail, 1), ids, "prefill");
  model.allocator().release_all(pages);
  return ms;
}

}  // namespace vortex::cuda
