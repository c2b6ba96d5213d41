#include "runtime/cost.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "io/hf_config.h"
#include "sparse/page_selection.h"
#include "sparse/sparse_attention.h"

namespace vortex {
namespace {

// Tokens one sequence's attention reads in a sparse layer at `length` tokens.
int64_t sparse_tokens(const SparseAttention& attention, int64_t length, int64_t& candidates, int64_t& k) {
  QueryPages query;
  plan_query_pages(attention, length - 1, query);
  candidates = static_cast<int64_t>(query.candidates.size());
  k = query.k;
  const int64_t pages = static_cast<int64_t>(query.always.size()) + std::min(query.k, candidates);
  return std::min(length, pages * attention.page_size);
}

}  // namespace

double kv_bytes_read(const ModelConfig& config, const SparseAttention* attention, int64_t length, double bytes_per_element,
                     bool stored_fields) {
  const double dense = static_cast<double>(length) * static_cast<double>(config.kv_bytes_per_token(1)) * bytes_per_element;
  if (!attention) return dense;
  int64_t candidates = 0, k = 0;
  const int64_t tokens = sparse_tokens(*attention, length, candidates, k);
  const double per_layer = static_cast<double>(config.num_kv_heads) *
                           (2.0 * static_cast<double>(tokens * config.head_dim) * bytes_per_element +
                            attention->field_bytes_read(candidates, k, config.head_dim, stored_fields));
  double total = 0.0;
  for (int64_t layer = 0; layer < config.num_layers; ++layer)
    total += attention->dense_layer(layer) ? dense / static_cast<double>(config.num_layers) : per_layer;
  return total;
}

double weight_bytes(const ModelConfig& c, int64_t bytes_per_element) {
  const double per_layer = static_cast<double>(c.hidden_size) * static_cast<double>(2 * c.q_dim() + 2 * c.kv_dim()) +
                           3.0 * static_cast<double>(c.hidden_size) * static_cast<double>(c.intermediate_size);
  const double lm_head = static_cast<double>(c.vocab_size) * static_cast<double>(c.hidden_size);
  return (per_layer * static_cast<double>(c.num_layers) + lm_head) * static_cast<double>(bytes_per_element);
}

StepCost decode_step_cost(const ModelConfig& c, const SparseAttention* attention, int64_t batch, int64_t length,
                          int64_t kv_bytes_per_element) {
  check(batch >= 1 && length >= 1, "a decode step needs batch >= 1 and length >= 1, got {} and {}", batch, length);
  StepCost cost;
  cost.layers = c.num_layers;
  const auto B = static_cast<double>(batch);
  cost.weight_bytes = weight_bytes(c, 2);
  cost.kv_bytes = B * kv_bytes_read(c, attention, length, kv_bytes_per_element, true);
  int64_t attended = length, candidates = 0, k = 0;
  if (attention) attended = sparse_tokens(*attention, length, candidates, k);
  double keys = 0.0;  // keys attended per sequence over the layers
  for (int64_t layer = 0; layer < c.num_layers; ++layer) {
    const bool sparse = attention && !attention->dense_layer(layer);
    cost.sparse_layers += sparse;
    keys += static_cast<double>(sparse ? attended : length);
  }
  cost.flops = B * (weight_bytes(c, 1) * 2.0 + 4.0 * static_cast<double>(c.q_dim()) * keys);
  return cost;
}

double flops_per_byte(const GpuModel& gpu) { return gpu.gemm_TFLOPs * 1e12 / (gpu.copy_GBps * 1e9); }

double effective_flops(const StepCost& cost, const GpuModel& gpu) { return cost.flops + flops_per_byte(gpu) * cost.bytes(); }

double predict_step_ms(const StepCost& cost, const GpuModel& gpu) {
  return 1e3 * (cost.bytes() / (gpu.stream_efficiency * gpu.copy_GBps * 1e9) + cost.flops / (gpu.gemm_TFLOPs * 1e12)) +
         1e-3 * (static_cast<double>(cost.layers) * gpu.layer_us + static_cast<double>(cost.sparse_layers) * gpu.sparse_layer_us);
}

GenerationCost generation_cost(const ModelConfig& config, const SparseAttention* attention, int64_t batch, int64_t prompt_len,
                               int64_t gen_len, const GpuModel& gpu, int64_t kv_bytes_per_element) {
  GenerationCost t;
  const int64_t stride = std::max<int64_t>(1, gen_len / 2048);
  for (int64_t step = 0; step < gen_len; step += stride) {
    const auto n = static_cast<double>(std::min(stride, gen_len - step));
    const StepCost c = decode_step_cost(config, attention, batch, prompt_len + step + 1, kv_bytes_per_element);
    if (step == 0) t.first = c;
    t.flops += c.flops * n, t.bytes += c.bytes() * n, t.eflops += effective_flops(c, gpu) * n, t.ms += predict_step_ms(c, gpu) * n;
  }
  t.last = decode_step_cost(config, attention, batch, prompt_len + gen_len, kv_bytes_per_element);
  return t;
}

std::vector<MeasuredStep> read_decode_rows(const std::string& path, const std::string& configs_dir) {
  std::ifstream in(path);
  check(static_cast<bool>(in), "cannot open {}", path);
  std::vector<MeasuredStep> rows;
  std::string line;
  for (int64_t number = 1; std::getline(in, line); ++number) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json row;
    try {
      row = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      fail("{} line {}: invalid JSON: {}", path, number, e.what());
    }
    if (row.value("kind", "") != "decode" || row.value("device", "") != "cuda") continue;
    try {
      const ModelConfig config =
          load_model_config_file(std::filesystem::path(configs_dir) / (row.at("config").get<std::string>() + ".json"));
      const auto attention = resolve_attention(row.at("attention").get<std::string>(), 16);
      // The bench times `steps` steps from `context`: bytes at the mean length, as its rows report them.
      const int64_t length = row.at("context").get<int64_t>() + 1 + row.at("steps").get<int64_t>() / 2;
      const StepCost computed = decode_step_cost(config, attention.get(), row.at("batch").get<int64_t>(), length);
      MeasuredStep step{.cost = computed, .computed = computed, .ms = row.at("ms_per_step").get<double>(), .row = row};
      step.cost.kv_bytes = row.at("bytes_per_step").get<double>() - step.cost.weight_bytes;
      rows.push_back(std::move(step));
    } catch (const nlohmann::json::exception& e) {
      fail("{} line {}: {}", path, number, e.what());
    }
  }
  check(!rows.empty(), "{} has no CUDA decode rows", path);
  return rows;
}

GpuModel fit_gpu_model(const std::vector<MeasuredStep>& rows, const std::string& name, const std::string& source) {
  check(rows.size() >= 3, "fitting a GPU model needs at least 3 decode rows, got {}", rows.size());
  GpuModel gpu;
  gpu.name = name, gpu.source = source;
  gpu.gpu = rows.front().row.value("gpu", "");
  for (const MeasuredStep& r : rows) {
    gpu.copy_GBps += r.row.at("copy_GBps").get<double>() / static_cast<double>(rows.size());
    gpu.gemm_TFLOPs += r.row.at("gemm_TFLOPs").get<double>() / static_cast<double>(rows.size());
  }
  // ms − FLOPs time = x0·(bytes at copy bandwidth, ms) + x1·layers + x2·sparse layers, each row
  // weighted by 1/ms (relative error); x0 = 1/stream_efficiency, x1 and x2 in ms.
  std::array<std::array<double, 4>, 3> m{};  // normal equations [A | b]
  for (const MeasuredStep& r : rows) {
    const double w = 1.0 / r.ms;
    const std::array<double, 3> a = {w * 1e3 * r.cost.bytes() / (gpu.copy_GBps * 1e9), w * static_cast<double>(r.cost.layers),
                                     w * static_cast<double>(r.cost.sparse_layers)};
    const double b = w * (r.ms - 1e3 * r.cost.flops / (gpu.gemm_TFLOPs * 1e12));
    for (size_t i = 0; i < 3; ++i) {
      for (size_t j = 0; j < 3; ++j) m[i][j] += a[i] * a[j];
      m[i][3] += a[i] * b;
    }
  }
  // Without sparse rows the third unknown is free: pin it to 0.
  if (m[2][2] == 0.0) m[2] = {0.0, 0.0, 1.0, 0.0};
  for (size_t col = 0; col < 3; ++col) {  // Gauss-Jordan with partial pivoting
    size_t pivot = col;
    for (size_t r = col + 1; r < 3; ++r)
      if (std::abs(m[r][col]) > std::abs(m[pivot][col])) pivot = r;
    std::swap(m[col], m[pivot]);
    check(std::abs(m[col][col]) > 1e-12, "the decode rows of {} do not determine the GPU model (too alike)", source);
    for (size_t r = 0; r < 3; ++r) {
      if (r == col) continue;
      const double f = m[r][col] / m[col][col];
      for (size_t j = col; j < 4; ++j) m[r][j] -= f * m[col][j];
    }
  }
  gpu.stream_efficiency = m[0][0] / m[0][3];
  gpu.layer_us = 1e3 * m[1][3] / m[1][1];
  gpu.sparse_layer_us = 1e3 * m[2][3] / m[2][2];
  return gpu;
}

std::string default_gpu_models_path() {
  const std::filesystem::path relative = std::filesystem::path("bench") / "gpu-models.json";
  if (std::filesystem::exists(relative)) return relative.string();
  std::error_code error;
  const std::filesystem::path exe = std::filesystem::read_symlink("/proc/self/exe", error);
  if (!error) {
    const std::filesystem::path beside = exe.parent_path().parent_path() / relative;
    if (std::filesystem::exists(beside)) return beside.string();
  }
  return relative.string();  // the error then names the path looked for
}

nlohmann::json gpu_model_json(const GpuModel& g) {
  return {{"name", g.name}, {"gpu", g.gpu}, {"copy_GBps", g.copy_GBps}, {"gemm_TFLOPs", g.gemm_TFLOPs},
          {"stream_efficiency", g.stream_efficiency}, {"layer_us", g.layer_us}, {"sparse_layer_us", g.sparse_layer_us},
          {"source", g.source}};
}

GpuModel gpu_model_from_json(const nlohmann::json& j, const std::string& where) {
  try {
    return {.name = j.at("name").get<std::string>(), .gpu = j.at("gpu").get<std::string>(),
            .copy_GBps = j.at("copy_GBps").get<double>(), .gemm_TFLOPs = j.at("gemm_TFLOPs").get<double>(),
            .stream_efficiency = j.at("stream_efficiency").get<double>(), .layer_us = j.at("layer_us").get<double>(),
            .sparse_layer_us = j.at("sparse_layer_us").get<double>(), .source = j.at("source").get<std::string>()};
  } catch (const nlohmann::json::exception& e) {
    fail("{}: {}", where, e.what());
  }
}

}  // namespace vortex
