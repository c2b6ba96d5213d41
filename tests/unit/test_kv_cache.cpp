#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <set>

#include "backend/cpu/attention.h"
#include "core/dtype.h"
#include "core/error.h"
#include "kv/hadamard.h"
#include "kv/kv_cache.h"
#include "kv/kv_rounding.h"
#include "kv/page_allocator.h"
#include "sparse/field_storage.h"

namespace vortex {
namespace {

TEST(PageAllocator, AllocatesAllOrNothingAndFreesAtZeroRefs) {
  PageAllocator allocator(5);
  std::vector<int32_t> a, b;
  ASSERT_TRUE(allocator.allocate(3, a));
  EXPECT_EQ(allocator.num_free(), 2);
  EXPECT_FALSE(allocator.allocate(3, b));  // exhaustion is reported, nothing is taken
  EXPECT_TRUE(b.empty());
  EXPECT_EQ(allocator.num_free(), 2);
  std::set<int32_t> distinct(a.begin(), a.end());
  EXPECT_EQ(distinct.size(), 3u);
  int32_t shared = a[0];
  allocator.retain(shared);  // a second owner, as a shared prefix page has
  allocator.release_all(a);
  EXPECT_TRUE(a.empty());
  EXPECT_EQ(allocator.num_free(), 4);
  EXPECT_EQ(allocator.refcount(shared), 1);
  allocator.release(shared);
  EXPECT_EQ(allocator.num_free(), 5);
  ASSERT_TRUE(allocator.allocate(5, b));
  EXPECT_EQ(allocator.num_free(), 0);
}

TEST(PageAllocator, MisuseIsAnInternalError) {
  PageAllocator allocator(2);
  EXPECT_THROW(allocator.release(0), Error);
  EXPECT_THROW(allocator.retain(7), Error);
  EXPECT_THROW(PageAllocator(0), Error);
}

TEST(KvCache, ReserveGrowsPageTablesAndReportsExhaustion) {
  KvCache cache({.num_layers = 2, .num_pages = 4, .num_kv_heads = 2, .page_size = 16, .head_dim = 8});
  std::vector<int32_t> table;
  EXPECT_TRUE(cache.reserve(table, 17));
  EXPECT_EQ(table.size(), 2u);
  EXPECT_TRUE(cache.reserve(table, 32));
  EXPECT_EQ(table.size(), 2u);
  std::vector<int32_t> other;
  EXPECT_FALSE(cache.reserve(other, 49));  // needs 4 pages, 2 left
  EXPECT_TRUE(other.empty());
  EXPECT_EQ(cache.offset(1, 1, 3), ((1 * 2 + 1) * 16 + 3) * 8);
}

TEST(KvCache, RejectsUnsupportedPageSize) {
  EXPECT_THROW(KvCache({.num_layers = 1, .num_pages = 1, .num_kv_heads = 1, .page_size = 12, .head_dim = 8}), Error);
}

TEST(KvRounding, Fp8RowScaleIsTheSmallestPowerOfTwoThatBringsTheRowTo448) {
  EXPECT_EQ(fp8_row_scale(448.0f), 1.0f);
  EXPECT_EQ(fp8_row_scale(449.0f), 2.0f);
  EXPECT_EQ(fp8_row_scale(224.0f), 0.5f);
  EXPECT_EQ(fp8_row_scale(1.0f), std::ldexp(1.0f, -8));  // 1 / 2^-8 = 256 fits, 1 / 2^-9 = 512 does not
  EXPECT_EQ(fp8_row_scale(0.0f), 1.0f);
  EXPECT_EQ(fp8_row_scale(std::numeric_limits<float>::infinity()), 1.0f);
  EXPECT_EQ(fp8_row_scale(1e-40f), std::ldexp(1.0f, -124));  // the smallest scale (e4m3 · scale stays a normal bf16)
  std::mt19937 rng(3);
  for (int i = 0; i < 10000; ++i) {
    const float amax = std::ldexp(std::uniform_real_distribution<float>(0.5f, 1.0f)(rng), std::uniform_int_distribution<int>(-100, 100)(rng));
    const float s = fp8_row_scale(amax);
    ASSERT_LE(amax / s, 448.0f) << amax;
    ASSERT_GT(amax / (s * 0.5f), 448.0f) << amax;
  }
}

TEST(KvRounding, Int8RowScaleBringsTheRowToBetween64And128) {
  EXPECT_EQ(int8_row_scale(127.0f), 1.0f);
  EXPECT_EQ(int8_row_scale(128.0f), 2.0f);
  EXPECT_EQ(int8_row_scale(64.0f), 1.0f);
  EXPECT_EQ(int8_row_scale(1.0f), std::ldexp(1.0f, -6));
  EXPECT_EQ(int8_row_scale(0.0f), 1.0f);
  EXPECT_EQ(int8_row_scale(std::numeric_limits<float>::quiet_NaN()), 1.0f);
  EXPECT_EQ(int8_row_scale(1e-40f), std::ldexp(1.0f, -126));  // the smallest scale (int8 · scale stays a normal bf16)
  std::mt19937 rng(5);
  for (int i = 0; i < 10000; ++i) {
    const float amax = std::ldexp(std::uniform_real_distribution<float>(0.5f, 1.0f)(rng), std::uniform_int_distribution<int>(-100, 100)(rng));
    const float s = int8_row_scale(amax);
    ASSERT_GE(amax / s, 64.0f) << amax;
    ASSERT_LT(amax / s, 128.0f) << amax;
  }
  EXPECT_EQ(int8_key_code(127.6f), 127);  // 128 clamps
  EXPECT_EQ(int8_key_code(-127.6f), -127);
  EXPECT_EQ(int8_key_code(2.5f), 2);  // ties to even
  EXPECT_EQ(int8_key_code(-3.5f), -4);
  EXPECT_EQ(int8_key_code(-0.4f), 0);
  EXPECT_EQ(int8_key_code(std::numeric_limits<float>::quiet_NaN()), -127);
}

TEST(KvRounding, RowsRoundAsTheGpuStoresThem) {
  std::mt19937 rng(4);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::vector<float> row(128);
  for (float& x : row) x = normal(rng);
  row[17] = 40.0f;  // the row's largest magnitude
  std::vector<float> fp8 = row, key = row, tensor = row, bf16 = row, f32 = row;
  round_kv_row(KvStorage::kFp8, KvRow::kValue, fp8.data(), 128);
  round_stored_row(KvStorage::kFp8, KvRow::kKey, key.data(), 128);
  round_kv_row(KvStorage::kFp8Tensor, KvRow::kKey, tensor.data(), 128);
  round_kv_row(KvStorage::kBf16, KvRow::kKey, bf16.data(), 128);
  round_kv_row(KvStorage::kF32, KvRow::kKey, f32.data(), 128);
  EXPECT_EQ(f32, row);
  const float scale = fp8_row_scale(40.0f);
  EXPECT_EQ(scale, 0.125f);
  const float key_scale = int8_row_scale(40.0f);
  EXPECT_EQ(key_scale, 0.5f);  // 40 / 0.5 = 80
  for (size_t i = 0; i < row.size(); ++i) {
    EXPECT_EQ(fp8[i], field_fp8_round(row[i] / scale) * scale) << i;
    EXPECT_EQ(key[i], static_cast<float>(int8_key_code(row[i] / key_scale)) * key_scale) << i;
    EXPECT_LE(std::fabs(key[i] - row[i]), 0.5f * key_scale) << i;
    EXPECT_EQ(tensor[i], field_fp8_round(row[i])) << i;
    EXPECT_EQ(bf16[i], bf16_to_f32(f32_to_bf16(row[i]))) << i;
    // e4m3 keeps 3 mantissa bits: half a step is 1/16 of the value, or 2^-10 of the scale below the normals.
    EXPECT_LE(std::fabs(fp8[i] - row[i]), std::max(std::fabs(row[i]) / 16.0f, scale * std::ldexp(1.0f, -10))) << i;
  }
  EXPECT_NE(fp8, row);
  EXPECT_EQ(kv_row_bytes(KvStorage::kFp8, 128), 132);
  EXPECT_EQ(kv_row_bytes(KvStorage::kBf16, 128), 256);
}

TEST(KvRounding, HadamardIsItsOwnInverseTimesN) {
  EXPECT_TRUE(is_power_of_two(64));
  EXPECT_FALSE(is_power_of_two(96));
  EXPECT_FALSE(is_power_of_two(0));
  std::vector<float> x = {1, 2, 3, 4};
  hadamard_in_place(x.data(), 4);
  EXPECT_EQ(x, (std::vector<float>{10, -2, -4, 0}));  // rows of H: ++++, +-+-, ++--, +--+
  std::mt19937 rng(8);
  std::vector<float> row(128);
  for (float& v : row) v = std::uniform_int_distribution<int>(-50, 50)(rng);  // integers: every sum exact
  std::vector<float> twice = row;
  hadamard_in_place(twice.data(), 128);
  hadamard_in_place(twice.data(), 128);
  for (size_t i = 0; i < row.size(); ++i) EXPECT_EQ(twice[i], 128.0f * row[i]) << i;
}

// fp8 keys of a power-of-two width are rounded in the Hadamard basis: the stored row is an int8 row
// (integers times its scale) of H·k, and the key given back is H·stored / n. A key with one large
// channel (the case the rotation is for) keeps the dot products with it far better than e4m3
// element by element (a value's rounding), and a width that is not a power of two is stored in int8
// as it is.
TEST(KvRounding, Fp8KeysAreRoundedInTheHadamardBasis) {
  std::mt19937 rng(9);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  constexpr int64_t n = 128;
  EXPECT_TRUE(kv_keys_rotated(KvStorage::kFp8, n));
  EXPECT_FALSE(kv_keys_rotated(KvStorage::kFp8, 96));
  EXPECT_FALSE(kv_keys_rotated(KvStorage::kBf16, n));
  EXPECT_FALSE(kv_keys_rotated(KvStorage::kFp8Tensor, n));
  double rotated_error = 0.0, plain_error = 0.0;
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<float> key(n), query(n);
    for (float& x : key) x = normal(rng);
    for (float& x : query) x = normal(rng);
    key[5] = 57.3f, query[5] = 3.0f;  // an outlier channel that q·k leans on (not an e4m3 value)
    std::vector<float> rotated = key, plain = key, stored = key;
    round_kv_row(KvStorage::kFp8, KvRow::kKey, rotated.data(), n);
    round_kv_row(KvStorage::kFp8, KvRow::kValue, plain.data(), n);
    hadamard_in_place(stored.data(), n);
    round_stored_row(KvStorage::kFp8, KvRow::kKey, stored.data(), n);
    std::vector<float> back = stored;
    hadamard_in_place(back.data(), n);
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(rotated[static_cast<size_t>(i)], back[static_cast<size_t>(i)] / n) << i;
    auto dot = [&](const std::vector<float>& k) {
      double d = 0.0;
      for (int64_t i = 0; i < n; ++i) d += static_cast<double>(query[static_cast<size_t>(i)]) * k[static_cast<size_t>(i)];
      return d;
    };
    rotated_error += std::fabs(dot(rotated) - dot(key)), plain_error += std::fabs(dot(plain) - dot(key));
  }
  EXPECT_LT(rotated_error, 0.5 * plain_error) << "rotated " << rotated_error << ", element by element " << plain_error;
  std::vector<float> odd(96, 1.5f);
  odd[3] = 0.3f;
  std::vector<float> as_stored = odd, as_value = odd;
  round_kv_row(KvStorage::kFp8, KvRow::kKey, odd.data(), 96);
  round_stored_row(KvStorage::kFp8, KvRow::kKey, as_stored.data(), 96);
  round_kv_row(KvStorage::kFp8, KvRow::kValue, as_value.data(), 96);
  EXPECT_EQ(odd, as_stored);
  EXPECT_EQ(odd[3], 19.0f / 64.0f);      // int8: 0.3 / 2^-6 = 19.2 -> 19
  EXPECT_EQ(as_value[3], 80.0f / 256.0f);  // e4m3: 0.3 / 2^-8 = 76.8 -> 80
}

TEST(KvRounding, AppendRoundsEveryRowToTheCachesStorage) {
  KvCache cache({.num_layers = 1, .num_pages = 2, .num_kv_heads = 2, .page_size = 8, .head_dim = 16, .storage = KvStorage::kFp8});
  std::vector<int32_t> pages;
  ASSERT_TRUE(cache.reserve(pages, 10));
  std::mt19937 rng(6);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> k(10 * 2 * 16), v(k.size());
  for (float& x : k) x = normal(rng);
  for (float& x : v) x = 5.0f * normal(rng);
  cpu::append_kv(cache, 0, pages, 0, 10, k.data(), v.data());
  for (int64_t t = 0; t < 10; ++t)
    for (int64_t g = 0; g < 2; ++g) {
      std::vector<float> want_k(k.begin() + (t * 2 + g) * 16, k.begin() + (t * 2 + g + 1) * 16);
      std::vector<float> want_v(v.begin() + (t * 2 + g) * 16, v.begin() + (t * 2 + g + 1) * 16);
      round_kv_row(KvStorage::kFp8, KvRow::kKey, want_k.data(), 16);
      round_kv_row(KvStorage::kFp8, KvRow::kValue, want_v.data(), 16);
      const int64_t at = cache.offset(pages[static_cast<size_t>(t / 8)], g, t % 8);
      EXPECT_EQ(std::vector<float>(cache.k(0) + at, cache.k(0) + at + 16), want_k) << t << " " << g;
      EXPECT_EQ(std::vector<float>(cache.v(0) + at, cache.v(0) + at + 16), want_v) << t << " " << g;
    }
}

}  // namespace
}  // namespace vortex
