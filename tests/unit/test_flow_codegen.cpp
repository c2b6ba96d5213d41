// The CUDA flow code generator, checked without a GPU (built when CUDA is):
//  - every flow's kernel compiles with NVRTC to an sm_90a CUBIN at the shapes the engine uses;
//  - the generated kernel, compiled for the CPU with tests/common/cuda_emulation.h (one std::thread
//    per CUDA thread), computes what the interpreter computes: scores, softmax over pages, state
//    across two steps — the same check tests/gpu/test_flow_kernels.cpp runs on the GPU;
//  - bad shapes, flows past the limits and bad source give clear errors; the disk cache is used.
#include <dlfcn.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>

#include "backend/cuda/flow_codegen.h"
#include "backend/cuda/flow_kernel.h"
#include "common/flow_cases.h"
#include "common/test_util.h"
#include "core/error.h"

namespace vortex {
namespace {

using ::testing::HasSubstr;
using cuda::FlowQueryType;
using cuda::IndexerShape;

const cuda::FlowCompileOptions kNoCache{.cache_dir = {}, .disk_cache = false};

bool is_builtin(const std::string& name) { return find_builtin_flow(name) != nullptr; }

class FlowCodegen : public ::testing::TestWithParam<test::NamedFlow> {};

std::string flow_param_name(const ::testing::TestParamInfo<test::NamedFlow>& info) { return info.param.name; }

// ---- NVRTC -------------------------------------------------------------------------------------

TEST_P(FlowCodegen, CompilesWithNvrtcAtEveryShape) {
  const test::NamedFlow& f = GetParam();
  std::vector<IndexerShape> shapes;
  for (int32_t group : {1, 4, 8})
    for (int32_t head_dim : {64, 128})
      for (int32_t page_size : {16, 32}) shapes.push_back({group, head_dim, page_size, FlowQueryType::kBF16});
  if (!is_builtin(f.name)) shapes = {{4, 128, 16, FlowQueryType::kBF16}};  // the extra flows: one shape
  shapes.push_back({3, 17, 16, FlowQueryType::kF32});
  for (const IndexerShape& shape : shapes) {
    const std::string what = fmt::format("{} Hg={} D={} P={}", f.name, shape.group, shape.head_dim, shape.page_size);
    std::vector<char> cubin;
    ASSERT_NO_THROW(cubin = cuda::compile_cubin(cuda::generate_indexer_source(f.flow, shape), what, kNoCache)) << what;
    ASSERT_GE(cubin.size(), 4u) << what;
    EXPECT_EQ(std::string(cubin.data(), 4), "\x7f" "ELF") << what;
  }
}

// ---- emulated on the CPU -----------------------------------------------------------------------

// A generated kernel built as a shared library for the CPU (dlopen), with its launcher. Each kernel
// needs its own file name: the library cannot be unloaded (its inline thread_locals), so dlopen of
// a path seen before returns the old kernel.
class EmulatedKernel {
 public:
  EmulatedKernel(const std::string& source, const std::string& name) {
    const std::filesystem::path dir = test::scratch_dir("flow-emulated-" + name);
    std::ofstream(dir / "kernel.cpp") << source << "\n"
        << "extern \"C\" void vx_emulate(const void* p, unsigned gx, unsigned gy, unsigned gz, unsigned threads) {\n"
        << "  vx_emu::run_grid(gx, gy, gz, threads, [p] { vx_flow_indexer(*static_cast<const FlowKernelParams*>(p)); });\n"
        << "}\n";
    const std::filesystem::path shim = test::source_dir() / "tests" / "common" / "cuda_emulation.h";
    const std::string command = fmt::format("{} -std=c++20 -O1 -w -shared -fPIC -pthread -include {} {} -o {} > {} 2>&1",
                                            VORTEX_CXX_COMPILER, shim.string(), (dir / "kernel.cpp").string(),
                                            (dir / "kernel.so").string(), (dir / "log.txt").string());
    if (std::system(command.c_str()) != 0) throw Error("host compile failed: " + test::read_file(dir / "log.txt"));
    handle_ = dlopen((dir / "kernel.so").c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle_ == nullptr) throw Error(std::string("dlopen: ") + dlerror());
    run_ = reinterpret_cast<Run>(dlsym(handle_, "vx_emulate"));
  }
  EmulatedKernel(const EmulatedKernel&) = delete;
  EmulatedKernel& operator=(const EmulatedKernel&) = delete;
  ~EmulatedKernel() { dlclose(handle_); }

  void launch(const cuda::FlowKernelParams& p, unsigned gx, unsigned threads) const {
    run_(&p, gx, static_cast<unsigned>(p.kv_heads), static_cast<unsigned>(p.rows), threads);
  }

 private:
  using Run = void (*)(const void*, unsigned, unsigned, unsigned, unsigned);
  void* handle_ = nullptr;
  Run run_ = nullptr;
};

// Runs the kernel on host memory: the same FlowKernelParams the GPU gets, with host pointers.
test::KernelRun emulated_run(const EmulatedKernel& kernel, const cuda::IndexerLayout& layout) {
  return [&kernel, layout](const test::IndexerCase& c, std::vector<std::vector<float>>& state) {
    std::vector<float> scores(c.pages.size(), NAN);  // poisoned: every candidate must be written
    std::vector<float> spill(static_cast<size_t>(c.total() * layout.spill_floats), NAN);
    cuda::FlowKernelParams p{.q = c.shape.q_type == FlowQueryType::kBF16 ? static_cast<const void*>(c.q_bf16.data()) : c.q.data(),
                             .pages = c.pages.data(), .offsets = c.offsets.data(), .counts = c.counts.data(),
                             .scores = scores.data(), .spill = spill.empty() ? nullptr : spill.data(),
                             .q_row_stride = c.kv_heads * c.shape.group * c.shape.head_dim,
                             .rows = static_cast<int32_t>(c.rows), .kv_heads = static_cast<int32_t>(c.kv_heads)};
    for (size_t f = 0; f < c.records.size(); ++f) p.fields[f] = c.records[f].data();
    for (size_t s = 0; s < state.size(); ++s) p.state[s] = state[s].data();
    const int32_t tile = layout.tile_pages;
    const unsigned tiles = tile > 0 ? static_cast<unsigned>((c.max_pages + tile - 1) / tile) : 1u;
    if (c.max_pages > 0) kernel.launch(p, tiles, static_cast<unsigned>(32 * layout.warps));
    return scores;
  };
}

TEST_P(FlowCodegen, EmulatedKernelMatchesTheInterpreter) {
  const test::NamedFlow& f = GetParam();
  // Odd sizes with fp32 q; engine-like sizes with bf16 q. Lists longer than a tile, of one page, empty.
  for (const IndexerShape& shape : {IndexerShape{3, 17, 16, FlowQueryType::kF32}, IndexerShape{4, 64, 32, FlowQueryType::kBF16}}) {
    const std::string what = fmt::format("{} Hg={} D={} P={}", f.name, shape.group, shape.head_dim, shape.page_size);
    const EmulatedKernel kernel(cuda::generate_indexer_source(f.flow, shape),
                                fmt::format("{}-{}-{}-{}", f.name, shape.group, shape.head_dim, shape.page_size));
    const test::IndexerCase c = test::make_indexer_case(f.flow, shape, 2, 2, 50, {41, 1, 0, 9}, 7);
    EXPECT_EQ(test::compare_two_steps(c, emulated_run(kernel, cuda::indexer_layout(f.flow, shape)), 1e-4), "") << what;
  }
}

// The key-proxy flows at Qwen3-8B's shape (Hg=4, D=128, P=16), every pass: their dot products of q
// with a field take the field-dot path with two lanes a sub-row and vector loads (int4, int8, f32),
// which the shapes above reach only in part (D=17 rows of int4 and int8 are not whole words; at
// P=32 a sub-row has a lane to itself), and compute what the interpreter computes.
TEST(FlowCodegenEmulation, FieldDotsAtTheEngineShape) {
  const IndexerShape shape{4, 128, 16, FlowQueryType::kBF16};
  for (const char* name : {"proxy_rerank", "oracle"}) {
    const Flow& flow = *find_builtin_flow(name);
    for (size_t pass = 0; pass <= flow.stages.size(); ++pass) {
      const Flow stage = flow_stage(flow, pass);
      const std::string what = fmt::format("{} pass {}", name, pass);
      const std::string source = cuda::generate_indexer_source(stage, shape);
      EXPECT_THAT(source, HasSubstr("lanes per sub-row 2")) << what;
      const EmulatedKernel kernel(source, fmt::format("engine-{}-{}", name, pass));
      const test::IndexerCase c = test::make_indexer_case(stage, shape, 2, 2, 50, {41, 1, 0, 9}, 7);
      EXPECT_EQ(test::compare_two_steps(c, emulated_run(kernel, cuda::indexer_layout(stage, shape)), 1e-4), "") << what;
    }
  }
}

// The check above can fail: a kernel with one op changed (max → min) is caught.
TEST(FlowCodegenEmulation, AWrongKernelIsCaught) {
  const Flow& quest = *find_builtin_flow("quest_gqa");
  const IndexerShape shape{3, 17, 16, FlowQueryType::kF32};
  std::string source = cuda::generate_indexer_source(quest, shape);
  const size_t at = source.find("return vx_max(x, y);");
  ASSERT_NE(at, std::string::npos);
  source.replace(at, 20, "return vx_min(x, y);");
  const EmulatedKernel kernel(source, "wrong");
  const test::IndexerCase c = test::make_indexer_case(quest, shape, 2, 2, 50, {41, 1, 0, 9}, 7);
  EXPECT_THAT(test::compare_two_steps(c, emulated_run(kernel, cuda::indexer_layout(quest, shape)), 1e-4),
              HasSubstr("step 1: scores differ"));
}

INSTANTIATE_TEST_SUITE_P(Flows, FlowCodegen, ::testing::ValuesIn(test::codegen_flows()), flow_param_name);

// ---- errors, limits, the cache -----------------------------------------------------------------

TEST(FlowCodegenErrors, StreamingHasNoIndexer) {
  const Flow& streaming = *find_builtin_flow("streaming");
  EXPECT_FALSE(cuda::flow_needs_indexer(streaming));
  try {
    cuda::generate_indexer_source(streaming, {4, 128, 16});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("flow 'streaming' selects no pages and saves nothing"));
  }
}

TEST(FlowCodegenErrors, BadShapesNameTheFlowAndTheValue) {
  const Flow& quest = *find_builtin_flow("quest");
  EXPECT_THROW(cuda::generate_indexer_source(quest, {0, 128, 16}), Error);
  EXPECT_THROW(cuda::generate_indexer_source(quest, {4, 0, 16}), Error);
  const Flow sub8 = parse_flow("field k8 = max(k, sub=8)\nselect topk(max(sum(dot(q, k8), sub), heads))", "sub8");
  EXPECT_NO_THROW(cuda::generate_indexer_source(sub8, {4, 128, 16}));
  try {
    cuda::generate_indexer_source(sub8, {4, 128, 4});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("field 'k8': sub=8 does not divide the page size 4"));
  }
}

TEST(FlowCodegenErrors, TooMuchSharedMemoryIsAClearError) {
  // max over heads of (Hg, P, D) keeps (1, P, D) per page: 64·256 floats = 64 KB, past 48 KB.
  const Flow big = parse_flow("field keys = max(k, sub=page)\nselect topk(max(max(max(q * keys, heads), feat), sub))", "big");
  EXPECT_NO_THROW(cuda::generate_indexer_source(big, {4, 128, 16}));
  try {
    cuda::generate_indexer_source(big, {4, 256, 64});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("flow 'big' at Hg=4 D=256 P=64: its per-page values need"));
  }
}

TEST(FlowCodegenErrors, NvrtcErrorsCarryTheLog) {
  const std::filesystem::path dir = test::scratch_dir("flow-cache-errors");
  try {
    cuda::compile_cubin("extern \"C\" __global__ void k() { undeclared_name = 1; }\n", "the broken kernel", {.cache_dir = dir});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("NVRTC could not compile the broken kernel (source: " + dir.string()));
    EXPECT_THAT(e.what(), HasSubstr("undeclared_name"));
  }
}

TEST(FlowCodegen, SourceIsDeterministicAndNamesItsShape) {
  const Flow& h2o = *find_builtin_flow("h2o");
  const std::string a = cuda::generate_indexer_source(h2o, {8, 128, 16, FlowQueryType::kBF16});
  EXPECT_EQ(a, cuda::generate_indexer_source(h2o, {8, 128, 16, FlowQueryType::kBF16}));
  EXPECT_NE(a, cuda::generate_indexer_source(h2o, {8, 128, 16, FlowQueryType::kF32}));
  EXPECT_THAT(a, HasSubstr("flow 'h2o'"));
  EXPECT_THAT(a, HasSubstr("Hg=8 D=128 P=16, q bf16"));
  const cuda::IndexerLayout layout = cuda::indexer_layout(h2o, {8, 128, 16});
  EXPECT_EQ(layout.tile_pages, 0);    // softmax: one block per (r, g)
  EXPECT_EQ(layout.spill_floats, 1);  // the softmax input, kept for every page
  EXPECT_EQ(layout.field_bytes, std::vector<int64_t>{512});  // 128 f32 values
  EXPECT_GT(cuda::indexer_layout(*find_builtin_flow("quest"), {8, 128, 16}).tile_pages, 0);
}

TEST(FlowCodegen, CubinsAreCachedOnDisk) {
  const std::filesystem::path dir = test::scratch_dir("flow-cache");
  const std::string source = cuda::generate_indexer_source(*find_builtin_flow("quest"), {4, 128, 16});
  const std::vector<char> first = cuda::compile_cubin(source, "quest", {.cache_dir = dir});
  std::vector<std::filesystem::path> cubins;
  for (const auto& entry : std::filesystem::directory_iterator(dir))
    if (entry.path().extension() == ".cubin") cubins.push_back(entry.path());
  ASSERT_EQ(cubins.size(), 1u);
  EXPECT_EQ(test::read_file(cubins[0]), std::string(first.begin(), first.end()));
  EXPECT_TRUE(std::filesystem::exists(std::filesystem::path(cubins[0]).replace_extension(".cu")));
  // A hit reads the file (here replaced by a marker) instead of compiling.
  std::ofstream(cubins[0], std::ios::binary | std::ios::trunc) << "marker";
  const std::vector<char> hit = cuda::compile_cubin(source, "quest", {.cache_dir = dir});
  EXPECT_EQ(std::string(hit.begin(), hit.end()), "marker");
  // Another source is another entry; without the disk cache nothing is read or written.
  cuda::compile_cubin(source + "\n// changed\n", "quest", {.cache_dir = dir});
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir), std::filesystem::directory_iterator()), 4);
  const std::vector<char> fresh = cuda::compile_cubin(source, "quest", {.cache_dir = dir, .disk_cache = false});
  EXPECT_EQ(fresh, first);
}

// cached_cubin answers from this process's memory after the first call (so a flow compiled on a
// request's thread loads under the model's lock without compiling again); precompile_indexers
// compiles every pass of a staged flow.
TEST(FlowCodegen, CachedCubinsComeFromMemoryAfterTheFirstCall) {
  const std::filesystem::path dir = test::scratch_dir("flow-cache-memory");
  auto cubins = [&] {
    std::vector<std::filesystem::path> found;
    for (const auto& entry : std::filesystem::directory_iterator(dir))
      if (entry.path().extension() == ".cubin") found.push_back(entry.path());
    return found;
  };
  const std::string source = cuda::generate_indexer_source(*find_builtin_flow("quest"), {4, 128, 16}) + "\n// memory\n";
  const std::vector<char> first = cuda::cached_cubin(source, "quest", {.cache_dir = dir});
  ASSERT_EQ(cubins().size(), 1u);
  std::ofstream(cubins()[0], std::ios::binary | std::ios::trunc) << "marker";  // the disk would now say "marker"
  EXPECT_EQ(cuda::cached_cubin(source, "quest", {.cache_dir = dir}), first);
  const Flow& staged = *find_builtin_flow("quest_proxy");
  ASSERT_EQ(staged.stages.size(), 1u);
  cuda::precompile_indexers(staged, {4, 128, 16}, {.cache_dir = dir});
  EXPECT_EQ(cubins().size(), 3u);  // quest's, then quest_proxy's two passes
  cuda::precompile_indexers(*find_builtin_flow("streaming"), {4, 128, 16}, {.cache_dir = dir});  // nothing to compile
  EXPECT_EQ(cubins().size(), 3u);
}

TEST(FlowCodegen, DefaultCacheFollowsXdg) {
  const char* xdg = std::getenv("XDG_CACHE_HOME");
  const std::string saved = xdg ? xdg : "";
  setenv("XDG_CACHE_HOME", "/tmp/xdg-test", 1);
  EXPECT_EQ(cuda::default_flow_cache_dir(), std::filesystem::path("/tmp/xdg-test/vortex/flows"));
  setenv("XDG_CACHE_HOME", "relative/ignored", 1);
  const char* home = std::getenv("HOME");
  if (home != nullptr && home[0] != '\0') {
    EXPECT_EQ(cuda::default_flow_cache_dir(), std::filesystem::path(home) / ".cache" / "vortex" / "flows");
  }
  if (xdg != nullptr) {
    setenv("XDG_CACHE_HOME", saved.c_str(), 1);
  } else {
    unsetenv("XDG_CACHE_HOME");
  }
}

}  // namespace
}  // namespace vortex
