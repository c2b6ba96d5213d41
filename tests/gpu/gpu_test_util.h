// Helpers for GPU tests: device copies of host vectors, NaN-poisoned outputs, normalised errors.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

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
