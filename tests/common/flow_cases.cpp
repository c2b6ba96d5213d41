#include "common/flow_cases.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>

#include <fmt/format.h>

#include "common/test_util.h"
#include "sparse/field_reduce.h"
#include "sparse/field_storage.h"
#include "sparse/flow_interpreter.h"

namespace vortex::test {
namespace {

// Round-to-nearest-even fp32 → bf16 bits (finite inputs).
uint16_t bf16_bits(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof(u));
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

float from_bf16_bits(uint16_t bits) {
  const uint32_t u = static_cast<uint32_t>(bits) << 16;
  float x;
  std::memcpy(&x, &u, sizeof(x));
  return x;
}

void random_q(IndexerCase& c, uint32_t seed) {
  const int64_t H = c.kv_heads * c.shape.group;
  c.q = random_floats(static_cast<size_t>(c.rows * H * c.shape.head_dim), seed, -2.0f, 2.0f);
  c.q_bf16.resize(c.q.size());
  for (size_t i = 0; i < c.q.size(); ++i) {
    c.q_bf16[i] = bf16_bits(c.q[i]);
    if (c.shape.q_type == cuda::FlowQueryType::kBF16) c.q[i] = from_bf16_bits(c.q_bf16[i]);
  }
}

// Each row (sequence) draws its lists from its own num_pages / rows pages, as in the engine, where a
// physical page belongs to one sequence: flow state is per (page, KV head), so two rows sharing a page
// would race on it in the generated kernel (blocks run concurrently; the interpreter runs rows in order).
void random_lists(IndexerCase& c, const std::vector<int32_t>& lengths, uint32_t seed) {
  std::mt19937 rng(seed);
  const int64_t per_row = c.num_pages / c.rows;
  std::vector<int32_t> own(static_cast<size_t>(per_row));
  c.pages.clear(), c.offsets.clear(), c.counts.clear();
  c.max_pages = 0;
  for (int64_t rg = 0; rg < c.rows * c.kv_heads; ++rg) {
    const int32_t n = std::min<int32_t>(lengths[static_cast<size_t>(rg) % lengths.size()], static_cast<int32_t>(per_row));
    std::iota(own.begin(), own.end(), static_cast<int32_t>(rg / c.kv_heads * per_row));
    std::shuffle(own.begin(), own.end(), rng);
    c.offsets.push_back(static_cast<int32_t>(c.pages.size()));
    c.counts.push_back(n);
    c.pages.insert(c.pages.end(), own.begin(), own.begin() + n);
    c.max_pages = std::max(c.max_pages, n);
  }
}

// Per field, (num_pages, G, S, W): reduce_page of random keys (P, D) for every (page, KV head).
void random_fields(IndexerCase& c, uint32_t seed) {
  const int64_t P = c.shape.page_size, D = c.shape.head_dim, G = c.kv_heads;
  const std::vector<float> keys = random_floats(static_cast<size_t>(c.num_pages * G * P * D), seed);
  for (const FlowField& field : c.flow.fields) {
    const int64_t S = field.rows(P), W = field.width(D), per_head = S * W;
    const int64_t bytes = field_record_bytes(field.storage, S, W);
    std::vector<float> values(static_cast<size_t>(c.num_pages * G * per_head));
    std::vector<uint8_t> records(static_cast<size_t>(c.num_pages * G * bytes));
    for (int64_t pg = 0; pg < c.num_pages * G; ++pg) {
      float* v = values.data() + pg * per_head;
      reduce_page(field, keys.data() + pg * P * D, P, P, D, v);
      write_field_record(field.storage, v, S, W, records.data() + pg * bytes);
      round_field_values(field.storage, v, S, W);
    }
    c.fields.push_back(std::move(values));
    c.records.push_back(std::move(records));
  }
}

}  // namespace

IndexerCase make_indexer_case(const Flow& flow, const cuda::IndexerShape& shape, int64_t rows, int64_t kv_heads,
                              int64_t pages_per_row, const std::vector<int32_t>& lengths, uint32_t seed) {
  IndexerCase c;
  c.flow = flow, c.shape = shape, c.rows = rows, c.kv_heads = kv_heads, c.num_pages = rows * pages_per_row;
  random_q(c, seed);
  random_lists(c, lengths, seed + 1);
  random_fields(c, seed + 2);
  for (size_t slot = 0; slot < flow.state.size(); ++slot)
    c.state.push_back(random_floats(static_cast<size_t>(c.num_pages * kv_heads), seed + 3 + static_cast<uint32_t>(slot), 0.0f, 1.0f));
  return c;
}

void next_step(IndexerCase& c, const std::vector<int32_t>& lengths, uint32_t seed) {
  random_q(c, seed);
  random_lists(c, lengths, seed + 1);
}

std::vector<float> interpret(const IndexerCase& c, std::vector<std::vector<float>>& state) {
  const int64_t Hg = c.shape.group, D = c.shape.head_dim, P = c.shape.page_size, G = c.kv_heads;
  std::vector<float> scores(c.pages.size());
  FlowScratch scratch;
  for (int64_t r = 0; r < c.rows; ++r)
    for (int64_t g = 0; g < G; ++g) {
      const auto rg = static_cast<size_t>(r * G + g);
      const auto off = static_cast<size_t>(c.offsets[rg]), n = static_cast<size_t>(c.counts[rg]);
      FlowInputs in{.q = c.q.data() + (r * G * Hg + g * Hg) * D, .group = Hg, .head_dim = D, .page_size = P,
                    .pages = std::span<const int32_t>(c.pages).subspan(off, n)};
      for (size_t f = 0; f < c.flow.fields.size(); ++f) {
        const int64_t per_head = c.flow.fields[f].rows(P) * c.flow.fields[f].width(D);
        in.fields.push_back({c.fields[f].data() + g * per_head, G * per_head});
      }
      for (auto& slot : state) in.state_base.push_back(slot.data() + g);
      in.state_page_stride = G;
      evaluate_flow(c.flow, in, std::span<float>(scores).subspan(off, n), scratch);
    }
  return scores;
}

double normalised_diff(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return INFINITY;
  double diff = 0.0, ref = 1e-30;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::isnan(a[i]) != std::isnan(b[i])) return INFINITY;
    if (std::isnan(a[i])) continue;
    diff = std::max(diff, std::abs(static_cast<double>(a[i]) - b[i]));
    ref = std::max(ref, std::abs(static_cast<double>(b[i])));
  }
  return diff / ref;
}

std::string compare_two_steps(IndexerCase c, const KernelRun& run, double tolerance) {
  std::vector<std::vector<float>> kernel_state = c.state, cpu_state = c.state;
  std::string report;
  for (int step = 1; step <= 2; ++step) {
    if (step == 2) next_step(c, {c.max_pages, 1, 0, c.max_pages / 2 + 3}, 99);
    const std::vector<float> got = run(c, kernel_state);
    const std::vector<float> want = interpret(c, cpu_state);
    const double error = normalised_diff(got, want);
    if (!(error <= tolerance)) report += fmt::format("step {}: scores differ by {:.3g} (normalised). ", step, error);
    for (size_t slot = 0; slot < cpu_state.size(); ++slot) {
      const double state_error = normalised_diff(kernel_state[slot], cpu_state[slot]);
      if (!(state_error <= tolerance)) report += fmt::format("step {}: state slot {} differs by {:.3g}. ", step, slot, state_error);
    }
  }
  return report;
}

std::vector<NamedFlow> codegen_flows() {
  const std::string fields = "field kmean = mean(k)\nfield kmax = max(k)\nfield k4 = min(k, sub=4)\nfield kn = norm(k, sub=2)\n";
  const std::vector<std::pair<std::string, std::string>> texts = {
      {"ops_linear", fields + "select topk(sum(dot(q, kmean), heads) * 2 - 1 / D)"},
      {"ops_unary", fields + "select topk(max(abs(dot(q, kmean)) + exp(dot(q, kmax) / 8), heads)"
                             " + min(relu(dot(q, kmean)) - sigmoid(-dot(q, kmean)), heads) + log(P) * scale)"},
      {"ops_compare", fields + "select topk(mean(gt(dot(q, kmean), 0) + ge(dot(q, kmean), 0.1) + (dot(q, kmean) < 0)"
                               " + le(dot(q, kmean), -0.1) + eq(dot(q, kmean), dot(q, kmean)), heads))"},
      {"ops_sub_rows", fields + "select topk(max(max(max(q * k4, feat), sub), heads) + min(max(min(kmax, kmean), feat), sub)"
                                " + sum(kn, sub) + mean(sum(kmean, feat), heads))"},
      {"page_invariant", fields + "select topk(max(dot(abs(q), kmax) - sum(mean(q, feat) * sum(q, feat), heads), heads)"
                                  " + dot(mean(q, heads), kmean) + min(min(q, feat), heads) + 3.5)"},
      {"constant", fields + "select topk(3.5)"},
      {"reused", fields + "let d = dot(q, kmean)\nlet e = d * d + d\nselect topk(max(e * e - e, heads))"},
      {"softmax_heads", fields + "select topk(sum(softmax(dot(q, kmean)), heads))"},
      {"softmax_mixed", fields + "select topk(softmax(max(dot(q, kmean), heads)) * max(dot(q, kmean), heads) + softmax(2))"},
      {"softmax_nested", fields + "select topk(softmax(softmax(max(dot(q, kmean), heads)) * 10))"},
      {"softmax_field", fields + "select topk(sum(sum(softmax(kmax) * q, feat), heads))"},
      {"state_swap", "save(a, load(b))\nsave(b, load(a) + 1)\nselect topk(load(a))"},
      {"state_threshold", fields + "let m = softmax(max(dot(q, kmean), heads) * scale)\nsave(acc, load(acc) * 0.5 + m)\n"
                                   "select threshold(m + load(acc), 0.01)"},
      {"state_early_score", fields + "let x = max(dot(q, kmean), heads)\nsave(acc, softmax(x))\nselect topk(x)"},
      {"state_no_select", fields + "save(acc, load(acc) + max(dot(q, kmean), heads))\nselect none"},
      {"quest_half", "field kmax = max(k, sub=2)\nfield kmin = min(k, sub=2)\n"
                     "let half = sum(max(q * kmax, q * kmin), feat)\nselect topk(max(max(half, sub), heads))"},
      {"stored_types", "field a = max(k, store=bf16)\nfield b = min(k, sub=2, store=fp8)\nfield c = mean(k, sub=4, store=int8)\n"
                       "field d = max(k, sub=page, store=int4)\nfield e = norm(k, sub=2, store=int4)\nfield f = std(k, store=int8)\n"
                       "field g = max(k, sub=page, store=sign)\n"
                       "select topk(max(dot(q, a) + max(dot(q, b), sub) + sum(dot(q, c), sub) + max(dot(q, d), sub)"
                       " + sum(e, sub) + dot(abs(q), f) + max(dot(q, g), sub), heads))"},
  };
  std::vector<NamedFlow> flows;
  for (const std::string& name : builtin_flow_names())
    if (cuda::flow_needs_indexer(*find_builtin_flow(name))) flows.push_back({name, *find_builtin_flow(name)});
  for (const auto& [name, text] : texts) flows.push_back({name, parse_flow(text, name)});
  return flows;
}

}  // namespace vortex::test
