#include "backend/cuda/sample.cuh"

#include <cub/device/device_radix_sort.cuh>

#include <algorithm>
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

__device__ float block_max_all(float v, float* scratch) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  __syncthreads();
  if (threadIdx.x % 32 == 0) scratch[threadIdx.x / 32] = v;
  __syncthreads();
  float m = scratch[0];
  for (int w = 1; w < kWarps; ++w) m = fmaxf(m, scratch[w]);
  return m;
}

struct ReduceParams {
  const float* logits;          // (R, V)
  const int32_t* drawn;         // (R) run()'s tokens
  const RowReduction* rows;     // (R)
  const int64_t* policy_offsets;
  const int32_t* policy_ids;
  const double* policy_probs;
  const int32_t* sorted_ids;    // (R, V) ids best first, or null
  const int64_t* top_offsets;   // (R + 1)
  int32_t* top_ids;
  double* top_probs;
  RowStats* stats;              // (R)
  int64_t vocab;
};

// One block per row; runtime/rollout.cpp's reduce_rows is its host twin.
__global__ void __launch_bounds__(kThreads) reduce_kernel(ReduceParams p) {
  __shared__ double dscratch[kWarps];
  __shared__ float fscratch[kWarps];
  const int64_t row = blockIdx.x, V = p.vocab;
  const RowReduction want = p.rows[row];
  if (!(want.temperature > 0.0f)) return;
  const float* z = p.logits + row * V;
  const double inv_t = 1.0 / static_cast<double>(want.temperature);
  float zmax = -INFINITY;
  for (int64_t i = threadIdx.x; i < V; i += kThreads) zmax = fmaxf(zmax, z[i]);
  const double top = static_cast<double>(block_max_all(zmax, fscratch)) * inv_t;  // max of z·(1/T): T > 0
  double local = 0.0;
  for (int64_t i = threadIdx.x; i < V; i += kThreads) local += exp(static_cast<double>(z[i]) * inv_t - top);
  const double sum = block_sum_all(local, dscratch);
  auto prob = [&](int32_t v) { return exp(static_cast<double>(z[v]) * inv_t - top) / sum; };
  RowStats out{};
  const int32_t token = want.token >= 0 ? want.token : p.drawn[row];
  out.logprob = static_cast<double>(z[token]) * inv_t - top - log(sum);
  if (want.policy >= 0) {
    double overlap = 0.0, covered = 0.0, obrs = 0.0;
    for (int64_t i = p.policy_offsets[want.policy] + threadIdx.x; i < p.policy_offsets[want.policy + 1]; i += kThreads) {
      const double q = p.policy_probs[i], pv = prob(p.policy_ids[i]);
      overlap += fmin(q, pv);
      covered += pv;
      if (want.lambda > 0.0) obrs += fmin(q, pv / want.lambda);
    }
    out.overlap = block_sum_all(overlap, dscratch);
    out.covered = block_sum_all(covered, dscratch);
    out.obrs = block_sum_all(obrs, dscratch);
  }
  if (threadIdx.x == 0) p.stats[row] = out;
  if (want.top > 0 && p.sorted_ids) {
    const int64_t k = min(static_cast<int64_t>(want.top), V), offset = p.top_offsets[row];
    for (int64_t j = threadIdx.x; j < k; j += kThreads) {
      const int32_t id = p.sorted_ids[row * V + j];
      p.top_ids[offset + j] = id;
      p.top_probs[offset + j] = prob(id);
    }
  }
}

template <typename T>
T* grown(DeviceBuffer<T>& buffer, size_t count) {
  if (buffer.size() < count) buffer = DeviceBuffer<T>(std::max<size_t>(count, buffer.size() + buffer.size() / 2));
  return buffer.get();
}
template <typename T>
T* uploaded(DeviceBuffer<T>& buffer, const std::vector<T>& host, cudaStream_t stream) {
  T* device = grown(buffer, std::max<size_t>(host.size(), 1));
  if (!host.empty()) VX_CUDA(cudaMemcpyAsync(device, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice, stream));
  return device;
}

}  // namespace

struct DeviceSampler::Buffers {
  DeviceBuffer<uint64_t> keys_in, keys_out;  // (R · V)
  DeviceBuffer<int32_t> ids_in, ids_out;     // (R · V)
  DeviceBuffer<uint8_t> temp;
  // reduce()'s inputs and outputs
  DeviceBuffer<RowReduction> rows;
  DeviceBuffer<int64_t> policy_offsets, top_offsets;
  DeviceBuffer<int32_t> policy_ids, top_ids;
  DeviceBuffer<double> policy_probs, top_probs;
  DeviceBuffer<RowStats> stats;
};

DeviceSampler::DeviceSampler() : buffers_(new Buffers) {}
DeviceSampler::~DeviceSampler() { delete buffers_; }

void DeviceSampler::run(const SampleParams& p, const TokenDraw* host_draws, cudaStream_t stream, bool sorted) {
  check(p.vocab > 0 && p.vocab < (int64_t{1} << 31), "sample: vocabulary of {} ids is out of range", p.vocab);
  sorted_rows_ = 0;
  if (p.rows == 0) return;
  bool all_greedy = true;
  for (int64_t r = 0; r < p.rows; ++r) all_greedy = all_greedy && host_draws[r].greedy();
  if (all_greedy && !sorted) {
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
  sorted_rows_ = p.rows;
}

void DeviceSampler::reduce(const SampleParams& p, RowReductions& r, cudaStream_t stream) {
  const int64_t R = p.rows, V = p.vocab;
  check(static_cast<int64_t>(r.rows.size()) == R, "internal: {} row reductions for {} rows", r.rows.size(), R);
  check(!r.policy_offsets.empty() && r.policy_offsets.back() == static_cast<int64_t>(r.policy_ids.size()) &&
            r.policy_ids.size() == r.policy_probs.size(),
        "internal: policy distributions of {} offsets, {} ids, {} probabilities", r.policy_offsets.size(), r.policy_ids.size(),
        r.policy_probs.size());
  r.top_offsets.assign(1, 0);
  for (const RowReduction& want : r.rows) {
    check(want.token < V && want.policy < static_cast<int64_t>(r.policy_offsets.size()) - 1,
          "internal: a row reduction names token {} of {} or policy {} of {}", want.token, V, want.policy, r.policy_offsets.size() - 1);
    const int64_t top = want.temperature > 0.0f && want.top > 0 ? std::min<int64_t>(want.top, V) : 0;
    r.top_offsets.push_back(r.top_offsets.back() + top);
  }
  const auto tops = static_cast<size_t>(r.top_offsets.back());
  check(tops == 0 || sorted_rows_ == R, "internal: exporting top tokens needs run(..., sorted = true) first");
  if (R == 0) return;
  Buffers& b = *buffers_;
  const ReduceParams params{.logits = p.logits, .drawn = p.ids, .rows = uploaded(b.rows, r.rows, stream),
                            .policy_offsets = uploaded(b.policy_offsets, r.policy_offsets, stream),
                            .policy_ids = uploaded(b.policy_ids, r.policy_ids, stream),
                            .policy_probs = uploaded(b.policy_probs, r.policy_probs, stream),
                            .sorted_ids = tops ? b.ids_out.get() : nullptr,
                            .top_offsets = uploaded(b.top_offsets, r.top_offsets, stream),
                            .top_ids = grown(b.top_ids, std::max<size_t>(tops, 1)),
                            .top_probs = grown(b.top_probs, std::max<size_t>(tops, 1)),
                            .stats = grown(b.stats, static_cast<size_t>(R)), .vocab = V};
  VX_CUDA(cudaMemsetAsync(params.stats, 0, static_cast<size_t>(R) * sizeof(RowStats), stream));
  reduce_kernel<<<static_cast<unsigned>(R), kThreads, 0, stream>>>(params);
  VX_CUDA_LAUNCH();
  r.stats.resize(static_cast<size_t>(R));
  r.top_ids.resize(tops), r.top_probs.resize(tops);
  VX_CUDA(cudaMemcpyAsync(r.stats.data(), params.stats, r.stats.size() * sizeof(RowStats), cudaMemcpyDeviceToHost, stream));
  if (tops) {
    VX_CUDA(cudaMemcpyAsync(r.top_ids.data(), params.top_ids, tops * sizeof(int32_t), cudaMemcpyDeviceToHost, stream));
    VX_CUDA(cudaMemcpyAsync(r.top_probs.data(), params.top_probs, tops * sizeof(double), cudaMemcpyDeviceToHost, stream));
  }
  VX_CUDA(cudaStreamSynchronize(stream));
}

}  // namespace vortex::cuda
