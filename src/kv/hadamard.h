// The Walsh–Hadamard transform the fp8 KV cache applies to keys (kv/kv_rounding.h), one definition
// of its arithmetic for the host and the device.
#pragma once

#include <cstdint>

#include "core/host_device.h"

namespace vortex {

VX_HOST_DEVICE inline bool is_power_of_two(int64_t n) { return n > 0 && (n & (n - 1)) == 0; }

// x ← H·x in place for n a power of two, unnormalised (H·H = n·I): stage h = 1, 2, 4, …, n/2 maps each
// pair (x[j], x[j + h]) with j mod 2h < h to (x[j] + x[j + h], x[j] − x[j + h]). Every output is a
// fixed sequence of fp32 additions and subtractions, so a kernel that runs the stages in this order
// (the pairs of a stage in any order) gets the host's values bit for bit.
VX_HOST_DEVICE inline void hadamard_in_place(float* x, int64_t n) {
  for (int64_t h = 1; h < n; h *= 2)
    for (int64_t i = 0; i < n; i += 2 * h)
      for (int64_t j = i; j < i + h; ++j) {
        const float a = x[j], b = x[j + h];
        x[j] = a + b;
        x[j + h] = a - b;
      }
}

}  // namespace vortex
