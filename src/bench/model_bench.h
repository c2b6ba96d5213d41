// The model benchmarks behind `vortex bench decode` and `vortex bench prefill`: decode steps of a
// batch at a given context (and self-speculation's draft and verify steps), or one prompt's
// prefill, on random weights of a config's shapes, each time related to what the step must move
// (or compute) and this machine's measured ceiling. The CPU runs through the backend interface
// (backend/backend.h); the GPU's timings (graph replays, the per-kernel breakdown) come from
// backend/cuda/cuda_bench.h.
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "core/dtype.h"

namespace vortex {

struct DecodeBenchOptions {
  std::string config_path;   // configs/<name>.json
  std::string device = "cpu";  // cpu or cuda
  int64_t batch = 1;
  int64_t context = 1024;    // tokens already in each sequence's KV cache
  int64_t steps = 16;        // timed decode steps (after 2 warm-up steps)
  std::string attention = "dense";  // attention spec of every decode token
  DType weight_dtype = DType::kBF16;
  int64_t tensor_parallel = 1;  // ranks (EngineOptions::tensor_parallel): the CPU only today
  bool fp8_kv = false;       // cuda: an fp8 KV cache (kv/kv_rounding.h: e4m3 values, int8 keys, a scale per row) instead of bf16
  uint64_t seed = 0;
};

// Runs the benchmark and returns the JSON object `vortex bench decode --json` prints.
nlohmann::json run_decode_bench(const DecodeBenchOptions& options);

// `vortex bench decode --speculate`: self-speculation's step times at a shape, and the speed-up
// they give over dense decoding at a measured acceptance rate α, for γ = 1..gamma_max:
// (1 + α + … + α^γ) · t_dense / (γ · t_draft + t_verify(γ)).
struct SpeculationBenchOptions {
  DecodeBenchOptions decode;      // shape, device; decode.attention is ignored (dense and the draft are timed)
  std::string draft;              // the draft's attention spec
  int64_t gamma_max = 8;
  double acceptance = 0.0;        // measured on a real model (never assumed)
  std::string acceptance_source;  // where it was measured, echoed in the result
};
nlohmann::json run_speculation_bench(const SpeculationBenchOptions& options);
// The acceptance rate in `text`: a number in [0, 1], or a JSON file that `vortex generate --json`,
// `vortex eval gsm-inf --json` or `vortex batch` wrote (the speculation's acceptance_rate).
double read_acceptance(const std::string& text);

struct PrefillBenchOptions {
  std::string config_path;
  std::string device = "cuda";
  int64_t prompt_len = 8192;
  int64_t chunk = 8192;      // tokens per forward
  int64_t repeats = 3;
  uint64_t seed = 0;
};
// `vortex bench prefill --json`: useful FLOPs of one prompt against the measured GEMM rate.
nlohmann::json run_prefill_bench(const PrefillBenchOptions& options);

}  // namespace vortex
