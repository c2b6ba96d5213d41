// Sparse attention end to end on the GPU against the CPU backend (the oracle), f32 on both, on the
// small Qwen3 test model: every built-in flow at a budget that leaves pages out (quest_proxy's
// stage prunes too), and auto.
//   - score with sparse_from inside the prompt: multi-token chunks with sparse rows (eager steps,
//     stateful flows in waves), log-probs within the engine-core f32 tolerance;
//   - greedy generation: decode steps (CUDA graphs), identical tokens;
//   - a continuous batch mixing specs (and dense): each sequence's tokens equal the CPU's;
//   - prefix caching: sparse flows prepared after the shared pages filled summarise them; pages
//     filled by dense steps, dense layers or graphs captured before a flow's kinds existed get
//     their summaries; many sequences listing the same cached pages fit a step's page table;
//   - 1,000 budgets of one flow share decode graphs (the key names the flow, not the budget), keep
//     the caches bounded and GPU memory flat, and still give the CPU's tokens.
// Each case also checks that the spec changes the output against dense, so a GPU that silently
// ran dense would fail.
#include <gtest/gtest.h>

#include <cmath>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_model.h"
#include "common/test_util.h"
#include "io/hf_config.h"
#include "model/weights.h"
#include "runtime/batch_engine.h"
#include "runtime/engine_access.h"
#include "vortex/engine.h"

namespace vortex {
namespace {

std::filesystem::path model_dir() { return test::data_dir() / "models" / "qwen3-f32"; }

std::unique_ptr<Engine> open(const std::string& device) {
  EngineOptions options{.prefill_chunk = 64, .max_batch = 8};
  options.device = parse_device(device);
  options.precision = Precision::kF32;
  return Engine::open(model_dir(), options);
}

std::vector<int32_t> prompt(int64_t length, int32_t offset) {
  std::vector<int32_t> ids;
  for (int64_t i = 0; i < length; ++i) ids.push_back(static_cast<int32_t>((i * 37 + offset * 11) % 500 + 3));
  return ids;
}

GenerateRequest greedy(std::vector<int32_t> ids, int64_t max_tokens) {
  GenerateRequest r;
  r.prompt = std::move(ids);
  r.max_tokens = max_tokens;
  r.ignore_eos = true;
  r.sampling.temperature = 0.0f;
  return r;
}

double max_diff(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return INFINITY;
  double worst = 0.0;
  for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, static_cast<double>(std::abs(a[i] - b[i])));
  return worst;
}

const std::vector<std::string>& specs() {
  static const std::vector<std::string> all = {
      "quest:budget=48,sink=16,window=16", "quest_gqa:budget=48,window=16,skip_layers=0",
      "centroid:budget=64,sink=16,window=32", "centroid_gqa:budget=25%,window=16",
      "meanstd:budget=48,window=16",        "h2o:budget=48,window=16",
      "oracle:budget=32,window=16",         "streaming:sink=16,window=48",
      "proxy:budget=48,sink=16,window=16",  "proxy8:budget=32,window=16",
      "quest_proxy:budget=16,window=16",    "proxy_rerank:budget=32,window=16", "auto:budget=48"};
  return all;
}

struct Engines {
  std::unique_ptr<Engine> cpu = open("cpu"), gpu = open("cuda");
};
Engines& engines() {
  static Engines e;
  return e;
}

class CudaSparseModel : public ::testing::TestWithParam<std::string> {};

TEST_P(CudaSparseModel, ScoreMatchesCpu) {
  const std::vector<int32_t> tokens = prompt(420, 3);
  ScoreOptions options;
  options.attention = GetParam();
  options.sparse_from = 150;  // the rest of the prompt attends sparsely, in chunks of 64
  const ScoreResult cpu = engines().cpu->score(tokens, options);
  const ScoreResult gpu = engines().gpu->score(tokens, options);
  const double worst = max_diff(cpu.logprobs, gpu.logprobs);
  EXPECT_LE(worst, 2e-3) << GetParam();
  const double sparse_effect = max_diff(cpu.logprobs, engines().cpu->score(tokens, 0).logprobs);
  EXPECT_GT(sparse_effect, 1e-2) << GetParam() << ": the spec does not change the log-probs; the test proves nothing";
  std::cout << GetParam() << ": cuda f32 vs cpu sparse scores max |delta| " << worst << " (sparse vs dense " << sparse_effect << ")"
            << std::endl;
}

TEST_P(CudaSparseModel, GreedyGenerationMatchesCpu) {
  GenerateRequest request;
  request.prompt = prompt(260, 5);
  request.max_tokens = 40;
  request.ignore_eos = true;
  request.sampling.temperature = 0.0f;
  request.attention = GetParam();
  const std::vector<int32_t> cpu = engines().cpu->generate(request).tokens;
  EXPECT_EQ(engines().gpu->generate(request).tokens, cpu) << GetParam();
}

INSTANTIATE_TEST_SUITE_P(Flows, CudaSparseModel, ::testing::ValuesIn(specs()), [](const auto& info) {
  std::string name = info.param.substr(0, info.param.find(':'));
  return name + "_" + std::to_string(info.index);
});

// Sequences with different specs (and dense) join one continuous batch at different steps; each
// one's tokens equal what the CPU generates for it alone.
TEST(CudaSparseBatch, MixedSpecsEqualTheCpu) {
  const std::vector<std::string> mix = {"dense", "quest:budget=32,sink=16,window=16", "streaming:sink=16,window=32",
                                        "h2o:budget=32,window=16", "centroid:budget=25%", "oracle:budget=16,window=16",
                                        "quest_proxy:budget=16,window=16", "proxy:budget=32"};
  const int64_t lengths[] = {120, 200, 90, 150, 64, 170, 180, 140};
  const int join[] = {0, 0, 0, 2, 5, 9, 3, 4};
  std::vector<GenerateRequest> requests;
  std::vector<std::vector<int32_t>> expected;
  for (size_t i = 0; i < mix.size(); ++i) {
    GenerateRequest r;
    r.prompt = prompt(lengths[i], static_cast<int32_t>(i));
    r.max_tokens = 20 + static_cast<int64_t>(i) * 2;
    r.ignore_eos = true;
    r.sampling.temperature = 0.0f;
    r.attention = mix[i];
    expected.push_back(engines().cpu->generate(r).tokens);
    requests.push_back(std::move(r));
  }
  BatchEngine& batch = batch_engine(*engines().gpu);
  std::vector<std::vector<int32_t>> got(requests.size());
  size_t finished = 0;
  int64_t most_chunks = 0;
  for (int step = 0; step < 10000 && finished < requests.size(); ++step) {
    for (size_t i = 0; i < requests.size(); ++i)
      if (join[i] == step)
        batch.submit(requests[i], {.on_token = nullptr, .on_finish = [&, i](const SequenceFinish& f) {
                                     got[i] = f.result.tokens;
                                     ++finished;
                                   }});
    most_chunks = std::max(most_chunks, batch.step().chunks);
  }
  ASSERT_EQ(finished, requests.size());
  EXPECT_GE(most_chunks, 4);
  for (size_t i = 0; i < requests.size(); ++i) EXPECT_EQ(got[i], expected[i]) << mix[i];
}

// Prefix caching on the GPU: a dense request fills the cache; sparse requests with the same prompt
// and flows this engine never prepared (their summary kinds are allocated after the shared pages
// filled) take the pages from the cache, and their tokens equal the CPU's without caching.
TEST(CudaPrefixCache, SharedPagesGetTheSummariesOfFlowsPreparedLater) {
  auto gpu = open("cuda");
  EngineOptions plain{.prefill_chunk = 64, .max_batch = 8, .prefix_caching = false};
  auto cpu = Engine::open(model_dir(), plain);
  GenerateRequest r = greedy(prompt(230, 9), 24);
  EXPECT_EQ(gpu->generate(r).tokens, cpu->generate(r).tokens);  // dense: fills the cache
  for (const char* spec : {"meanstd:budget=48,window=16", "centroid_gqa:budget=25%,window=16", "quest:budget=48,window=16"}) {
    r.attention = spec;
    const GenerateResult got = gpu->generate(r);
    EXPECT_EQ(got.timing.cached_tokens, 224) << spec;
    EXPECT_EQ(got.tokens, cpu->generate(r).tokens) << spec;
  }
  EXPECT_EQ(batch_engine(*gpu).load().pages_used, 0);
}

// The same after the flows exist: pages that dense steps fill once a flow is prepared get its
// summaries too (an H100 run found `vortex eval --device cuda --attention dense --attention quest`
// scoring quest 0 of 60 where quest alone scored 23: the dense run's cached pages had none), and a
// spec with dense layers (skip_layers) leaves summaries for a spec without them. Then a kind added
// after a decode graph was captured: the pages the next dense decode fills get it as well.
TEST(CudaPrefixCache, PagesFilledByDenseStepsOrDenseLayersGetTheSummaries) {
  auto gpu = open("cuda");
  EngineOptions plain{.prefill_chunk = 64, .max_batch = 8, .prefix_caching = false};
  auto cpu = Engine::open(model_dir(), plain);
  const std::string quest = "quest:budget=48,window=16";
  GenerateRequest warm = greedy(prompt(70, 1), 4);
  warm.attention = quest;
  EXPECT_EQ(gpu->generate(warm).tokens, cpu->generate(warm).tokens);  // quest's kinds exist from here
  GenerateRequest r = greedy(prompt(230, 9), 24);
  EXPECT_EQ(gpu->generate(r).tokens, cpu->generate(r).tokens);  // dense steps fill the cache
  r.attention = quest;
  GenerateResult got = gpu->generate(r);
  EXPECT_EQ(got.timing.cached_tokens, 224);
  EXPECT_EQ(got.tokens, cpu->generate(r).tokens) << "quest over pages dense steps filled";
  GenerateRequest skipped = greedy(prompt(200, 5), 24);
  skipped.attention = quest + ",skip_layers=0-1";  // layers 0 and 1 dense for every row
  EXPECT_EQ(gpu->generate(skipped).tokens, cpu->generate(skipped).tokens);
  skipped.attention = quest;
  got = gpu->generate(skipped);
  EXPECT_EQ(got.timing.cached_tokens, 192);
  EXPECT_EQ(got.tokens, cpu->generate(skipped).tokens) << "quest in layers another spec kept dense";
  // Dense decode graphs (summarising quest's kinds) are captured, then meanstd's kinds are added,
  // then a dense sequence decodes past page ends, and meanstd takes its pages, prompt and generated
  // tokens: the graphs captured before meanstd existed must not be replayed.
  const GenerateRequest first = greedy(prompt(100, 6), 40);
  EXPECT_EQ(gpu->generate(first).tokens, cpu->generate(first).tokens);
  GenerateRequest other = greedy(prompt(60, 7), 4);
  other.attention = "meanstd:budget=48,window=16";
  EXPECT_EQ(gpu->generate(other).tokens, cpu->generate(other).tokens);
  const GenerateRequest second = greedy(prompt(100, 8), 60);
  const std::vector<int32_t> decoded = gpu->generate(second).tokens;
  EXPECT_EQ(decoded, cpu->generate(second).tokens);
  GenerateRequest shared = greedy(prompt(100, 8), 20);
  shared.prompt.insert(shared.prompt.end(), decoded.begin(), decoded.end());
  shared.attention = "meanstd:budget=48,window=16";
  got = gpu->generate(shared);
  EXPECT_EQ(got.timing.cached_tokens, 144) << "the 9 full pages of second's 159 computed tokens";
  EXPECT_EQ(got.tokens, cpu->generate(shared).tokens) << "meanstd over pages that dense decode graphs filled";
  EXPECT_EQ(batch_engine(*gpu).load().pages_used, 0);
}

// Sequences sharing cached pages list them each: 16 sequences of one 200-token prompt in a pool
// of 24 pages put up to 16 × 13 entries in a step's page table, far past the pool (the server's
// soak with a 1,536-token KV cache failed on an H100 with "194 page-table entries exceed capacity
// 192" while the capacity was twice the pool's 96 pages). Every sequence gets the prompt's greedy
// tokens; every page comes back.
TEST(CudaPrefixCache, ManySequencesSharingPagesFitTheStepPageTable) {
  const ModelConfig config = load_model_config(model_dir());
  EngineOptions options{.prefill_chunk = 64, .max_batch = 16};
  options.device = Device::kCuda;
  options.precision = Precision::kF32;
  options.kv_memory_gib = 24.5 * 16 * static_cast<double>(config.kv_bytes_per_token(4)) / (1 << 30);  // 24 pages
  auto engine = Engine::open(model_dir(), options);
  const GenerateRequest r = greedy(prompt(200, 3), 8);
  const std::vector<int32_t> expected = engine->generate(r).tokens;  // and the prompt's pages cached
  BatchEngine& batch = batch_engine(*engine);
  std::vector<std::vector<int32_t>> got(16);
  std::vector<std::string> errors(16);
  for (size_t i = 0; i < got.size(); ++i)
    batch.submit(r, {.on_token = nullptr, .on_finish = [&, i](const SequenceFinish& f) { got[i] = f.result.tokens, errors[i] = f.error; }});
  for (int step = 0; step < 10000 && batch.has_work(); ++step) batch.step();
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(errors[i], "") << i;
    EXPECT_EQ(got[i], expected) << i;
  }
  EXPECT_EQ(batch.load().pages_used, 0);
}

// Budgets reach the kernels as uploaded rows, so a decode graph captured for one budget replays
// for another; a client sending a new budget per request neither grows the graph cache nor GPU
// memory, and every budget's tokens still equal the CPU's.
TEST(CudaSparseBatch, ThousandBudgetsShareGraphsAndStayBounded) {
  const ModelConfig config = load_model_config(model_dir());
  auto weights = std::make_shared<ModelWeights>(load_model_weights(model_dir(), config));
  cuda::CudaModel model(weights, {.precision = DType::kF32, .page_size = 16, .num_pages = 128, .max_tokens = 64});
  BatchEngine batch(model, config, nullptr, 128 * 16, 4);
  auto run = [&](const std::string& spec) {
    GenerateRequest r;
    r.prompt = prompt(200, 7);
    r.max_tokens = 6;
    r.ignore_eos = true;
    r.sampling.temperature = 0.0f;
    r.attention = spec;
    std::vector<int32_t> tokens;
    bool done = false;
    batch.submit(r, {.on_token = nullptr, .on_finish = [&](const SequenceFinish& f) { tokens = f.result.tokens, done = true; }});
    for (int step = 0; step < 1000 && !done; ++step) batch.step();
    EXPECT_TRUE(done) << spec;
    return tokens;
  };
  auto spec = [](int budget) { return "quest:budget=" + std::to_string(budget) + ",sink=16,window=16"; };
  for (int budget : {16, 48, 112}) {  // a graph captured at one budget, replayed at the others
    GenerateRequest r;
    r.prompt = prompt(200, 7);
    r.max_tokens = 6;
    r.ignore_eos = true;
    r.sampling.temperature = 0.0f;
    r.attention = spec(budget);
    EXPECT_EQ(run(spec(budget)), engines().cpu->generate(r).tokens) << spec(budget);
  }
  const size_t graphs = model.cached_graphs();
  size_t free_before = 0, free_after = 0, total = 0;
  VX_CUDA(cudaMemGetInfo(&free_before, &total));
  for (int i = 0; i < 1000; ++i) run(spec(16 + i));
  VX_CUDA(cudaMemGetInfo(&free_after, &total));
  EXPECT_LE(model.cached_graphs(), graphs + 2) << "budgets that differ only in value captured graphs of their own";
  EXPECT_LE(batch.resolved_specs(), BatchEngine::kResolvedSpecs);
  EXPECT_LT(static_cast<int64_t>(free_before) - static_cast<int64_t>(free_after), int64_t{64} << 20)
      << "1,000 budgets took GPU memory";
}

// Self-speculation on the GPU (f32): sparse draft steps (decode graphs) and dense verify chunks
// (eager, every row's argmax on the device) give the dense greedy tokens, which equal the CPU's,
// alone and in a continuous batch; every page comes back.
TEST(CudaSpeculation, GreedyEqualsDenseAndTheCpu) {
  std::vector<GenerateRequest> requests;
  std::vector<std::vector<int32_t>> expected;
  for (int32_t i = 0; i < 5; ++i) {
    GenerateRequest r;
    r.prompt = prompt(150 + 30 * i, i);
    r.max_tokens = 40;
    r.ignore_eos = true;
    r.sampling.temperature = 0.0f;
    expected.push_back(engines().cpu->generate(r).tokens);
    r.speculate = i % 2 ? "quest:budget=16,sink=16,window=16" : "auto:budget=32";
    r.gamma = i == 4 ? 0 : 2 + i;
    requests.push_back(r);
  }
  int64_t drafted = 0, accepted = 0;
  for (size_t i = 0; i < requests.size(); ++i) {
    const GenerateResult result = engines().gpu->generate(requests[i]);
    EXPECT_EQ(result.tokens, expected[i]) << "request " << i << " alone";
    drafted += result.speculation.drafted, accepted += result.speculation.accepted;
  }
  EXPECT_GT(accepted, 0);
  EXPECT_LT(accepted, drafted);  // both verdict paths ran
  BatchEngine& batch = batch_engine(*engines().gpu);
  std::vector<std::vector<int32_t>> got(requests.size());
  size_t finished = 0;
  for (int step = 0; step < 10000 && finished < requests.size(); ++step) {
    for (size_t i = 0; i < requests.size(); ++i)
      if (static_cast<int>(i) * 2 == step)
        batch.submit(requests[i], {.on_token = nullptr, .on_finish = [&, i](const SequenceFinish& f) {
                                     got[i] = f.result.tokens;
                                     ++finished;
                                   }});
    batch.step();
  }
  ASSERT_EQ(finished, requests.size());
  for (size_t i = 0; i < requests.size(); ++i) EXPECT_EQ(got[i], expected[i]) << "request " << i << " in the batch";
  EXPECT_EQ(batch.load().pages_used, 0);
  std::cout << "cuda self-speculation: " << accepted << " of " << drafted << " drafts accepted" << std::endl;
}

// Past 131,072 tokens at page 16 a sequence has more candidate pages per kv head than page_topk
// keeps in shared memory (8,192): the planner hands it a global key workspace. At 140,000 tokens
// (8,750 pages) quest (one top-k) and auto (a pruning stage, then a top-k) decode on the GPU, and
// each decoded token's log-prob (decode steps: CUDA graphs) equals the teacher-forced score of the
// same tokens with sparse_from at the prompt's end (one eager multi-row chunk): the same
// selections by two paths. A budget of more pages than a segment may select is refused by name.
// What runs on the CPU backend only is refused by name when the request arrives, never run densely
// (or wrongly) in silence.
TEST(CudaSparseBatch, CpuOnlySpecsAreRefusedByName) {
  for (const auto& [spec, says] : std::vector<std::pair<std::string, std::string>>{
           {"auto:budget=48,rest=proxy", "rest=proxy (estimating the pages a query does not attend) runs on the CPU backend only"},
           {"auto:budget=48,dense_below=0.5", "dense_below (attending densely where the selection holds too little of the attention "
                                              "mass) runs on the CPU backend only"},
           {"auto:budget=48,cover=0.5", "cover (adding pages where the selection holds too little of the attention mass) runs on "
                                        "the CPU backend only"},
           {"lsh:k=8,l=16", "lsh (LSH-sampled attention) runs on the CPU backend only"}}) {
    GenerateRequest request;
    request.prompt = prompt(200, 9);
    request.max_tokens = 4;
    request.attention = spec;
    try {
      engines().gpu->generate(request);
      ADD_FAILURE() << spec << " ran on the GPU";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(says), std::string::npos) << e.what();
    }
  }
}

TEST(CudaSparseLong, BeyondEightThousandPagesPerHead) {
  ModelConfig config = load_model_config(model_dir());
  config.max_position_embeddings = 1 << 18;
  auto weights = std::make_shared<ModelWeights>(load_model_weights(model_dir(), config));
  EngineOptions options{.page_size = 16, .max_context = 150000, .prefill_chunk = 2048, .max_batch = 1, .kv_memory_gib = 0.5};
  options.device = Device::kCuda;
  options.precision = Precision::kF32;
  auto engine = EngineAccess::from_weights(weights, options);
  const std::vector<int32_t> tokens = prompt(140000, 3);
  for (const std::string spec : {"quest:budget=2048,sink=16,window=64", "auto:budget=2048"}) {
    GenerateRequest r;
    r.prompt = tokens;
    r.max_tokens = 5;
    r.ignore_eos = true;
    r.sampling.temperature = 0.0f;
    r.attention = spec;
    r.logprobs = 0;
    std::vector<int32_t> generated;
    std::vector<float> logprobs;
    std::string error;
    bool done = false;
    BatchEngine& batch = batch_engine(*engine);
    batch.submit(r, {.on_token = [&](const TokenOutput& t) { generated.push_back(t.token), logprobs.push_back(t.logprob); },
                     .on_finish = [&](const SequenceFinish& f) { error = f.error, done = true; }});
    for (int step = 0; step < 1000 && !done; ++step) batch.step();
    ASSERT_TRUE(done) << spec;
    ASSERT_EQ(error, "") << spec;
    ASSERT_EQ(generated.size(), 5u) << spec;
    std::vector<int32_t> all = tokens;
    all.insert(all.end(), generated.begin(), generated.end());
    ScoreOptions score;
    score.attention = spec;
    score.sparse_from = static_cast<int64_t>(tokens.size());
    const ScoreResult scored = engine->score(all, score);
    // Token i is predicted at position 139,999 + i: dense for i = 0, sparse after.
    for (size_t i = 0; i < generated.size(); ++i) {
      const float expected = scored.logprobs[tokens.size() - 1 + i];
      EXPECT_TRUE(std::isfinite(logprobs[i])) << spec << " token " << i;
      EXPECT_NEAR(logprobs[i], expected, 1e-4) << spec << " token " << i;
    }
    EXPECT_EQ(batch.load().pages_used, 0) << spec;
  }
  GenerateRequest big;
  big.prompt = tokens;
  big.max_tokens = 2;
  big.ignore_eos = true;
  big.attention = "quest:budget=135000,window=64";  // 8,437 of 8,746 candidate pages
  try {
    engine->generate(big);
    ADD_FAILURE() << "a budget of more than 8,192 pages per kv head ran";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("selects at most 8192 pages"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace vortex
