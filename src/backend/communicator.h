// The collectives tensor parallelism needs (model/tensor_parallel.h): one object per rank, every
// rank calling each collective in the same order. The CPU backend's ranks are threads of one process
// (backend/cpu/tensor_parallel.h); a GPU backend's would be NCCL's.
#pragma once

#include <cstdint>

namespace vortex {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int64_t ranks() const = 0;
  virtual int64_t rank() const = 0;
  // data (n) ← the sum over ranks of every rank's data (n): the same bits on every rank.
  virtual void all_reduce_sum(float* data, int64_t n) = 0;
  // out (ranks, n) ← every rank's in (n), rank by rank.
  virtual void all_gather(const float* in, int64_t n, float* out) = 0;
  // Seconds this rank has spent in collectives (waiting for the others included).
  virtual double seconds() const = 0;
};

}  // namespace vortex
