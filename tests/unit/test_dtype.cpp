#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "common/test_util.h"
#include "core/dtype.h"

namespace vortex {

TEST(DType, Bf16RoundTripIsExactForRepresentableValues) {
  for (float value : {0.0f, 1.0f, -2.5f, 0.15625f, 65536.0f, -0x1p-70f}) {
    EXPECT_EQ(bf16_to_f32(f32_to_bf16(value)), value) << value;
  }
}

TEST(DType, Bf16RoundsToNearestEven) {
  // 1 + 2^-8 lies exactly between two bf16 values (1 and 1 + 2^-7): ties go to the even one, 1.
  EXPECT_EQ(bf16_to_f32(f32_to_bf16(1.0f + std::ldexp(1.0f, -8))), 1.0f);
  // Just above the midpoint rounds up.
  EXPECT_EQ(bf16_to_f32(f32_to_bf16(1.0f + std::ldexp(1.0f, -8) + std::ldexp(1.0f, -20))), 1.0f + std::ldexp(1.0f, -7));
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(std::numeric_limits<float>::quiet_NaN()))));
}

TEST(DType, F16ConversionMatchesIeee) {
  EXPECT_EQ(f16_to_f32(0x3c00), 1.0f);
  EXPECT_EQ(f16_to_f32(0xc000), -2.0f);
  EXPECT_EQ(f16_to_f32(0x7bff), 65504.0f);
  EXPECT_EQ(f16_to_f32(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
  EXPECT_TRUE(std::isinf(f16_to_f32(0x7c00)));
  auto values = test::random_floats(1000, 7, -100.0f, 100.0f);
  for (float v : values) {
    float back = f16_to_f32(f32_to_f16(v));
    EXPECT_NEAR(back, v, std::abs(v) * std::ldexp(1.0f, -11) + 1e-7f) << v;
  }
  for (uint32_t bits = 0; bits < 0x7c00; bits += 37) {  // every finite positive half survives a round trip
    EXPECT_EQ(f32_to_f16(f16_to_f32(static_cast<uint16_t>(bits))), bits);
  }
}

TEST(DType, ParsesSafetensorsNames) {
  DType dtype;
  EXPECT_TRUE(parse_dtype("BF16", &dtype));
  EXPECT_EQ(dtype, DType::kBF16);
  EXPECT_FALSE(parse_dtype("F8_E4M3", &dtype));
  EXPECT_EQ(dtype_size(DType::kF16), 2u);
}

}  // namespace vortex
