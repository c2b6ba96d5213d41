// The fp8 KV cache on the GPU (backend/cuda/kv_fp8.cuh) against the CPU backend, which rounds every
// row it appends as the GPU stores it (kv/kv_rounding.h): rope_append's stored bytes and scales (keys
// rotated, and the rotated query), paged attention (the generic and tensor-core kernels; dense,
// sparse page lists, several rows per block), prefill attention, page summaries of fp8 keys (as
// stored and rotated back), and a forward pass at a real shape (rotation included). The attention
// kernels multiply a query with stored rows whatever the rows hold, so their tests use rows rounded
// as stored (append_stored_rows); attention reads exactly the CPU's values (an int8 key or an e4m3
// value times a power of two is exact in bf16), so those checks keep the bf16 tolerance of
// test_cuda_ops.cpp.
#include <cuda_fp8.h>
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>

#include "backend/cpu/attention.h"
#include "backend/cpu/forward.h"
#include "backend/cpu/rope.h"
#include "backend/cuda/cuda_model.h"
#include "backend/cuda/merge_states.cuh"
#include "backend/cuda/page_summary.cuh"
#include "backend/cuda/paged_attention.cuh"
#include "backend/cuda/prefill_attention.cuh"
#include "backend/cuda/rope_append.cuh"
#include "common/test_util.h"
#include "gpu/gpu_test_util.h"
#include "io/hf_config.h"
#include "kv/hadamard.h"
#include "kv/kv_cache.h"
#include "kv/kv_rounding.h"
#include "model/weights.h"
#include "sparse/field_reduce.h"
#include "sparse/field_storage.h"

namespace vortex {
namespace {

using bf16 = __nv_bfloat16;
using Fp8 = __nv_fp8_e4m3;
using test::normalised_error;
using test::poisoned;
using test::to_device;
using test::to_host;

// Rows as the GPU stores them: bytes (int8 keys, e4m3 values) and a scale per row.
struct Fp8Rows {
  std::vector<uint8_t> bytes;  // (rows, D)
  std::vector<float> scales;   // (rows)
};

// `rows` rows of D values that round_stored_row(kFp8, kind) produced (or zeros) as bytes and scales
// whose products give every value back exactly.
Fp8Rows to_fp8_rows(KvRow kind, const float* values, int64_t rows, int64_t D) {
  Fp8Rows out{std::vector<uint8_t>(static_cast<size_t>(rows * D)), std::vector<float>(static_cast<size_t>(rows))};
  for (int64_t r = 0; r < rows; ++r) {
    const float* x = values + r * D;
    float amax = 0.0f;
    for (int64_t d = 0; d < D; ++d) amax = std::max(amax, std::fabs(x[d]));
    const float scale = kind == KvRow::kKey ? int8_row_scale(amax) : fp8_row_scale(amax);
    out.scales[static_cast<size_t>(r)] = scale;
    for (int64_t d = 0; d < D; ++d) {
      const int code = int8_key_code(x[d] / scale);
      const uint8_t bits = kind == KvRow::kKey ? static_cast<uint8_t>(static_cast<int8_t>(code)) : field_fp8_bits(x[d] / scale);
      const float back = kind == KvRow::kKey ? static_cast<float>(code) * scale : field_fp8_value(bits) * scale;
      EXPECT_EQ(back, x[d]) << "row " << r << " element " << d << " is not a stored row's value";
      out.bytes[static_cast<size_t>(r * D + d)] = bits;
    }
  }
  return out;
}

// A one-layer CPU cache rounding to fp8, every element zero before anything is appended (so that
// rows never written are valid fp8 rows too).
KvCache zeroed_fp8_cache(int64_t num_pages, int64_t G, int64_t P, int64_t D) {
  KvCache cache({.num_layers = 1, .num_pages = num_pages, .num_kv_heads = G, .page_size = P, .head_dim = D, .storage = KvStorage::kFp8});
  std::memset(cache.k(0), 0, static_cast<size_t>(num_pages * G * P * D) * sizeof(float));
  std::memset(cache.v(0), 0, static_cast<size_t>(num_pages * G * P * D) * sizeof(float));
  return cache;
}

// cpu::append_kv without the keys' rotation: tokens [start, start + n) of a sequence on `pages` get
// their k and v rows rounded as stored (round_stored_row), the rows the attention kernels read.
void append_stored_rows(KvCache& cache, const std::vector<int32_t>& pages, int64_t start, int64_t n, const float* k, const float* v) {
  const KvCacheShape& s = cache.shape();
  for (int64_t t = 0; t < n; ++t)
    for (int64_t g = 0; g < s.num_kv_heads; ++g) {
      const int64_t position = start + t, at = cache.offset(pages[static_cast<size_t>(position / s.page_size)], g, position % s.page_size);
      const int64_t from = (t * s.num_kv_heads + g) * s.head_dim;
      std::copy(k + from, k + from + s.head_dim, cache.k(0) + at);
      std::copy(v + from, v + from + s.head_dim, cache.v(0) + at);
      round_stored_row(KvStorage::kFp8, KvRow::kKey, cache.k(0) + at, s.head_dim);
      round_stored_row(KvStorage::kFp8, KvRow::kValue, cache.v(0) + at, s.head_dim);
    }
}

// K and V rows of a few magnitudes, so that row scales above and below 1 both occur.
std::vector<float> varied_rows(int64_t rows, int64_t D, uint32_t seed) {
  auto x = test::random_floats(static_cast<size_t>(rows * D), seed, -2.0f, 2.0f);
  for (int64_t r = 0; r < rows; ++r) {
    const float factor = r % 7 == 3 ? 300.0f : (r % 7 == 5 ? 1e-3f : 1.0f);
    for (int64_t d = 0; d < D; ++d) x[static_cast<size_t>(r * D + d)] *= factor;
  }
  return x;
}

struct DeviceFp8Cache {
  cuda::DeviceBuffer<uint8_t> k, v;
  cuda::DeviceBuffer<float> k_scale, v_scale;
  const Fp8* k8() const { return reinterpret_cast<const Fp8*>(k.get()); }
  const Fp8* v8() const { return reinterpret_cast<const Fp8*>(v.get()); }
};

DeviceFp8Cache to_device_fp8(const KvCache& cache) {
  const KvCacheShape& s = cache.shape();
  const int64_t rows = s.num_pages * s.num_kv_heads * s.page_size;
  const Fp8Rows k = to_fp8_rows(KvRow::kKey, cache.k(0), rows, s.head_dim), v = to_fp8_rows(KvRow::kValue, cache.v(0), rows, s.head_dim);
  return {to_device(k.bytes), to_device(v.bytes), to_device(k.scales), to_device(v.scales)};
}

// rope_append into an fp8 cache stores each k and v row as the CPU rounds the same fp32 row, keys
// rotated (H·k), and writes the rotated query H·q / D beside q: the reference rows are the f32
// kernel's, rotated and rounded on the host. A rounding may flip where the two kernels' fp32 values
// differ in the last bit next to a tie, so: every value within one step (an int8 key's: its scale; an
// e4m3 value's: an eighth of it; the rotated query: one bf16 step), and at least 99.9% identical.
TEST(CudaFp8, RopeAppendStoresEachRowAsTheCpuRoundsIt) {
  const int64_t H = 8, G = 2, D = 128, P = 16, M = 19, num_pages = 6;
  ModelConfig config;
  config.head_dim = D;
  RopeFrequencies freqs = rope_frequencies(config);
  auto qkv = varied_rows(M * (H + 2 * G), D, 51);
  auto q_norm = test::random_floats(static_cast<size_t>(D), 52, 0.5f, 1.5f), k_norm = test::random_floats(static_cast<size_t>(D), 53, 0.5f, 1.5f);
  std::vector<int32_t> positions(M);
  std::iota(positions.begin(), positions.end(), 70);
  const std::vector<int32_t> page_table = {4, 1, 5, 0, 2, 3};
  std::vector<int64_t> slots;
  for (int32_t pos : positions) slots.push_back(static_cast<int64_t>(page_table[static_cast<size_t>(pos / P)]) * P + pos % P);
  auto d_qkv = to_device(qkv), d_qn = to_device(q_norm), d_kn = to_device(k_norm), d_freq = to_device(freqs.inv_freq);
  auto d_pos = to_device(positions);
  auto d_slots = to_device(slots);
  const int64_t elements = num_pages * G * P * D, rows = num_pages * G * P;
  auto q32 = poisoned<float>(M * H * D), k32 = poisoned<float>(elements), v32 = poisoned<float>(elements);
  cuda::launch_rope_append<float, float>({.qkv = d_qkv.get(), .q_norm = d_qn.get(), .k_norm = d_kn.get(), .inv_freq = d_freq.get(),
                                          .positions = d_pos.get(), .slots = d_slots.get(), .q_out = q32.get(), .k_cache = k32.get(),
                                          .v_cache = v32.get(), .tokens = M, .num_heads = H, .num_kv_heads = G,
                                          .head_dim = static_cast<int>(D), .page_size = P}, nullptr);
  auto q16 = poisoned<bf16>(M * H * D), q_rotated = poisoned<bf16>(M * H * D);
  auto k8 = poisoned<uint8_t>(elements), v8 = poisoned<uint8_t>(elements);
  auto k_scale = poisoned<float>(rows), v_scale = poisoned<float>(rows);
  cuda::launch_rope_append<bf16, Fp8>({.qkv = d_qkv.get(), .q_norm = d_qn.get(), .k_norm = d_kn.get(), .inv_freq = d_freq.get(),
                                       .positions = d_pos.get(), .slots = d_slots.get(), .q_out = q16.get(),
                                       .k_cache = reinterpret_cast<Fp8*>(k8.get()), .v_cache = reinterpret_cast<Fp8*>(v8.get()),
                                       .k_scale = k_scale.get(), .v_scale = v_scale.get(), .rotate_keys = true,
                                       .q_rotated_out = q_rotated.get(), .tokens = M, .num_heads = H,
                                       .num_kv_heads = G, .head_dim = static_cast<int>(D), .page_size = P}, nullptr);
  const auto ref_k = to_host(k32), ref_v = to_host(v32), scales_k = to_host(k_scale), scales_v = to_host(v_scale);
  const auto bytes_k = to_host(k8), bytes_v = to_host(v8);
  int64_t values = 0, identical = 0;
  float largest_scale = 0.0f, smallest_scale = INFINITY;
  for (int64_t t = 0; t < M; ++t)
    for (int64_t g = 0; g < G; ++g) {
      const int64_t row = (slots[static_cast<size_t>(t)] / P * G + g) * P + slots[static_cast<size_t>(t)] % P;
      for (int kv = 0; kv < 2; ++kv) {
        std::vector<float> want((kv ? ref_v : ref_k).begin() + row * D, (kv ? ref_v : ref_k).begin() + (row + 1) * D);
        if (kv == 0) hadamard_in_place(want.data(), D);
        round_stored_row(KvStorage::kFp8, kv ? KvRow::kValue : KvRow::kKey, want.data(), D);
        const float scale = (kv ? scales_v : scales_k)[static_cast<size_t>(row)];
        largest_scale = std::max(largest_scale, scale), smallest_scale = std::min(smallest_scale, scale);
        for (int64_t d = 0; d < D; ++d) {
          const uint8_t byte = (kv ? bytes_v : bytes_k)[static_cast<size_t>(row * D + d)];
          const float got = (kv ? field_fp8_value(byte) : static_cast<float>(static_cast<int8_t>(byte))) * scale;
          const float w = want[static_cast<size_t>(d)];
          ++values, identical += got == w;
          const float step = kv ? std::max(std::fabs(w) / 8.0f, scale / 256.0f) : scale;
          ASSERT_LE(std::fabs(got - w), step) << "token " << t << " head " << g << " kv " << kv << " d " << d;
        }
      }
    }
  EXPECT_GE(static_cast<double>(identical), 0.999 * static_cast<double>(values)) << identical << " of " << values;
  EXPECT_GT(largest_scale, 1.0f);   // v rows of magnitude ~600 (k rows are normalised)
  EXPECT_LT(smallest_scale, 1.0f);  // rows of magnitude ~1
  const auto ref_q = to_host(q32), got_q = test::to_float(to_host(q16)), got_rotated = test::to_float(to_host(q_rotated));
  int64_t q_identical = 0;  // of 2 · M · H · D: q and the rotated q, each within one bf16 step
  for (int64_t r = 0; r < M * H; ++r) {
    std::vector<float> want(ref_q.begin() + r * D, ref_q.begin() + (r + 1) * D), rotated = want;
    hadamard_in_place(rotated.data(), D);
    for (int64_t d = 0; d < D; ++d) {
      const size_t at = static_cast<size_t>(r * D + d);
      const float w = bf16_to_f32(f32_to_bf16(want[static_cast<size_t>(d)]));
      const float w_rotated = bf16_to_f32(f32_to_bf16(rotated[static_cast<size_t>(d)] / static_cast<float>(D)));
      q_identical += (got_q[at] == w) + (got_rotated[at] == w_rotated);
      ASSERT_LE(std::fabs(got_q[at] - w), std::fabs(w) / 128.0f + 1e-6f) << "q row " << r << " d " << d;
      ASSERT_LE(std::fabs(got_rotated[at] - w_rotated), std::fabs(w_rotated) / 128.0f + 1e-6f) << "rotated q row " << r << " d " << d;
    }
  }
  EXPECT_GE(static_cast<double>(q_identical), 0.999 * static_cast<double>(2 * M * H * D)) << q_identical << " of " << 2 * M * H * D;
}

// Dense rows over shuffled pages (lengths across split boundaries) read from an fp8 cache: the
// generic kernel (head dim 24) and the tensor-core kernel (64, 128) against CPU attention over the
// CPU's fp8-rounded cache.
void check_paged_attention_fp8(int64_t H, int64_t G, int64_t D) {
  const int64_t P = 16, num_pages = 48;
  KvCache cpu_cache = zeroed_fp8_cache(num_pages, G, P, D);
  std::vector<int32_t> pages(num_pages);
  std::iota(pages.begin(), pages.end(), 0);
  std::shuffle(pages.begin(), pages.end(), std::mt19937(13));
  std::vector<int32_t> seq_a(pages.begin(), pages.begin() + 40), seq_b(pages.begin() + 40, pages.end());
  const int64_t len_a = 600, len_b = 100;
  auto k = varied_rows(len_a * G, D, 54), v = varied_rows(len_a * G, D, 55);
  append_stored_rows(cpu_cache, seq_a, 0, len_a, k.data(), v.data());
  append_stored_rows(cpu_cache, seq_b, 0, len_b, k.data(), v.data());
  struct Row { const std::vector<int32_t>* pages; int64_t len; };
  const std::vector<Row> rows = {{&seq_a, 1}, {&seq_a, 255}, {&seq_a, 257}, {&seq_a, 600}, {&seq_b, 99}, {&seq_b, 100}};
  const int64_t R = static_cast<int64_t>(rows.size());
  auto q = test::round_bf16(test::random_floats(static_cast<size_t>(R * H * D), 56, -2.0f, 2.0f));
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  std::vector<float> ref(static_cast<size_t>(R * H * D));
  for (int64_t r = 0; r < R; ++r) {
    cpu::AttentionChunk chunk{.q = q.data() + r * H * D, .tokens = 1, .start = rows[static_cast<size_t>(r)].len - 1,
                              .page_table = rows[static_cast<size_t>(r)].pages, .out = ref.data() + r * H * D};
    cpu::paged_attention(cpu_cache, 0, chunk, H, scale);
  }
  std::vector<int32_t> flat(seq_a);
  flat.insert(flat.end(), seq_b.begin(), seq_b.end());
  std::vector<int64_t> offsets;
  std::vector<int32_t> lens;
  for (const Row& row : rows) offsets.push_back(row.pages == &seq_a ? 0 : 40), lens.push_back(static_cast<int32_t>(row.len));
  const int splits = (600 + cuda::kAttentionSplitTokens - 1) / cuda::kAttentionSplitTokens;
  const DeviceFp8Cache cache = to_device_fp8(cpu_cache);
  auto d_q = to_device(test::to_bf16(q));
  auto d_flat = to_device(flat);
  auto d_offsets = to_device(offsets);
  auto d_lens = to_device(lens);
  auto partial_o = poisoned<float>(R * H * splits * D), partial_lse = poisoned<float>(R * H * splits);
  auto out = poisoned<bf16>(R * H * D);
  cuda::launch_paged_attention<bf16, Fp8>({.q = d_q.get(), .k_cache = cache.k8(), .v_cache = cache.v8(), .k_scale = cache.k_scale.get(),
                                           .v_scale = cache.v_scale.get(), .page_table = d_flat.get(), .page_offset = d_offsets.get(),
                                           .kv_len = d_lens.get(), .partial_o = partial_o.get(), .partial_lse = partial_lse.get(),
                                           .rows = R, .num_heads = static_cast<int>(H), .num_kv_heads = static_cast<int>(G),
                                           .head_dim = static_cast<int>(D), .page_size = P, .num_splits = splits, .scale = scale},
                                          nullptr);
  cuda::launch_merge_states<bf16>({.partial_o = partial_o.get(), .partial_lse = partial_lse.get(), .out = out.get(), .rows = R,
                                   .num_heads = static_cast<int>(H), .num_splits = splits, .head_dim = static_cast<int>(D)}, nullptr);
  EXPECT_LT(normalised_error(test::to_float(to_host(out)), ref), 1e-2) << "H " << H << " G " << G << " D " << D;
}

TEST(CudaFp8, PagedAttentionMatchesCpu) {
  check_paged_attention_fp8(32, 8, 128);  // tensor cores, Qwen3-8B's head layout
  check_paged_attention_fp8(16, 8, 64);   // tensor cores, head dim 64
  check_paged_attention_fp8(8, 2, 24);    // the generic kernel
}

// Sparse rows (one page list per (row, kv head)) from an fp8 cache, and a verify chunk's rows taken
// together (rows_per_block) bit-identical to row by row.
TEST(CudaFp8, SparseListsAndRowsPerBlock) {
  const int64_t H = 32, G = 8, D = 128, P = 16, n = 700, num_pages = (n + P - 1) / P;
  KvCache cpu_cache = zeroed_fp8_cache(num_pages, G, P, D);
  std::vector<int32_t> pages(static_cast<size_t>(num_pages));
  std::iota(pages.begin(), pages.end(), 0);
  std::shuffle(pages.begin(), pages.end(), std::mt19937(57));
  auto k = varied_rows(n * G, D, 58), v = varied_rows(n * G, D, 59);
  append_stored_rows(cpu_cache, pages, 0, n, k.data(), v.data());
  const std::vector<int64_t> lengths = {17, 257, 500, 700};
  const int64_t R = static_cast<int64_t>(lengths.size());
  auto q = test::round_bf16(test::random_floats(static_cast<size_t>(R * H * D), 60, -2.0f, 2.0f));
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  const test::SparseLists sparse = test::random_sparse_lists(lengths, G, P, pages, 61, 3);
  const std::vector<float> ref = test::sparse_reference(cpu_cache, q, lengths, pages, sparse, H, scale);
  const DeviceFp8Cache cache = to_device_fp8(cpu_cache);
  auto d_q = to_device(test::to_bf16(q));
  auto d_flat = to_device(sparse.flat);
  auto d_offsets = to_device(sparse.offsets);
  auto d_lens = to_device(sparse.lens);
  const int splits = (n + cuda::kAttentionSplitTokens - 1) / cuda::kAttentionSplitTokens;
  cuda::PagedAttentionParams<bf16, Fp8> p{.q = d_q.get(), .k_cache = cache.k8(), .v_cache = cache.v8(), .k_scale = cache.k_scale.get(),
                                          .v_scale = cache.v_scale.get(), .page_table = d_flat.get(), .page_offset = d_offsets.get(),
                                          .kv_len = d_lens.get(), .rows = R, .num_heads = static_cast<int>(H),
                                          .num_kv_heads = static_cast<int>(G), .head_dim = static_cast<int>(D), .page_size = P,
                                          .num_splits = splits, .scale = scale, .per_head_pages = true};
  auto run = [&](const cuda::PagedAttentionParams<bf16, Fp8>& params, int64_t rows) {
    auto partial_o = poisoned<float>(rows * H * splits * D), partial_lse = poisoned<float>(rows * H * splits);
    auto out = poisoned<bf16>(rows * H * D);
    auto with = params;
    with.partial_o = partial_o.get(), with.partial_lse = partial_lse.get();
    cuda::launch_paged_attention(with, nullptr);
    cuda::launch_merge_states<bf16>({.partial_o = partial_o.get(), .partial_lse = partial_lse.get(), .out = out.get(), .rows = rows,
                                     .num_heads = static_cast<int>(H), .num_splits = splits, .head_dim = static_cast<int>(D)}, nullptr);
    return test::to_float(to_host(out));
  };
  EXPECT_LT(normalised_error(run(p, R), ref), 1e-2);
  // The same cache densely, as one verify chunk of 4 rows (lengths 697..700): together and alone.
  std::vector<int64_t> dense_offsets(4, 0);
  std::vector<int32_t> dense_lens = {697, 698, 699, 700};
  auto d_pages = to_device(pages);
  auto d_dense_offsets = to_device(dense_offsets);
  auto d_dense_lens = to_device(dense_lens);
  auto dense = p;
  dense.page_table = d_pages.get(), dense.page_offset = d_dense_offsets.get(), dense.kv_len = d_dense_lens.get();
  dense.rows = 4, dense.per_head_pages = false;
  const std::vector<float> alone = run(dense, 4);
  dense.rows_per_block = 4;
  for (float x : alone) ASSERT_TRUE(std::isfinite(x));
  EXPECT_EQ(run(dense, 4), alone);
}

// A prefill chunk over cached fp8 keys on tensor cores equals CPU attention over the same rows.
void check_prefill_attention_fp8(int64_t H, int64_t G, int64_t D, int64_t start, int64_t T) {
  const int64_t P = 16, total = start + T, num_pages = (total + P - 1) / P + 3;
  KvCache cpu_cache = zeroed_fp8_cache(num_pages, G, P, D);
  std::vector<int32_t> pages(static_cast<size_t>(num_pages));
  std::iota(pages.begin(), pages.end(), 0);
  std::shuffle(pages.begin(), pages.end(), std::mt19937(62));
  auto k = varied_rows(total * G, D, 63), v = varied_rows(total * G, D, 64);
  auto q = test::round_bf16(test::random_floats(static_cast<size_t>(T * H * D), 65, -2.0f, 2.0f));
  append_stored_rows(cpu_cache, pages, 0, total, k.data(), v.data());
  std::vector<float> ref(static_cast<size_t>(T * H * D));
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  cpu::paged_attention(cpu_cache, 0, {.q = q.data(), .tokens = T, .start = start, .page_table = &pages, .out = ref.data()}, H, scale);
  const DeviceFp8Cache cache = to_device_fp8(cpu_cache);
  auto d_q = to_device(test::to_bf16(q));
  auto d_pages = to_device(pages);
  auto out = poisoned<bf16>(static_cast<size_t>(T * H * D));
  ASSERT_TRUE(cuda::launch_prefill_attention({.q = d_q.get(), .k_fp8 = cache.k.get(), .v_fp8 = cache.v.get(), .k_scale = cache.k_scale.get(),
                                              .v_scale = cache.v_scale.get(), .pages = d_pages.get(), .out = out.get(), .tokens = T,
                                              .start = start, .num_heads = static_cast<int>(H), .num_kv_heads = static_cast<int>(G),
                                              .head_dim = static_cast<int>(D), .page_size = static_cast<int>(P), .scale = scale},
                                             nullptr));
  EXPECT_LT(normalised_error(test::to_float(to_host(out)), ref), 1e-2) << "H " << H << " G " << G << " D " << D << " start " << start << " T " << T;
}

TEST(CudaFp8, PrefillAttentionMatchesCpu) {
  check_prefill_attention_fp8(32, 8, 128, 0, 150);
  check_prefill_attention_fp8(32, 8, 128, 200, 77);
  check_prefill_attention_fp8(16, 8, 64, 13, 64);
}

// Summaries of fp8 keys are the summaries of the keys the CPU cache holds: the stored rows (bytes
// times scales), or with rotated keys the rows rotated back (H·stored / D). Max and min bit for bit
// against reduce_page over the CPU's keys, mean and norm within fp32 rounding.
void check_page_summaries_fp8(bool rotated) {
  const int64_t G = 4, P = 16, D = 128, num_pages = 9;
  KvCache cpu_cache = zeroed_fp8_cache(num_pages, G, P, D), stored = zeroed_fp8_cache(num_pages, G, P, D);
  std::vector<int32_t> all(static_cast<size_t>(num_pages));
  std::iota(all.begin(), all.end(), 0);
  auto k = varied_rows(num_pages * P * G, D, 66), v = varied_rows(num_pages * P * G, D, 67);
  if (rotated) {
    cpu::append_kv(cpu_cache, 0, all, 0, num_pages * P, k.data(), v.data());  // keys rounded rotated, given back rotated back
    for (int64_t r = 0; r < num_pages * P * G; ++r) hadamard_in_place(k.data() + r * D, D);
    append_stored_rows(stored, all, 0, num_pages * P, k.data(), v.data());  // the rows the GPU stores: rounded H·k
  } else {
    append_stored_rows(cpu_cache, all, 0, num_pages * P, k.data(), v.data());
    append_stored_rows(stored, all, 0, num_pages * P, k.data(), v.data());
  }
  const DeviceFp8Cache cache = to_device_fp8(stored);
  const std::vector<int32_t> pages = {6, 0, 8, 3};
  auto d_pages = to_device(pages);
  for (FieldReduce reduce : {FieldReduce::kMax, FieldReduce::kMin, FieldReduce::kMean, FieldReduce::kNorm})
    for (int64_t S : {int64_t{1}, P})  // P: one sub-row per key (the proxies of auto), through shared memory below f32
      for (FieldStorage storage : {FieldStorage::kF32, FieldStorage::kInt8}) {
        const FlowField field{.name = "f", .reduce = reduce, .sub = static_cast<int32_t>(S), .storage = storage};
        const int64_t W = field.width(D), bytes = field_record_bytes(storage, S, W);
        auto out = poisoned<uint8_t>(static_cast<size_t>(num_pages * G * bytes));
        cuda::launch_page_summary<Fp8>({.k_cache = cache.k8(), .k_scale = cache.k_scale.get(), .keys_rotated = rotated,
                                        .pages = d_pages.get(), .summary = out.get(), .record_bytes = bytes,
                                        .count = static_cast<int64_t>(pages.size()), .num_kv_heads = static_cast<int>(G),
                                        .page_size = static_cast<int>(P), .head_dim = static_cast<int>(D), .sub = static_cast<int>(S),
                                        .reduce = reduce, .storage = storage}, nullptr);
        const std::vector<uint8_t> got = to_host(out);
        std::vector<float> values(static_cast<size_t>(S * W));
        std::vector<uint8_t> record(static_cast<size_t>(bytes));
        const std::string what = fmt::format("{} S {} {}{}", field_reduce_name(reduce), S, field_storage_name(storage), rotated ? " rotated" : "");
        for (int32_t page : pages)
          for (int64_t g = 0; g < G; ++g) {
            reduce_page(field, cpu_cache.k(0) + cpu_cache.offset(page, g, 0), P, P, D, values.data());
            write_field_record(storage, values.data(), S, W, record.data());
            std::vector<float> got_values, ref_values;
            for (int64_t e = 0; e < S * W; ++e) {
              got_values.push_back(field_record_value(storage, got.data() + (page * G + g) * bytes, S, W, e));
              ref_values.push_back(field_record_value(storage, record.data(), S, W, e));
            }
            if (reduce == FieldReduce::kMax || reduce == FieldReduce::kMin) ASSERT_EQ(got_values, ref_values) << what << " page " << page;
            else ASSERT_LE(normalised_error(got_values, ref_values), storage == FieldStorage::kF32 ? 1e-5 : 1.0 / 120) << what << " page " << page;
          }
      }
}

TEST(CudaFp8, PageSummariesOfTheKeysAsStored) { check_page_summaries_fp8(false); }
TEST(CudaFp8, PageSummariesOfRotatedKeysRotatedBack) { check_page_summaries_fp8(true); }

// The whole forward at a real shape (Qwen3-0.6B's heads, 3 layers, random bf16 weights) with an
// fp8 KV cache (keys rotated): prefill chunks on the prefill kernel, then decode steps on the paged
// kernel, the GPU in bf16 against the CPU in f32 over the same fp8 rounding. Where bf16 noise moves
// an element across a rounding boundary the two sides differ by a whole step (an e4m3 value's:
// 6-12%; an int8 key's: up to 1/64 of its row's largest), not by bf16's 0.4%, so the bounds are wider
// than MatchesCpuAtRealShapesBf16's. Bounds: the first run (H100, f447e81, e4m3 keys then, under the
// looser 1.0 / 0.25 set before any run) measured 0.715 / 0.116; now that plus 20%, as the bf16
// test. A broken kernel moves log-probs by whole units.
TEST(CudaFp8, ModelMatchesTheCpusFp8Cache) {
  ModelConfig config = load_model_config_file(test::source_dir() / "configs" / "qwen3-0.6b.json");
  config.num_layers = 3;
  auto weights = std::make_shared<ModelWeights>(random_model_weights(config, DType::kBF16, 7));
  const int64_t P = 16, n = 600, num_pages = 64;
  std::vector<int32_t> tokens(static_cast<size_t>(n));
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<int32_t>((i * 7919 + 13) % 150000);
  cpu::CpuModel cpu(weights, {.num_layers = config.num_layers, .num_pages = num_pages, .num_kv_heads = config.num_kv_heads,
                              .page_size = P, .head_dim = config.head_dim, .storage = KvStorage::kFp8}, 256);
  cuda::CudaModel gpu(weights, {.precision = DType::kBF16, .fp8_kv = true, .page_size = P, .num_pages = num_pages, .max_tokens = 256});
  // Prompt tokens 0..579 in chunks of 256, 256 and 68 (all logits), then 20 single-token steps.
  auto log_probs = [&](ModelBackend& model) {
    std::vector<int32_t> pages;
    EXPECT_TRUE(model.reserve(pages, n));
    std::vector<float> logits, all;
    for (int64_t start = 0; start < n;) {
      const int64_t count = start < 580 ? std::min<int64_t>(256, 580 - start) : 1;
      SequenceChunk chunk{.tokens = tokens.data() + start, .count = count, .start = start, .page_table = &pages, .all_logits = true};
      model.forward({&chunk, 1}, logits);
      all.insert(all.end(), logits.begin(), logits.end());
      start += count;
    }
    const int64_t V = config.vocab_size;
    std::vector<double> out;
    for (int64_t i = 0; i + 1 < n; ++i) {
      const float* row = all.data() + i * V;
      const double top = *std::max_element(row, row + V);
      double sum = 0.0;
      for (int64_t j = 0; j < V; ++j) sum += std::exp(row[j] - top);
      out.push_back(row[tokens[static_cast<size_t>(i + 1)]] - top - std::log(sum));
    }
    return out;
  };
  const std::vector<double> want = log_probs(cpu), got = log_probs(gpu);
  ASSERT_EQ(want.size(), got.size());
  double worst = 0.0, total = 0.0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double d = std::abs(want[i] - got[i]);
    ASSERT_TRUE(std::isfinite(got[i])) << i;
    worst = std::max(worst, d), total += d;
  }
  std::cout << "qwen3-0.6b shape, 3 layers, 600 tokens, fp8 KV: cuda bf16 vs cpu f32 max |delta logprob| " << worst << ", mean "
            << total / static_cast<double>(want.size()) << std::endl;
  EXPECT_LE(worst, 0.86);
  EXPECT_LE(total / static_cast<double>(want.size()), 0.14);
}

}  // namespace
}  // namespace vortex
