// The fp8 KV cache's per-row scale (the format: kv/kv_rounding.h), one definition for the host and
// the device. Kept apart from the other headers of the cache so that a kernel can include it alone.
#pragma once

#include <cmath>

#include "core/host_device.h"

namespace vortex {

// The per-row fp8 scale for a row whose largest magnitude is `amax`: the smallest power of two 2^s
// with amax / 2^s <= 448, s >= -124 (1 when amax is 0 or not finite). Host and device. The bound
// keeps every e4m3 value times the scale exact in bf16, whose smallest subnormal step is 2^-133 =
// 2^-9 (e4m3's) · 2^-124: below it the tensor-core kernels' bf16 tiles would round what fp32 keeps.
VX_HOST_DEVICE inline float fp8_row_scale(float amax) {
  if (!(amax > 0.0f) || !(amax <= 3.4028235e38f)) return 1.0f;
  int e = 0;
  const float m = frexpf(amax, &e);  // amax = m · 2^e: amax / 2^(e−9) = 512 m in [256, 512)
  const int s = m * 512.0f > 448.0f ? e - 8 : e - 9;
  return ldexpf(1.0f, s < -124 ? -124 : s);
}

}  // namespace vortex
