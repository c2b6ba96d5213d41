// The decode cost model (runtime/cost.h) against the committed measurements: its bytes are the
// bytes `bench decode` reported for every row measured with this build's formats, and the committed GPU models predict every row of
// the files they were fitted to within 15% — and, for the H200 matrix, every row from a model
// fitted to the other rows (leave one out).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "core/error.h"
#include "io/hf_config.h"
#include "runtime/cost.h"
#include "sparse/sparse_attention.h"

namespace vortex {
namespace {

const std::filesystem::path kSource = VORTEX_SOURCE_DIR;

std::vector<MeasuredStep> rows(const std::string& file) {
  return read_decode_rows((kSource / "bench" / "results" / file).string(), (kSource / "configs").string());
}

const nlohmann::json& models() {
  static const nlohmann::json m = read_json_file(kSource / "bench" / "gpu-models.json");
  return m;
}

std::string label(const MeasuredStep& r) {
  return r.row["config"].get<std::string>() + " B" + std::to_string(r.row["batch"].get<int64_t>()) + " L" +
         std::to_string(r.row["context"].get<int64_t>()) + " " + r.row["attention"].get<std::string>();
}

// Rows measured with this build's summary formats (field storage types came in b64584a; the H200
// matrix's sparse rows at 06b9784 read fp32 summaries and are left out here).
TEST(CostModel, BytesAreWhatTheBenchReported) {
  for (const std::string file : {"2026-11-28-cuda-v5.jsonl", "2026-12-06-cuda-h100-0710c3a.jsonl"})
    for (const MeasuredStep& r : rows(file)) {
      if (r.row["commit"] == "06b9784" && r.row["attention"] != "dense") continue;
      EXPECT_NEAR(r.computed.bytes() / r.row["bytes_per_step"].get<double>(), 1.0, 2e-3) << file << ": " << label(r) << " at " << r.row["commit"];
    }
}

TEST(CostModel, FlopsOfADenseStep) {
  const ModelConfig c = load_model_config_file(kSource / "configs" / "qwen3-8b.json");
  const StepCost s = decode_step_cost(c, nullptr, 2, 1000);
  const double params = weight_bytes(c, 1);
  EXPECT_NEAR(s.flops, 2.0 * (2.0 * params + 4.0 * static_cast<double>(c.q_dim() * c.num_layers) * 1000.0), 1.0);
  EXPECT_EQ(s.sparse_layers, 0);
  const auto quest = resolve_attention("quest:budget=256,skip_layers=0-1", 16);
  const StepCost q = decode_step_cost(c, quest.get(), 2, 100000);
  EXPECT_EQ(q.sparse_layers, c.num_layers - 2);
  EXPECT_LT(q.kv_bytes, decode_step_cost(c, nullptr, 2, 100000).kv_bytes / 5);
}

TEST(CostModel, CommittedGpuModelsPredictTheirRowsWithin15Percent) {
  const std::vector<std::pair<std::string, std::string>> cases = {{"h200", "2026-11-28-cuda-v5.jsonl"},
                                                                  {"h100", "2026-12-06-cuda-h100-0710c3a.jsonl"}};
  for (const auto& [name, file] : cases) {
    const GpuModel gpu = gpu_model_from_json(models().at(name), name);
    EXPECT_EQ(std::filesystem::path(gpu.source).filename().string(), file);
    for (const MeasuredStep& r : rows(file)) {
      if (r.row["attention"].get<std::string>().starts_with("auto")) continue;  // fitted without: see docs/benchmarks.md
      const double error = predict_step_ms(r.cost, gpu) / r.ms - 1.0;
      EXPECT_LE(std::abs(error), 0.15) << name << ": " << label(r);
      std::printf("%s %-80s measured %7.2f ms  predicted %7.2f ms  %+5.1f%%\n", name.c_str(), label(r).c_str(), r.ms,
                  predict_step_ms(r.cost, gpu), 100.0 * error);
    }
  }
}

TEST(CostModel, EachH200RowIsPredictedByAModelFittedToTheOthers) {
  const std::vector<MeasuredStep> all = rows("2026-11-28-cuda-v5.jsonl");
  for (size_t i = 0; i < all.size(); ++i) {
    std::vector<MeasuredStep> others = all;
    others.erase(others.begin() + static_cast<std::ptrdiff_t>(i));
    const GpuModel gpu = fit_gpu_model(others, "h200", "leave-one-out");
    const double error = predict_step_ms(all[i].cost, gpu) / all[i].ms - 1.0;
    EXPECT_LE(std::abs(error), 0.15) << label(all[i]);
    std::printf("left out %-80s %+5.1f%%\n", label(all[i]).c_str(), 100.0 * error);
  }
}

}  // namespace
}  // namespace vortex
