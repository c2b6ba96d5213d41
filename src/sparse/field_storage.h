// Field storage types (FieldStorage, include/vortex/flow.h): the rounding every backend applies
// when it stores a page summary below f32, written once for the host and the device (nvcc compiles
// this header into the page-summary kernel; the CPU store rounds with the same functions), so the
// CPU backend stays the oracle of the GPU's stored values.
//
// A sub-row of W values x is stored as
//   bf16   x rounded to bf16 (nearest, ties to even);
//   fp8    e4m3 (OCP "fn": max 448, no infinities) of x / s, s = amax / 448;
//   int8   q = rint(x / s) in [-127, 127], s = amax / 127;
//   int4   q = rint(x / s) in [-7, 7], s = amax / 7;
//   sign   one bit, set when x < 0, and s = mean |x| (summed in element order, then divided by W);
// with amax = max |x| over the sub-row (s = 0 and every q = 0 when amax is 0), and read back as
// the stored value times s (sign: −s or +s). Division is IEEE (not fast-math), rint rounds to
// nearest even.
//
// Device layout of one (page, KV head) record (the GPU store, sparse_planner.h): the S·W values
// packed row by row (bf16: 2 bytes, fp8 and int8: 1, int4: two per byte, the even element in the
// low nibble, two's complement; sign: eight per byte, element e in bit e % 8), then S f32 scales for the scaled types (4-byte aligned), padded to
// a multiple of 4 bytes: an f32 record is exactly the (S, W) floats, as the CPU store holds them.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "core/host_device.h"
#include "vortex/flow.h"

namespace vortex {

// Bits per stored element.
VX_HOST_DEVICE inline int field_storage_bits(FieldStorage storage) {
  switch (storage) {
    case FieldStorage::kF32: return 32;
    case FieldStorage::kBF16: return 16;
    case FieldStorage::kFP8: return 8;
    case FieldStorage::kInt8: return 8;
    case FieldStorage::kInt4: return 4;
    case FieldStorage::kSign: return 1;
  }
  return 32;
}

// Whether a sub-row carries an f32 scale.
VX_HOST_DEVICE inline bool field_storage_scaled(FieldStorage storage) {
  return storage == FieldStorage::kFP8 || storage == FieldStorage::kInt8 || storage == FieldStorage::kInt4 ||
         storage == FieldStorage::kSign;
}

// The largest stored magnitude of a scaled type (amax maps to it).
VX_HOST_DEVICE inline float field_storage_max(FieldStorage storage) {
  return storage == FieldStorage::kFP8 ? 448.0f : storage == FieldStorage::kInt8 ? 127.0f : 7.0f;
}

// Where the S f32 scales of a record start: after the packed values, 4-byte aligned.
VX_HOST_DEVICE inline int64_t field_scales_offset(FieldStorage storage, int64_t rows, int64_t width) {
  return ((rows * width * field_storage_bits(storage) + 7) / 8 + 3) / 4 * 4;
}

// Bytes of one (page, KV head) record of S sub-rows of W values on the device, a multiple of 4.
VX_HOST_DEVICE inline int64_t field_record_bytes(FieldStorage storage, int64_t rows, int64_t width) {
  return field_scales_offset(storage, rows, width) + (field_storage_scaled(storage) ? 4 * rows : 0);
}

VX_HOST_DEVICE inline uint32_t vx_float_bits(float x) {
#ifdef __CUDA_ARCH__
  return __float_as_uint(x);
#else
  uint32_t u;
  std::memcpy(&u, &x, 4);
  return u;
#endif
}

VX_HOST_DEVICE inline float vx_bits_float(uint32_t u) {
#ifdef __CUDA_ARCH__
  return __uint_as_float(u);
#else
  float x;
  std::memcpy(&x, &u, 4);
  return x;
#endif
}

// f32 → bf16 bits, round to nearest even (NaN stays a quiet NaN).
VX_HOST_DEVICE inline uint16_t field_bf16_bits(float x) {
  const uint32_t u = vx_float_bits(x);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

VX_HOST_DEVICE inline float field_bf16_value(uint16_t bits) { return vx_bits_float(static_cast<uint32_t>(bits) << 16); }

// x rounded to the nearest e4m3 value (ties to even), saturating at ±448; NaN stays NaN.
VX_HOST_DEVICE inline float field_fp8_round(float x) {
  if (x != x) return x;
  const float a = fabsf(x);
  // Spacing of e4m3 values near a: 2^-9 below the smallest normal 2^-6, else 2^(e - 3).
  int e = 0;
  frexpf(a, &e);  // a = m · 2^e, m in [0.5, 1)
  const float step = a < 0.015625f ? 0.001953125f : ldexpf(1.0f, e - 4);
  float r = rintf(a / step) * step;  // exact: a / step and the product are scalings by powers of two
  if (r > 448.0f) r = 448.0f;
  return x < 0.0f ? -r : r;
}

// e4m3 bits of a value field_fp8_round produced (exactly representable).
VX_HOST_DEVICE inline uint8_t field_fp8_bits(float v) {
  if (v != v) return 0x7f;
  const uint8_t sign = v < 0.0f ? 0x80 : 0;
  const float a = fabsf(v);
  if (a < 0.015625f) return static_cast<uint8_t>(sign | static_cast<uint8_t>(a * 512.0f));  // subnormal: m · 2^-9
  int e = 0;
  const float m = frexpf(a, &e);  // a = m · 2^e, m in [0.5, 1): exponent field e - 1 + 7
  return static_cast<uint8_t>(sign | ((e + 6) << 3) | static_cast<int>((m * 2.0f - 1.0f) * 8.0f));
}

VX_HOST_DEVICE inline float field_fp8_value(uint8_t bits) {
  const int e = (bits >> 3) & 15, m = bits & 7;
  if (e == 15 && m == 7) return vx_bits_float(0x7fc00000u);
  const float a = e == 0 ? static_cast<float>(m) * 0.001953125f : ldexpf(1.0f + static_cast<float>(m) * 0.125f, e - 7);
  return (bits & 0x80) ? -a : a;
}

// The scale of a sub-row whose largest magnitude is amax (fp8, int8, int4).
VX_HOST_DEVICE inline float field_scale(FieldStorage storage, float amax) {
  return amax > 0.0f ? amax / field_storage_max(storage) : 0.0f;
}

// The scale of a sub-row of W values (every scaled type): sign's mean magnitude, summed in element
// order, or the others' amax / max.
VX_HOST_DEVICE inline float field_row_scale(FieldStorage storage, const float* row, int64_t width) {
  float acc = 0.0f;
  for (int64_t i = 0; i < width; ++i) acc = storage == FieldStorage::kSign ? acc + fabsf(row[i]) : fmaxf(acc, fabsf(row[i]));
  return storage == FieldStorage::kSign ? acc / static_cast<float>(width) : field_scale(storage, acc);
}

// The integer code of x at scale s (int8, int4).
VX_HOST_DEVICE inline int field_int_code(FieldStorage storage, float x, float s) {
  if (s == 0.0f) return 0;
  const float limit = field_storage_max(storage);
  const float q = rintf(x / s);
  return static_cast<int>(q > limit ? limit : q < -limit ? -limit : q);
}

// The value a sub-row element holds once stored: x rounded as `storage` stores it, times its scale.
VX_HOST_DEVICE inline float field_stored_value(FieldStorage storage, float x, float s) {
  switch (storage) {
    case FieldStorage::kF32: return x;
    case FieldStorage::kBF16: return field_bf16_value(field_bf16_bits(x));
    case FieldStorage::kFP8: return s == 0.0f ? 0.0f : field_fp8_round(x / s) * s;
    case FieldStorage::kInt8:
    case FieldStorage::kInt4: return static_cast<float>(field_int_code(storage, x, s)) * s;
    case FieldStorage::kSign: return x < 0.0f ? -s : s;
  }
  return x;
}

// The stored code of x at scale s: the bits of the element as the record holds them (f32: its
// bits; bf16: 16 bits; fp8: e4m3 bits; int8 / int4: two's complement in 8 / 4 bits).
VX_HOST_DEVICE inline uint32_t field_code(FieldStorage storage, float x, float s) {
  switch (storage) {
    case FieldStorage::kF32: return vx_float_bits(x);
    case FieldStorage::kBF16: return field_bf16_bits(x);
    case FieldStorage::kFP8: return field_fp8_bits(s == 0.0f ? 0.0f : field_fp8_round(x / s));
    case FieldStorage::kInt8: return static_cast<uint32_t>(field_int_code(storage, x, s)) & 0xffu;
    case FieldStorage::kInt4: return static_cast<uint32_t>(field_int_code(storage, x, s)) & 0xfu;
    case FieldStorage::kSign: return x < 0.0f ? 1u : 0u;
  }
  return 0;
}

// Element e's value in a record (the device layout above): what the generated indexers compute.
inline float field_record_value(FieldStorage storage, const uint8_t* record, int64_t rows, int64_t width, int64_t e) {
  float s = 1.0f;
  if (field_storage_scaled(storage)) std::memcpy(&s, record + field_scales_offset(storage, rows, width) + 4 * (e / width), 4);
  switch (storage) {
    case FieldStorage::kF32: { float x; std::memcpy(&x, record + 4 * e, 4); return x; }
    case FieldStorage::kBF16: { uint16_t b; std::memcpy(&b, record + 2 * e, 2); return field_bf16_value(b); }
    case FieldStorage::kFP8: return field_fp8_value(record[e]) * s;
    case FieldStorage::kInt8: return static_cast<float>(static_cast<int8_t>(record[e])) * s;
    case FieldStorage::kInt4: {
      const int nibble = (record[e / 2] >> (4 * (e % 2))) & 0xf;
      return static_cast<float>(nibble >= 8 ? nibble - 16 : nibble) * s;
    }
    case FieldStorage::kSign: return ((record[e / 8] >> (e % 8)) & 1) ? -s : s;
  }
  return 0.0f;
}

// A summary (S, W) of f32 values as the device record (field_record_bytes bytes, zero padding).
inline void write_field_record(FieldStorage storage, const float* values, int64_t rows, int64_t width, uint8_t* record) {
  std::memset(record, 0, static_cast<size_t>(field_record_bytes(storage, rows, width)));
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = values + r * width;
    const float s = field_storage_scaled(storage) ? field_row_scale(storage, row, width) : 1.0f;
    if (field_storage_scaled(storage)) std::memcpy(record + field_scales_offset(storage, rows, width) + 4 * r, &s, 4);
    for (int64_t i = 0; i < width; ++i) {
      const int64_t e = r * width + i;
      const uint32_t code = field_code(storage, row[i], s);
      switch (field_storage_bits(storage)) {
        case 32: std::memcpy(record + 4 * e, &code, 4); break;
        case 16: { const auto b = static_cast<uint16_t>(code); std::memcpy(record + 2 * e, &b, 2); break; }
        case 8: record[e] = static_cast<uint8_t>(code); break;
        case 4: record[e / 2] = static_cast<uint8_t>(record[e / 2] | (code << (4 * (e % 2)))); break;
        default: record[e / 8] = static_cast<uint8_t>(record[e / 8] | (code << (e % 8)));
      }
    }
  }
}

// Rounds a summary (S, W) in place to the values `storage` keeps (the CPU store's emulation).
inline void round_field_values(FieldStorage storage, float* values, int64_t rows, int64_t width) {
  if (storage == FieldStorage::kF32) return;
  for (int64_t r = 0; r < rows; ++r) {
    float* row = values + r * width;
    const float s = field_storage_scaled(storage) ? field_row_scale(storage, row, width) : 1.0f;
    for (int64_t i = 0; i < width; ++i) row[i] = field_stored_value(storage, row[i], s);
  }
}

}  // namespace vortex
