// DESIGN's "no allocation in the decode loop", checked: once a batch's shapes have been seen, a
// decode step on the GPU (batch building, the sparse planner's host side, the graph key, the graph
// replay) allocates nothing on the host. The test binary's global operator new counts the
// allocations made while a counting scope is open on this thread.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <new>

#include "backend/cuda/cuda_model.h"
#include "common/test_util.h"
#include "io/hf_config.h"
#include "model/weights.h"
#include "sparse/sparse_attention.h"

namespace {
thread_local bool counting = false;
std::atomic<int64_t> allocations{0};
}  // namespace

void* operator new(std::size_t size) {
  if (counting) ++allocations;
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }

namespace vortex {
namespace {

// Four sequences of 290–320 tokens decode together, one dense, two with quest and one streaming,
// so every step is sparse and dense at once. Decode steps stay within one attention split
// (257–512 keys) and cross page boundaries (pages fill: summaries, fill and start pages change).
TEST(CudaDecodeStep, AllocatesNothingOnTheHostOnceWarm) {
  const auto dir = test::data_dir() / "models" / "qwen3-f32";
  const ModelConfig config = load_model_config(dir);
  auto weights = std::make_shared<ModelWeights>(load_model_weights(dir, config));
  cuda::CudaModel model(weights, {.precision = DType::kF32, .page_size = 16, .num_pages = 128, .max_tokens = 64});
  const auto quest = resolve_attention("quest:budget=48,sink=16,window=16", 16);
  const auto streaming = resolve_attention("streaming:sink=16,window=32", 16);
  for (const auto& a : {quest, streaming}) model.compile_sparse(*a), model.prepare_sparse(*a);
  const SparseAttention* specs[] = {nullptr, quest.get(), streaming.get(), quest.get()};
  const int64_t lengths[] = {290, 300, 310, 320};

  std::vector<std::vector<int32_t>> tokens(4), pages(4);
  std::vector<int32_t> ids;
  for (size_t s = 0; s < 4; ++s) {
    for (int64_t i = 0; i < lengths[s]; ++i) tokens[s].push_back(static_cast<int32_t>((i * 37 + static_cast<int64_t>(s) * 11) % 500 + 3));
    ASSERT_TRUE(model.reserve(pages[s], lengths[s] + 40));
    for (int64_t start = 0; start < lengths[s]; start += 64) {  // the prompt, densely, 64 tokens a forward
      const SequenceChunk chunk{.tokens = tokens[s].data() + start, .count = std::min<int64_t>(64, lengths[s] - start), .start = start,
                                .page_table = &pages[s], .attention = specs[s], .sparse_from = lengths[s]};
      model.forward_greedy({&chunk, 1}, ids);
    }
    tokens[s].push_back(ids.front());
  }
  std::vector<SequenceChunk> chunks(4);
  auto step = [&] {
    for (size_t s = 0; s < 4; ++s) {
      const auto last = static_cast<int64_t>(tokens[s].size()) - 1;
      chunks[s] = {.tokens = &tokens[s][static_cast<size_t>(last)], .count = 1, .start = last, .page_table = &pages[s],
                   .attention = specs[s], .sparse_from = lengths[s]};
    }
    counting = true;
    model.forward_greedy(chunks, ids);
    counting = false;
    for (size_t s = 0; s < 4; ++s) tokens[s].push_back(ids[s]);
  };
  for (int i = 0; i < 4; ++i) step();  // the first step of the shape runs eagerly, the second captures
  const ForwardCounters before = model.forward_counters();
  allocations = 0;
  for (int i = 0; i < 30; ++i) step();
  const ForwardCounters after = model.forward_counters();
  EXPECT_EQ(allocations.load(), 0) << "host allocations in 30 warm decode steps";
  EXPECT_EQ(after.replayed - before.replayed, 30) << "the warm steps did not all replay a graph";
  EXPECT_EQ(after.graph_resets, before.graph_resets);
}

}  // namespace
}  // namespace vortex
