#include "backend/cuda/flow_kernel.h"

#include <nvrtc.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <mutex>
#include <sstream>
#include <utility>

#include "backend/cuda/cuda_check.h"
#include "core/error.h"
#include "core/lru_cache.h"

namespace vortex::cuda {
namespace {

// Target and language of every generated kernel; part of the cache key.
const std::vector<std::string>& nvrtc_options() {
  static const std::vector<std::string> options = {"--gpu-architecture=sm_90a", "--std=c++17"};
  return options;
}

// ---- the disk cache ----------------------------------------------------------------------------

uint64_t fnv1a(std::string_view text) {
  uint64_t hash = 0xcbf29ce484222325ull;
  for (unsigned char c : text) hash = (hash ^ c) * 0x100000001b3ull;
  return hash;
}

// The text a cached CUBIN was made from: everything that changes the output, then the source.
std::string keyed_text(const std::string& source) {
  std::string key = "// vortex flow cubin, nvrtc " + nvrtc_version();
  for (const std::string& option : nvrtc_options()) key += " " + option;
  return key + "\n" + source;
}

std::filesystem::path cache_dir_of(const FlowCompileOptions& options) {
  if (!options.disk_cache) return {};
  return options.cache_dir.empty() ? default_flow_cache_dir() : options.cache_dir;
}

std::string read_all(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return {};
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Writes through a temporary file and a rename, so readers see the whole file or none. Best effort.
void write_atomically(const std::filesystem::path& path, std::string_view bytes) {
  std::error_code error;
  std::filesystem::create_directories(path.parent_path(), error);
  std::filesystem::path tmp = path;
  tmp += ".tmp" + std::to_string(::getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) return;
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (!out) return;
  }
  std::filesystem::rename(tmp, path, error);
  if (error) std::filesystem::remove(tmp, error);
}

// ---- NVRTC -------------------------------------------------------------------------------------

void check_nvrtc(nvrtcResult status, const char* call) {
  if (status != NVRTC_SUCCESS) fail("NVRTC error {} in {}", nvrtcGetErrorString(status), call);
}

std::string program_log(nvrtcProgram program) {
  size_t size = 0;
  if (nvrtcGetProgramLogSize(program, &size) != NVRTC_SUCCESS || size == 0) return {};
  std::string log(size, '\0');
  if (nvrtcGetProgramLog(program, log.data()) != NVRTC_SUCCESS) return {};
  while (!log.empty() && (log.back() == '\0' || log.back() == '\n')) log.pop_back();
  return log;
}

// Compiles; on failure returns false with the log in `log`.
bool nvrtc_compile(const std::string& source, std::vector<char>& cubin, std::string& log) {
  nvrtcProgram program = nullptr;
  check_nvrtc(nvrtcCreateProgram(&program, source.c_str(), "flow_indexer.cu", 0, nullptr, nullptr), "nvrtcCreateProgram");
  std::vector<const char*> options;
  for (const std::string& option : nvrtc_options()) options.push_back(option.c_str());
  const nvrtcResult status = nvrtcCompileProgram(program, static_cast<int>(options.size()), options.data());
  log = program_log(program);
  bool ok = status == NVRTC_SUCCESS;
  if (ok) {
    size_t size = 0;
    ok = nvrtcGetCUBINSize(program, &size) == NVRTC_SUCCESS && size > 0;
    cubin.resize(size);
    ok = ok && nvrtcGetCUBIN(program, cubin.data()) == NVRTC_SUCCESS;
    if (!ok) log = "NVRTC compiled the program but returned no CUBIN";
  } else if (log.empty()) {
    log = nvrtcGetErrorString(status);
  }
  nvrtcDestroyProgram(&program);
  return ok;
}

// ---- the driver API, through the runtime ---------------------------------------------------------

struct Driver {
  decltype(&::cuModuleLoadData) module_load_data = nullptr;
  decltype(&::cuModuleGetFunction) module_get_function = nullptr;
  decltype(&::cuModuleUnload) module_unload = nullptr;
  decltype(&::cuLaunchKernel) launch_kernel = nullptr;
  decltype(&::cuGetErrorName) get_error_name = nullptr;
};

template <typename F>
void entry_point(const char* symbol, F& function) {
  void* pointer = nullptr;
  cudaDriverEntryPointQueryResult found = cudaDriverEntryPointSymbolNotFound;
  VX_CUDA(cudaGetDriverEntryPointByVersion(symbol, &pointer, 12000, cudaEnableDefault, &found));
  check(found == cudaDriverEntryPointSuccess && pointer != nullptr, "the CUDA driver has no '{}'", symbol);
  function = reinterpret_cast<F>(pointer);
}

const Driver& driver() {
  static const Driver loaded = [] {
    VX_CUDA(cudaFree(nullptr));  // initialises the runtime and makes the primary context current
    Driver d;
    entry_point("cuModuleLoadData", d.module_load_data);
    entry_point("cuModuleGetFunction", d.module_get_function);
    entry_point("cuModuleUnload", d.module_unload);
    entry_point("cuLaunchKernel", d.launch_kernel);
    entry_point("cuGetErrorName", d.get_error_name);
    return d;
  }();
  return loaded;
}

void check_cu(CUresult status, const char* call, const char* file, int line) {
  if (status == CUDA_SUCCESS) return;
  const char* name = "unknown";
  driver().get_error_name(status, &name);
  fail("CUDA driver error {} in {} at {}:{}", name, call, file, line);
}

#define VX_CU(call) check_cu((call), #call, __FILE__, __LINE__)

}  // namespace

std::filesystem::path default_flow_cache_dir() {
  const char* xdg = std::getenv("XDG_CACHE_HOME");
  if (xdg != nullptr && xdg[0] == '/') return std::filesystem::path(xdg) / "vortex" / "flows";
  const char* home = std::getenv("HOME");
  if (home != nullptr && home[0] != '\0') return std::filesystem::path(home) / ".cache" / "vortex" / "flows";
  return {};
}

std::string nvrtc_version() {
  int major = 0, minor = 0;
  check_nvrtc(nvrtcVersion(&major, &minor), "nvrtcVersion");
  return std::to_string(major) + "." + std::to_string(minor);
}

namespace {

std::vector<char> compile_keyed(const std::string& source, const std::string& keyed, std::string_view what,
                                const FlowCompileOptions& options) {
  const std::filesystem::path dir = cache_dir_of(options);
  char name[17];
  std::snprintf(name, sizeof(name), "%016llx", static_cast<unsigned long long>(fnv1a(keyed)));
  const std::filesystem::path cu = dir / (std::string(name) + ".cu"), bin = dir / (std::string(name) + ".cubin");
  if (!dir.empty() && read_all(cu) == keyed) {
    std::string bytes = read_all(bin);
    if (!bytes.empty()) return {bytes.begin(), bytes.end()};
  }
  std::vector<char> cubin;
  std::string log;
  const bool ok = nvrtc_compile(source, cubin, log);
  if (!ok) {
    const std::filesystem::path failed = dir / (std::string(name) + ".failed.cu");
    if (!dir.empty()) write_atomically(failed, keyed);
    fail("NVRTC could not compile {}{}:\n{}", what, dir.empty() ? "" : " (source: " + failed.string() + ")", log);
  }
  if (!dir.empty()) {  // the CUBIN first: a reader that finds the .cu finds its CUBIN
    write_atomically(bin, std::string_view(cubin.data(), cubin.size()));
    write_atomically(cu, keyed);
  }
  return cubin;
}

// CUBINs compiled or read by this process, by keyed text: a spec compiled on one thread
// (BatchEngine::resolve_checked, outside the model's lock) is loaded on another without a second
// compile, also where there is no disk cache. Flows on a server are built-ins or the operator's,
// so few; the bound is for the rest.
struct MemoryCache {
  std::mutex mutex;
  LruCache<std::string, std::vector<char>> cubins{64};
};

MemoryCache& memory_cache() {
  static MemoryCache cache;
  return cache;
}

}  // namespace

std::vector<char> compile_cubin(const std::string& source, std::string_view what, const FlowCompileOptions& options) {
  return compile_keyed(source, keyed_text(source), what, options);
}

std::vector<char> cached_cubin(const std::string& source, std::string_view what, const FlowCompileOptions& options) {
  const std::string keyed = keyed_text(source) + "\n// cache " + cache_dir_of(options).string();
  MemoryCache& memory = memory_cache();
  {
    std::lock_guard lock(memory.mutex);
    if (const std::vector<char>* hit = memory.cubins.find(keyed)) return *hit;
  }
  std::vector<char> cubin = compile_cubin(source, what, options);  // unlocked: compiles run in parallel
  std::lock_guard lock(memory.mutex);
  memory.cubins.put(keyed, cubin);
  return cubin;
}

void precompile_indexers(const Flow& flow, const IndexerShape& shape, const FlowCompileOptions& options) {
  if (!flow_needs_indexer(flow)) return;
  for (size_t pass = 0; pass <= flow.stages.size(); ++pass)
    cached_cubin(generate_indexer_source(flow_stage(flow, pass), shape), "flow '" + flow.name + "'", options);
}

// ---- FlowIndexer -------------------------------------------------------------------------------

FlowIndexer::FlowIndexer(const Flow& flow, const IndexerShape& shape, const FlowCompileOptions& options)
    : name_(flow.name), fields_(flow.fields.size()), slots_(flow.state.size()), layout_(indexer_layout(flow, shape)) {
  const std::vector<char> cubin = cached_cubin(generate_indexer_source(flow, shape), "flow '" + flow.name + "'", options);
  const Driver& cu = driver();
  VX_CUDA(cudaFree(nullptr));  // this thread's current context: the device's primary context
  VX_CU(cu.module_load_data(&module_, cubin.data()));
  VX_CU(cu.module_get_function(&function_, module_, kFlowKernelName));
}

FlowIndexer::FlowIndexer(FlowIndexer&& other) noexcept
    : name_(std::move(other.name_)), fields_(other.fields_), slots_(other.slots_), layout_(std::move(other.layout_)),
      module_(std::exchange(other.module_, nullptr)), function_(std::exchange(other.function_, nullptr)) {}

FlowIndexer& FlowIndexer::operator=(FlowIndexer&& other) noexcept {
  std::swap(name_, other.name_);
  std::swap(fields_, other.fields_);
  std::swap(slots_, other.slots_);
  std::swap(layout_, other.layout_);
  std::swap(module_, other.module_);
  std::swap(function_, other.function_);
  return *this;
}

FlowIndexer::~FlowIndexer() {
  if (module_ != nullptr) driver().module_unload(module_);
}

void FlowIndexer::check_params(const FlowKernelParams& p, int32_t max_pages) const {
  check(p.q != nullptr && p.pages != nullptr && p.offsets != nullptr && p.counts != nullptr && p.scores != nullptr,
        "flow '{}' indexer: q, pages, offsets, counts and scores must be set", name_);
  check(p.rows >= 0 && p.rows <= 65535 && p.kv_heads >= 1 && p.kv_heads <= 65535 && max_pages >= 0,
        "flow '{}' indexer: bad sizes (rows {}, kv heads {}, max pages {})", name_, p.rows, p.kv_heads, max_pages);
  check(p.q_row_stride >= 0, "flow '{}' indexer: negative q row stride {}", name_, p.q_row_stride);
  for (size_t i = 0; i < fields_; ++i) check(p.fields[i] != nullptr, "flow '{}' indexer: field {} is not set", name_, i);
  for (size_t i = 0; i < slots_; ++i) check(p.state[i] != nullptr, "flow '{}' indexer: state slot {} is not set", name_, i);
  check(layout_.spill_floats == 0 || p.spill != nullptr, "flow '{}' indexer: needs a spill workspace ({} floats per candidate)",
        name_, layout_.spill_floats);
}

void FlowIndexer::launch(const FlowKernelParams& params, int32_t max_pages, cudaStream_t stream) const {
  check(function_ != nullptr, "internal: launch of a moved-from flow indexer");
  check_params(params, max_pages);
  if (params.rows == 0 || max_pages == 0) return;
  const int32_t tile = layout_.tile_pages;
  const unsigned tiles = tile > 0 ? static_cast<unsigned>((max_pages + tile - 1) / tile) : 1u;
  void* args[] = {const_cast<FlowKernelParams*>(&params)};
  VX_CU(driver().launch_kernel(function_, tiles, static_cast<unsigned>(params.kv_heads), static_cast<unsigned>(params.rows),
                               static_cast<unsigned>(32 * layout_.warps), 1, 1, 0, static_cast<CUstream>(stream), args, nullptr));
}

}  // namespace vortex::cuda
