// The fp8 KV cache on the GPU (src/kv/kv_rounding.h defines the format, which the CPU emulates): one
// byte per K and V element — values e4m3, keys int8 — and one power-of-two scale per (page, KV head,
// slot) row in arrays beside them, per layer:
//   k_cache, v_cache  (num_pages, G, P, D) int8 keys, e4m3 values (both typed Fp8 below: one byte)
//   k_scale, v_scale  (num_pages, G, P)    f32
// A value row x is stored as e4m3(x / s), s = fp8_row_scale(max |x|); a key row as int8_key_code(x / s),
// s = int8_row_scale(max |x|); each read back as byte · s: exact in bf16 and fp32, since s is a power
// of two and neither an e4m3 value nor an integer of 7 bits has more mantissa bits than bf16. So the
// tensor-core kernels turn a tile into bf16 in shared memory and run unchanged.
// Keys of a power-of-two head_dim are stored rotated, x = H·k (kv/kv_rounding.h says why): rope_append
// rotates them and writes beside q the rotated query H·q / D that attention multiplies them with, so
// the attention kernels are those of unrotated rows; page summaries rotate the keys back.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp8.h>

#include <cstdint>

#include "backend/cuda/types.cuh"  // to_float and from_float of e4m3
#include "kv/kv_row_scale.h"

namespace vortex::cuda {

using Fp8 = __nv_fp8_e4m3;
template <typename T>
inline constexpr bool kIsFp8 = false;
template <>
inline constexpr bool kIsFp8<Fp8> = true;

// Eight e4m3 values (fp8 values: a uint2, element 0 in the low byte) times `scale`, as eight bf16 (a uint4): exact.
__device__ __forceinline__ uint4 fp8x8_to_bf16x8(uint2 bytes, float scale) {
  uint32_t out[4];
  const uint32_t words[2] = {bytes.x, bytes.y};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const auto pair = static_cast<__nv_fp8x2_storage_t>(words[i / 2] >> (16 * (i % 2)));
    const float2 f = __half22float2(__half2(__nv_cvt_fp8x2_to_halfraw2(pair, __NV_E4M3)));
    const __nv_bfloat162 b = __floats2bfloat162_rn(f.x * scale, f.y * scale);
    out[i] = *reinterpret_cast<const uint32_t*>(&b);
  }
  return make_uint4(out[0], out[1], out[2], out[3]);
}

// A key byte of the cache (an int8) as a float, before its row's scale.
__device__ __forceinline__ float key_to_float(Fp8 byte) { return static_cast<float>(static_cast<int8_t>(byte.__x)); }

// A key row's element x (already divided by the row's scale) as its byte.
__device__ __forceinline__ Fp8 key_from_scaled(float x) {
  Fp8 byte;
  byte.__x = static_cast<__nv_fp8_storage_t>(static_cast<uint8_t>(static_cast<int8_t>(int8_key_code(x))));
  return byte;
}

// Eight int8 keys (a uint2, element 0 in the low byte) times `scale`, as eight bf16 (a uint4): exact.
__device__ __forceinline__ uint4 int8x8_to_bf16x8(uint2 bytes, float scale) {
  uint32_t out[4];
  const uint32_t words[2] = {bytes.x, bytes.y};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const uint32_t w = words[i / 2] >> (16 * (i % 2));
    const float a = static_cast<float>(static_cast<int8_t>(w & 0xff)), b = static_cast<float>(static_cast<int8_t>((w >> 8) & 0xff));
    const __nv_bfloat162 pair = __floats2bfloat162_rn(a * scale, b * scale);
    out[i] = *reinterpret_cast<const uint32_t*>(&pair);
  }
  return make_uint4(out[0], out[1], out[2], out[3]);
}

// x ← H·x for n a power of two, in shared memory, by the calling warp (all 32 lanes): the stages of
// kv/hadamard.h in its order, so the values are the host's bit for bit. The caller syncs the warp
// before (x written) and the function after each stage.
__device__ __forceinline__ void warp_hadamard_in_place(float* x, int n, int lane) {
  for (int h = 1; h < n; h *= 2) {
    for (int t = lane; t < n / 2; t += 32) {
      const int j = (t / h) * 2 * h + t % h;  // the t-th pair's first element: j mod 2h < h
      const float a = x[j], b = x[j + h];
      x[j] = __fadd_rn(a, b);
      x[j + h] = __fsub_rn(a, b);
    }
    __syncwarp();
  }
}

}  // namespace vortex::cuda
