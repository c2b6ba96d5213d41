// The generated flow indexers on the GPU (NVRTC → CUBIN → driver API) against the CPU interpreter:
// every built-in flow and the generator's extra cases (tests/common/flow_cases.h), random q,
// summaries reduced from random keys (stored in each field's storage type), random candidate lists (longer than a tile, one page, empty),
// two decode steps; scores and saved state within 1e-4 (normalised, fp32). Scores and the spill
// workspace are poisoned with NaN so unwritten elements fail.
#include <gtest/gtest.h>

#include "backend/cuda/flow_kernel.h"
#include "common/flow_cases.h"
#include "common/test_util.h"
#include "gpu/gpu_test_util.h"

namespace vortex {
namespace {

using cuda::FlowQueryType;
using cuda::IndexerShape;
using test::poisoned;
using test::to_device;
using test::to_host;

// Copies the case to the device, launches, copies scores and state back.
test::KernelRun gpu_run(const cuda::FlowIndexer& indexer) {
  return [&indexer](const test::IndexerCase& c, std::vector<std::vector<float>>& state) {
    auto q = to_device(c.q);
    auto q16 = to_device(c.q_bf16);
    auto pages = to_device(c.pages), offsets = to_device(c.offsets), counts = to_device(c.counts);
    std::vector<cuda::DeviceBuffer<uint8_t>> fields;
    std::vector<cuda::DeviceBuffer<float>> slots;
    for (const auto& f : c.records) fields.push_back(to_device(f));
    for (const auto& s : state) slots.push_back(to_device(s));
    auto scores = poisoned<float>(c.pages.size());
    auto spill = poisoned<float>(static_cast<size_t>(c.total() * indexer.layout().spill_floats));
    cuda::FlowKernelParams p{.q = c.shape.q_type == FlowQueryType::kBF16 ? static_cast<const void*>(q16.get()) : q.get(),
                             .pages = pages.get(), .offsets = offsets.get(), .counts = counts.get(),
                             .scores = scores.get(), .spill = spill.get(),
                             .q_row_stride = c.kv_heads * c.shape.group * c.shape.head_dim,
                             .rows = static_cast<int32_t>(c.rows), .kv_heads = static_cast<int32_t>(c.kv_heads)};
    for (size_t f = 0; f < fields.size(); ++f) p.fields[f] = fields[f].get();
    for (size_t s = 0; s < slots.size(); ++s) p.state[s] = slots[s].get();
    indexer.launch(p, c.max_pages, nullptr);
    VX_CUDA_LAUNCH();
    for (size_t s = 0; s < slots.size(); ++s) state[s] = to_host(slots[s]);
    return to_host(scores);
  };
}

class FlowKernels : public ::testing::TestWithParam<test::NamedFlow> {};

TEST_P(FlowKernels, MatchTheInterpreter) {
  const test::NamedFlow& f = GetParam();
  const std::filesystem::path cache = test::scratch_dir("gpu-flow-cache-" + f.name);
  for (const IndexerShape& shape : {IndexerShape{3, 17, 16, FlowQueryType::kF32}, IndexerShape{4, 128, 16, FlowQueryType::kBF16},
                                    IndexerShape{8, 128, 32, FlowQueryType::kF32}, IndexerShape{1, 64, 16, FlowQueryType::kBF16}}) {
    const std::string what = fmt::format("{} Hg={} D={} P={}", f.name, shape.group, shape.head_dim, shape.page_size);
    const cuda::FlowIndexer indexer(f.flow, shape, {.cache_dir = cache});
    // R = 3, G = 2: lists of 257 (several tiles), 1, 0, 33, 130 and 17 of 300 pages.
    const test::IndexerCase c = test::make_indexer_case(f.flow, shape, 3, 2, 300, {257, 1, 0, 33, 130, 17}, 11);
    EXPECT_EQ(test::compare_two_steps(c, gpu_run(indexer), 1e-4), "") << what;
  }
}

INSTANTIATE_TEST_SUITE_P(Flows, FlowKernels, ::testing::ValuesIn(test::codegen_flows()),
                         [](const auto& info) { return info.param.name; });

// Loading the same flow again reads the CUBIN from the disk cache and gives the same scores.
TEST(FlowKernelCache, ASecondLoadUsesTheCache) {
  const std::filesystem::path cache = test::scratch_dir("gpu-flow-cache-reuse");
  const Flow& quest = *find_builtin_flow("quest");
  const IndexerShape shape{8, 128, 16, FlowQueryType::kBF16};
  const test::IndexerCase c = test::make_indexer_case(quest, shape, 2, 4, 64, {64, 10}, 3);
  std::vector<std::vector<float>> state;
  const std::vector<float> first = gpu_run(cuda::FlowIndexer(quest, shape, {.cache_dir = cache}))(c, state);
  const std::vector<float> second = gpu_run(cuda::FlowIndexer(quest, shape, {.cache_dir = cache}))(c, state);
  EXPECT_EQ(first, second);
  EXPECT_LT(test::normalised_diff(first, test::interpret(c, state)), 1e-4);
}

}  // namespace
}  // namespace vortex
