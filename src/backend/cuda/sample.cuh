// Token choice on the GPU: the device twin of sample_with_uniform() (runtime/sampler.h), so that
// a decode step returns R token ids instead of R × V logits.
//
// How, per step: greedy-only batches take the argmax kernel. Otherwise every row's (scaled logit,
// id) pairs are sorted best first in one stable device radix sort (key = row, then the logit's bits
// descending, so equal logits stay in id order, as the CPU's tie rule has it), and one block per
// row walks its sorted row exactly as the CPU walks its sorted candidates: top-k cut, softmax in
// double, top-p prefix, min-p cut, then the first kept token at which the cumulative probability
// exceeds uniform × kept mass. Sums run in a block's order rather than left to right, so a draw
// within rounding (~1e-15 relative) of a boundary may land on the neighbouring token; nothing
// else differs. (vLLM's sampler likewise sorts each row.) Rollouts reduce the same rows further
// (reduce()), so that a rollout step returns a few numbers per row, not V floats.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "backend/chunk.h"

namespace vortex::cuda {

struct SampleParams {
  const float* logits = nullptr;     // (R, V)
  const TokenDraw* draws = nullptr;  // (R)
  int32_t* ids = nullptr;            // (R)
  int64_t rows = 0;                  // R
  int64_t vocab = 0;                 // V
};

// Owns the sort's scratch, grown to the largest R × V seen (outside any graph capture).
class DeviceSampler {
 public:
  DeviceSampler();
  ~DeviceSampler();
  DeviceSampler(const DeviceSampler&) = delete;
  DeviceSampler& operator=(const DeviceSampler&) = delete;
  // Writes p.ids for p.logits; p.draws is a device copy of `host_draws` (greedy-only batches skip the
  // sort unless `sorted` asks for it, as reduce() does to export a row's most likely tokens).
  void run(const SampleParams& p, const TokenDraw* host_draws, cudaStream_t stream, bool sorted = false);
  // Rollouts' reductions (chunk.h's RowReduction) of the rows run() just sampled, "the row's token"
  // being the one run() wrote to p.ids: uploads r's inputs, fills its outputs, synchronises the
  // stream. One block per row: softmax(z / T) in double (max, then Σ exp), the token's log-prob,
  // the sums over the given policy tokens, and the top tokens read off run()'s sorted row.
  void reduce(const SampleParams& p, RowReductions& r, cudaStream_t stream);

 private:
  struct Buffers;
  Buffers* buffers_;
  int64_t sorted_rows_ = 0;  // rows the last run() left sorted (0: it took the argmax path)
};

}  // namespace vortex::cuda
