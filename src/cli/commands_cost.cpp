// vortex cost — Kinetics' cost model for decode: FLOPs, bytes and effective FLOPs of every decode
// step of a generation (a prompt of L tokens, G generated), dense and with an attention spec, and
// the step times a GPU model predicts (runtime/cost.h). `--fit` makes a GPU model from committed
// `bench decode` rows (bench/gpu-models.json keeps one per GPU).
#include <iostream>
#include <memory>

#include "cli/cli.h"
#include "core/error.h"
#include "io/hf_config.h"
#include "runtime/cost.h"
#include "sparse/sparse_attention.h"

namespace vortex::cli {
namespace {

struct CostArgs {
  std::string config, attention = "dense", gpu = "h200", gpu_models = default_gpu_models_path(), kv_dtype = "bf16";
  std::string fit, name, configs = "configs", exclude;
  int64_t batch = 1, prompt_len = 4096, gen_len = 1024, page_size = 16;
  bool json = false;
};

nlohmann::json step_json(const StepCost& c, const GpuModel& gpu) {
  return {{"flops", c.flops}, {"bytes", c.bytes()}, {"weight_bytes", c.weight_bytes}, {"kv_bytes", c.kv_bytes},
          {"eflops", effective_flops(c, gpu)}, {"predicted_ms", predict_step_ms(c, gpu)}};
}

void run_fit(const CostArgs& a) {
  check(!a.name.empty(), "--fit needs --name (e.g. h200)");
  std::vector<MeasuredStep> rows = read_decode_rows(a.fit, a.configs);
  if (!a.exclude.empty())
    std::erase_if(rows, [&](const MeasuredStep& r) { return r.row["attention"].get<std::string>().starts_with(a.exclude); });
  const GpuModel gpu = fit_gpu_model(rows, a.name, a.fit);
  nlohmann::json out = gpu_model_json(gpu);
  out["rows"] = nlohmann::json::array();
  for (const MeasuredStep& r : rows)
    out["rows"].push_back({{"config", r.row["config"]}, {"batch", r.row["batch"]}, {"context", r.row["context"]},
                           {"attention", r.row["attention"]}, {"measured_ms", r.ms}, {"predicted_ms", predict_step_ms(r.cost, gpu)}});
  print_json(out);
}

void run_cost(const CostArgs& a) {
  if (!a.fit.empty()) return run_fit(a);
  check(!a.config.empty(), "give --config (configs/<model>.json), or --fit to fit a GPU model");
  check(a.batch >= 1 && a.batch <= 1 << 20, "--batch must be in 1..{}, got {}", 1 << 20, a.batch);
  check(a.prompt_len >= 1 && a.gen_len >= 1 && a.prompt_len + a.gen_len <= (int64_t{1} << 24),
        "--prompt-len and --gen-len must be >= 1 with a sum of at most {} tokens", int64_t{1} << 24);
  check(a.kv_dtype == "bf16" || a.kv_dtype == "f32", "--kv-dtype takes bf16 or f32, got '{}'", a.kv_dtype);
  const int64_t kv_bytes = a.kv_dtype == "bf16" ? 2 : 4;
  const ModelConfig config = load_model_config_file(a.config);
  const nlohmann::json models = read_json_file(a.gpu_models);
  check(models.contains(a.gpu), "{} has no GPU model '{}' (it has: {})", a.gpu_models, a.gpu, [&] {
    std::string names;
    for (const auto& [key, value] : models.items()) names += (names.empty() ? "" : ", ") + key;
    return names;
  }());
  const GpuModel gpu = gpu_model_from_json(models[a.gpu], a.gpu_models + " '" + a.gpu + "'");
  const auto attention = resolve_attention(a.attention, a.page_size);
  if (attention) check_attention_fits(*attention, config.num_layers);
  const GenerationCost dense = generation_cost(config, nullptr, a.batch, a.prompt_len, a.gen_len, gpu, kv_bytes);
  const GenerationCost spec = generation_cost(config, attention.get(), a.batch, a.prompt_len, a.gen_len, gpu, kv_bytes);
  auto side = [&](const GenerationCost& t) {
    return nlohmann::json{{"first_step", step_json(t.first, gpu)}, {"last_step", step_json(t.last, gpu)},
                          {"total", {{"flops", t.flops}, {"bytes", t.bytes}, {"eflops", t.eflops}, {"predicted_s", t.ms / 1e3}}}};
  };
  if (a.json) {
    print_json({{"config", a.config}, {"batch", a.batch}, {"prompt_len", a.prompt_len}, {"gen_len", a.gen_len},
                {"attention", a.attention}, {"kv_dtype", a.kv_dtype}, {"gpu", gpu_model_json(gpu)},
                {"flops_per_byte", flops_per_byte(gpu)}, {"dense", side(dense)}, {"spec", side(spec)},
                {"predicted_speedup", dense.ms / spec.ms}});
    return;
  }
  std::cout << fmt::format("{} B{} prompt {} + {} generated, {} on {} (I = {:.0f} FLOPs/byte)\n", a.config, a.batch, a.prompt_len,
                           a.gen_len, a.attention, gpu.name, flops_per_byte(gpu));
  std::cout << "                  step FLOPs   step bytes   step eFLOPs  step ms    total eFLOPs  total s\n";
  for (const auto& [label, t] : {std::pair<const char*, const GenerationCost&>{"dense first", dense}, {"dense last", dense},
                                 {"spec first", spec}, {"spec last", spec}}) {
    const bool first = std::string_view(label).ends_with("first");
    const StepCost& c = first ? t.first : t.last;
    std::cout << fmt::format("  {:<13} {:>11.3e}  {:>11.3e}  {:>11.3e}  {:>8.3f}   {:>11.3e}  {:>8.3f}\n", label, c.flops, c.bytes(),
                             effective_flops(c, gpu), predict_step_ms(c, gpu), t.eflops, t.ms / 1e3);
  }
  std::cout << fmt::format("predicted speed-up of the spec over dense: {:.2f}x\n", dense.ms / spec.ms);
}

}  // namespace

void add_cost_commands(CLI::App& app) {
  auto a = std::make_shared<CostArgs>();
  auto* c = app.add_subcommand("cost", "Decode cost model (Kinetics): FLOPs, bytes, eFLOPs and predicted step times");
  c->add_option("--config", a->config, "Model shape: configs/<model>.json");
  c->add_option("--batch", a->batch, "Sequences per step")->capture_default_str();
  c->add_option("--prompt-len", a->prompt_len, "Prompt tokens")->capture_default_str();
  c->add_option("--gen-len", a->gen_len, "Generated tokens")->capture_default_str();
  c->add_option("--attention", a->attention, "Attention spec to compare with dense")->capture_default_str();
  c->add_option("--gpu", a->gpu, "GPU model name in --gpu-models (h200, h100)")->capture_default_str();
  c->add_option("--gpu-models", a->gpu_models, "GPU models fitted to bench rows")->capture_default_str();
  c->add_option("--kv-dtype", a->kv_dtype, "KV cache element type: bf16 or f32")->capture_default_str();
  c->add_option("--page-size", a->page_size, "KV page size")->capture_default_str();
  c->add_option("--fit", a->fit, "Fit a GPU model to this bench/results JSONL (CUDA decode rows) and print it");
  c->add_option("--name", a->name, "With --fit: the GPU model's name");
  c->add_option("--exclude", a->exclude, "With --fit: leave out rows whose attention spec starts with this");
  c->add_option("--configs", a->configs, "With --fit: the directory of the rows' configs")->capture_default_str();
  c->add_flag("--json", a->json, "One JSON object");
  c->callback([a] { run_cost(*a); });
}

}  // namespace vortex::cli
