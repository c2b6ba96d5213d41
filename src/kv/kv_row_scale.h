// The fp8 KV cache's per-row scales and its key codes (the format: kv/kv_rounding.h), one definition
// for the host and the device. Kept apart from the other headers of the cache so that a kernel can
// include it alone.
#pragma once

#include <cmath>

#include "core/host_device.h"

namespace vortex {

// The scale of a value row (e4m3) whose largest magnitude is `amax`: the smallest power of two 2^s
// with amax / 2^s <= 448, s >= -124 (1 when amax is 0 or not finite). The bound keeps every e4m3
// value times the scale exact in bf16, whose smallest subnormal step is 2^-133 = 2^-9 (e4m3's) ·
// 2^-124: below it the tensor-core kernels' bf16 tiles would round what fp32 keeps.
VX_HOST_DEVICE inline float fp8_row_scale(float amax) {
  if (!(amax > 0.0f) || !(amax <= 3.4028235e38f)) return 1.0f;
  int e = 0;
  const float m = frexpf(amax, &e);  // amax = m · 2^e: amax / 2^(e−9) = 512 m in [256, 512)
  const int s = m * 512.0f > 448.0f ? e - 8 : e - 9;
  return ldexpf(1.0f, s < -124 ? -124 : s);
}

// The scale of a key row (int8) whose largest magnitude is `amax`: the power of two 2^s with
// amax / 2^s in [64, 128), s >= -126 (1 when amax is 0 or not finite). An integer of at most 7 bits
// times 2^s (s >= -126) is exact in bf16 and fp32, so the kernels' bf16 tiles hold the key as read.
VX_HOST_DEVICE inline float int8_row_scale(float amax) {
  if (!(amax > 0.0f) || !(amax <= 3.4028235e38f)) return 1.0f;
  int e = 0;
  frexpf(amax, &e);  // amax = m · 2^e, m in [0.5, 1): amax / 2^(e−7) = 128 m in [64, 128)
  return ldexpf(1.0f, e - 7 < -126 ? -126 : e - 7);
}

// A key element divided by its row's scale as stored: the nearest integer (ties to even), clamped to
// ±127 (128 m rounds to 128 when m is within 1/256 of 1); NaN gives -127.
VX_HOST_DEVICE inline int int8_key_code(float scaled) {
  const float r = rintf(scaled);
  return r > 127.0f ? 127 : r >= -127.0f ? static_cast<int>(r) : -127;
}

}  // namespace vortex
