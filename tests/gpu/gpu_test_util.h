// Helpers for GPU tests: device copies of host vectors, NaN-poisoned outputs, normalised errors.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <type_traits>
#include <vector>

#include "backend/cpu/attention.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device_buffer.h"

namespace vortex::test {

template <typename T>
cuda::DeviceBuffer<T> to_device(const std::vector<T>& host) {
  cuda::DeviceBuffer<T> buffer(host.size());
  if (!host.empty()) VX_CUDA(cudaMemcpy(buffer.get(), host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice));
  return buffer;
}

template <typename T>
std::vector<T> to_host(const cuda::DeviceBuffer<T>& buffer) {
  VX_CUDA(cudaDeviceSynchronize());
  std::vector<T> host(buffer.size());
  if (!host.empty()) VX_CUDA(cudaMemcpy(host.data(), buffer.get(), buffer.bytes(), cudaMemcpyDeviceToHost));
  return host;
}

// An output buffer filled with NaN (fp32 or bf16), so elements a kernel fails to write fail the test.
template <typename T>
cuda::DeviceBuffer<T> poisoned(size_t count) {
  T poison;
  if constexpr (std::is_integral_v<T>) poison = static_cast<T>(-12345);
  else poison = static_cast<T>(std::numeric_limits<float>::quiet_NaN());
  std::vector<T> host(count, poison);
  return to_device(host);
}

inline std::vector<__nv_bfloat16> to_bf16(const std::vector<float>& values) {
  std::vector<__nv_bfloat16> out(values.size());
  for (size_t i = 0; i < values.size(); ++i) out[i] = __float2bfloat16(values[i]);
  return out;
}
inline std::vector<float> to_float(const std::vector<__nv_bfloat16>& values) {
  std::vector<float> out(values.size());
  for (size_t i = 0; i < values.size(); ++i) out[i] = __bfloat162float(values[i]);
  return out;
}
inline std::vector<float> round_bf16(const std::vector<float>& values) { return to_float(to_bf16(values)); }

// Random sparse page lists for decode rows, as the planner makes them: per (row, kv head) each of
// the row's full pages kept with probability 1 / keep_one_in (one draw of a mt19937(seed) per page,
// rows then heads then pages in order), ascending, the row's own page last.
struct SparseLists {
  std::vector<std::vector<std::vector<int32_t>>> lists;  // (R) of (G) lists of page indices into `pages`
  std::vector<int32_t> flat;                             // every list's page ids, one list after another
  std::vector<int64_t> offsets;                          // (R, G): where each list starts in flat
  std::vector<int32_t> lens;                             // (R, G): keys each list attends
};
inline SparseLists random_sparse_lists(const std::vector<int64_t>& lengths, int64_t G, int64_t P, const std::vector<int32_t>& pages,
                                       uint32_t seed, uint32_t keep_one_in) {
  std::mt19937 rng(seed);
  SparseLists out;
  for (int64_t len : lengths) {
    const int64_t own = (len - 1) / P;
    auto& row = out.lists.emplace_back();
    for (int64_t g = 0; g < G; ++g) {
      std::vector<int32_t> list;
      for (int32_t i = 0; i < own; ++i)
        if (rng() % keep_one_in == 0) list.push_back(i);
      list.push_back(static_cast<int32_t>(own));
      out.offsets.push_back(static_cast<int64_t>(out.flat.size()));
      for (int32_t i : list) out.flat.push_back(pages[static_cast<size_t>(i)]);
      out.lens.push_back(static_cast<int32_t>((static_cast<int64_t>(list.size()) - 1) * P + (len - own * P)));
      row.push_back(std::move(list));
    }
  }
  return out;
}

// The CPU's sparse attention of decode rows at `lengths` over those lists: (R, H, D) from q (R, H, D).
inline std::vector<float> sparse_reference(const KvCache& cache, const std::vector<float>& q, const std::vector<int64_t>& lengths,
                                           const std::vector<int32_t>& pages, const SparseLists& sparse, int64_t H, float scale) {
  const int64_t D = cache.shape().head_dim;
  std::vector<float> ref(lengths.size() * static_cast<size_t>(H * D));
  for (size_t r = 0; r < lengths.size(); ++r) {
    const int64_t at = static_cast<int64_t>(r) * H * D;
    cpu::AttentionChunk chunk{.q = q.data() + at, .tokens = 1, .start = lengths[r] - 1, .page_table = &pages, .out = ref.data() + at,
                              .page_lists = &sparse.lists[r], .first_sparse = 0};
    cpu::paged_attention(cache, 0, chunk, H, scale);
  }
  return ref;
}

// max |a − b| / max |b|; infinite when a holds a NaN.
inline double normalised_error(const std::vector<float>& a, const std::vector<float>& b) {
  double diff = 0.0, ref = 1e-30;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::isnan(a[i])) return INFINITY;
    diff = std::max(diff, std::abs(static_cast<double>(a[i]) - b[i]));
    ref = std::max(ref, std::abs(static_cast<double>(b[i])));
  }
  return diff / ref;
}

}  // namespace vortex::test
