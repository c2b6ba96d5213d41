// Runtime of the generated flow indexers: NVRTC compilation to a CUBIN for sm_90a, an on-disk
// cache of CUBINs, and a loaded kernel (driver API) that launches on a stream.
//
// Compilation needs no GPU (the tests compile every built-in here). The cache directory holds, per
// kernel, <key>.cubin and <key>.cu; the key hashes the source, the NVRTC version and the options;
// the .cu file holds that keyed text and is compared in full on a hit, so a hash collision is a
// miss, never a wrong kernel. Files are written to a temporary name and renamed, so concurrent
// processes share a directory safely; a directory that cannot be written only disables the cache.
//
// The driver API (cuModuleLoadData, cuModuleGetFunction, cuLaunchKernel) is reached through the
// CUDA runtime's cudaGetDriverEntryPointByVersion, not by linking libcuda: binaries then start on
// machines without a GPU driver (the development machine), and fail only when a kernel is loaded.
#pragma once

#include <cuda.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "backend/cuda/flow_codegen.h"

namespace vortex::cuda {

struct FlowCompileOptions {
  std::filesystem::path cache_dir{};  // empty: default_flow_cache_dir()
  bool disk_cache = true;             // false: compile every time and write nothing
};

// $XDG_CACHE_HOME/vortex/flows, else $HOME/.cache/vortex/flows; empty when neither is set.
std::filesystem::path default_flow_cache_dir();

// "13.0": the NVRTC this binary calls.
std::string nvrtc_version();

// CUDA C++ source (no #include) → CUBIN for sm_90a, through the disk cache. `what` names the
// source in errors ("flow 'quest'"). A compile error throws vortex::Error with NVRTC's log (and the
// path of the source, written to the cache directory when there is one).
std::vector<char> compile_cubin(const std::string& source, std::string_view what, const FlowCompileOptions& options = {});

// compile_cubin through this process's memory: the first call with a source (and cache directory)
// compiles or reads the disk; later calls, from any thread, return the same bytes without either
// (the 64 most recently used). So a flow compiled on one thread loads on another without waiting
// for NVRTC again, also without a disk cache.
std::vector<char> cached_cubin(const std::string& source, std::string_view what, const FlowCompileOptions& options = {});

// Compiles (cached_cubin) the indexer of each pass of `flow` for `shape`, without loading it: the
// slow half of a FlowIndexer, for a thread that must not touch the GPU's state.
void precompile_indexers(const Flow& flow, const IndexerShape& shape, const FlowCompileOptions& options = {});

// One flow's indexer for one IndexerShape, loaded into the current device's primary context.
// Launch it from a thread where that context is current (any thread that has used the runtime).
class FlowIndexer {
 public:
  FlowIndexer(const Flow& flow, const IndexerShape& shape, const FlowCompileOptions& options = {});
  FlowIndexer(const FlowIndexer&) = delete;
  FlowIndexer& operator=(const FlowIndexer&) = delete;
  FlowIndexer(FlowIndexer&& other) noexcept;
  FlowIndexer& operator=(FlowIndexer&& other) noexcept;
  ~FlowIndexer();

  const IndexerLayout& layout() const { return layout_; }

  // Scores every candidate of every (r, g) (FlowKernelParams in flow_codegen.h) and writes the
  // saves. max_pages ≥ the longest candidate list: it sizes the grid of flows without softmax
  // (a CUDA graph passes the worst case). The spill workspace must hold total × spill_floats.
  void launch(const FlowKernelParams& params, int32_t max_pages, cudaStream_t stream) const;

 private:
  void check_params(const FlowKernelParams& params, int32_t max_pages) const;

  std::string name_;
  size_t fields_ = 0, slots_ = 0;
  IndexerLayout layout_{};
  CUmodule module_ = nullptr;
  CUfunction function_ = nullptr;
};

}  // namespace vortex::cuda
