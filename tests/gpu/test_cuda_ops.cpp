// Every CUDA kernel against the CPU backend on random data (never zeros), odd sizes included,
// outputs poisoned with NaN so unwritten elements fail. Tolerances: fp32 paths ≤ 1e-5 normalised
// error; bf16 paths ≤ 1e-2 (bf16 has 8 mantissa bits; inputs are rounded the same way on both sides).
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <random>

#include "backend/cpu/attention.h"
#include "backend/cpu/ops.h"
#include "backend/cpu/rope.h"
#include "backend/cuda/argmax.cuh"
#include "backend/cuda/embedding.cuh"
#include "backend/cuda/gemm.cuh"
#include "backend/cuda/merge_states.cuh"
#include "backend/cuda/paged_attention.cuh"
#include "backend/cuda/prefill_attention.cuh"
#include "backend/cuda/rmsnorm.cuh"
#include "backend/cuda/rope_append.cuh"
#include "backend/cuda/sample.cuh"
#include "backend/cuda/silu_mul.cuh"
#include "common/test_util.h"
#include "gpu/gpu_test_util.h"
#include "runtime/rollout.h"
#include "runtime/sampler.h"

namespace vortex {
namespace {

using bf16 = __nv_bfloat16;
using test::normalised_error;
using test::poisoned;
using test::to_device;
using test::to_host;

TEST(CudaOps, EmbeddingGathersRows) {
  for (int64_t dim : {1, 7, 96, 257}) {
    const int64_t vocab = 33;
    auto table = test::round_bf16(test::random_floats(static_cast<size_t>(vocab * dim), 1));
    std::vector<int32_t> ids = {32, 0, 5, 5, 17};
    auto d_table = to_device(test::to_bf16(table));
    auto d_ids = to_device(ids);
    auto out = poisoned<float>(ids.size() * dim);
    cuda::launch_embedding<bf16>({.table = d_table.get(), .ids = d_ids.get(), .out = out.get(), .rows = 5, .dim = dim}, nullptr);
    auto got = to_host(out);
    for (size_t r = 0; r < ids.size(); ++r)
      for (int64_t i = 0; i < dim; ++i) EXPECT_EQ(got[r * dim + i], table[ids[r] * dim + i]);
  }
}

TEST(CudaOps, RmsNormMatchesCpuWithRowGather) {
  for (int64_t dim : {1, 7, 96, 257, 4096, 20000}) {
    const int64_t m = 5;
    auto x = test::random_floats(static_cast<size_t>(m * dim), 2, -3.0f, 3.0f);
    auto w = test::random_floats(static_cast<size_t>(dim), 3, 0.5f, 1.5f);
    std::vector<int32_t> rows = {4, 1, 3};
    std::vector<float> gathered, ref(rows.size() * dim);
    for (int32_t r : rows) gathered.insert(gathered.end(), x.begin() + r * dim, x.begin() + (r + 1) * dim);
    cpu::rmsnorm(gathered.data(), w.data(), 3, dim, 1e-6f, ref.data());
    auto d_x = to_device(x), d_w = to_device(w);
    auto d_rows = to_device(rows);
    auto out = poisoned<float>(rows.size() * dim);
    cuda::launch_rmsnorm<float>({.x = d_x.get(), .weight = d_w.get(), .row_index = d_rows.get(), .out = out.get(), .rows = 3, .dim = dim}, nullptr);
    EXPECT_LT(normalised_error(to_host(out), ref), 1e-5) << dim;
    auto out16 = poisoned<bf16>(rows.size() * dim);
    cuda::launch_rmsnorm<bf16>({.x = d_x.get(), .weight = d_w.get(), .row_index = d_rows.get(), .out = out16.get(), .rows = 3, .dim = dim}, nullptr);
    EXPECT_LT(normalised_error(test::to_float(to_host(out16)), ref), 1e-2) << dim;
  }
}

TEST(CudaOps, SiluMulWithBias) {
  const int64_t m = 3, f = 257;
  auto gate_up = test::random_floats(static_cast<size_t>(m * 2 * f), 4, -5.0f, 5.0f);
  auto bias = test::random_floats(static_cast<size_t>(2 * f), 5);
  std::vector<float> gate(m * f), up(m * f), ref(m * f);
  for (int64_t r = 0; r < m; ++r)
    for (int64_t i = 0; i < f; ++i) gate[r * f + i] = gate_up[r * 2 * f + i] + bias[i], up[r * f + i] = gate_up[r * 2 * f + f + i] + bias[f + i];
  cpu::silu_mul(gate.data(), up.data(), m * f, ref.data());
  auto d_in = to_device(gate_up), d_bias = to_device(bias);
  auto out = poisoned<float>(m * f);
  cuda::launch_silu_mul<float>({.gate_up = d_in.get(), .bias = d_bias.get(), .out = out.get(), .rows = m, .dim = f}, nullptr);
  EXPECT_LT(normalised_error(to_host(out), ref), 1e-6);
}

struct GemmCase { int64_t m, n, k; DType dtype; bool accumulate; };

TEST(CudaOps, GemmMatchesCpuLinear) {
  cuda::Gemm gemm;
  for (GemmCase c : {GemmCase{1, 17, 15, DType::kF32, false}, GemmCase{3, 257, 96, DType::kF32, true},
                     GemmCase{17, 1000, 4096, DType::kF32, false}, GemmCase{1, 257, 64, DType::kBF16, false},
                     GemmCase{5, 4096, 1024, DType::kBF16, true}, GemmCase{33, 96, 160, DType::kBF16, false},
                     // the GEMV path (bf16, M ≤ 4): N not a multiple of its 16 rows per block, K past its unrolled step
                     GemmCase{2, 257, 4104, DType::kBF16, true}, GemmCase{3, 1000, 8, DType::kBF16, false},
                     GemmCase{4, 6144, 4096, DType::kBF16, false}, GemmCase{1, 4096, 12288, DType::kBF16, true},
                     GemmCase{1, 24576, 4096, DType::kBF16, false}}) {  // past the GEMV size: cuBLASLt
    auto x = test::random_floats(static_cast<size_t>(c.m * c.k), 6);
    auto w = test::random_floats(static_cast<size_t>(c.n * c.k), 7);
    auto y0 = test::random_floats(static_cast<size_t>(c.m * c.n), 8);
    if (c.dtype == DType::kBF16) x = test::round_bf16(x), w = test::round_bf16(w);
    std::vector<float> ref(static_cast<size_t>(c.m * c.n));
    Matrix wm{.dtype = DType::kF32, .data = w.data(), .rows = c.n, .cols = c.k};
    cpu::linear(x.data(), c.m, wm, nullptr, ref.data());
    if (c.accumulate) for (size_t i = 0; i < ref.size(); ++i) ref[i] += y0[i];
    auto d_y = c.accumulate ? to_device(y0) : poisoned<float>(ref.size());
    if (c.dtype == DType::kF32) {
      auto d_x = to_device(x), d_w = to_device(w);
      gemm.run({.x = d_x.get(), .w = d_w.get(), .y = d_y.get(), .m = c.m, .n = c.n, .k = c.k, .dtype = c.dtype, .accumulate = c.accumulate}, nullptr);
      EXPECT_LT(normalised_error(to_host(d_y), ref), 1e-5) << c.m << "x" << c.n << "x" << c.k;
    } else {
      auto d_x = to_device(test::to_bf16(x)), d_w = to_device(test::to_bf16(w));
      gemm.run({.x = d_x.get(), .w = d_w.get(), .y = d_y.get(), .m = c.m, .n = c.n, .k = c.k, .dtype = c.dtype, .accumulate = c.accumulate}, nullptr);
      EXPECT_LT(normalised_error(to_host(d_y), ref), 1e-4) << c.m << "x" << c.n << "x" << c.k;  // same bf16 inputs, fp32 sums
    }
  }
}

// CPU reference of the fused prologue for one token set: q (M, H, D) and k, v (M, G, D).
struct Prologue { std::vector<float> q, k, v; };
Prologue cpu_prologue(const std::vector<float>& qkv, const std::vector<float>& bias, const std::vector<float>& q_norm,
                      const std::vector<float>& k_norm, const RopeFrequencies& freqs, const std::vector<int32_t>& positions,
                      int64_t H, int64_t G, int64_t D) {
  const int64_t M = static_cast<int64_t>(positions.size()), W = (H + 2 * G) * D;
  Prologue p{std::vector<float>(M * H * D), std::vector<float>(M * G * D), std::vector<float>(M * G * D)};
  for (int64_t t = 0; t < M; ++t)
    for (int64_t i = 0; i < W; ++i) {
      float v = qkv[t * W + i] + bias[i];
      if (i < H * D) p.q[t * H * D + i] = v;
      else if (i < (H + G) * D) p.k[t * G * D + i - H * D] = v;
      else p.v[t * G * D + i - (H + G) * D] = v;
    }
  cpu::rmsnorm(p.q.data(), q_norm.data(), M * H, D, 1e-6f, p.q.data());
  cpu::rmsnorm(p.k.data(), k_norm.data(), M * G, D, 1e-6f, p.k.data());
  cpu::apply_rope(freqs, p.q.data(), M, H, D, positions.data());
  cpu::apply_rope(freqs, p.k.data(), M, G, D, positions.data());
  return p;
}

TEST(CudaOps, RopeAppendMatchesCpuAndFillsTheRightSlots) {
  for (int64_t D : {24, 128}) {
    const int64_t H = 8, G = 2, P = 16, M = 19, num_pages = 6;
    ModelConfig config;
    config.head_dim = D;
    config.rope = {.type = RopeType::kYarn, .theta = 10000.0, .factor = 4.0, .original_max_position = 64};
    RopeFrequencies freqs = rope_frequencies(config);
    auto qkv = test::random_floats(static_cast<size_t>(M * (H + 2 * G) * D), 9, -2.0f, 2.0f);
    auto bias = test::random_floats(static_cast<size_t>((H + 2 * G) * D), 10, -0.2f, 0.2f);
    auto q_norm = test::random_floats(static_cast<size_t>(D), 11, 0.5f, 1.5f), k_norm = test::random_floats(static_cast<size_t>(D), 12, 0.5f, 1.5f);
    std::vector<int32_t> positions(M);
    std::iota(positions.begin(), positions.end(), 70);  // crosses a page boundary
    std::vector<int32_t> page_table = {4, 1, 5, 0, 2, 3};
    std::vector<int64_t> slots;
    for (int32_t pos : positions) slots.push_back(static_cast<int64_t>(page_table[pos / P]) * P + pos % P);
    Prologue ref = cpu_prologue(qkv, bias, q_norm, k_norm, freqs, positions, H, G, D);
    auto d_qkv = to_device(qkv), d_bias = to_device(bias), d_qn = to_device(q_norm), d_kn = to_device(k_norm), d_freq = to_device(freqs.inv_freq);
    auto d_pos = to_device(positions);
    auto d_slots = to_device(slots);
    auto q = poisoned<float>(M * H * D), k_cache = poisoned<float>(num_pages * G * P * D), v_cache = poisoned<float>(num_pages * G * P * D);
    cuda::launch_rope_append<float, float>({.qkv = d_qkv.get(), .bias = d_bias.get(), .q_norm = d_qn.get(), .k_norm = d_kn.get(),
                                            .inv_freq = d_freq.get(), .positions = d_pos.get(), .slots = d_slots.get(), .q_out = q.get(),
                                            .k_cache = k_cache.get(), .v_cache = v_cache.get(), .tokens = M, .num_heads = H,
                                            .num_kv_heads = G, .head_dim = static_cast<int>(D), .page_size = P,
                                            .attention_scaling = freqs.attention_scaling, .eps = 1e-6f}, nullptr);
    EXPECT_LT(normalised_error(to_host(q), ref.q), 1e-5) << D;
    auto kc = to_host(k_cache), vc = to_host(v_cache);
    std::vector<float> k_got, v_got;
    for (int64_t t = 0; t < M; ++t)
      for (int64_t g = 0; g < G; ++g) {
        int64_t base = ((slots[t] / P * G + g) * P + slots[t] % P) * D;
        k_got.insert(k_got.end(), kc.begin() + base, kc.begin() + base + D);
        v_got.insert(v_got.end(), vc.begin() + base, vc.begin() + base + D);
      }
    EXPECT_LT(normalised_error(k_got, ref.k), 1e-5) << D;
    EXPECT_LT(normalised_error(v_got, ref.v), 1e-6) << D;
  }
}

// Rows of different lengths (decode rows and the rows of a prefill chunk) over shuffled pages,
// lengths crossing split boundaries; CPU paged attention on the same cache is the reference.
template <typename T>
void check_paged_attention(int64_t H, int64_t G, int64_t D, double tolerance) {
  const int64_t P = 16, num_pages = 48;
  KvCache cpu_cache({.num_layers = 1, .num_pages = num_pages, .num_kv_heads = G, .page_size = P, .head_dim = D});
  std::vector<int32_t> pages(num_pages);
  std::iota(pages.begin(), pages.end(), 0);
  std::shuffle(pages.begin(), pages.end(), std::mt19937(13));
  std::vector<int32_t> seq_a(pages.begin(), pages.begin() + 40), seq_b(pages.begin() + 40, pages.end());
  const int64_t len_a = 600, len_b = 100;
  auto k = test::random_floats(static_cast<size_t>(len_a * G * D), 14, -2.0f, 2.0f), v = test::random_floats(static_cast<size_t>(len_a * G * D), 15);
  if (std::is_same_v<T, bf16>) k = test::round_bf16(k), v = test::round_bf16(v);
  cpu::append_kv(cpu_cache, 0, seq_a, 0, len_a, k.data(), v.data());
  cpu::append_kv(cpu_cache, 0, seq_b, 0, len_b, k.data(), v.data());
  // Rows: decode rows of seq_a at lengths 1, 255, 256, 257, 600 and the last 3 prefill rows of seq_b.
  struct Row { const std::vector<int32_t>* pages; int64_t len; };
  std::vector<Row> rows = {{&seq_a, 1}, {&seq_a, 255}, {&seq_a, 256}, {&seq_a, 257}, {&seq_a, 600}, {&seq_b, 98}, {&seq_b, 99}, {&seq_b, 100}};
  const int64_t R = static_cast<int64_t>(rows.size());
  auto q = test::random_floats(static_cast<size_t>(R * H * D), 16, -2.0f, 2.0f);
  if (std::is_same_v<T, bf16>) q = test::round_bf16(q);
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  std::vector<float> ref(static_cast<size_t>(R * H * D));
  for (int64_t r = 0; r < R; ++r) {
    cpu::AttentionChunk chunk{.q = q.data() + r * H * D, .tokens = 1, .start = rows[r].len - 1, .page_table = rows[r].pages, .out = ref.data() + r * H * D};
    cpu::paged_attention(cpu_cache, 0, chunk, H, scale);
  }
  // The same cache contents on the device, in T.
  std::vector<float> k_all(cpu_cache.k(0), cpu_cache.k(0) + num_pages * G * P * D), v_all(cpu_cache.v(0), cpu_cache.v(0) + num_pages * G * P * D);
  std::vector<int32_t> flat(seq_a);
  flat.insert(flat.end(), seq_b.begin(), seq_b.end());
  std::vector<int64_t> offsets;
  std::vector<int32_t> lens;
  for (const Row& row : rows) offsets.push_back(row.pages == &seq_a ? 0 : 40), lens.push_back(static_cast<int32_t>(row.len));
  const int splits = (600 + cuda::kAttentionSplitTokens - 1) / cuda::kAttentionSplitTokens;
  auto d_flat = to_device(flat);
  auto d_offsets = to_device(offsets);
  auto d_lens = to_device(lens);
  auto partial_o = poisoned<float>(R * H * splits * D), partial_lse = poisoned<float>(R * H * splits);
  auto out = poisoned<T>(R * H * D);
  std::vector<T> q_t(q.size()), k_t(k_all.size()), v_t(v_all.size());
  auto convert = [](float x) { if constexpr (std::is_same_v<T, bf16>) return __float2bfloat16(x); else return x; };
  std::transform(q.begin(), q.end(), q_t.begin(), convert);
  std::transform(k_all.begin(), k_all.end(), k_t.begin(), [&](float x) { return std::isnan(x) ? convert(0.0f) : convert(x); });
  std::transform(v_all.begin(), v_all.end(), v_t.begin(), [&](float x) { return std::isnan(x) ? convert(0.0f) : convert(x); });
  auto d_q = to_device(q_t), d_k = to_device(k_t), d_v = to_device(v_t);
  cuda::launch_paged_attention<T, T>({.q = d_q.get(), .k_cache = d_k.get(), .v_cache = d_v.get(), .page_table = d_flat.get(),
                                      .page_offset = d_offsets.get(), .kv_len = d_lens.get(), .partial_o = partial_o.get(),
                                      .partial_lse = partial_lse.get(), .rows = R, .num_heads = static_cast<int>(H),
                                      .num_kv_heads = static_cast<int>(G), .head_dim = static_cast<int>(D), .page_size = P,
                                      .num_splits = splits, .scale = scale}, nullptr);
  cuda::launch_merge_states<T>({.partial_o = partial_o.get(), .partial_lse = partial_lse.get(), .out = out.get(), .rows = R,
                                .num_heads = static_cast<int>(H), .num_splits = splits, .head_dim = static_cast<int>(D)}, nullptr);
  std::vector<float> got;
  for (T value : to_host(out)) got.push_back(static_cast<float>(value));
  EXPECT_LT(normalised_error(got, ref), tolerance) << "H " << H << " G " << G << " D " << D;
}

TEST(CudaOps, PagedAttentionMatchesCpuFp32) {
  check_paged_attention<float>(4, 4, 16, 1e-5);   // no GQA
  check_paged_attention<float>(8, 2, 24, 1e-5);   // GQA 4, odd head dim
  check_paged_attention<float>(16, 2, 128, 1e-5); // GQA 8
  check_paged_attention<float>(6, 3, 17, 1e-5);   // GQA 2, head dim not a multiple of 4 (scalar merge)
}

TEST(CudaOps, PagedAttentionMatchesCpuBf16) {
  check_paged_attention<bf16>(32, 8, 128, 1e-2);  // Qwen3-8B's head layout
  check_paged_attention<bf16>(16, 8, 64, 1e-2);
}

// A verify chunk's rows taken together (rows_per_block): each K/V tile is read once for the chunk's
// R tokens × the group's heads, and every row's output is bit-identical to the row-by-row kernel.
void check_rows_per_block(int64_t H, int64_t G, int64_t D, int R) {
  const int64_t P = 16, num_pages = 48;
  std::vector<int32_t> pages(num_pages);
  std::iota(pages.begin(), pages.end(), 0);
  std::shuffle(pages.begin(), pages.end(), std::mt19937(17));
  // Two chunks of R rows: seq a's last R tokens of 600 (rows cross the split boundary at 512 when
  // R > 1 is long enough: lengths 600 - R + 1 .. 600), seq b's of 257 (crossing 256).
  std::vector<int64_t> offsets;
  std::vector<int32_t> lens;
  for (int r = 0; r < R; ++r) offsets.push_back(0), lens.push_back(600 - R + 1 + r);
  for (int r = 0; r < R; ++r) offsets.push_back(40), lens.push_back(257 - R + 1 + r);
  const int64_t rows = 2 * R;
  const int splits = (600 + cuda::kAttentionSplitTokens - 1) / cuda::kAttentionSplitTokens;
  auto to_bf16 = [](const std::vector<float>& x) {
    std::vector<bf16> out(x.size());
    std::transform(x.begin(), x.end(), out.begin(), [](float v) { return __float2bfloat16(v); });
    return out;
  };
  auto d_q = to_device(to_bf16(test::random_floats(static_cast<size_t>(rows * H * D), 21, -2.0f, 2.0f)));
  auto d_k = to_device(to_bf16(test::random_floats(static_cast<size_t>(num_pages * G * P * D), 22, -2.0f, 2.0f)));
  auto d_v = to_device(to_bf16(test::random_floats(static_cast<size_t>(num_pages * G * P * D), 23)));
  auto d_pages = to_device(pages);
  auto d_offsets = to_device(offsets);
  auto d_lens = to_device(lens);
  auto run = [&](int rows_per_block) {
    auto partial_o = poisoned<float>(rows * H * splits * D), partial_lse = poisoned<float>(rows * H * splits);
    auto out = poisoned<bf16>(rows * H * D);
    cuda::launch_paged_attention<bf16, bf16>({.q = d_q.get(), .k_cache = d_k.get(), .v_cache = d_v.get(), .page_table = d_pages.get(),
                                              .page_offset = d_offsets.get(), .kv_len = d_lens.get(), .partial_o = partial_o.get(),
                                              .partial_lse = partial_lse.get(), .rows = rows, .num_heads = static_cast<int>(H),
                                              .num_kv_heads = static_cast<int>(G), .head_dim = static_cast<int>(D), .page_size = P,
                                              .num_splits = splits, .scale = 0.125f, .rows_per_block = rows_per_block}, nullptr);
    cuda::launch_merge_states<bf16>({.partial_o = partial_o.get(), .partial_lse = partial_lse.get(), .out = out.get(), .rows = rows,
                                     .num_heads = static_cast<int>(H), .num_splits = splits, .head_dim = static_cast<int>(D)}, nullptr);
    std::vector<float> got;
    for (bf16 value : to_host(out)) got.push_back(static_cast<float>(value));
    return std::make_pair(got, to_host(partial_lse));
  };
  const auto [one, one_lse] = run(1);
  const auto [many, many_lse] = run(R);
  for (float v : one) ASSERT_TRUE(std::isfinite(v));
  EXPECT_EQ(many, one) << "H " << H << " G " << G << " D " << D << " R " << R;
  EXPECT_EQ(many_lse, one_lse) << "H " << H << " G " << G << " D " << D << " R " << R;
}

TEST(CudaOps, PagedAttentionRowsPerBlockEqualsRowByRow) {
  check_rows_per_block(6, 2, 64, 5);     // the embedded model: group 3, gamma 4
  check_rows_per_block(32, 8, 128, 4);   // Qwen3-8B: group 4, gamma 3
  check_rows_per_block(16, 8, 64, 8);    // group 2, gamma 7
}

// The merge alone, at split counts past one warp's lanes and head dims with and without float4
// loads: o = Σ_s exp(lse_s − lse) · o_s with lse = log Σ_s exp(lse_s), empty (-inf) parts skipped.
TEST(CudaOps, MergeStatesMatchesLogSumExp) {
  for (int splits : {1, 5, 70}) {
    for (int D : {17, 128}) {
      const int64_t R = 3, H = 2;
      auto o = test::random_floats(static_cast<size_t>(R * H * splits * D), 40);
      auto lse = test::random_floats(static_cast<size_t>(R * H * splits), 41, -20.0f, 20.0f);
      for (size_t i = 1; i < lse.size(); i += 3)
        if (i % static_cast<size_t>(splits) != 0) lse[i] = -INFINITY;  // empty parts, never a row's first
      std::vector<float> ref(static_cast<size_t>(R * H * D)), ref_lse(static_cast<size_t>(R * H));
      for (int64_t rh = 0; rh < R * H; ++rh) {
        double max_lse = -INFINITY, total = 0.0;
        for (int s = 0; s < splits; ++s) max_lse = std::max<double>(max_lse, lse[rh * splits + s]);
        for (int s = 0; s < splits; ++s) total += std::exp(lse[rh * splits + s] - max_lse);
        for (int d = 0; d < D; ++d) {
          double acc = 0.0;
          for (int s = 0; s < splits; ++s) acc += std::exp(lse[rh * splits + s] - max_lse) / total * o[(rh * splits + s) * D + d];
          ref[rh * D + d] = static_cast<float>(acc);
        }
        ref_lse[rh] = static_cast<float>(max_lse + std::log(total));
      }
      auto d_o = to_device(o), d_lse = to_device(lse);
      auto out = poisoned<float>(R * H * D), out_lse = poisoned<float>(R * H);
      cuda::launch_merge_states<float>({.partial_o = d_o.get(), .partial_lse = d_lse.get(), .out = out.get(), .out_lse = out_lse.get(),
                                        .rows = R, .num_heads = static_cast<int>(H), .num_splits = splits, .head_dim = D}, nullptr);
      EXPECT_LT(normalised_error(to_host(out), ref), 1e-6) << "splits " << splits << " D " << D;
      EXPECT_LT(normalised_error(to_host(out_lse), ref_lse), 1e-6) << "splits " << splits << " D " << D;
    }
  }
}

// Sparse decode rows: each (row, kv head) attends to its own page list (random full pages plus the
// row's partly filled page), given to the kernel as compact per-head page tables; equals the CPU
// sparse kernel on the same lists.
template <typename T>
void check_sparse_paged_attention(int64_t H, int64_t G, int64_t D, double tolerance) {
  const int64_t P = 16, n = 700, num_pages = n / P + 4;
  KvCache cpu_cache({.num_layers = 1, .num_pages = num_pages, .num_kv_heads = G, .page_size = P, .head_dim = D});
  std::vector<int32_t> pages(static_cast<size_t>(num_pages));
  std::iota(pages.begin(), pages.end(), 0);
  std::shuffle(pages.begin(), pages.end(), std::mt19937(31));
  auto k = test::random_floats(static_cast<size_t>(n * G * D), 32, -2.0f, 2.0f), v = test::random_floats(static_cast<size_t>(n * G * D), 33);
  if (std::is_same_v<T, bf16>) k = test::round_bf16(k), v = test::round_bf16(v);
  cpu::append_kv(cpu_cache, 0, pages, 0, n, k.data(), v.data());
  const std::vector<int64_t> lengths = {17, 256, 257, 500, 700};  // decode rows at these lengths
  const int64_t R = static_cast<int64_t>(lengths.size());
  auto q = test::random_floats(static_cast<size_t>(R * H * D), 34, -2.0f, 2.0f);
  if (std::is_same_v<T, bf16>) q = test::round_bf16(q);
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  const test::SparseLists sparse = test::random_sparse_lists(lengths, G, P, pages, 35, 4);
  const std::vector<float> ref = test::sparse_reference(cpu_cache, q, lengths, pages, sparse, H, scale);
  std::vector<float> k_all(cpu_cache.k(0), cpu_cache.k(0) + num_pages * G * P * D), v_all(cpu_cache.v(0), cpu_cache.v(0) + num_pages * G * P * D);
  auto convert = [](float x) { if constexpr (std::is_same_v<T, bf16>) return __float2bfloat16(x); else return x; };
  std::vector<T> q_t(q.size()), k_t(k_all.size()), v_t(v_all.size());
  std::transform(q.begin(), q.end(), q_t.begin(), convert);
  std::transform(k_all.begin(), k_all.end(), k_t.begin(), [&](float x) { return std::isfinite(x) ? convert(x) : convert(0.0f); });
  std::transform(v_all.begin(), v_all.end(), v_t.begin(), [&](float x) { return std::isfinite(x) ? convert(x) : convert(0.0f); });
  auto d_q = to_device(q_t), d_k = to_device(k_t), d_v = to_device(v_t);
  auto d_flat = to_device(sparse.flat);
  auto d_offsets = to_device(sparse.offsets);
  auto d_lens = to_device(sparse.lens);
  const int splits = (n + cuda::kAttentionSplitTokens - 1) / cuda::kAttentionSplitTokens;
  auto partial_o = poisoned<float>(R * H * splits * D), partial_lse = poisoned<float>(R * H * splits);
  auto out = poisoned<T>(R * H * D);
  cuda::launch_paged_attention<T, T>({.q = d_q.get(), .k_cache = d_k.get(), .v_cache = d_v.get(), .page_table = d_flat.get(),
                                      .page_offset = d_offsets.get(), .kv_len = d_lens.get(), .partial_o = partial_o.get(),
                                      .partial_lse = partial_lse.get(), .rows = R, .num_heads = static_cast<int>(H),
                                      .num_kv_heads = static_cast<int>(G), .head_dim = static_cast<int>(D), .page_size = P,
                                      .num_splits = splits, .scale = scale, .per_head_pages = true}, nullptr);
  cuda::launch_merge_states<T>({.partial_o = partial_o.get(), .partial_lse = partial_lse.get(), .out = out.get(), .rows = R,
                                .num_heads = static_cast<int>(H), .num_splits = splits, .head_dim = static_cast<int>(D)}, nullptr);
  std::vector<float> got;
  for (T value : to_host(out)) got.push_back(static_cast<float>(value));
  EXPECT_LT(normalised_error(got, ref), tolerance) << "H " << H << " G " << G << " D " << D;
}

TEST(CudaOps, SparsePagedAttentionMatchesCpuSparse) {
  check_sparse_paged_attention<float>(8, 2, 24, 1e-5);   // generic kernel, GQA 4, odd head dim
  check_sparse_paged_attention<bf16>(32, 8, 128, 1e-2);  // bf16 fast path, Qwen3-8B's head layout
  check_sparse_paged_attention<bf16>(16, 8, 64, 1e-2);
}

// A prefill chunk of T tokens at positions start..start+T-1 (cached keys before it, causal within
// it) on tensor cores equals CPU paged attention over the same pages.
void check_prefill_attention(int64_t H, int64_t G, int64_t D, int64_t start, int64_t T) {
  const int64_t P = 16, total = start + T, num_pages = (total + P - 1) / P + 3;
  KvCache cpu_cache({.num_layers = 1, .num_pages = num_pages, .num_kv_heads = G, .page_size = P, .head_dim = D});
  std::vector<int32_t> pages(static_cast<size_t>(num_pages));
  std::iota(pages.begin(), pages.end(), 0);
  std::shuffle(pages.begin(), pages.end(), std::mt19937(21));
  auto k = test::round_bf16(test::random_floats(static_cast<size_t>(total * G * D), 22, -2.0f, 2.0f));
  auto v = test::round_bf16(test::random_floats(static_cast<size_t>(total * G * D), 23));
  auto q = test::round_bf16(test::random_floats(static_cast<size_t>(T * H * D), 24, -2.0f, 2.0f));
  cpu::append_kv(cpu_cache, 0, pages, 0, total, k.data(), v.data());
  std::vector<float> ref(static_cast<size_t>(T * H * D));
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  cpu::paged_attention(cpu_cache, 0, {.q = q.data(), .tokens = T, .start = start, .page_table = &pages, .out = ref.data()}, H, scale);
  std::vector<float> k_all(cpu_cache.k(0), cpu_cache.k(0) + num_pages * G * P * D), v_all(cpu_cache.v(0), cpu_cache.v(0) + num_pages * G * P * D);
  for (auto* all : {&k_all, &v_all}) for (float& x : *all) if (!std::isfinite(x)) x = 0.0f;  // never-written slots
  auto d_q = to_device(test::to_bf16(q)), d_k = to_device(test::to_bf16(k_all)), d_v = to_device(test::to_bf16(v_all));
  auto d_pages = to_device(pages);
  auto out = poisoned<bf16>(static_cast<size_t>(T * H * D));
  ASSERT_TRUE(cuda::launch_prefill_attention({.q = d_q.get(), .k_cache = d_k.get(), .v_cache = d_v.get(), .pages = d_pages.get(),
                                              .out = out.get(), .tokens = T, .start = start, .num_heads = static_cast<int>(H),
                                              .num_kv_heads = static_cast<int>(G), .head_dim = static_cast<int>(D),
                                              .page_size = static_cast<int>(P), .scale = scale}, nullptr));
  EXPECT_LT(normalised_error(test::to_float(to_host(out)), ref), 1e-2) << "H " << H << " G " << G << " D " << D << " start " << start << " T " << T;
}

TEST(CudaOps, PrefillAttentionMatchesCpu) {
  check_prefill_attention(32, 8, 128, 0, 150);    // a first chunk, 150 = 2 full tiles + 22 rows
  check_prefill_attention(32, 8, 128, 200, 77);   // a later chunk over cached keys
  check_prefill_attention(16, 8, 64, 13, 64);     // head dim 64, unaligned start
  check_prefill_attention(8, 8, 128, 0, 1);       // a single token
}

TEST(CudaOps, ArgmaxTakesTheFirstMaximum) {
  const int64_t rows = 3, vocab = 151936;
  auto logits = test::random_floats(static_cast<size_t>(rows * vocab), 17, -10.0f, 10.0f);
  logits[0 * vocab + 5000] = 50.0f, logits[0 * vocab + 90000] = 50.0f;  // tie: the first wins
  logits[1 * vocab + vocab - 1] = 60.0f;
  auto d_logits = to_device(logits);
  auto ids = poisoned<int32_t>(rows);
  cuda::launch_argmax({.logits = d_logits.get(), .ids = ids.get(), .rows = rows, .vocab = vocab}, nullptr);
  auto got = to_host(ids);
  EXPECT_EQ(got[0], 5000);
  EXPECT_EQ(got[1], vocab - 1);
  EXPECT_EQ(got[2], static_cast<int32_t>(std::max_element(logits.begin() + 2 * vocab, logits.end()) - (logits.begin() + 2 * vocab)));
}


// Sampling on the device picks what the CPU's sample_with_draw picks from the same logits and
// uniforms, row by row in one mixed batch: greedy, temperature alone, top-k (with ties at the cut),
// top-p, min-p and all of them together, over flat and peaked rows, for vocabularies of 1 id to
// Qwen3's 151,936.
TEST(CudaOps, SampleMatchesCpuSampler) {
  for (int64_t V : {1, 3, 1001, 151936}) {
    const std::vector<TokenDraw> kinds = {
        {.temperature = 0.0f}, {.temperature = 1.0f}, {.temperature = 0.7f, .top_k = 5}, {.temperature = 1.3f, .top_p = 0.9f},
        {.temperature = 1.0f, .min_p = 0.05f}, {.temperature = 0.8f, .top_k = 50, .top_p = 0.95f, .min_p = 0.01f},
        {.temperature = 1.0f, .top_k = 1}, {.temperature = 2.0f, .top_k = static_cast<int32_t>(V) + 5}};
    const int uniforms = 12;
    const int64_t R = static_cast<int64_t>(kinds.size()) * uniforms;
    auto logits = test::random_floats(static_cast<size_t>(R * V), 50, -4.0f, 4.0f);
    std::mt19937 rng(51);
    std::vector<TokenDraw> draws;
    for (int64_t r = 0; r < R; ++r) {
      float* row = logits.data() + r * V;
      const float scale = r % 2 ? 8.0f : 1.0f;  // odd rows peaked, even rows flat
      for (int64_t i = 0; i < V; ++i) row[i] *= scale;
      for (int64_t i = 7; i < V; i += 7) row[i] = row[i - 3];  // ties, some of them at a top-k cut
      TokenDraw d = kinds[static_cast<size_t>(r) / uniforms];
      const int u = static_cast<int>(r % uniforms);
      d.uniform = u == 0 ? 0.0 : u == 1 ? 0.9999999 : std::uniform_real_distribution<double>(0.0, 1.0)(rng);
      draws.push_back(d);
    }
    SamplerScratch scratch;
    std::vector<int32_t> ref;
    for (int64_t r = 0; r < R; ++r)
      ref.push_back(sample_with_draw({logits.data() + r * V, static_cast<size_t>(V)}, draws[static_cast<size_t>(r)], scratch));
    auto d_logits = to_device(logits);
    auto d_draws = to_device(draws);
    auto ids = poisoned<int32_t>(R);
    cuda::DeviceSampler sampler;
    sampler.run({.logits = d_logits.get(), .draws = d_draws.get(), .ids = ids.get(), .rows = R, .vocab = V}, draws.data(), nullptr);
    EXPECT_EQ(to_host(ids), ref) << "V " << V;
    // A greedy-only batch takes the argmax path.
    std::vector<TokenDraw> greedy(static_cast<size_t>(R), TokenDraw{.temperature = 0.0f});
    auto d_greedy = to_device(greedy);
    sampler.run({.logits = d_logits.get(), .draws = d_greedy.get(), .ids = ids.get(), .rows = R, .vocab = V}, greedy.data(), nullptr);
    std::vector<int32_t> argmax_ref;
    for (int64_t r = 0; r < R; ++r) argmax_ref.push_back(argmax({logits.data() + r * V, static_cast<size_t>(V)}));
    EXPECT_EQ(to_host(ids), argmax_ref) << "V " << V;
  }
}

// Rollouts' row reductions on the device (DeviceSampler::reduce) equal their host twin
// (reduce_rows) on the same logits and drawn tokens: policy rows' log-probs and top tokens (best
// first, probabilities), dense rows' log-probs and sums over a kept policy distribution (a few
// tokens, or the whole vocabulary), rows asked for nothing; greedy and sampled draws mixed.
TEST(CudaOps, RolloutReductionsMatchTheHost) {
  for (int64_t V : {3, 1001, 151936}) {
    const int64_t R = 24;
    auto logits = test::random_floats(static_cast<size_t>(R * V), 60, -6.0f, 6.0f);
    std::mt19937 rng(61);
    std::vector<TokenDraw> draws;
    RowReductions want;
    want.clear();
    std::vector<int32_t> ids(static_cast<size_t>(V));
    std::iota(ids.begin(), ids.end(), 0);
    for (int64_t r = 0; r < R; ++r) {
      const float t = r % 3 == 0 ? 0.0f : r % 3 == 1 ? 1.0f : 0.7f;
      draws.push_back({.temperature = t, .uniform = std::uniform_real_distribution<double>(0.0, 1.0)(rng)});
      const float temperature = t > 0.0f ? t : 1.0f;
      switch (r % 4) {
        case 0:  // a sparse policy row
          want.rows.push_back({.temperature = temperature, .top = r % 8 == 0 ? static_cast<int32_t>(V) : 64});
          break;
        case 1: {  // a dense row against a kept policy distribution
          std::shuffle(ids.begin(), ids.end(), rng);
          const size_t kept = r % 8 == 1 ? static_cast<size_t>(V) : std::min<size_t>(static_cast<size_t>(V), 200);
          std::vector<int32_t> kept_ids(ids.begin(), ids.begin() + static_cast<ptrdiff_t>(kept));
          std::vector<double> kept_probs;
          for (size_t i = 0; i < kept; ++i) kept_probs.push_back(std::uniform_real_distribution<double>(0.0, 1.0 / static_cast<double>(kept))(rng));
          want.rows.push_back({.temperature = temperature, .token = static_cast<int32_t>(rng() % V),
                               .policy = want.add_policy(kept_ids, kept_probs), .lambda = r % 8 == 1 ? 0.0 : 0.8});
          break;
        }
        case 2:  // a dense policy row: its log-prob only
          want.rows.push_back({.temperature = temperature});
          break;
        default:  // nothing
          want.rows.push_back({});
      }
    }
    auto d_logits = to_device(logits);
    auto d_draws = to_device(draws);
    auto d_ids = poisoned<int32_t>(R);
    cuda::DeviceSampler sampler;
    const cuda::SampleParams params{.logits = d_logits.get(), .draws = d_draws.get(), .ids = d_ids.get(), .rows = R, .vocab = V};
    sampler.run(params, draws.data(), nullptr, true);
    RowReductions got = want;
    sampler.reduce(params, got, nullptr);
    const std::vector<int32_t> drawn = to_host(d_ids);
    reduce_rows(logits, V, drawn, want);
    ASSERT_EQ(got.stats.size(), want.stats.size());
    for (size_t r = 0; r < want.stats.size(); ++r) {
      EXPECT_NEAR(got.stats[r].logprob, want.stats[r].logprob, 1e-9) << "V " << V << " row " << r;
      EXPECT_NEAR(got.stats[r].overlap, want.stats[r].overlap, 1e-12) << "V " << V << " row " << r;
      EXPECT_NEAR(got.stats[r].covered, want.stats[r].covered, 1e-12) << "V " << V << " row " << r;
      EXPECT_NEAR(got.stats[r].obrs, want.stats[r].obrs, 1e-12) << "V " << V << " row " << r;
    }
    EXPECT_EQ(got.top_offsets, want.top_offsets) << "V " << V;
    EXPECT_EQ(got.top_ids, want.top_ids) << "V " << V;
    ASSERT_EQ(got.top_probs.size(), want.top_probs.size());
    double worst = 0.0;
    for (size_t i = 0; i < want.top_probs.size(); ++i) worst = std::max(worst, std::abs(got.top_probs[i] - want.top_probs[i]));
    EXPECT_LE(worst, 1e-12) << "V " << V;
  }
}

}  // namespace
}  // namespace vortex
