// The batched engine on the small Qwen3 test model: greedy (and seeded) output is identical
// whether a request runs alone or in a batch — mixed with other prefill chunks and decodes,
// joining mid-way, with other attention specs, or preempted and recomputed — and cancellation
// gives every page back.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <fstream>
#include <functional>
#include <future>
#include <iostream>
#include <map>
#include <mutex>
#include <string>
#include <thread>

#include <unistd.h>

#include "backend/cpu/forward.h"
#include "common/device_sampling_model.h"
#include "common/test_util.h"
#include "core/error.h"
#include "io/chat_template.h"
#include "io/hf_config.h"
#include "io/tokenizer.h"
#include "model/weights.h"
#include "runtime/batch_engine.h"
#include "runtime/engine_access.h"
#include "runtime/sampler.h"
#include "runtime/serving_engine.h"
#include "sparse/sparse_attention.h"
#include "vortex/engine.h"

namespace vortex {
namespace {

std::filesystem::path model_dir() { return test::data_dir() / "models" / "qwen3-f32"; }

// KV memory for `pages` pages of 16 tokens of the test model (2 layers × 2 kv heads × 32 dims, fp32).
double kv_gib_for_pages(const Engine& engine, int64_t pages) {
  return static_cast<double>(pages * 16 * EngineAccess::config(engine).kv_bytes_per_token(4)) / (1 << 30);
}

GenerateRequest request(int64_t prompt_length, int32_t offset, int64_t max_tokens, float temperature = 0.0f) {
  GenerateRequest r;
  for (int64_t i = 0; i < prompt_length; ++i) r.prompt.push_back(static_cast<int32_t>((i * 37 + offset * 11) % 500 + 3));
  r.max_tokens = max_tokens;
  r.ignore_eos = true;  // fixed lengths, so sequences overlap for many steps
  r.sampling.temperature = temperature;
  r.sampling.seed = static_cast<uint64_t>(offset);
  return r;
}

std::vector<GenerateRequest> mixed_requests(float temperature) {
  std::vector<GenerateRequest> requests;
  const int64_t lengths[] = {5, 40, 1, 23, 17, 64};
  for (int32_t i = 0; i < 6; ++i) requests.push_back(request(lengths[i], i, 12 + i * 3, temperature));
  return requests;
}

std::vector<std::vector<int32_t>> alone(Engine& engine, const std::vector<GenerateRequest>& requests) {
  std::vector<std::vector<int32_t>> out;
  for (const auto& r : requests) out.push_back(engine.generate(r).tokens);
  return out;
}

// Submits requests[i] after `join_step[i]` steps and steps until all finish.
struct BatchRun {
  std::vector<std::vector<int32_t>> tokens;
  int64_t preemptions = 0, max_chunks = 0;
};
BatchRun batched(BatchEngine& batch, const std::vector<GenerateRequest>& requests, const std::vector<int>& join_step) {
  BatchRun run;
  run.tokens.resize(requests.size());
  size_t finished = 0;
  for (int step = 0; step < 10000 && finished < requests.size(); ++step) {
    for (size_t i = 0; i < requests.size(); ++i) {
      if (join_step[i] != step) continue;
      batch.submit(requests[i], {.on_token = nullptr, .on_finish = [&, i](const SequenceFinish& f) {
                                   run.tokens[i] = f.result.tokens;
                                   ++finished;
                                 }});
    }
    StepStats stats = batch.step();
    run.preemptions += stats.preempted;
    run.max_chunks = std::max(run.max_chunks, stats.chunks);
  }
  EXPECT_EQ(finished, requests.size());
  return run;
}

TEST(BatchEngine, GreedyInABatchEqualsGreedyAlone) {
  auto engine = Engine::open(model_dir(), {.prefill_chunk = 16, .max_batch = 8});
  auto requests = mixed_requests(0.0f);
  auto expected = alone(*engine, requests);
  BatchRun run = batched(batch_engine(*engine), requests, {0, 0, 0, 3, 7, 9});
  EXPECT_GE(run.max_chunks, 4);  // really batched: several sequences per forward
  for (size_t i = 0; i < requests.size(); ++i) EXPECT_EQ(run.tokens[i], expected[i]) << "request " << i;
  EXPECT_EQ(batch_engine(*engine).load().pages_used, 0);
}

TEST(BatchEngine, SeededSamplingInABatchEqualsAlone) {
  auto engine = Engine::open(model_dir(), {.prefill_chunk = 16, .max_batch = 8});
  auto requests = mixed_requests(0.8f);
  auto expected = alone(*engine, requests);
  BatchRun run = batched(batch_engine(*engine), requests, {0, 1, 2, 3, 4, 5});
  for (size_t i = 0; i < requests.size(); ++i) EXPECT_EQ(run.tokens[i], expected[i]) << "request " << i;
}

// BatchEngine with a backend that samples on its device: every sequence gets the tokens it gets
// with host sampling (same seeds, same streams), and a step with a request that asks for
// log-probabilities brings the logits back instead.
TEST(BatchEngine, DeviceSamplingGivesTheHostSamplersTokens) {
  auto engine = Engine::open(model_dir(), {.prefill_chunk = 16, .max_batch = 8});
  auto requests = mixed_requests(0.8f);
  requests[1].sampling = {.temperature = 0.7f, .top_k = 20, .top_p = 0.9f, .min_p = 0.02f, .seed = 31};
  requests[2].sampling.temperature = 0.0f;  // greedy rows mixed in
  auto expected = alone(*engine, requests);
  const ModelConfig& config = EngineAccess::config(*engine);
  test::DeviceSamplingModel model(model_dir(), config, 64, 16);
  BatchEngine batch(model, config, nullptr, 64 * 16, 8);
  BatchRun run = batched(batch, requests, {0, 1, 2, 3, 4, 5});
  for (size_t i = 0; i < requests.size(); ++i) EXPECT_EQ(run.tokens[i], expected[i]) << "request " << i;
  EXPECT_GT(model.sampled_steps, 0);
  const int64_t sampled = model.sampled_steps;
  GenerateRequest with_logprobs = requests[0];
  with_logprobs.logprobs = 2;
  BatchRun logprob_run = batched(batch, {with_logprobs}, {0});
  EXPECT_EQ(logprob_run.tokens[0], expected[0]);
  EXPECT_EQ(model.sampled_steps, sampled);  // every step of that request went through the logits
}

// Greedy self-speculation on a backend that samples on its device: drafts and verdicts come from
// each row's argmax (forward_sample), the output is dense greedy's; a sampled speculating request
// brings the logits back.
TEST(BatchEngine, GreedySpeculationOnADeviceSamplingBackendNeedsNoLogits) {
  auto engine = Engine::open(model_dir(), {.prefill_chunk = 64, .max_batch = 8});
  std::vector<GenerateRequest> requests;
  for (int32_t i = 0; i < 4; ++i) {
    requests.push_back(request(130 + 20 * i, i, 20));
    requests.back().speculate = "quest:budget=16,sink=16,window=16";
    requests.back().gamma = 2 + i;
  }
  auto expected = alone(*engine, requests);
  for (size_t i = 0; i < requests.size(); ++i) {
    GenerateRequest dense = requests[i];
    dense.speculate.clear(), dense.gamma = 0;
    EXPECT_EQ(expected[i], engine->generate(dense).tokens) << i;
  }
  const ModelConfig& config = EngineAccess::config(*engine);
  test::DeviceSamplingModel model(model_dir(), config, 128, 64);
  BatchEngine batch(model, config, nullptr, 128 * 16, 8);
  BatchRun run = batched(batch, requests, {0, 0, 2, 5});
  for (size_t i = 0; i < requests.size(); ++i) EXPECT_EQ(run.tokens[i], expected[i]) << "request " << i;
  EXPECT_GT(batch.speculation_totals().verifies, 0);
  EXPECT_EQ(model.logit_steps, 0);
  GenerateRequest sampled = requests[0];
  sampled.sampling.temperature = 0.8f;
  BatchRun sampled_run = batched(batch, {sampled}, {0});
  EXPECT_EQ(sampled_run.tokens[0].size(), 20u);
  EXPECT_GT(model.logit_steps, 0);
  EXPECT_EQ(batch.load().pages_used, 0);
}

TEST(BatchEngine, PreemptionRecomputesAndKeepsTheOutput) {
  EngineOptions options{.prefill_chunk = 32, .max_batch = 8};
  auto probe = Engine::open(model_dir(), options);
  options.kv_memory_gib = kv_gib_for_pages(*probe, 10);  // 160 tokens for six sequences of up to 95
  auto engine = Engine::open(model_dir(), options);
  ASSERT_EQ(batch_engine(*engine).load().pages_free, 10);
  auto requests = mixed_requests(0.0f);
  auto expected = alone(*engine, requests);
  BatchRun run = batched(batch_engine(*engine), requests, {0, 0, 0, 0, 0, 0});
  EXPECT_GT(run.preemptions, 0);
  for (size_t i = 0; i < requests.size(); ++i) EXPECT_EQ(run.tokens[i], expected[i]) << "request " << i;
  EXPECT_EQ(batch_engine(*engine).load().pages_used, 0);
}

// Long prompts with different attention specs (sparse attention starts after the prompt, so the
// prompts are long enough for the budgets to leave pages out).
std::vector<GenerateRequest> mixed_spec_requests() {
  const char* specs[] = {"dense", "quest:budget=32,sink=16,window=16", "streaming:sink=16,window=32", "h2o:budget=32,window=16",
                         "centroid:budget=25%", "oracle:budget=16,window=16"};
  const int64_t lengths[] = {120, 200, 90, 150, 64, 170};
  std::vector<GenerateRequest> requests;
  for (int32_t i = 0; i < 6; ++i) {
    requests.push_back(request(lengths[i], i, 20 + i * 2));
    requests.back().attention = specs[i];
  }
  return requests;
}

// Every sequence keeps its own spec in a mixed batch: greedy output equals the output alone, and
// the sparse specs really change it (compared with the same request dense).
TEST(BatchEngine, MixedAttentionSpecsInABatchEqualAlone) {
  auto engine = Engine::open(model_dir(), {.prefill_chunk = 64, .max_batch = 8});
  auto requests = mixed_spec_requests();
  auto expected = alone(*engine, requests);
  int differ = 0;
  for (size_t i = 1; i < requests.size(); ++i) {
    GenerateRequest dense = requests[i];
    dense.attention = "dense";
    differ += engine->generate(dense).tokens != expected[i];
  }
  EXPECT_GE(differ, 3);
  BatchRun run = batched(batch_engine(*engine), requests, {0, 0, 0, 2, 5, 9});
  EXPECT_GE(run.max_chunks, 4);
  for (size_t i = 0; i < requests.size(); ++i) EXPECT_EQ(run.tokens[i], expected[i]) << requests[i].attention;
  EXPECT_EQ(batch_engine(*engine).load().pages_used, 0);
}

// Preempted sparse sequences are recomputed as a prefill whose generated positions attend
// sparsely again, in order (h2o's accumulated state included): the output does not change.
TEST(BatchEngine, PreemptedSparseSequencesKeepTheirOutput) {
  EngineOptions options{.prefill_chunk = 64, .max_batch = 8};
  auto probe = Engine::open(model_dir(), options);
  options.kv_memory_gib = kv_gib_for_pages(*probe, 20);  // 320 tokens for six sequences of up to 250
  auto engine = Engine::open(model_dir(), options);
  auto requests = mixed_spec_requests();
  for (auto& r : requests) r.max_tokens += 30;  // long decodes: sequences are preempted after generating
  auto expected = alone(*engine, requests);
  BatchRun run = batched(batch_engine(*engine), requests, {0, 0, 0, 0, 0, 0});
  EXPECT_GT(run.preemptions, 0);
  for (size_t i = 0; i < requests.size(); ++i) EXPECT_EQ(run.tokens[i], expected[i]) << requests[i].attention;
  EXPECT_EQ(batch_engine(*engine).load().pages_used, 0);
}

// A decode step reports the pages its attention reads: every page for a dense sequence; for a
// sparse one the always-kept pages plus k candidates in sparse layers, every page in dense ones
// (averaged over the test model's 2 layers).
TEST(BatchEngine, DecodeStepsCountThePagesTheyAttend) {
  auto engine = Engine::open(model_dir(), {.prefill_chunk = 256, .max_batch = 4});
  // position p of a 200-token prompt: pages 0..p/16; sink page 0, window page(s) p-15..p, 2 selected.
  auto sparse_pages = [](int64_t p) { return int64_t{1} + ((p - 15) / 16 == p / 16 ? 1 : 2) + 2; };
  struct Case {
    const char* attention;
    std::function<int64_t(int64_t)> pages;  // of the decode token at position p
  };
  const Case cases[] = {
      {"dense", [](int64_t p) { return p / 16 + 1; }},
      {"quest:budget=32,sink=16,window=16", sparse_pages},
      {"quest:budget=32,sink=16,window=16,skip_layers=1", [&](int64_t p) { return (p / 16 + 1 + sparse_pages(p) + 1) / 2; }},
      {"quest:budget=100000,window=16", [](int64_t p) { return p / 16 + 1; }},
  };
  bool first = true;
  for (const Case& c : cases) {
    GenerateRequest r = request(200, 1, 24);
    r.attention = c.attention;
    bool done = false;
    batch_engine(*engine).submit(r, {.on_token = nullptr, .on_finish = [&](const SequenceFinish&) { done = true; }});
    // The prompt in one chunk; after the first case its 12 full pages come from the prefix cache.
    EXPECT_EQ(batch_engine(*engine).step().tokens, first ? 200 : 200 - 12 * 16);
    first = false;
    int64_t position = 200;                          // of the first decode token
    while (!done) {
      StepStats stats = batch_engine(*engine).step();
      ASSERT_EQ(stats.tokens, 1);
      EXPECT_EQ(stats.pages_attended, c.pages(position)) << c.attention << " at " << position;
      ++position;
    }
    EXPECT_EQ(position, 223) << c.attention;  // 23 decode steps after the token sampled from the prompt
  }
}

TEST(BatchEngine, CancelFreesPagesAndStopsCallbacks) {
  auto engine = Engine::open(model_dir(), {.max_batch = 4});
  BatchEngine& batch = batch_engine(*engine);
  int tokens = 0, finishes = 0;
  SequenceCallbacks callbacks{.on_token = [&](const TokenOutput&) { ++tokens; }, .on_finish = [&](const SequenceFinish&) { ++finishes; }};
  SequenceId a = batch.submit(request(40, 1, 100), callbacks);
  SequenceId b = batch.submit(request(20, 2, 100), callbacks);
  for (int i = 0; i < 5; ++i) batch.step();
  EXPECT_GT(batch.load().pages_used, 0);
  EXPECT_TRUE(batch.cancel(a));
  EXPECT_TRUE(batch.cancel(b));
  EXPECT_FALSE(batch.cancel(b));
  EXPECT_EQ(batch.load().pages_used, 0);
  EXPECT_FALSE(batch.has_work());
  int before = tokens;
  batch.step();
  EXPECT_EQ(tokens, before);
  EXPECT_EQ(finishes, 0);
}

// ---- Prefix caching: shared pages change no output, and nothing leaks.

// Runs `requests` (submitted together, `cancel_after` steps later the ones flagged cancelled) and
// returns each one's tokens (empty when cancelled).
std::vector<std::vector<int32_t>> run_together(BatchEngine& batch, const std::vector<GenerateRequest>& requests,
                                               const std::vector<bool>& cancelled = {}, int cancel_after = 3) {
  std::vector<std::vector<int32_t>> out(requests.size());
  std::vector<SequenceId> ids;
  for (size_t i = 0; i < requests.size(); ++i)
    ids.push_back(batch.submit(requests[i], {.on_token = nullptr, .on_finish = [&out, i](const SequenceFinish& f) {
                                               out[i] = f.result.tokens;
                                             }}));
  for (int step = 0; batch.has_work() && step < 100000; ++step) {
    if (step == cancel_after)
      for (size_t i = 0; i < cancelled.size(); ++i)
        if (cancelled[i]) batch.cancel(ids[i]);
    batch.step();
  }
  return out;
}

// K = 8 seeded samples of one 100-token prompt: the prompt's 6 full pages are computed once, the
// other 7 samples take them from the cache, and every sample equals the same run without caching.
TEST(BatchEngine, SamplesOfOnePromptShareItsPagesAndKeepTheirOutput) {
  std::vector<GenerateRequest> samples;
  for (int32_t k = 0; k < 8; ++k) {
    samples.push_back(request(100, 3, 20, 0.9f));
    samples.back().sampling.seed = static_cast<uint64_t>(100 + k);
  }
  auto plain = Engine::open(model_dir(), {.prefill_chunk = 256, .max_batch = 8, .prefix_caching = false});
  auto cached = Engine::open(model_dir(), {.prefill_chunk = 256, .max_batch = 8});
  const auto expected = run_together(batch_engine(*plain), samples);
  int64_t computed = 0;  // tokens through the forward, prompt and decode
  std::vector<std::vector<int32_t>> got(samples.size());
  for (size_t i = 0; i < samples.size(); ++i)
    batch_engine(*cached).submit(samples[i], {.on_token = nullptr, .on_finish = [&got, i](const SequenceFinish& f) {
                                          got[i] = f.result.tokens;
                                          EXPECT_EQ(f.result.timing.cached_tokens, i == 0 ? 0 : 96);
                                        }});
  while (batch_engine(*cached).has_work()) computed += batch_engine(*cached).step().tokens;
  EXPECT_EQ(got, expected);
  EXPECT_NE(expected[0], expected[1]);  // the seeds differ, so do the samples
  EXPECT_EQ(computed, 100 + 7 * 4 + 8 * 19);  // the prompt once, each sample its last 4 prompt tokens, 19 decodes each
  const BatchLoad load = batch_engine(*cached).load();
  EXPECT_EQ(load.prefix.hit_tokens, 7 * 96);
  EXPECT_EQ(load.prefix.lookup_tokens, 8 * 100);
  EXPECT_EQ(load.pages_used, 0);
  EXPECT_GT(load.pages_cached, 0);
  EXPECT_EQ(batch_engine(*plain).load().pages_cached, 0);
}

// Dense, sparse and stateful (h2o) sequences over one common prompt, in a pool small enough to
// preempt and evict, two of them cancelled mid-way: the output of every other one equals the run
// without caching, and no page stays held.
TEST(BatchEngine, PrefixSharingUnderPreemptionCancellationAndEvictionChangesNoOutput) {
  const char* specs[] = {"dense", "quest:budget=32,sink=16,window=16", "h2o:budget=32,window=16", "dense",
                         "streaming:sink=16,window=32", "dense", "quest:budget=32,sink=16,window=16", "dense"};
  std::vector<GenerateRequest> requests;
  for (int32_t i = 0; i < 8; ++i) {
    requests.push_back(request(120 + (i % 3) * 9, 5, 50 + i * 3));  // one prompt, three lengths
    requests.back().attention = specs[i];
    if (i >= 5) requests.back().prompt[60] = 7;  // a second prompt sharing the first 3 pages
  }
  const std::vector<bool> cancelled = {false, false, false, true, false, false, true, false};
  EngineOptions options{.prefill_chunk = 64, .max_batch = 8};
  auto probe = Engine::open(model_dir(), options);
  options.kv_memory_gib = kv_gib_for_pages(*probe, 22);  // 352 tokens for 8 sequences of up to ~200
  options.prefix_caching = false;
  auto plain = Engine::open(model_dir(), options);
  options.prefix_caching = true;
  auto cached = Engine::open(model_dir(), options);
  const auto expected = run_together(batch_engine(*plain), requests, cancelled);
  for (int round = 0; round < 2; ++round) {  // the second round starts with a warm cache
    int64_t preempted = 0;
    std::vector<std::vector<int32_t>> got(requests.size());
    std::vector<SequenceId> ids;
    for (size_t i = 0; i < requests.size(); ++i)
      ids.push_back(batch_engine(*cached).submit(requests[i], {.on_token = nullptr, .on_finish = [&got, i](const SequenceFinish& f) {
                                                           got[i] = f.result.tokens;
                                                         }}));
    for (int step = 0; batch_engine(*cached).has_work(); ++step) {
      if (step == 3)
        for (size_t i = 0; i < cancelled.size(); ++i)
          if (cancelled[i]) batch_engine(*cached).cancel(ids[i]);
      preempted += batch_engine(*cached).step().preempted;
    }
    for (size_t i = 0; i < requests.size(); ++i)
      if (!cancelled[i]) {
        EXPECT_EQ(got[i], expected[i]) << "round " << round << ", " << specs[i];
      }
    EXPECT_GT(preempted, 0) << "round " << round;
    EXPECT_EQ(batch_engine(*cached).load().pages_used, 0);
  }
  EXPECT_GT(batch_engine(*cached).load().prefix.hit_tokens, 0);
}

TEST(BatchEngine, RejectsBadRequestsByName) {
  auto engine = Engine::open(model_dir());
  BatchEngine& batch = batch_engine(*engine);
  auto expect_error = [&](GenerateRequest r, const std::string& needle) {
    try {
      batch.validate(r);
      ADD_FAILURE() << "no error for " << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_error(request(0, 0, 4), "empty");
  expect_error(request(engine->max_context(), 0, 4), "context");
  auto r = request(4, 0, 4);
  r.attention = "quest:budget=64";
  EXPECT_NO_THROW(batch.validate(r));  // the CPU backend runs sparse attention
  r.attention = "quest:budget=x";
  expect_error(r, "budget");
  r.attention = "quest:budget=64,page=32";
  expect_error(r, "page=32 must equal the KV page size 16");
  r.attention = "flow:/no/such.flow,budget=64";
  expect_error(r, "/no/such.flow");
  r = request(4, 0, -1);
  expect_error(r, "max_tokens");
}

// The public header's model and text API (model_info, tokenize, detokenize, chat_tokens) gives
// what the internal config, tokenizer and chat template give; without a tokenizer it says so.
TEST(Engine, PublicModelAndTextApiMatchesTheInternals) {
  auto engine = Engine::open(model_dir());
  const ModelInfo info = engine->model_info();
  const ModelConfig& config = EngineAccess::config(*engine);
  EXPECT_EQ(info.architecture, "Qwen3ForCausalLM");
  EXPECT_EQ(info.vocab_size, config.vocab_size);
  EXPECT_EQ(info.hidden_size, config.hidden_size);
  EXPECT_EQ(info.num_layers, config.num_layers);
  EXPECT_EQ(info.num_heads, config.num_heads);
  EXPECT_EQ(info.num_kv_heads, config.num_kv_heads);
  EXPECT_EQ(info.head_dim, config.head_dim);
  EXPECT_EQ(info.max_position_embeddings, config.max_position_embeddings);
  EXPECT_EQ(info.eos_token_ids, config.eos_token_ids);
  ASSERT_TRUE(engine->has_tokenizer());
  ASSERT_TRUE(engine->has_chat_template());
  const std::string text = "The engine reads the pages of keys";
  const std::vector<int32_t> ids = engine->tokenize(text);
  EXPECT_EQ(ids, EngineAccess::require_tokenizer(*engine).encode(text));
  EXPECT_EQ(engine->detokenize(ids), text);
  const std::string messages = R"([{"role": "user", "content": "Hello there"}])";
  EXPECT_EQ(engine->chat_tokens(messages), EngineAccess::require_tokenizer(*engine).encode(EngineAccess::require_chat_template(*engine).apply(
                                               nlohmann::json::parse(messages), ChatTemplateOptions{})));
  EXPECT_THROW(engine->chat_tokens(R"({"role": "user"})"), Error);  // not an array

  auto bare = EngineAccess::from_weights(std::make_shared<ModelWeights>(random_model_weights(config, DType::kF32, 1)));
  EXPECT_FALSE(bare->has_tokenizer());
  EXPECT_FALSE(bare->has_chat_template());
  EXPECT_EQ(bare->model_info().num_layers, config.num_layers);
  try {
    bare->tokenize("hello");
    ADD_FAILURE() << "tokenize without a tokenizer";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no tokenizer.json"), std::string::npos) << e.what();
  }
}

// A running ServingEngine owns its engine: a direct generate() or score() on it is refused by
// name (they would step the batch from a second thread), as is a second ServingEngine; the
// server's own requests still run, and once it stops, generate() works again.
TEST(ServingEngine, OwnsItsEngineWhileItRuns) {
  auto engine = Engine::open(model_dir(), {.prefill_chunk = 16, .max_batch = 4});
  const GenerateRequest r = request(12, 3, 5);
  const std::vector<int32_t> expected = engine->generate(r).tokens;
  auto expect_in_use = [](const std::function<void()>& call, const std::string& caller) {
    try {
      call();
      ADD_FAILURE() << caller << " ran while a ServingEngine owned the engine";
    } catch (const Error& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find(caller + ": this engine is in use by a ServingEngine"), std::string::npos) << what;
    }
  };
  {
    ServingEngine serving(batch_engine(*engine), nullptr);
    expect_in_use([&] { engine->generate(r); }, "Engine::generate");
    expect_in_use([&] { engine->score(r.prompt); }, "Engine::score");
    EXPECT_THROW(ServingEngine(batch_engine(*engine), nullptr), Error);
    auto stream = serving.submit({r});
    std::vector<int32_t> got;
    StreamEvent event;
    for (int waits = 0; waits < 6000 && !stream->done(); ++waits)
      if (stream->next(event, std::chrono::milliseconds(10)) && event.kind == StreamEvent::Kind::kToken) got.push_back(event.token.token);
    EXPECT_EQ(got, expected);
  }
  EXPECT_EQ(engine->generate(r).tokens, expected);
  EXPECT_NO_THROW(engine->score(r.prompt));
}

// --kv-dtype on the CPU: the cache keeps what the GPU would store, so scores move a little and
// only a little; what cannot run where it is asked names the option.
TEST(Engine, KvDtypeRoundsTheCpuCacheAndNamesItsOptionWhenRefused) {
  std::vector<int32_t> tokens;
  for (int i = 0; i < 40; ++i) tokens.push_back(static_cast<int32_t>((i * 37 + 11) % 400));
  auto f32 = Engine::open(model_dir(), {});
  EXPECT_EQ(f32->kv_dtype(), KvDtype::kF32);
  const std::vector<float> base = f32->score(tokens).logprobs;
  for (KvDtype kv : {KvDtype::kBf16, KvDtype::kFp8, KvDtype::kFp8Tensor}) {
    auto engine = Engine::open(model_dir(), {.kv_dtype = kv});
    EXPECT_EQ(engine->kv_dtype(), kv);
    const std::vector<float> got = engine->score(tokens).logprobs;
    ASSERT_EQ(got.size(), base.size());
    float worst = 0.0f, total = 0.0f;
    for (size_t i = 0; i < got.size(); ++i) worst = std::max(worst, std::fabs(got[i] - base[i])), total += std::fabs(got[i] - base[i]);
    EXPECT_GT(worst, 0.0f) << kv_dtype_name(kv);  // the rounding is applied
    std::cout << kv_dtype_name(kv) << " worst " << worst << " mean " << total / static_cast<float>(got.size()) << std::endl;
    // On this random-weights model over these 40 tokens (measured 2026-12-08): fp8 with rotated int8
    // keys worst 0.25, mean 0.074; fp8-tensor (e4m3 keys, unscaled) 0.43, 0.15. Earlier formats: e4m3
    // keys with row scales 0.43 (0.9-1.2 over 300-token sequences), rotated e4m3 keys 1.15, means
    // 0.15-0.23 — the bounds were loosened to 1.5 / 0.3 for those and are now set per type again.
    const float worst_bound = kv == KvDtype::kBf16 ? 0.05f : kv == KvDtype::kFp8 ? 0.5f : 1.5f;
    const float mean_bound = kv == KvDtype::kBf16 ? 0.01f : kv == KvDtype::kFp8 ? 0.12f : 0.3f;
    EXPECT_LT(worst, worst_bound) << kv_dtype_name(kv);
    EXPECT_LT(total / static_cast<float>(got.size()), mean_bound) << kv_dtype_name(kv);
  }
  EXPECT_EQ(parse_kv_dtype("fp8"), KvDtype::kFp8);
  auto refused = [](const EngineOptions& options, const std::string& words) {
    try {
      Engine::open(model_dir(), options);
      ADD_FAILURE() << "opened: " << words;
    } catch (const OptionError& e) {
      EXPECT_EQ(e.option(), "kv_dtype");
      EXPECT_NE(std::string(e.what()).find(words), std::string::npos) << e.what();
    }
  };
  refused({.device = Device::kCuda, .kv_dtype = KvDtype::kFp8Tensor}, "CPU only");
  refused({.device = Device::kCuda, .precision = Precision::kF32, .kv_dtype = KvDtype::kBf16}, "needs precision bf16");
  refused({.device = Device::kCuda, .kv_dtype = KvDtype::kF32}, "needs precision f32");
  EXPECT_THROW(parse_kv_dtype("fp16"), OptionError);
}

TEST(ServingEngine, ConcurrentSubmittersGetTheirOwnTokens) {
  auto engine = Engine::open(model_dir(), {.prefill_chunk = 16, .max_batch = 4});
  auto requests = mixed_requests(0.0f);
  auto expected = alone(*engine, requests);
  ServingEngine serving(batch_engine(*engine), nullptr);
  std::vector<std::vector<int32_t>> got(requests.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < requests.size(); ++i)
    threads.emplace_back([&, i] {
      auto stream = serving.submit({requests[i]});
      StreamEvent event;
      for (int waits = 0; waits < 6000 && !stream->done(); ++waits)
        if (stream->next(event, std::chrono::milliseconds(10)) && event.kind == StreamEvent::Kind::kToken)
          got[i].push_back(event.token.token);
    });
  for (auto& t : threads) t.join();
  serving.shutdown();
  for (size_t i = 0; i < requests.size(); ++i) EXPECT_EQ(got[i], expected[i]) << "request " << i;
  EXPECT_EQ(batch_engine(*engine).load().pages_used, 0);
}

// The CPU model, counting prepare_sparse calls per spec text and whether one came while a forward
// pass ran (the CUDA backend's prepare_sparse changes the planner state that its forward reads).
class PreparingModel : public cpu::CpuModel {
 public:
  using cpu::CpuModel::CpuModel;
  void compile_sparse(const SparseAttention& attention) override {
    if (on_compile) on_compile(attention);
  }
  void prepare_sparse(const SparseAttention& attention) override {
    if (in_forward_) ++overlaps;
    std::lock_guard lock(mutex_);
    ++prepared[attention.text];
  }
  void forward(std::span<const SequenceChunk> chunks, std::vector<float>& logits) override {
    in_forward_ = true;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));  // widens the window a racing prepare would hit
    cpu::CpuModel::forward(chunks, logits);
    in_forward_ = false;
  }
  std::function<void(const SparseAttention&)> on_compile;  // runs on the thread that resolves a spec
  std::atomic<int> overlaps{0};
  std::mutex mutex_;
  std::map<std::string, int> prepared;

 private:
  std::atomic<bool> in_forward_{false};
};

// A ServingEngine over a PreparingModel of the test model (64 pages, batches of 4).
struct PreparingServer {
  std::unique_ptr<Engine> engine = Engine::open(model_dir(), {.prefill_chunk = 16, .max_batch = 4});
  const ModelConfig& config = EngineAccess::config(*engine);
  PreparingModel model{std::make_shared<ModelWeights>(load_model_weights(model_dir(), config)),
                       {.num_layers = config.num_layers, .num_pages = 64, .num_kv_heads = config.num_kv_heads, .page_size = 16,
                        .head_dim = config.head_dim},
                       16};
  BatchEngine batch{model, config, nullptr, 64 * 16, 4};
  ServingEngine serving{batch, nullptr};
};

// Requests arrive on many threads while the engine steps: each sparse spec text is prepared once
// (not once per request, which grew the CUDA planner's table of flows without bound), and never
// while a forward pass runs.
TEST(ServingEngine, SparseSpecsArePreparedOncePerTextAndNeverDuringAForward) {
  PreparingServer server;
  PreparingModel& model = server.model;
  ServingEngine& serving = server.serving;
  const std::vector<std::string> specs = {"quest:budget=32,sink=16,window=16", "streaming:sink=16,window=32", "dense", ""};
  std::vector<int> finished(12, 0);
  std::vector<std::thread> threads;
  for (int i = 0; i < 12; ++i)
    threads.emplace_back([&, i] {
      GenerateRequest r = request(40, i, 6);
      r.attention = specs[static_cast<size_t>(i) % specs.size()];
      auto stream = serving.submit({r});
      StreamEvent event;
      for (int waits = 0; waits < 6000 && !stream->done(); ++waits)
        if (stream->next(event, std::chrono::milliseconds(10)) && event.kind == StreamEvent::Kind::kFinish) finished[static_cast<size_t>(i)] = 1;
    });
  for (auto& t : threads) t.join();
  serving.shutdown();
  EXPECT_EQ(std::count(finished.begin(), finished.end(), 1), 12);
  EXPECT_EQ(model.overlaps, 0);
  EXPECT_EQ(model.prepared.size(), 2u);
  for (const auto& [text, count] : model.prepared) EXPECT_EQ(count, 1) << text;
}

// A spec's first use compiles its flow (NVRTC on the GPU: seconds) outside the lock that forward
// passes hold: a sequence already running keeps stepping to its end while the compile waits for it.
TEST(ServingEngine, CompilingANewSpecDoesNotStallRunningSequences) {
  PreparingServer server;
  PreparingModel& model = server.model;
  ServingEngine& serving = server.serving;
  std::promise<void> running_done;
  std::shared_future<void> done = running_done.get_future().share();
  std::atomic<bool> waited_out{false};
  model.on_compile = [&](const SparseAttention&) {
    waited_out = done.wait_for(std::chrono::seconds(20)) == std::future_status::ready;
  };
  auto running = serving.submit({request(30, 1, 40)});
  StreamEvent event;
  ASSERT_TRUE(running->next(event, std::chrono::seconds(20)));  // it has stepped at least once
  std::thread newcomer([&] {
    GenerateRequest r = request(30, 2, 4);
    r.attention = "quest:budget=32,sink=16,window=16";
    auto stream = serving.submit({r});  // compiles (blocking this thread) before it queues
    for (int waits = 0; waits < 2000 && !stream->done(); ++waits) stream->next(event, std::chrono::milliseconds(10));
  });
  for (int waits = 0; waits < 4000 && !running->done(); ++waits) running->next(event, std::chrono::milliseconds(10));
  EXPECT_TRUE(running->done()) << "the running sequence stalled while a spec compiled";
  running_done.set_value();
  newcomer.join();
  serving.shutdown();
  EXPECT_TRUE(waited_out) << "the compile did not see the running sequence finish";
  EXPECT_EQ(model.prepared.size(), 1u);
}

// Resident memory of this process, in bytes (Linux).
int64_t resident_bytes() {
  std::ifstream statm("/proc/self/statm");
  int64_t size = 0, resident = 0;
  statm >> size >> resident;
  return resident * static_cast<int64_t>(sysconf(_SC_PAGESIZE));
}

// Any client can send a new spec text per request (every budget is one): the engine remembers at
// most kResolvedSpecs of them, memory stays flat over 1,000, and sequences whose spec was evicted
// while they ran still finish with the tokens they get alone.
TEST(BatchEngine, DistinctBudgetsKeepTheSpecCacheBounded) {
  auto engine = Engine::open(model_dir(), {.prefill_chunk = 64, .max_batch = 8});
  BatchEngine& batch = batch_engine(*engine);
  auto spec = [](int i) { return "quest:budget=" + std::to_string(16 + i) + ",sink=16,window=16"; };
  GenerateRequest probe = request(20, 0, 1);
  for (int i = 0; i < 100; ++i) probe.attention = spec(i), batch.validate(probe);  // warm-up: the cache fills
  const int64_t before = resident_bytes();
  for (int i = 100; i < 1100; ++i) {
    probe.attention = spec(i);
    batch.validate(probe);
    ASSERT_LE(batch.resolved_specs(), BatchEngine::kResolvedSpecs);
  }
  EXPECT_EQ(batch.resolved_specs(), BatchEngine::kResolvedSpecs);
  EXPECT_LT(resident_bytes() - before, int64_t{8} << 20) << "1,000 spec texts grew the process";

  // More specs in flight than the cache holds: the first ones are evicted while they run.
  std::vector<GenerateRequest> requests;
  for (int i = 0; i < static_cast<int>(BatchEngine::kResolvedSpecs) + 8; ++i) {
    GenerateRequest r = request(40, i, 3);
    r.attention = "quest:budget=" + std::to_string(16 + (i % 3) * 16) + ",sink=16,window=" + std::to_string(16 + i / 3);
    requests.push_back(std::move(r));
  }
  const std::vector<std::vector<int32_t>> expected = alone(*engine, requests);
  const BatchRun run = batched(batch, requests, std::vector<int>(requests.size(), 0));
  EXPECT_EQ(run.tokens, expected);
  EXPECT_EQ(batch.load().pages_used, 0);
}

}  // namespace
}  // namespace vortex
