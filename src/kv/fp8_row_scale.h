// The fp8 KV cache's per-row scale (the format: kv/kv_rounding.h), one definition for the host and
// the device. Kept apart from the other headers of the cache so that a kernel can include it alone.
#pragma once

#include <cmath>

#ifdef __CUDACC__
#define VX_HOST_DEVICE __host__ __device__
#else
#define VX_HOST_DEVICE
#endif

namespace vortex {

// The per-row fp8 scale for a row whose largest magnitude is `amax`: the smallest power of two 2^s
// with amax / 2^s <= 448, s >= -126 (1 when amax is 0 or not finite). Host and device.
VX_HOST_DEVICE inline float fp8_row_scale(float amax) {
  if (!(amax > 0.0f) || !(amax <= 3.4028235e38f)) return 1.0f;
  int e = 0;
  const float m = frexpf(amax, &e);  // amax = m · 2^e: amax / 2^(e−9) = 512 m in [256, 512)
  const int s = m * 512.0f > 448.0f ? e - 8 : e - 9;
  return ldexpf(1.0f, s < -126 ? -126 : s);
}

}  // namespace vortex
