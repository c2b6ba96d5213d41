// Fills a device array with deterministic pseudo-random values (benchmarks: random weights and
// KV contents generated on the GPU instead of copied from the host). Never used for tests of
// correctness against zeros: values are uniform in [-scale, scale] (int8: rounded to integers, scale
// at most 127).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace vortex::cuda {

template <typename T>
void launch_fill_random(T* data, int64_t count, float scale, uint64_t seed, cudaStream_t stream);
// Every element = value (an fp8 cache's row scales in benchmarks).
void launch_fill_value(float* data, int64_t count, float value, cudaStream_t stream);

}  // namespace vortex::cuda
