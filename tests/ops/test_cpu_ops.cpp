// CPU kernels against naive double-precision references on random data, odd sizes included,
// with outputs poisoned (NaN) before each run so unwritten elements fail.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>

#include "backend/cpu/attention.h"
#include "backend/cpu/ops.h"
#include "backend/cpu/rope.h"
#include "common/test_util.h"

namespace vortex {
namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// Max |a − b| / (max |b| + tiny): a normalised error like test-backend-ops uses.
double normalised_error(const std::vector<float>& a, const std::vector<double>& b) {
  double max_diff = 0.0, max_ref = 1e-30;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::isnan(a[i])) return INFINITY;
    max_diff = std::max(max_diff, std::abs(static_cast<double>(a[i]) - b[i]));
    max_ref = std::max(max_ref, std::abs(b[i]));
  }
  return max_diff / max_ref;
}

struct MatrixStorage {
  std::vector<uint16_t> half;
  std::vector<float> full;
  std::vector<double> reference;  // the values as the kernel sees them, in double
  Matrix matrix;
};

MatrixStorage make_matrix(DType dtype, int64_t rows, int64_t cols, uint32_t seed) {
  MatrixStorage s;
  auto values = test::random_floats(static_cast<size_t>(rows * cols), seed);
  s.reference.resize(values.size());
  if (dtype == DType::kF32) {
    s.full = values;
    for (size_t i = 0; i < values.size(); ++i) s.reference[i] = values[i];
    s.matrix = {.dtype = dtype, .data = s.full.data(), .rows = rows, .cols = cols};
  } else {
    s.half.resize(values.size());
    for (size_t i = 0; i < values.size(); ++i) {
      s.half[i] = dtype == DType::kBF16 ? f32_to_bf16(values[i]) : f32_to_f16(values[i]);
      s.reference[i] = dtype == DType::kBF16 ? bf16_to_f32(s.half[i]) : f16_to_f32(s.half[i]);
    }
    s.matrix = {.dtype = dtype, .data = s.half.data(), .rows = rows, .cols = cols};
  }
  return s;
}

class LinearTest : public ::testing::TestWithParam<std::tuple<DType, int64_t, int64_t, int64_t>> {};

TEST_P(LinearTest, MatchesDoubleReference) {
  auto [dtype, m, n, k] = GetParam();
  MatrixStorage w = make_matrix(dtype, n, k, 11);
  auto x = test::random_floats(static_cast<size_t>(m * k), 12);
  auto bias = test::random_floats(static_cast<size_t>(n), 13);
  std::vector<float> y(static_cast<size_t>(m * n), kNaN);
  cpu::linear(x.data(), m, w.matrix, bias.data(), y.data());
  std::vector<double> ref(y.size());
  for (int64_t r = 0; r < m; ++r)
    for (int64_t j = 0; j < n; ++j) {
      double sum = bias[static_cast<size_t>(j)];
      for (int64_t i = 0; i < k; ++i) sum += static_cast<double>(x[static_cast<size_t>(r * k + i)]) * w.reference[static_cast<size_t>(j * k + i)];
      ref[static_cast<size_t>(r * n + j)] = sum;
    }
  EXPECT_LT(normalised_error(y, ref), 1e-5);
}

INSTANTIATE_TEST_SUITE_P(OddSizes, LinearTest,
                         ::testing::Combine(::testing::Values(DType::kF32, DType::kBF16, DType::kF16),
                                            ::testing::Values(1, 3, 5), ::testing::Values(1, 17, 257),
                                            ::testing::Values(1, 15, 16, 33, 257)));

TEST(CpuOps, RmsNormMatchesReference) {
  for (int64_t dim : {1, 7, 96, 257}) {
    const int64_t m = 3;
    auto x = test::random_floats(static_cast<size_t>(m * dim), 21, -3.0f, 3.0f);
    auto weight = test::random_floats(static_cast<size_t>(dim), 22, 0.5f, 1.5f);
    std::vector<float> y(x.size(), kNaN);
    cpu::rmsnorm(x.data(), weight.data(), m, dim, 1e-6f, y.data());
    std::vector<double> ref(y.size());
    for (int64_t r = 0; r < m; ++r) {
      double ss = 0;
      for (int64_t i = 0; i < dim; ++i) ss += static_cast<double>(x[static_cast<size_t>(r * dim + i)]) * x[static_cast<size_t>(r * dim + i)];
      double inv = 1.0 / std::sqrt(ss / static_cast<double>(dim) + 1e-6);
      for (int64_t i = 0; i < dim; ++i) ref[static_cast<size_t>(r * dim + i)] = weight[static_cast<size_t>(i)] * x[static_cast<size_t>(r * dim + i)] * inv;
    }
    EXPECT_LT(normalised_error(y, ref), 1e-6) << dim;
  }
}

TEST(CpuOps, SiluMulAndEmbedding) {
  auto gate = test::random_floats(257, 31, -6.0f, 6.0f), up = test::random_floats(257, 32);
  std::vector<float> out(257, kNaN);
  cpu::silu_mul(gate.data(), up.data(), 257, out.data());
  std::vector<double> ref(257);
  for (size_t i = 0; i < 257; ++i) ref[i] = gate[i] / (1.0 + std::exp(-static_cast<double>(gate[i]))) * up[i];
  EXPECT_LT(normalised_error(out, ref), 1e-6);

  MatrixStorage table = make_matrix(DType::kBF16, 17, 9, 33);
  std::vector<int32_t> ids = {16, 0, 5};
  std::vector<float> rows(27, kNaN);
  cpu::embedding(table.matrix, ids.data(), 3, rows.data());
  for (size_t r = 0; r < 3; ++r)
    for (size_t i = 0; i < 9; ++i) EXPECT_EQ(rows[r * 9 + i], table.reference[static_cast<size_t>(ids[r]) * 9 + i]);
}

TEST(CpuOps, RopeRotatesPairsByPositionTimesFrequency) {
  ModelConfig c;
  c.head_dim = 10;
  c.rope.theta = 10000.0;
  RopeFrequencies f = rope_frequencies(c);
  auto x = test::random_floats(2 * 3 * 10, 41);
  auto original = x;
  std::vector<int32_t> positions = {0, 37};
  cpu::apply_rope(f, x.data(), 2, 3, 10, positions.data());
  for (int t = 0; t < 2; ++t)
    for (int h = 0; h < 3; ++h)
      for (int i = 0; i < 5; ++i) {
        size_t base = static_cast<size_t>((t * 3 + h) * 10);
        double angle = positions[static_cast<size_t>(t)] / std::pow(10000.0, 2.0 * i / 10.0);
        double a = original[base + static_cast<size_t>(i)], b = original[base + static_cast<size_t>(i) + 5];
        EXPECT_NEAR(x[base + static_cast<size_t>(i)], a * std::cos(angle) - b * std::sin(angle), 2e-5);
        EXPECT_NEAR(x[base + static_cast<size_t>(i) + 5], b * std::cos(angle) + a * std::sin(angle), 2e-5);
      }
}

// Paged attention over a shuffled page table equals naive causal attention over contiguous K/V,
// whether the tokens arrive in one chunk or in several.
TEST(CpuOps, PagedAttentionMatchesNaiveCausalAttention) {
  const int64_t H = 6, G = 2, D = 12, P = 16, n = 53;
  KvCache cache({.num_layers = 1, .num_pages = 8, .num_kv_heads = G, .page_size = P, .head_dim = D});
  std::vector<int32_t> pages = {5, 1, 7, 2};  // out of order on purpose
  auto q = test::random_floats(static_cast<size_t>(n * H * D), 51, -2.0f, 2.0f);
  auto k = test::random_floats(static_cast<size_t>(n * G * D), 52, -2.0f, 2.0f);
  auto v = test::random_floats(static_cast<size_t>(n * G * D), 53);
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  std::vector<double> ref(static_cast<size_t>(n * H * D));
  for (int64_t t = 0; t < n; ++t)
    for (int64_t h = 0; h < H; ++h) {
      int64_t g = h / (H / G);
      std::vector<double> s(static_cast<size_t>(t + 1));
      double mx = -INFINITY, den = 0;
      for (int64_t j = 0; j <= t; ++j) {
        double dot = 0;
        for (int64_t d = 0; d < D; ++d) dot += static_cast<double>(q[static_cast<size_t>((t * H + h) * D + d)]) * k[static_cast<size_t>((j * G + g) * D + d)];
        s[static_cast<size_t>(j)] = dot * scale;
        mx = std::max(mx, s[static_cast<size_t>(j)]);
      }
      for (auto& e : s) den += e = std::exp(e - mx);
      for (int64_t d = 0; d < D; ++d) {
        double acc = 0;
        for (int64_t j = 0; j <= t; ++j) acc += s[static_cast<size_t>(j)] * v[static_cast<size_t>((j * G + g) * D + d)];
        ref[static_cast<size_t>((t * H + h) * D + d)] = acc / den;
      }
    }
  for (int64_t chunk_size : {n, int64_t{1}, int64_t{17}}) {
    std::vector<float> out(static_cast<size_t>(n * H * D), kNaN);
    for (int64_t start = 0; start < n; start += chunk_size) {
      int64_t count = std::min(chunk_size, n - start);
      cpu::append_kv(cache, 0, pages, start, count, k.data() + start * G * D, v.data() + start * G * D);
      cpu::AttentionChunk chunk{.q = q.data() + start * H * D, .tokens = count, .start = start, .page_table = &pages,
                                .out = out.data() + start * H * D};
      cpu::paged_attention(cache, 0, chunk, H, scale);
    }
    EXPECT_LT(normalised_error(out, ref), 1e-5) << "chunk " << chunk_size;
  }
}

}  // namespace
}  // namespace vortex
