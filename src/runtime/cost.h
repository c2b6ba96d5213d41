// The cost of a decode step (Kinetics): the FLOPs and the bytes it must move for a model shape,
// batch, context and attention spec, their sum as effective FLOPs (eFLOPs = FLOPs + I·bytes with
// I the GPU's FLOPs per byte), and a step time predicted from a GPU's measured ceilings.
//
// Bytes: every weight matrix once (the embedding is gathered, not read whole), plus the K and V
// each sequence reads — every cached token in dense layers; in sparse layers the attended pages
// and the summary fields each pass of the flow reads in their storage types. FLOPs: 2 per weight
// per token, and 4·heads·head_dim per attended key (QKᵀ and PV).
//
// Prediction (GpuModel): t = bytes / (stream_efficiency · copy bandwidth) + FLOPs / GEMM rate
// + layers · layer_us + sparse layers · sparse_layer_us. The copy bandwidth and GEMM rate are the
// device's own ceilings (`bench decode` measures them in every row); the three other constants
// are fitted by fit_gpu_model to a GPU's committed `bench decode` rows (bench/gpu-models.json
// records them with the file they came from): what decode attains of the copy bandwidth, and the
// fixed time each layer (and each sparse layer's planner) costs beyond its bytes.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace vortex {

struct ModelConfig;
struct SparseAttention;

// K/V bytes one decode step reads for a sequence of `length` tokens (see the file header);
// `stored_fields`: summaries in their storage types (GPU) rather than fp32 (CPU). bytes_per_element
// may be fractional: an fp8 row of D values and its scale is (D + 4) / D bytes per element.
double kv_bytes_read(const ModelConfig& config, const SparseAttention* attention, int64_t length, double bytes_per_element,
                     bool stored_fields);
// Bytes of the weight matrices a decode step reads (q, k, v, o, gate, up, down per layer; the LM head).
double weight_bytes(const ModelConfig& config, int64_t bytes_per_element);

struct StepCost {
  double weight_bytes = 0.0;
  double kv_bytes = 0.0;       // K/V and summary fields, all sequences
  double flops = 0.0;
  int64_t layers = 0;
  int64_t sparse_layers = 0;
  double bytes() const { return weight_bytes + kv_bytes; }
};
// One decode step of `batch` sequences holding `length` tokens each (the new token included).
StepCost decode_step_cost(const ModelConfig& config, const SparseAttention* attention, int64_t batch, int64_t length,
                          int64_t kv_bytes_per_element = 2);

struct GpuModel {
  std::string name;                // "h200", "h100"
  std::string gpu;                 // the device's name as bench rows give it
  double copy_GBps = 0.0;          // measured copy bandwidth
  double gemm_TFLOPs = 0.0;        // measured bf16 GEMM rate
  double stream_efficiency = 1.0;  // fitted: the share of copy bandwidth decode's bytes stream at
  double layer_us = 0.0;           // fitted: fixed time per layer per step
  double sparse_layer_us = 0.0;    // fitted: fixed time per sparse layer (the planner's launches)
  std::string source;              // the rows it was fitted to
};
double flops_per_byte(const GpuModel& gpu);  // I = GEMM rate / copy bandwidth
double effective_flops(const StepCost& cost, const GpuModel& gpu);
double predict_step_ms(const StepCost& cost, const GpuModel& gpu);

// Every decode step of a generation (a prompt of `prompt_len` tokens, `gen_len` generated), summed;
// at most ~2048 steps are evaluated, each standing for the steps up to the next.
struct GenerationCost {
  StepCost first, last;
  double flops = 0.0, bytes = 0.0, eflops = 0.0, ms = 0.0;
};
GenerationCost generation_cost(const ModelConfig& config, const SparseAttention* attention, int64_t batch, int64_t prompt_len,
                               int64_t gen_len, const GpuModel& gpu, int64_t kv_bytes_per_element = 2);

// A `bench decode --json` row: `computed` is decode_step_cost at the row's mean length with this
// build's formats; `cost` the same with the bytes the row reports (what its build moved: summary
// storage changed since some rows were measured), which fitting and validation use.
struct MeasuredStep {
  StepCost cost, computed;
  double ms = 0.0;
  nlohmann::json row;
};
// Reads the decode rows of a bench/results JSONL file (other kinds skipped); `configs_dir` holds
// the configs the rows name (configs/<config>.json).
std::vector<MeasuredStep> read_decode_rows(const std::string& path, const std::string& configs_dir);
// Least squares on relative error over `rows` (one GPU) for stream_efficiency, layer_us and
// sparse_layer_us; the ceilings are the rows' mean measured ones.
GpuModel fit_gpu_model(const std::vector<MeasuredStep>& rows, const std::string& name, const std::string& source);
nlohmann::json gpu_model_json(const GpuModel& gpu);
// bench/gpu-models.json: under the working directory, else beside the directory of the running
// binary (build/vortex, build-gpu/vortex in a checkout).
std::string default_gpu_models_path();
GpuModel gpu_model_from_json(const nlohmann::json& json, const std::string& where);

}  // namespace vortex
