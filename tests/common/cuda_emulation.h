// Runs generated flow kernels (src/backend/cuda/flow_codegen.h) on the CPU, for tests on machines
// without a GPU. Not a general CUDA emulator: it covers exactly what the generator emits.
//
// The generated source is compiled by the host compiler with this header forced in front
// (-include). Every CUDA thread of a block is a std::thread; blocks run one after another, so a
// __shared__ array can be a function-local static. __syncthreads and __syncwarp are barriers over
// the block and over the thread's warp; __shfl_xor_sync exchanges through a per-block array between
// two warp barriers. Lanes are not in lockstep here, so code that needs a __syncwarp and lacks one
// shows up as a wrong result (on a GPU it might only show up some day).
#pragma once

#include <barrier>
#include <cmath>
#include <cstring>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

namespace vx_emu {

struct Index {
  unsigned x = 0, y = 0, z = 0;
};

struct Block {
  explicit Block(unsigned threads) : all(threads), exchange(threads) {
    for (unsigned w = 0; w < threads / 32; ++w) warps.push_back(std::make_unique<std::barrier<>>(32));
  }
  std::barrier<> all;
  std::vector<std::unique_ptr<std::barrier<>>> warps;
  std::vector<float> exchange;  // (threads) one slot per thread for shuffles
};

inline thread_local Index thread_idx, block_idx;
inline Block* block = nullptr;  // the block that runs now

// Runs `kernel` on a (gx, gy, gz) grid of `threads`-thread blocks (a multiple of 32).
inline void run_grid(unsigned gx, unsigned gy, unsigned gz, unsigned threads, const std::function<void()>& kernel) {
  for (unsigned z = 0; z < gz; ++z)
    for (unsigned y = 0; y < gy; ++y)
      for (unsigned x = 0; x < gx; ++x) {
        Block b(threads);
        block = &b;
        std::vector<std::thread> pool;
        for (unsigned t = 0; t < threads; ++t)
          pool.emplace_back([&, t] {
            thread_idx = {t, 0, 0};
            block_idx = {x, y, z};
            kernel();
          });
        for (std::thread& thread : pool) thread.join();
        block = nullptr;
      }
}

}  // namespace vx_emu

#define threadIdx vx_emu::thread_idx
#define blockIdx vx_emu::block_idx
#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(threads)
#define __shared__ static

inline void __syncthreads() { vx_emu::block->all.arrive_and_wait(); }
inline void __syncwarp() { vx_emu::block->warps[threadIdx.x / 32]->arrive_and_wait(); }
inline float __shfl_xor_sync(unsigned, float x, int mask) {
  std::vector<float>& slots = vx_emu::block->exchange;
  slots[threadIdx.x] = x;
  __syncwarp();
  const float y = slots[threadIdx.x ^ static_cast<unsigned>(mask)];
  __syncwarp();
  return y;
}
inline float __uint_as_float(unsigned bits) {
  float x;
  std::memcpy(&x, &bits, sizeof(x));
  return x;
}
