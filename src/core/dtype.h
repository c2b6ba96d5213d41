// Element types of tensors and their conversions to and from fp32.
//
// bf16 and f16 are stored as raw uint16_t bit patterns; conversion is exact for bf16 → f32 and
// f16 → f32, and round-to-nearest-even for f32 → bf16/f16 (the rounding torch uses).
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace vortex {

enum class DType : uint8_t { kF32, kBF16, kF16, kI32, kI64, kU8 };

size_t dtype_size(DType dtype);
std::string_view dtype_name(DType dtype);  // "F32", "BF16", ... (the safetensors spelling)
// Parses a safetensors dtype string; returns false for anything Vortex does not load.
bool parse_dtype(std::string_view name, DType* dtype);

inline float bf16_to_f32(uint16_t bits) {
  uint32_t word = static_cast<uint32_t>(bits) << 16;
  float value;
  std::memcpy(&value, &word, sizeof(value));
  return value;
}

inline uint16_t f32_to_bf16(float value) {
  uint32_t word;
  std::memcpy(&word, &value, sizeof(word));
  if ((word & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((word >> 16) | 0x40u);  // NaN stays NaN
  uint32_t rounding = 0x7fffu + ((word >> 16) & 1u);
  return static_cast<uint16_t>((word + rounding) >> 16);
}

float f16_to_f32(uint16_t bits);
uint16_t f32_to_f16(float value);

// Converts `count` elements of `src` (of type `dtype`) to fp32 in `dst`.
void convert_to_f32(DType dtype, const void* src, float* dst, size_t count);

}  // namespace vortex
