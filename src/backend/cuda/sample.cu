#include "backend/cuda/sample.cuh"

#include <cub/device/device_radix_sort.cuh>

#include <bit>
#include <cstdint>

#include "backend/cuda/argmax.cuh"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device_buffer.h"
#include "backend/cuda/types.cuh"

namespace vortex::cuda {
namespace {

constexpr int kThreads = 1024;
constexpr int kWarps = kThreads / 32;

// TokenDraw::greedy for device code (chunk.h is a host header).
__device__ __forceinline__ bool greedy(const TokenDraw& d) { return d.temperature == 0.0f || d.top_k == 1; }

// Order-preserving bits of a float (a > b ⇔ key(a) > key(b)), and back.
__device__ __forceinline__ uint32_t order_key(float v) {
  const uint32_t u = __float_as_uint(v);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
__device__ __forceinline__ float from_order_key(uint32_t k) {
  return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}

// Sort keys: row in the high bits, then the scaled logit descending (ascending sort of its
// complemented order key); the values are ids 0..V-1, so the stable sort keeps equal logits in id order.
__global__ void sample_keys_kernel(SampleParams p, uint64_t* keys, int32_t* ids) {
  const int64_t row = blockIdx.y, i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= p.vocab) return;
  const TokenDraw d = p.draws[row];
  const float logit = p.logits[row * p.vocab + i];
  const float s = greedy(d) ? logit : __fdiv_rn(logit, d.temperature);
  keys[row * p.vocab + i] = (static_cast<uint64_t>(row) << 32) | (~order_key(s) & 0xffffffffu);
  ids[row * p.vocab + i] = static_cast<int32_t>(i);
}

// Block-wide sum (fixed order, so every thread gets the same value) and min.
template <typename T>
__device__ T block_sum_all(T v, T* scratch) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  __syncthreads();
  if (threadIdx.x % 32 == 0) scratch[threadIdx.x / 32] = v;
  __syncthreads();
  T total = 0;
  for (int w = 0; w < kWarps; ++w) total += scratch[w];
  return total;
}
__device__ int64_t block_min_all(int64_t v, int64_t* scratch) {
  for (int o = 16; o > 0; o >>= 1) v = min(v, __shfl_xor_sync(0xffffffffu, v, o));
  __syncthreads();
  if (threadIdx.x % 32 == 0) scratch[threadIdx.x / 32] = v;
  __syncthreads();
  int64_t m = scratch[0];
  for (int w = 1; w < kWarps; ++w) m = min(m, scratch[w]);
  return m;
}
// The first sorted position j < keep at which before + Σ_{i ≤ j} prob_i reaches the bound
// (`strict`: exceeds it), over the block's threads in order; `keep` when none does.
template <typename Prob>
__device__ int64_t first_reaching(Prob prob, int64_t lo, int64_t hi, double bound, bool strict, int64_t keep,
                                  double* dscratch, int64_t* iscratch) {
  double local = 0.0;
  for (int64_t j = lo; j < hi; ++j) local += prob(j);
  double all = 0.0;
  double run = block_exclusive_sum(local, dscratch, all);
  int64_t found = keep;
  for (int64_t j = lo; j < hi; ++j) {
    run += prob(j);
    if (strict ? run > bound : run >= bound) {
      found = j;
      break;
    }
  }
  return block_min_all(found, iscratch);
}

// One block per row over its sorted (key, id) pairs; the CPU's Sampler::sample, step by step.
__global__ void __launch_bounds__(kThreads) sample_select_kernel(SampleParams p, const uint64_t* keys, const int32_t* ids) {
  __shared__ double dscratch[kWarps];
  __shared__ int64_t iscratch[kWarps];
  const int64_t row = blockIdx.x, V = p.vocab;
  const uint64_t* k = keys + row * V;
  const int32_t* id = ids + row * V;
  const TokenDraw d = p.draws[row];
  if (greedy(d)) {  // the sort put the first maximum first
    if (threadIdx.x == 0) p.ids[row] = id[0];
    return;
  }
  int64_t keep = d.top_k > 0 && d.top_k < V ? d.top_k : V;
  // Sorted positions are split into one contiguous run per thread, so "in order" is thread order.
  const int64_t per_thread = (V + kThreads - 1) / kThreads;
  const int64_t lo = min(V, threadIdx.x * per_thread);
  const int64_t hi_all = min(V, lo + per_thread);
  const double s0 = from_order_key(~static_cast<uint32_t>(k[0]));
  auto weight = [&](int64_t j) { return exp(static_cast<double>(from_order_key(~static_cast<uint32_t>(k[j]))) - s0); };
  // Softmax over the top-k.
  double local = 0.0;
  for (int64_t j = lo; j < min(hi_all, keep); ++j) local += weight(j);
  const double total = block_sum_all(local, dscratch);
  auto prob = [&](int64_t j) { return weight(j) / total; };
  // top-p: the shortest prefix whose mass reaches top_p.
  if (d.top_p < 1.0f) {
    const int64_t hi = min(hi_all, keep);
    const int64_t cut = first_reaching(prob, lo, hi, static_cast<double>(d.top_p), false, keep, dscratch, iscratch);
    keep = min(keep, cut + 1);
  }
  // min-p: the probabilities are sorted, so the tokens at or above min_p × best form a prefix.
  if (d.min_p > 0.0f) {
    const double threshold = static_cast<double>(d.min_p) * prob(0);
    double count = 0.0;
    for (int64_t j = lo; j < min(hi_all, keep); ++j) count += prob(j) >= threshold ? 1.0 : 0.0;
    const int64_t above = static_cast<int64_t>(block_sum_all(count, dscratch));
    keep = max(int64_t{1}, min(keep, above));
  }
  // The draw: the first kept token at which the cumulative probability exceeds uniform × kept mass.
  const int64_t hi = min(hi_all, keep);
  local = 0.0;
  for (int64_t j = lo; j < hi; ++j) local += prob(j);
  const double kept_mass = block_sum_all(local, dscratch);
  const int64_t chosen = first_reaching(prob, lo, hi, d.uniform * kept_mass, true, keep - 1, dscratch, iscratch);
  if (threadIdx.x == 0) p.ids[row] = id[chosen];
}

}  // namespace

struct DeviceSampler::Buffers {
  DeviceBuffer<uint64_t> keys_in, keys_out;  // (R · V)
  DeviceBuffer<int32_t> ids_in, ids_out;     // (R · V)
  DeviceBuffer<uint8_t> temp;
};

DeviceSampler::DeviceSampler() : buffers_(new Buffers) {}
DeviceSampler::~DeviceSampler() { delete buffers_; }

void DeviceSampler::run(const SampleParams& p, const TokenDraw* host_draws, cudaStream_t stream) {
  check(p.vocab > 0 && p.vocab < (int64_t{1} << 31), "sample: vocabulary of {} ids is out of range", p.vocab);
  if (p.rows == 0) return;
  bool all_greedy = true;
  for (int64_t r = 0; r < p.rows; ++r) all_greedy = all_greedy && host_draws[r].greedy();
  if (all_greedy) {
    launch_argmax({.logits = p.logits, .ids = p.ids, .rows = p.rows, .vocab = p.vocab}, stream);
    return;
  }
  const size_t n = static_cast<size_t>(p.rows * p.vocab);
  Buffers& b = *buffers_;
  if (b.keys_in.size() < n) {
    b.keys_in = DeviceBuffer<uint64_t>(n), b.keys_out = DeviceBuffer<uint64_t>(n);
    b.ids_in = DeviceBuffer<int32_t>(n), b.ids_out = DeviceBuffer<int32_t>(n);
  }
  const int end_bit = 32 + std::bit_width(static_cast<uint64_t>(p.rows - 1));
  size_t temp_bytes = 0;
  VX_CUDA(cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, b.keys_in.get(), b.keys_out.get(), b.ids_in.get(), b.ids_out.get(),
                                          static_cast<int64_t>(n), 0, end_bit, stream));
  if (b.temp.size() < temp_bytes) b.temp = DeviceBuffer<uint8_t>(temp_bytes);
  dim3 grid(static_cast<unsigned>((p.vocab + 255) / 256), static_cast<unsigned>(p.rows));
  sample_keys_kernel<<<grid, 256, 0, stream>>>(p, b.keys_in.get(), b.ids_in.get());
  VX_CUDA_LAUNCH();
  VX_CUDA(cub::DeviceRadixSort::SortPairs(b.temp.get(), temp_bytes, b.keys_in.get(), b.keys_out.get(), b.ids_in.get(), b.ids_out.get(),
                                          static_cast<int64_t>(n), 0, end_bit, stream));
  sample_select_kernel<<<static_cast<unsigned>(p.rows), kThreads, 0, stream>>>(p, b.keys_out.get(), b.ids_out.get());
  VX_CUDA_LAUNCH();
}

}  // namespace vortex::cuda
