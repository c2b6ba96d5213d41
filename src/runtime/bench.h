// Decode benchmark: time decode steps of a batch at a given context on random weights, and relate
// the time to the bytes a step must move and this machine's measured memory bandwidth.
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
  uint64_t seed = 0;
};

// Best-of-several read bandwidth of main memory over a buffer far larger than the caches, in GB/s,
// with all OpenMP threads (the same threads the decode step uses).
double measure_read_bandwidth_gbps();

// Runs the benchmark and returns the JSON object `vortex bench decode --json` prints.
nlohmann::json run_decode_bench(const DecodeBenchOptions& options);

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
