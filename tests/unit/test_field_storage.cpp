// Field storage types (src/sparse/field_storage.h): each rounding against a definition computed
// here independently (the nearest representable value, found by search), records that decode to
// exactly the values the CPU store keeps, and the store's summaries rounded by their field's type.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "common/test_util.h"
#include "kv/kv_cache.h"
#include "backend/cpu/attention.h"
#include "sparse/field_reduce.h"
#include "sparse/field_storage.h"
#include "sparse/page_summaries.h"
#include "vortex/flow.h"

namespace vortex {
namespace {

constexpr FieldStorage kAll[] = {FieldStorage::kF32, FieldStorage::kBF16, FieldStorage::kFP8,
                                 FieldStorage::kInt8, FieldStorage::kInt4, FieldStorage::kSign};

// Every finite e4m3 value, from its definition: (1 + m/8)·2^(e−7), subnormals m·2^−9.
std::vector<float> e4m3_values() {
  std::vector<float> out;
  for (int e = 0; e < 16; ++e)
    for (int m = 0; m < 8; ++m) {
      if (e == 15 && m == 7) continue;  // NaN
      const float a = e == 0 ? static_cast<float>(m) / 512.0f : std::ldexp(1.0f + static_cast<float>(m) / 8.0f, e - 7);
      out.push_back(a);
      out.push_back(-a);
    }
  return out;
}

TEST(FieldStorage, Fp8RoundsToTheNearestValueTiesToEvenAndSaturates) {
  const std::vector<float> values = e4m3_values();
  std::mt19937 rng(5);
  std::vector<float> xs;
  for (int i = 0; i < 20000; ++i) xs.push_back(std::ldexp(std::uniform_real_distribution<float>(-1.0f, 1.0f)(rng),
                                                         std::uniform_int_distribution<int>(-12, 10)(rng)));
  for (float v : values) xs.push_back(v);
  for (size_t i = 0; i + 1 < values.size(); i += 2) xs.push_back(values[i] * 1.0000001f);
  xs.push_back(0.5f * (std::ldexp(1.0f, -9) + 0.0f));  // a tie between 0 and the smallest subnormal: to 0 (even)
  for (float x : xs) {
    const float r = field_fp8_round(x);
    float best = values[0];
    for (float v : values) {
      const double d = std::abs(static_cast<double>(v) - x), b = std::abs(static_cast<double>(best) - x);
      if (d < b) best = v;
    }
    const float clipped = std::min(448.0f, std::max(-448.0f, x));
    if (std::abs(clipped) == 448.0f) best = clipped;
    ASSERT_EQ(std::abs(r - x) <= std::abs(best - x), true) << "x " << x << " rounds to " << r << ", nearest " << best;
    ASSERT_EQ(field_fp8_value(field_fp8_bits(r)), r) << "x " << x;  // the bits decode to the value
  }
  EXPECT_EQ(field_fp8_round(1e9f), 448.0f);
  EXPECT_EQ(field_fp8_round(-1e9f), -448.0f);
  EXPECT_EQ(field_fp8_round(1.0625f), 1.0f);   // halfway between 1 and 1.125: to the even mantissa
  EXPECT_EQ(field_fp8_round(1.1875f), 1.25f);  // halfway between 1.125 and 1.25: to the even one
  EXPECT_TRUE(std::isnan(field_fp8_round(std::numeric_limits<float>::quiet_NaN())));
  EXPECT_EQ(field_fp8_bits(448.0f), 0x7e);
  EXPECT_EQ(field_fp8_bits(-std::ldexp(1.0f, -9)), 0x81);
}

TEST(FieldStorage, Bf16RoundsToNearestEven) {
  EXPECT_EQ(field_bf16_value(field_bf16_bits(1.0f + std::ldexp(1.0f, -8))), 1.0f);  // tie → even
  EXPECT_EQ(field_bf16_value(field_bf16_bits(1.0f + 3 * std::ldexp(1.0f, -8))), 1.0f + std::ldexp(1.0f, -6));
  EXPECT_EQ(field_bf16_value(field_bf16_bits(-2.5f)), -2.5f);
  EXPECT_TRUE(std::isnan(field_bf16_value(field_bf16_bits(std::numeric_limits<float>::quiet_NaN()))));
}

// Integer types: the code is the nearest multiple of the scale amax / max, clamped; a sub-row's
// largest magnitude is stored exactly (±max · scale, up to the division's rounding).
TEST(FieldStorage, IntegerTypesUseTheSubRowScale) {
  const std::vector<float> row = {0.3f, -1.7f, 0.05f, 1.2f, -0.6f, 0.0f, 0.84f, -0.01f};
  for (FieldStorage storage : {FieldStorage::kInt8, FieldStorage::kInt4}) {
    const float max = storage == FieldStorage::kInt8 ? 127.0f : 7.0f, s = 1.7f / max;
    std::vector<float> got = row;
    round_field_values(storage, got.data(), 1, 8);
    for (size_t i = 0; i < row.size(); ++i) {
      const float want = std::nearbyint(row[i] / s) * s;
      EXPECT_FLOAT_EQ(got[i], want) << field_storage_name(storage) << " element " << i;
      EXPECT_LE(std::abs(got[i] - row[i]), 0.5f * s * 1.0001f) << field_storage_name(storage);
    }
    EXPECT_NEAR(got[1], -1.7f, 1e-6f);
  }
  std::vector<float> zeros(5, 0.0f);
  round_field_values(FieldStorage::kInt4, zeros.data(), 1, 5);
  EXPECT_EQ(zeros, std::vector<float>(5, 0.0f));
}

TEST(FieldStorage, SignKeepsTheSignAndTheMeanMagnitude) {
  std::vector<float> row = {0.5f, -1.5f, 2.0f, -0.0f, 0.0f, -1.0f};
  round_field_values(FieldStorage::kSign, row.data(), 2, 3);  // two sub-rows of 3
  const float s0 = (0.5f + 1.5f + 2.0f) / 3.0f, s1 = (0.0f + 0.0f + 1.0f) / 3.0f;
  EXPECT_EQ(row, (std::vector<float>{s0, -s0, s0, s1, s1, -s1}));  // −0 is not < 0: +s
}

// For every type: a record made on the host decodes to exactly the values round_field_values keeps
// (the device kernels write the same records, the generated indexers decode them the same way),
// with odd sizes (sub-rows of 1, 3 and 17 values) and sub-rows of mixed magnitudes.
TEST(FieldStorage, RecordsDecodeToTheRoundedValues) {
  for (FieldStorage storage : kAll)
    for (int64_t rows : {1, 2, 16})
      for (int64_t width : {1, 3, 17, 64}) {
        std::vector<float> values = test::random_floats(static_cast<size_t>(rows * width), 9, -3.0f, 3.0f);
        for (int64_t i = 0; i < width; ++i) values[static_cast<size_t>(i)] *= 100.0f;  // one loud sub-row
        const int64_t bytes = field_record_bytes(storage, rows, width);
        ASSERT_EQ(bytes % 4, 0);
        ASSERT_GE(bytes, (rows * width * field_storage_bits(storage) + 7) / 8);
        std::vector<uint8_t> record(static_cast<size_t>(bytes));
        write_field_record(storage, values.data(), rows, width, record.data());
        std::vector<float> rounded = values;
        round_field_values(storage, rounded.data(), rows, width);
        for (int64_t e = 0; e < rows * width; ++e)
          ASSERT_EQ(field_record_value(storage, record.data(), rows, width, e), rounded[static_cast<size_t>(e)])
              << field_storage_name(storage) << " S " << rows << " W " << width << " element " << e;
      }
  EXPECT_EQ(field_record_bytes(FieldStorage::kF32, 16, 128), 16 * 128 * 4);  // the CPU store's (S, W) floats
  EXPECT_EQ(field_record_bytes(FieldStorage::kInt4, 16, 128), 16 * 64 + 16 * 4);
  EXPECT_EQ(field_record_bytes(FieldStorage::kSign, 16, 128), 16 * 16 + 16 * 4);
}

// The CPU store keeps a field's summaries as its storage type rounds them, per (page, kv head).
TEST(FieldStorage, TheCpuStoreRoundsEachFieldByItsType) {
  const int64_t G = 2, P = 16, D = 8;
  KvCache cache({.num_layers = 1, .num_pages = 4, .num_kv_heads = G, .page_size = P, .head_dim = D});
  std::vector<int32_t> table = {2, 0, 3};
  const auto k = test::random_floats(static_cast<size_t>(48 * G * D), 3, -2.0f, 2.0f);
  const auto v = test::random_floats(static_cast<size_t>(48 * G * D), 4);
  cpu::append_kv(cache, 0, table, 0, 48, k.data(), v.data());
  const Flow flow = parse_flow("field a = max(k, store=int4)\nfield b = max(k)\nfield c = mean(k, sub=2, store=fp8)\n"
                               "select topk(max(dot(q, a) + dot(q, b) + max(dot(q, c), sub), heads))", "f");
  PageSummaryStore store(cache.shape());
  store.register_flow(flow);
  store.ensure(cache, 0, flow, table);
  for (size_t f = 0; f < flow.fields.size(); ++f)
    for (int64_t g = 0; g < G; ++g)
      for (int32_t page : table) {
        const FlowField& field = flow.fields[f];
        const int64_t S = field.rows(P), W = field.width(D);
        std::vector<float> want(static_cast<size_t>(S * W));
        reduce_page(field, cache.k(0) + cache.offset(page, g, 0), P, P, D, want.data());
        round_field_values(field.storage, want.data(), S, W);
        const FlowPageView view = store.field_view(flow, f, 0, g);
        const std::vector<float> got(view.base + page * view.page_stride, view.base + page * view.page_stride + S * W);
        EXPECT_EQ(got, want) << field.name << " page " << page << " head " << g;
      }
  // The int4 and the f32 max are two kinds: the f32 one is not rounded.
  const FlowPageView exact = store.field_view(flow, 1, 0, 0), rounded = store.field_view(flow, 0, 0, 0);
  EXPECT_NE(std::vector<float>(exact.base, exact.base + D), std::vector<float>(rounded.base, rounded.base + D));
}

}  // namespace
}  // namespace vortex
