// vortex calibrate — Sparrow's budget schedule, found rather than tuned by hand: rollouts of the
// prompts at each candidate budget of one flow (the same seeds each time), the α of every
// generated token by 2048-position bin, and per bin the smallest budget whose 5th percentile of α
// meets the target. The table is written as a `schedule:table=` file; a last rollout under the
// schedule itself checks it (budgets change the K/V later tokens attend, so the schedule's α is
// measured, not assumed), and the cost model (`vortex cost`) prints its predicted speed-up over
// dense and over the smallest constant budget that met the target in every bin.
#include <algorithm>
#include <fstream>
#include <iostream>
#include <limits>
#include <map>
#include <memory>

#include "cli/cli.h"
#include "core/error.h"
#include "eval/agreement.h"
#include "io/hf_config.h"
#include "runtime/batch_engine.h"
#include "runtime/cost.h"
#include "runtime/engine_access.h"
#include "runtime/run_info.h"
#include "sparse/sparse_attention.h"
#include "vortex/engine.h"

namespace vortex::cli {
namespace {

struct CalibrateArgs {
  std::string model, prompts, flow = "quest", flow_args = "sink=16,window=64", budgets = "64,128,256,512,1024,2048,4096", out;
  std::string device = "cpu", precision = "bf16", config, gpu = "h200", gpu_models = default_gpu_models_path();
  double target_p5 = 0.86;
  int64_t bin = 2048, samples = 4, max_tokens = 256, max_batch = 64, page_size = 16, prefill_chunk = 0, cost_batch = 16, tensor_parallel = 1;
  float temperature = 1.0f;
  uint64_t seed = 0;
  int32_t alpha_top = 256;
};

// α of every generated token of every (prompt, sample) under `attention`, by bin.
std::map<int64_t, std::vector<double>> alpha_by_bin(Engine& engine, const std::vector<std::vector<int32_t>>& prompts,
                                                    const std::string& attention, const CalibrateArgs& a, int64_t& longest) {
  BatchEngine& batch = batch_engine(engine);
  std::map<int64_t, std::vector<double>> bins;
  std::vector<std::string> errors;
  for (size_t i = 0; i < prompts.size(); ++i) {
    for (int64_t k = 0; k < a.samples; ++k) {
      GenerateRequest r;
      r.prompt = prompts[i];
      r.max_tokens = a.max_tokens;
      r.sampling = {.temperature = a.temperature,
                    .seed = a.seed + static_cast<uint64_t>(i) * static_cast<uint64_t>(a.samples) + static_cast<uint64_t>(k)};
      r.attention = attention;
      r.rollout = {.enabled = true, .alpha_top = a.alpha_top};
      const auto prompt_len = static_cast<int64_t>(prompts[i].size());
      batch.submit(r, {.on_token = nullptr, .on_finish = [&, prompt_len](const SequenceFinish& f) {
                         if (!f.error.empty()) errors.push_back(f.error);
                         const std::vector<float>& alpha = f.result.rollout.alpha;
                         for (size_t t = 0; t < alpha.size(); ++t)
                           bins[(prompt_len + static_cast<int64_t>(t) - 1) / a.bin].push_back(alpha[t]);
                         longest = std::max(longest, prompt_len + static_cast<int64_t>(alpha.size()));
                       }});
    }
  }
  while (batch.has_work()) batch.step();
  check(errors.empty(), "{} samples failed; the first: {}", errors.size(), errors.empty() ? "" : errors.front());
  return bins;
}

void run_calibrate(const CalibrateArgs& a) {
  check(a.target_p5 > 0.0 && a.target_p5 <= 1.0, "--target-p5 must be in (0, 1], got {}", a.target_p5);
  check(a.bin >= 1, "--bin must be positive, got {}", a.bin);
  check(a.samples >= 1 && a.samples <= 4096, "--n-samples must be in 1..4096, got {}", a.samples);
  std::vector<int64_t> budgets;
  for (int32_t b : parse_id_list(a.budgets, "--budgets")) {
    check(b > 0, "--budgets must be positive token counts, got {}", b);
    budgets.push_back(b);
  }
  std::sort(budgets.begin(), budgets.end());
  EngineOptions options;
  options.device = parse_device(a.device);
  options.precision = parse_precision(a.precision);
  options.max_batch = a.max_batch;
  options.page_size = a.page_size;
  options.tensor_parallel = a.tensor_parallel;
  options.prefill_chunk = step_tokens(a.prefill_chunk, options.device);
  auto engine = Engine::open(a.model, options);
  const std::vector<std::vector<int32_t>> prompts = read_prompt_file(a.prompts, *engine);
  const std::string base = a.flow + ":" + (a.flow_args.empty() ? "" : a.flow_args + ",");

  // Per budget, per bin: the p5 of α.
  std::map<int64_t, std::map<int64_t, double>> p5;  // budget -> bin -> p5
  std::map<int64_t, int64_t> tokens;                 // bin -> α values (the same for every budget when outputs agree)
  int64_t longest = 0;
  for (int64_t b : budgets) {
    const std::string spec = base + "budget=" + std::to_string(b);
    for (auto& [bin, values] : alpha_by_bin(*engine, prompts, spec, a, longest)) {
      p5[b][bin] = percentile_nearest_rank(values, 5.0);
      tokens[bin] = static_cast<int64_t>(values.size());
    }
    std::cerr << fmt::format("budget {:>6}:", b);
    for (const auto& [bin, value] : p5[b]) std::cerr << fmt::format("  bin {} p5 {:.4f}", bin, value);
    std::cerr << "\n";
  }
  check(!tokens.empty(), "no token was generated: raise --max-tokens");
  // Per bin the smallest budget meeting the target (the largest tried when none does).
  const int64_t last_bin = tokens.rbegin()->first;
  std::vector<int64_t> table(static_cast<size_t>(last_bin + 1), 0);
  std::vector<int64_t> unmet;
  int64_t constant = budgets.front();  // the smallest budget meeting the target in every bin
  for (int64_t bin = 0; bin <= last_bin; ++bin) {
    if (!tokens.count(bin)) continue;
    int64_t chosen = -1;
    for (int64_t b : budgets)
      if (p5[b].count(bin) && p5[b][bin] >= a.target_p5) {
        chosen = b;
        break;
      }
    if (chosen < 0) chosen = budgets.back(), unmet.push_back(bin);
    table[static_cast<size_t>(bin)] = chosen;
    constant = std::max(constant, chosen);
  }
  // Bins before the first generated token never decode: they take the first measured bin's budget.
  const int64_t first_bin = tokens.begin()->first;
  for (int64_t bin = 0; bin < first_bin; ++bin) table[static_cast<size_t>(bin)] = table[static_cast<size_t>(first_bin)];
  nlohmann::json schedule = {{"attention", a.flow + (a.flow_args.empty() ? "" : ":" + a.flow_args)},
                             {"bin_tokens", a.bin},
                             {"budgets", table},
                             {"target_p5", a.target_p5},
                             {"calibration", {{"prompts", prompts.size()}, {"samples", a.samples}, {"max_tokens", a.max_tokens},
                                              {"temperature", a.temperature}, {"seed", a.seed}, {"budgets_tried", budgets},
                                              {"unmet_bins", unmet}, {"run", run_info_json(current_run_info(a.device))}}}};
  {
    std::ofstream out(a.out);
    check(static_cast<bool>(out), "cannot write {}", a.out);
    out << schedule.dump(2) << '\n';
  }
  // The schedule itself, measured.
  int64_t unused = 0;
  double worst = 1.0;
  std::cerr << "schedule:";
  for (auto& [bin, values] : alpha_by_bin(*engine, prompts, "schedule:table=" + a.out, a, unused)) {
    const double value = percentile_nearest_rank(values, 5.0);
    worst = std::min(worst, value);
    std::cerr << fmt::format("  bin {} budget {} p5 {:.4f}", bin, table[std::min<size_t>(static_cast<size_t>(bin), table.size() - 1)], value);
  }
  std::cerr << fmt::format("\nwrote {} (budgets by {}-token bin: {}); measured worst-bin p5 {:.4f} against the target {}\n", a.out,
                           a.bin, nlohmann::json(table).dump(), worst, a.target_p5);
  if (!unmet.empty())
    std::cerr << fmt::format("no budget tried met the target in bins {}: they take the largest, {}\n", nlohmann::json(unmet).dump(),
                             budgets.back());
  // Predicted speed-up (vortex cost) at the shape of --config, over the calibrated positions.
  const ModelConfig config = a.config.empty() ? EngineAccess::config(*engine) : load_model_config_file(a.config);
  const nlohmann::json models = read_json_file(a.gpu_models);
  check(models.contains(a.gpu), "{} has no GPU model '{}'", a.gpu_models, a.gpu);
  const GpuModel gpu = gpu_model_from_json(models[a.gpu], a.gpu_models);
  int64_t shortest = std::numeric_limits<int64_t>::max();
  for (const auto& p : prompts) shortest = std::min<int64_t>(shortest, static_cast<int64_t>(p.size()));
  const int64_t gen = std::max<int64_t>(1, longest - shortest);
  const auto scheduled = resolve_attention("schedule:table=" + a.out, a.page_size);
  const auto fixed = resolve_attention(base + "budget=" + std::to_string(constant), a.page_size);
  const double dense_ms = generation_cost(config, nullptr, a.cost_batch, shortest, gen, gpu).ms;
  const double schedule_ms = generation_cost(config, scheduled.get(), a.cost_batch, shortest, gen, gpu).ms;
  const double constant_ms = generation_cost(config, fixed.get(), a.cost_batch, shortest, gen, gpu).ms;
  std::cerr << fmt::format("predicted on {} at the {} shape, batch {}, positions {}..{}: the schedule {:.2f}x over dense, {:.2f}x over "
                           "the constant budget {} (the smallest meeting the target in every bin)\n",
                           gpu.name, config.architecture_name.empty() ? "model's" : config.architecture_name, a.cost_batch, shortest,
                           shortest + gen, dense_ms / schedule_ms, constant_ms / schedule_ms, constant);
}

}  // namespace

void add_calibrate_commands(CLI::App& app) {
  auto a = std::make_shared<CalibrateArgs>();
  auto* c = app.add_subcommand("calibrate", "Budget schedule for sparse rollouts: per 2K bin the smallest budget whose p5(alpha) meets a target");
  c->add_option("--model", a->model, "Hugging Face model directory")->required();
  c->add_option("--prompts", a->prompts, "JSONL: {\"prompt\"|\"messages\"|\"prompt_tokens\"} per line")->required();
  c->add_option("--out", a->out, "The schedule: a budget table for schedule:table=FILE")->required();
  c->add_option("--flow", a->flow, "The flow (a built-in name)")->capture_default_str();
  c->add_option("--flow-args", a->flow_args, "Its other settings, e.g. sink=16,window=64")->capture_default_str();
  c->add_option("--budgets", a->budgets, "Candidate budgets (tokens), comma-separated")->capture_default_str();
  c->add_option("--target-p5", a->target_p5, "The 5th percentile of alpha every bin must reach")->capture_default_str();
  c->add_option("--bin", a->bin, "Positions per bin")->capture_default_str();
  c->add_option("--n-samples", a->samples, "Samples per prompt")->capture_default_str();
  c->add_option("--max-tokens", a->max_tokens, "Tokens generated per sample")->capture_default_str();
  c->add_option("--temperature", a->temperature, "Sampling temperature")->capture_default_str();
  c->add_option("--seed", a->seed, "Sample k of prompt i uses seed + i*K + k")->capture_default_str();
  c->add_option("--alpha-top", a->alpha_top, "Alpha over each policy distribution's N most likely tokens (0: all)")->capture_default_str();
  c->add_option("--max-batch", a->max_batch, "Sequences running together")->capture_default_str();
  c->add_option("--device", a->device, "cpu or cuda")->capture_default_str();
  c->add_option("--precision", a->precision, "cuda: bf16 or f32")->capture_default_str();
  c->add_option("--page-size", a->page_size, "KV page size")->capture_default_str();
  add_tensor_parallel_option(c, a->tensor_parallel);
  add_step_tokens_option(c, a->prefill_chunk);
  c->add_option("--config", a->config, "Model shape for the predicted speed-up (default: the model's own)");
  c->add_option("--gpu", a->gpu, "GPU model for the predicted speed-up")->capture_default_str();
  c->add_option("--gpu-models", a->gpu_models, "GPU models file")->capture_default_str();
  c->add_option("--cost-batch", a->cost_batch, "Batch for the predicted speed-up")->capture_default_str();
  c->callback([a] { run_calibrate(*a); });
}

}  // namespace vortex::cli
