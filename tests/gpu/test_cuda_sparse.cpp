// The sparse-attention kernels against their CPU references, on random data with odd sizes and
// outputs poisoned so that unwritten elements fail (and elements past what a kernel may write
// must stay poisoned):
//   page_summary       vs reduce_page + write_field_record, every storage type: max/min bit for bit,
//                      mean/std/norm within fp32 rounding carried through the storage type
//   page_topk          vs select_pages: the same indices in the same order (ties, NaN, ±0, ±inf)
//   page_list_compose  vs plan_query_pages + the union of merge_pages, and its kv_len
// and the three chained (GPU summaries → CPU flow scores → GPU top-k → GPU lists) against
// select_layer_pages for built-in and threshold flows, several specs in one launch.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <climits>
#include <cmath>
#include <fstream>
#include <limits>
#include <numeric>
#include <random>

#include "backend/cpu/attention.h"
#include "backend/cuda/page_list_compose.cuh"
#include "backend/cuda/page_summary.cuh"
#include "backend/cuda/page_topk.cuh"
#include "common/test_util.h"
#include "gpu/gpu_test_util.h"
#include "kv/kv_cache.h"
#include "sparse/field_reduce.h"
#include "sparse/field_storage.h"
#include "sparse/flow_interpreter.h"
#include "sparse/page_selection.h"
#include "sparse/page_summaries.h"
#include "sparse/sparse_attention.h"
#include "vortex/flow.h"

namespace vortex {
namespace {

using bf16 = __nv_bfloat16;
using test::normalised_error;
using test::poisoned;
using test::to_device;
using test::to_host;

constexpr int32_t kPoison = -12345;  // what poisoned<int32_t> holds
const float kNaN = std::numeric_limits<float>::quiet_NaN();
const float kInf = std::numeric_limits<float>::infinity();

int32_t clamp_int32(int64_t v) { return static_cast<int32_t>(std::min<int64_t>(v, INT32_MAX)); }

// ---- page_summary ------------------------------------------------------------------------------

// One step of a storage type, normalised by the record's largest magnitude: how far a decoded
// value may move when the f32 value it was stored from moves by fp32 rounding (mean, std, norm).
double storage_step(FieldStorage storage) {
  switch (storage) {
    case FieldStorage::kF32: return 1e-5;
    case FieldStorage::kBF16: return 1.0 / 128;
    case FieldStorage::kFP8: return 1.0 / 8;
    case FieldStorage::kInt8: return 1.0 / 120;
    case FieldStorage::kInt4: return 1.0 / 6;
    case FieldStorage::kSign: return 2.0;  // a value within fp32 rounding of 0 may take either sign (±s)
  }
  return 0.0;
}

// Every reduce, sub-row count and storage type over a scattered subset of the pages; the other
// pages' records must stay poisoned. One page's keys share a large offset (std's two passes matter
// there). The reference is reduce_page + write_field_record on the host; records are compared as
// the values they decode to: max/min bit for bit, the others within one step of the storage type.
template <typename T>
void check_page_summary(int64_t G, int64_t P, int64_t D) {
  const int64_t num_pages = 11;
  auto keys = test::random_floats(static_cast<size_t>(num_pages * G * P * D), 41, -3.0f, 3.0f);
  for (int64_t i = 5 * G * P * D; i < 6 * G * P * D; ++i) keys[static_cast<size_t>(i)] += 100.0f;
  if (std::is_same_v<T, bf16>) keys = test::round_bf16(keys);
  std::vector<T> keys_t(keys.size());
  std::transform(keys.begin(), keys.end(), keys_t.begin(), [](float x) {
    if constexpr (std::is_same_v<T, bf16>) return __float2bfloat16(x); else return x;
  });
  auto d_keys = to_device(keys_t);
  const std::vector<int32_t> pages = {7, 0, 10, 3, 5};
  auto d_pages = to_device(pages);
  const uint8_t poison = static_cast<uint8_t>(-12345);
  for (FieldReduce reduce : {FieldReduce::kMax, FieldReduce::kMin, FieldReduce::kMean, FieldReduce::kStd, FieldReduce::kNorm})
    for (int64_t S : {int64_t{1}, int64_t{2}, int64_t{4}, P})
      for (FieldStorage storage : {FieldStorage::kF32, FieldStorage::kBF16, FieldStorage::kFP8, FieldStorage::kInt8, FieldStorage::kInt4,
                                   FieldStorage::kSign}) {
        const FlowField field{.name = "f", .reduce = reduce, .sub = static_cast<int32_t>(S), .storage = storage};
        const int64_t W = field.width(D), bytes = field_record_bytes(storage, S, W);
        std::vector<float> values(static_cast<size_t>(S * W));
        std::vector<uint8_t> ref(static_cast<size_t>(num_pages * G * bytes), poison);
        for (int32_t page : pages)
          for (int64_t g = 0; g < G; ++g) {
            reduce_page(field, keys.data() + (page * G + g) * P * D, P, P, D, values.data());
            write_field_record(storage, values.data(), S, W, ref.data() + (page * G + g) * bytes);
          }
        auto out = poisoned<uint8_t>(ref.size());
        cuda::launch_page_summary<T>({.k_cache = d_keys.get(), .pages = d_pages.get(), .summary = out.get(), .record_bytes = bytes,
                                      .count = static_cast<int64_t>(pages.size()), .num_kv_heads = static_cast<int>(G),
                                      .page_size = static_cast<int>(P), .head_dim = static_cast<int>(D), .sub = static_cast<int>(S),
                                      .reduce = reduce, .storage = storage}, nullptr);
        const std::vector<uint8_t> got = to_host(out);
        const std::string what = fmt::format("{} S {} {} G {} P {} D {}", field_reduce_name(reduce), S, field_storage_name(storage), G, P, D);
        for (int64_t page = 0; page < num_pages; ++page)
          for (int64_t g = 0; g < G; ++g) {
            const int64_t at = (page * G + g) * bytes;
            if (std::find(pages.begin(), pages.end(), page) == pages.end()) {
              for (int64_t b = 0; b < bytes; ++b) ASSERT_EQ(got[static_cast<size_t>(at + b)], poison) << what << ": page " << page << " was not listed but written";
              continue;
            }
            std::vector<float> got_values, ref_values;
            for (int64_t e = 0; e < S * W; ++e) {
              got_values.push_back(field_record_value(storage, got.data() + at, S, W, e));
              ref_values.push_back(field_record_value(storage, ref.data() + at, S, W, e));
            }
            if (reduce == FieldReduce::kMax || reduce == FieldReduce::kMin) {
              ASSERT_EQ(got_values, ref_values) << what << " page " << page << " head " << g;  // bit for bit (NaN fails)
            } else {
              ASSERT_LE(normalised_error(got_values, ref_values), storage_step(storage)) << what << " page " << page << " head " << g;
            }
          }
      }
}

TEST(CudaSparse, PageSummaryMatchesReducePageFp32) {
  check_page_summary<float>(3, 16, 17);
  check_page_summary<float>(1, 32, 64);
  check_page_summary<float>(8, 16, 128);
}

TEST(CudaSparse, PageSummaryMatchesReducePageBf16) {
  check_page_summary<bf16>(8, 16, 128);
  check_page_summary<bf16>(3, 32, 17);
  check_page_summary<bf16>(2, 32, 64);
}

// ---- page_topk ---------------------------------------------------------------------------------

enum class Scores { kRandom, kTies, kSpecial };

// Scores of one segment: distinct random values, heavy ties (a few values, −0 and +0 among them), or
// random values with NaN, ±inf and ties planted.
std::vector<float> segment_scores(int64_t count, Scores kind, std::mt19937& rng) {
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  const float tied[] = {-1.0f, -0.0f, 0.0f, 0.5f, 2.0f};
  const float special[] = {kNaN, kInf, -kInf, 0.5f, -0.0f};
  std::vector<float> s(static_cast<size_t>(count));
  for (float& x : s) {
    x = uniform(rng);
    if (kind == Scores::kTies) x = tied[rng() % 5];
    if (kind == Scores::kSpecial && rng() % 5 == 0) x = special[rng() % 5];
  }
  return s;
}

struct TopKCase {
  std::vector<float> scores;  // (C)
  int32_t k = 0;
  float threshold = -kInf;
};

// All cases in one launch: segments laid out with gaps of huge scores that must never be read.
void check_page_topk(const std::vector<TopKCase>& cases, bool threshold) {
  std::vector<float> flat;
  std::vector<int64_t> offsets;
  std::vector<int32_t> counts, ks;
  std::vector<float> thresholds;
  int32_t max_count = 0;
  for (const TopKCase& c : cases) {
    flat.insert(flat.end(), 3, 1e30f);  // the gap
    offsets.push_back(static_cast<int64_t>(flat.size()));
    flat.insert(flat.end(), c.scores.begin(), c.scores.end());
    counts.push_back(static_cast<int32_t>(c.scores.size()));
    ks.push_back(c.k);
    thresholds.push_back(c.threshold);
    max_count = std::max(max_count, counts.back());
  }
  flat.insert(flat.end(), 3, 1e30f);
  const auto N = static_cast<int64_t>(cases.size());
  const int64_t stride = max_count + 5;
  // Beyond kPageTopKSharedCount candidates the sort keys live in a global workspace.
  cuda::DeviceBuffer<uint32_t> keys(max_count > cuda::kPageTopKSharedCount ? static_cast<size_t>(N * max_count) : size_t{0});
  auto d_flat = to_device(flat);
  auto d_offsets = to_device(offsets);
  auto d_counts = to_device(counts), d_ks = to_device(ks);
  auto d_thresholds = to_device(thresholds);
  auto selected = poisoned<int32_t>(static_cast<size_t>(N * stride)), selected_count = poisoned<int32_t>(static_cast<size_t>(N));
  cuda::launch_page_topk({.scores = d_flat.get(), .score_offset = d_offsets.get(), .count = d_counts.get(), .k = d_ks.get(),
                          .threshold = threshold ? d_thresholds.get() : nullptr, .selected = selected.get(),
                          .selected_count = selected_count.get(), .keys = keys.get(), .key_stride = max_count, .segments = N,
                          .max_count = max_count, .selected_stride = stride},
                         nullptr);
  auto got = to_host(selected), got_count = to_host(selected_count);
  Flow flow;
  flow.select.kind = threshold ? FlowSelectKind::kThreshold : FlowSelectKind::kTopK;
  for (int64_t i = 0; i < N; ++i) {
    const TopKCase& c = cases[static_cast<size_t>(i)];
    flow.select.threshold = c.threshold;
    const std::vector<int32_t> ref = select_pages(flow, c.scores, c.k);
    const std::string what = fmt::format("segment {}: count {} k {} threshold {}", i, c.scores.size(), c.k, c.threshold);
    ASSERT_EQ(got_count[static_cast<size_t>(i)], static_cast<int32_t>(ref.size())) << what;
    const auto row = got.begin() + i * stride;
    ASSERT_EQ(std::vector<int32_t>(row, row + static_cast<int64_t>(ref.size())), ref) << what;
    for (auto it = row + static_cast<int64_t>(ref.size()); it != row + stride; ++it) ASSERT_EQ(*it, kPoison) << what << ": written past the selection";
  }
}

// Candidate counts 0, 1, 3, 257, 8192 (the most whose keys fit in shared memory) and k 0, 1,
// count − 1, count, > count, on distinct, tied and special scores.
std::vector<TopKCase> topk_cases(std::mt19937& rng) {
  std::vector<TopKCase> cases;
  for (int64_t count : {0, 1, 2, 3, 257, 1000, cuda::kPageTopKSharedCount})
    for (Scores kind : {Scores::kRandom, Scores::kTies, Scores::kSpecial}) {
      auto scores = segment_scores(count, kind, rng);
      for (int64_t k : {int64_t{0}, int64_t{1}, count / 3, count - 1, count, count + 7, int64_t{-1}})
        cases.push_back({.scores = scores, .k = static_cast<int32_t>(k)});
    }
  return cases;
}

// 2064 candidates (16 × 32K decode at page 16): the dynamic shared memory stays under 48 KB but the
// kernel's static part takes the total past it, so the launch must raise the limit. First of the
// page_topk tests: a larger launch before it would have raised the limit already.
TEST(CudaSparse, PageTopKRaisesTheLimitCountingStaticSharedMemory) {
  std::mt19937 rng(54);
  std::vector<TopKCase> cases;
  for (Scores kind : {Scores::kRandom, Scores::kTies, Scores::kSpecial}) cases.push_back({.scores = segment_scores(2064, kind, rng), .k = 128});
  check_page_topk(cases, false);
}

TEST(CudaSparse, PageTopKMatchesSelectPages) {
  std::mt19937 rng(51);
  check_page_topk(topk_cases(rng), false);
}

TEST(CudaSparse, PageTopKThresholdMatchesSelectPages) {
  std::mt19937 rng(52);
  auto cases = topk_cases(rng);
  const float thresholds[] = {-kInf, 0.0f, 0.5f, -0.25f, 2.0f, kInf, kNaN, -0.0f};  // 0.5 and 2 are tied values
  for (size_t i = 0; i < cases.size(); ++i) cases[i].threshold = thresholds[i % 8];
  check_page_topk(cases, true);
}

// Segments beyond shared memory (contexts past 128K tokens at page 16; 70,000 pages is 1.1M
// tokens): the keys go to the workspace, and up to kPageTopKMaxKeep candidates are selected. Short
// segments in the same launch take the same path.
TEST(CudaSparse, PageTopKBeyondSharedMemoryMatchesSelectPages) {
  std::mt19937 rng(55);
  for (bool threshold : {false, true}) {
    std::vector<TopKCase> cases;
    for (int64_t count : {int64_t{3}, int64_t{1000}, int64_t{cuda::kPageTopKSharedCount} + 1, int64_t{70000}})
      for (Scores kind : {Scores::kRandom, Scores::kTies, Scores::kSpecial}) {
        auto scores = segment_scores(count, kind, rng);
        for (int64_t k : {int64_t{0}, int64_t{1}, int64_t{128}, int64_t{cuda::kPageTopKMaxKeep}}) {
          // Thresholds that keep few (2), many (-0.25) or none (inf); top-k alone keeps min(k, count).
          const float t = threshold ? std::array{2.0f, -0.25f, kInf}[rng() % 3] : -kInf;
          cases.push_back({.scores = scores, .k = static_cast<int32_t>(k), .threshold = t});
        }
      }
    check_page_topk(cases, threshold);
  }
}

// Many small segments (the decode shape: rows × kv heads) with a small max_count.
TEST(CudaSparse, PageTopKManySmallSegments) {
  std::mt19937 rng(53);
  std::vector<TopKCase> cases;
  for (int i = 0; i < 257; ++i) {
    const int64_t count = rng() % 4;  // 0..3
    cases.push_back({.scores = segment_scores(count, static_cast<Scores>(i % 3), rng), .k = static_cast<int32_t>(rng() % 5)});
  }
  check_page_topk(cases, false);
}

// ---- page_list_compose -------------------------------------------------------------------------

// plan_sparse_row (the host and device plan of one row) equals plan_query_pages for random specs,
// huge sinks and windows included. Runs on the host.
TEST(CudaSparse, PlanSparseRowMatchesPlanQueryPages) {
  std::mt19937 rng(61);
  QueryPages q;
  for (int trial = 0; trial < 5000; ++trial) {
    const int64_t P = int64_t{16} << (rng() % 3), position = rng() % 3000;
    const int64_t sinks[] = {0, 1, P - 1, P, 3 * P + 1, static_cast<int64_t>(rng() % 500), INT64_MAX};
    const int64_t windows[] = {0, 1, P, 2 * P + 3, static_cast<int64_t>(rng() % 700), 100000};
    const int64_t sink = sinks[rng() % 7], window = windows[rng() % 6];
    auto a = resolve_attention(fmt::format("quest:budget=64,sink={},window={}", sink, window), P);
    plan_query_pages(*a, position, q);
    const cuda::SparseRowPlan plan = cuda::plan_sparse_row({.position = static_cast<int32_t>(position), .sink = clamp_int32(sink),
                                                      .window = clamp_int32(window)}, static_cast<int>(P));
    std::vector<int32_t> always, candidates(static_cast<size_t>(plan.candidates));
    for (int32_t i = 0; i < plan.sink_pages; ++i) always.push_back(i);
    for (int32_t i = plan.window_first; i <= plan.own; ++i) always.push_back(i);
    std::iota(candidates.begin(), candidates.end(), plan.sink_pages);
    ASSERT_EQ(always, q.always) << a->text << " at " << position;
    ASSERT_EQ(candidates, q.candidates) << a->text << " at " << position;
  }
}

// One row's expected list (page indices), as select_head and merge_pages build it.
std::vector<int32_t> expected_list(const QueryPages& q, FlowSelectKind kind, int64_t k, const std::vector<int32_t>& picked) {
  std::vector<int32_t> list = q.always;
  const auto n = static_cast<int64_t>(q.candidates.size());
  if (kind == FlowSelectKind::kTopK && k >= n) list.insert(list.end(), q.candidates.begin(), q.candidates.end());
  else if (kind != FlowSelectKind::kNone && k > 0)
    for (int32_t i : picked) list.push_back(q.candidates[static_cast<size_t>(i)]);
  std::sort(list.begin(), list.end());
  return list;
}

// What the compose kernel wrote for list (r, g): the page ids, and kv_len must match; the list's
// offset is (r·G + g)·stride; the rest of the row stays poisoned.
struct ComposeOutput {
  std::vector<int32_t> pages, kv_len;
  std::vector<int64_t> offset;
  int64_t stride = 0;
};
void expect_list(const ComposeOutput& out, int64_t list, const std::vector<int32_t>& ids, int64_t position, int64_t P,
                 const std::string& what) {
  const auto row = out.pages.begin() + list * out.stride;
  ASSERT_EQ(std::vector<int32_t>(row, row + static_cast<int64_t>(ids.size())), ids) << what;
  for (auto it = row + static_cast<int64_t>(ids.size()); it != row + out.stride; ++it) ASSERT_EQ(*it, kPoison) << what << ": written past the list";
  ASSERT_EQ(out.offset[static_cast<size_t>(list)], list * out.stride) << what;
  const int64_t kv_len = (static_cast<int64_t>(ids.size()) - 1) * P + position % P + 1;
  ASSERT_EQ(out.kv_len[static_cast<size_t>(list)], kv_len) << what;
}

ComposeOutput run_compose(const std::vector<cuda::SparseRow>& rows, const std::vector<int32_t>& table, const std::vector<int32_t>& selected,
                          const std::vector<int32_t>& selected_count, int64_t G, int64_t P, int64_t selected_stride, int32_t list_stride) {
  const auto R = static_cast<int64_t>(rows.size());
  auto d_rows = to_device(rows);
  auto d_table = to_device(table), d_selected = to_device(selected), d_count = to_device(selected_count);
  auto pages = poisoned<int32_t>(static_cast<size_t>(R * G * list_stride)), kv_len = poisoned<int32_t>(static_cast<size_t>(R * G));
  auto offset = poisoned<int64_t>(static_cast<size_t>(R * G));
  cuda::launch_page_list_compose({.rows = d_rows.get(), .page_table = d_table.get(), .selected = d_selected.get(),
                                  .selected_count = d_count.get(), .list_pages = pages.get(), .list_offset = offset.get(),
                                  .kv_len = kv_len.get(), .rows_count = R, .num_kv_heads = static_cast<int>(G),
                                  .page_size = static_cast<int>(P), .selected_stride = selected_stride, .list_stride = list_stride},
                                 nullptr);
  return {.pages = to_host(pages), .kv_len = to_host(kv_len), .offset = to_host(offset), .stride = list_stride};
}

// Random rows over three sequences (1, 40 and 300 pages, scattered page ids): random positions,
// sinks, windows, k and selection kinds, and per kv head a random selection in best-first (random)
// order. Rows that take every candidate or none get garbage selections the kernel must not read.
void check_page_list_compose(int64_t P, int64_t G) {
  std::mt19937 rng(static_cast<uint32_t>(71 + P + G));
  const std::vector<int64_t> lengths = {1, 40, 300};  // pages
  std::vector<int32_t> ids(400);
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), rng);
  std::vector<int32_t> table(ids.begin(), ids.begin() + 5);  // a prefix no row reads
  std::vector<int64_t> table_offset;
  for (size_t s = 0, used = 0; s < lengths.size(); used += static_cast<size_t>(lengths[s]), ++s) {
    table_offset.push_back(static_cast<int64_t>(table.size()));
    table.insert(table.end(), ids.begin() + static_cast<int64_t>(used), ids.begin() + static_cast<int64_t>(used) + lengths[s]);
  }
  const int32_t list_stride = 300;
  const int64_t selected_stride = 300, R = 201;
  std::vector<cuda::SparseRow> rows;
  std::vector<QueryPages> plans(static_cast<size_t>(R));
  std::vector<std::vector<int32_t>> picks(static_cast<size_t>(R * G));
  std::vector<int32_t> selected(static_cast<size_t>(R * G * selected_stride), -7), selected_count(static_cast<size_t>(R * G), 999999);
  const FlowSelectKind kinds[] = {FlowSelectKind::kTopK, FlowSelectKind::kThreshold, FlowSelectKind::kNone};
  for (int64_t r = 0; r < R; ++r) {
    const size_t s = r % 3;
    const int64_t tokens = lengths[s] * P;
    const int64_t positions[] = {0, P - 1, P, tokens - 1, static_cast<int64_t>(rng() % tokens), static_cast<int64_t>(rng() % tokens)};
    const int64_t position = std::min(positions[rng() % 6], tokens - 1);
    const int64_t sinks[] = {0, 1, P, 2 * P + 1, static_cast<int64_t>(rng() % 200), INT64_MAX};
    const int64_t windows[] = {0, 1, P + 3, static_cast<int64_t>(rng() % 400), 1000000};
    const int64_t sink = sinks[rng() % 6], window = windows[rng() % 5];
    auto a = resolve_attention(fmt::format("quest:budget=64,sink={},window={}", sink, window), P);
    QueryPages& q = plans[static_cast<size_t>(r)];
    plan_query_pages(*a, position, q);
    const auto n = static_cast<int64_t>(q.candidates.size());
    const int64_t ks[] = {0, 1, n - 1, n, n + 3, static_cast<int64_t>(rng() % (n + 1)), -2};
    const int64_t k = ks[rng() % 7];
    const FlowSelectKind kind = kinds[rng() % 3];
    rows.push_back({.table_offset = table_offset[s], .position = static_cast<int32_t>(position), .sink = clamp_int32(sink),
                    .window = clamp_int32(window), .k = static_cast<int32_t>(k), .select_kind = kind});
    const bool reads_selection = kind != FlowSelectKind::kNone && k > 0 && !(kind == FlowSelectKind::kTopK && k >= n);
    for (int64_t g = 0; g < G && reads_selection; ++g) {
      std::vector<int32_t> all(static_cast<size_t>(n));
      std::iota(all.begin(), all.end(), 0);
      std::shuffle(all.begin(), all.end(), rng);
      const int64_t m = std::min<int64_t>(k, static_cast<int64_t>(rng() % (n + 1)));  // a threshold may keep fewer than k
      std::vector<int32_t>& pick = picks[static_cast<size_t>(r * G + g)];
      pick.assign(all.begin(), all.begin() + m);
      std::copy(pick.begin(), pick.end(), selected.begin() + (r * G + g) * selected_stride);
      selected_count[static_cast<size_t>(r * G + g)] = static_cast<int32_t>(m);
    }
  }
  ComposeOutput out = run_compose(rows, table, selected, selected_count, G, P, selected_stride, list_stride);
  for (int64_t r = 0; r < R; ++r)
    for (int64_t g = 0; g < G; ++g) {
      const cuda::SparseRow& row = rows[static_cast<size_t>(r)];
      const QueryPages& q = plans[static_cast<size_t>(r)];
      std::vector<int32_t> list = expected_list(q, row.select_kind, row.k, picks[static_cast<size_t>(r * G + g)]), page_ids;
      for (int32_t i : list) page_ids.push_back(table[static_cast<size_t>(row.table_offset + i)]);
      expect_list(out, r * G + g, page_ids, row.position,
                  P, fmt::format("P {} row {} g {}: position {} sink {} window {} k {} kind {} candidates {}", P, r, g, row.position, row.sink,
                                 row.window, row.k, static_cast<int>(row.select_kind), q.candidates.size()));
    }
}

TEST(CudaSparse, PageListComposeMatchesPlanner) {
  check_page_list_compose(16, 1);
  check_page_list_compose(16, 3);
  check_page_list_compose(32, 8);
}

// ---- the chain against select_layer_pages ------------------------------------------------------

// One sequence of `tokens` random keys (bf16-rounded) in scattered pages of a one-layer cache,
// with the CPU store's summaries, and a few sparse queries.
struct ChainFixture {
  static constexpr int64_t H = 8, G = 4, D = 64, P = 16, kTokens = 1500, kPages = 100;
  KvCache cache{{.num_layers = 1, .num_pages = kPages, .num_kv_heads = G, .page_size = P, .head_dim = D}};
  PageSummaryStore summaries{cache.shape()};
  std::vector<int32_t> page_table;
  std::vector<QueryPages> queries;  // (T')
  std::vector<float> q;             // (T', H, D)

  explicit ChainFixture(const std::vector<int64_t>& positions) {
    std::vector<int32_t> ids(kPages);
    std::iota(ids.begin(), ids.end(), 0);
    std::shuffle(ids.begin(), ids.end(), std::mt19937(81));
    page_table.assign(ids.begin(), ids.begin() + cache.pages_for(kTokens));
    auto k = test::round_bf16(test::random_floats(static_cast<size_t>(kTokens * G * D), 82, -2.0f, 2.0f));
    auto v = test::random_floats(static_cast<size_t>(kTokens * G * D), 83);
    cpu::append_kv(cache, 0, page_table, 0, kTokens, k.data(), v.data());
    queries.resize(positions.size());
    q = test::round_bf16(test::random_floats(positions.size() * H * D, 84, -2.0f, 2.0f));
  }
};

// The spec's CPU lists for the fixture's queries, with what the GPU launches need: the flow's
// scores per (query, kv head) from the GPU's summaries (downloaded), one segment each.
struct SpecRun {
  std::shared_ptr<const SparseAttention> attention;
  std::vector<std::vector<int32_t>> lists;  // (T', G) page indices, from select_layer_pages
  std::vector<std::vector<float>> scores;   // (T', G) candidate scores
};

// GPU summaries of every full page for each of the flow's fields, decoded to (num_pages, G, S, W)
// on the host, checked against the CPU store's.
std::vector<std::vector<float>> gpu_summaries(ChainFixture& f, const Flow& flow) {
  const int64_t G = f.G, P = f.P, D = f.D;
  std::vector<float> k_all(f.cache.k(0), f.cache.k(0) + f.kPages * G * P * D);
  for (float& x : k_all) if (!std::isfinite(x)) x = 0.0f;  // never-written slots
  auto d_keys = to_device(test::to_bf16(k_all));
  const std::vector<int32_t> full(f.page_table.begin(), f.page_table.begin() + f.kTokens / P);
  auto d_full = to_device(full);
  f.summaries.register_flow(flow);
  f.summaries.ensure(f.cache, 0, flow, full);
  std::vector<std::vector<float>> out;
  for (size_t i = 0; i < flow.fields.size(); ++i) {
    const FlowField& field = flow.fields[i];
    const int64_t S = field.rows(P), W = field.width(D), bytes = field_record_bytes(field.storage, S, W);
    auto summary = poisoned<uint8_t>(static_cast<size_t>(f.kPages * G * bytes));
    cuda::launch_page_summary<bf16>({.k_cache = d_keys.get(), .pages = d_full.get(), .summary = summary.get(), .record_bytes = bytes,
                                     .count = static_cast<int64_t>(full.size()), .num_kv_heads = static_cast<int>(G),
                                     .page_size = static_cast<int>(P), .head_dim = static_cast<int>(D), .sub = static_cast<int>(S),
                                     .reduce = field.reduce, .storage = field.storage}, nullptr);
    const std::vector<uint8_t> records = to_host(summary);
    std::vector<float> decoded(static_cast<size_t>(f.kPages * G * S * W), 0.0f);
    for (int32_t page : full)
      for (int64_t g = 0; g < G; ++g)
        for (int64_t e = 0; e < S * W; ++e)
          decoded[static_cast<size_t>((page * G + g) * S * W + e)] =
              field_record_value(field.storage, records.data() + (page * G + g) * bytes, S, W, e);
    out.push_back(std::move(decoded));
    std::vector<float> got, ref;
    for (int64_t g = 0; g < G; ++g) {
      const FlowPageView view = f.summaries.field_view(flow, i, 0, g);
      for (int32_t page : full)
        for (int64_t e = 0; e < S * W; ++e)
          got.push_back(out.back()[static_cast<size_t>(((page * G + g) * S) * W + e)]), ref.push_back(view.base[page * view.page_stride + e]);
    }
    EXPECT_LE(normalised_error(got, ref), field.storage == FieldStorage::kF32 ? 1e-5 : storage_step(field.storage))
        << flow.name << " field " << field.name;
    if (field.reduce == FieldReduce::kMax || field.reduce == FieldReduce::kMin) {
      EXPECT_EQ(got, ref) << flow.name << " field " << field.name;
    }
  }
  return out;
}

SpecRun run_spec(ChainFixture& f, std::string_view spec, const std::vector<int64_t>& positions) {
  SpecRun run{.attention = resolve_attention(spec, f.P), .lists = {}, .scores = {}};
  const SparseAttention& a = *run.attention;
  const Flow& flow = *a.flow;
  const std::vector<std::vector<float>> fields = gpu_summaries(f, flow);
  for (size_t t = 0; t < positions.size(); ++t) plan_query_pages(a, positions[t], f.queries[t]);
  LayerSelectionInput in{.attention = &a, .queries = f.queries, .q = f.q.data(), .num_heads = f.H, .page_table = &f.page_table, .layer = 0};
  select_layer_pages(in, f.cache, f.summaries, run.lists);
  const int64_t G = f.G, D = f.D, group = f.H / G;
  FlowScratch scratch;
  for (size_t t = 0; t < positions.size(); ++t)
    for (int64_t g = 0; g < G; ++g) {
      const QueryPages& query = f.queries[t];
      std::vector<int32_t> page_ids;
      for (int32_t i : query.candidates) page_ids.push_back(f.page_table[static_cast<size_t>(i)]);
      FlowInputs inputs{.q = f.q.data() + (static_cast<int64_t>(t) * f.H + g * group) * D, .group = group, .head_dim = D,
                        .page_size = f.P, .pages = page_ids, .fields = {}, .state_base = {}, .state_page_stride = G};
      for (size_t i = 0; i < flow.fields.size(); ++i) {
        const int64_t SW = flow.fields[i].rows(f.P) * flow.fields[i].width(D);
        inputs.fields.push_back({.base = fields[i].data() + g * SW, .page_stride = G * SW});
      }
      std::vector<float> scores(page_ids.size());
      if (flow.select.kind != FlowSelectKind::kNone) evaluate_flow(flow, inputs, scores, scratch);
      run.scores.push_back(std::move(scores));
    }
  return run;
}

// Several specs' rows in one top-k and one compose launch (a batch of mixed specs) equal
// select_layer_pages' lists: quest and centroid (top-k, some budgets covering every candidate),
// a threshold flow, streaming (no selection) and a zero budget.
TEST(CudaSparse, ChainMatchesSelectLayerPages) {
  const auto dir = test::scratch_dir("cuda_sparse_chain");
  std::ofstream(dir / "above.flow") << "field kmean = mean(k)\nselect threshold(sum(dot(q, kmean), heads), 0.5)\n";
  const std::vector<std::string> specs = {"quest:budget=160,sink=16,window=40", "centroid:budget=1024,sink=20,window=17",
                                          "quest_gqa:budget=100000", fmt::format("flow:{},budget=320,window=16", (dir / "above.flow").string()),
                                          "streaming:sink=16,window=64", "centroid:budget=0,sink=40", "oracle:budget=48,window=1"};
  const std::vector<int64_t> positions = {17, 200, 511, 512, 1000, 1499};
  const int64_t G = ChainFixture::G, P = ChainFixture::P, T = static_cast<int64_t>(positions.size());
  ChainFixture f(positions);
  std::vector<SpecRun> runs;
  for (const std::string& spec : specs) runs.push_back(run_spec(f, spec, positions));
  // One segment per (spec, query, kv head); one compose row per (spec, query).
  std::vector<float> flat;
  std::vector<int64_t> offsets;
  std::vector<int32_t> counts, ks;
  std::vector<float> thresholds;
  std::vector<cuda::SparseRow> rows;
  for (const SpecRun& run : runs) {
    const SparseAttention& a = *run.attention;
    for (int64_t t = 0; t < T; ++t) {
      const int64_t position = positions[static_cast<size_t>(t)], k = a.pages_to_select(position + 1);
      rows.push_back({.table_offset = 0, .position = static_cast<int32_t>(position), .sink = clamp_int32(a.sink),
                      .window = clamp_int32(a.window), .k = clamp_int32(k), .select_kind = a.flow->select.kind});
      for (int64_t g = 0; g < G; ++g) {
        const std::vector<float>& s = run.scores[static_cast<size_t>(t * G + g)];
        offsets.push_back(static_cast<int64_t>(flat.size()));
        flat.insert(flat.end(), s.begin(), s.end());
        counts.push_back(static_cast<int32_t>(s.size()));
        ks.push_back(clamp_int32(k));
        thresholds.push_back(a.flow->select.kind == FlowSelectKind::kThreshold ? a.flow->select.threshold : -kInf);
      }
    }
  }
  const auto N = static_cast<int64_t>(counts.size());
  const int32_t max_count = *std::max_element(counts.begin(), counts.end());
  const int32_t list_stride = static_cast<int32_t>(f.page_table.size());
  auto d_flat = to_device(flat);
  auto d_offsets = to_device(offsets);
  auto d_counts = to_device(counts), d_ks = to_device(ks);
  auto d_thresholds = to_device(thresholds);
  auto selected = poisoned<int32_t>(static_cast<size_t>(N * max_count)), selected_count = poisoned<int32_t>(static_cast<size_t>(N));
  cuda::launch_page_topk({.scores = d_flat.get(), .score_offset = d_offsets.get(), .count = d_counts.get(), .k = d_ks.get(),
                          .threshold = d_thresholds.get(), .selected = selected.get(), .selected_count = selected_count.get(),
                          .segments = N, .max_count = max_count, .selected_stride = max_count}, nullptr);
  ComposeOutput out = run_compose(rows, f.page_table, to_host(selected), to_host(selected_count), G, P, max_count, list_stride);
  for (size_t s = 0; s < runs.size(); ++s)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t g = 0; g < G; ++g) {
        std::vector<int32_t> page_ids;
        for (int32_t i : runs[s].lists[static_cast<size_t>(t * G + g)]) page_ids.push_back(f.page_table[static_cast<size_t>(i)]);
        const int64_t list = (static_cast<int64_t>(s) * T + t) * G + g;
        expect_list(out, list, page_ids, positions[static_cast<size_t>(t)], P, fmt::format("{} at {} g {}", specs[s], positions[static_cast<size_t>(t)], g));
      }
}

}  // namespace
}  // namespace vortex
