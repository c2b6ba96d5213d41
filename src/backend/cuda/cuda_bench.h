// GPU measurements for `vortex bench`: the device's own ceilings (copy bandwidth, bf16 GEMM rate)
// measured in the same run, and timed decode/prefill steps of a CudaModel.
#pragma once

#include <cstdint>
#include <map>
#include <string>

namespace vortex::cuda {

class CudaModel;
}  // namespace vortex::cuda
namespace vortex {
struct SparseAttention;
}
namespace vortex::cuda {

struct DeviceCeilings {
  std::string gpu;
  double copy_GBps = 0;    // device-to-device copy, bytes read + written per second
  double gemm_TFLOPs = 0;  // bf16 8192³ GEMM through cuBLASLt, random inputs
};
DeviceCeilings measure_device_ceilings();
// The name of device 0 ("NVIDIA H200").
std::string device_name();

// Median milliseconds of one decode step for `batch` sequences already holding `context` tokens
// (their KV filled with random values), over `steps` timed steps after warm-up.
// Median ms of a decode step of `batch` sequences at `context` cached (random) tokens; sparse
// attention when `attention` is given (summaries of the random keys are made first).
// With `breakdown`, one more step runs eagerly with CUDA events between phases (profile_forward).
double time_decode_step(CudaModel& model, int64_t batch, int64_t context, int64_t steps, const SparseAttention* attention = nullptr,
                        std::map<std::string, double>* breakdown = nullptr);
// Median ms of a self-speculation verify step: `batch` sequences at `context` cached (random)
// tokens each run a dense chunk of gamma + 1 tokens whose every row's argmax comes back.
double time_verify_step(CudaModel& model, int64_t batch, int64_t context, int64_t gamma, int64_t steps);
// Median milliseconds of the prefill of one prompt of `prompt_len` tokens (chunks of max_tokens).
double time_prefill(CudaModel& model, int64_t prompt_len, int64_t repeats);

}  // namespace vortex::cuda
