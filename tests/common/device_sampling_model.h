// The CPU model, claiming to sample on its device: forward_sample picks each row's token with
// sample_with_draw from the draw it is given, as the CUDA backend's kernel does, and makes a
// rollout's row reductions with reduce_rows, the host twin of the CUDA backend's reduce kernel.
// Tests run BatchEngine's device path with it on the CPU.
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <memory>

#include "backend/cpu/forward.h"
#include "io/hf_config.h"
#include "model/weights.h"
#include "runtime/rollout.h"
#include "runtime/sampler.h"

namespace vortex::test {

class DeviceSamplingModel : public cpu::CpuModel {
 public:
  // The model of `dir` with a pool of `pages` pages of 16 tokens and `max_tokens` per forward.
  DeviceSamplingModel(const std::filesystem::path& dir, const ModelConfig& config, int64_t pages, int64_t max_tokens)
      : cpu::CpuModel(std::make_shared<ModelWeights>(load_model_weights(dir, config)),
                      {.num_layers = config.num_layers, .num_pages = pages, .num_kv_heads = config.num_kv_heads, .page_size = 16,
                       .head_dim = config.head_dim},
                      max_tokens),
        vocab_(static_cast<size_t>(config.vocab_size)) {}
  bool samples_on_device() const override { return true; }
  bool reduces_on_device() const override { return true; }
  void forward_sample(std::span<const SequenceChunk> chunks, std::span<const TokenDraw> draws, std::vector<int32_t>& tokens,
                      RowReductions* reductions = nullptr) override {
    cpu::CpuModel::forward(chunks, logits_);
    ASSERT_EQ(logits_.size(), draws.size() * vocab_);
    tokens.clear();
    for (size_t i = 0; i < draws.size(); ++i) tokens.push_back(sample_with_draw({logits_.data() + i * vocab_, vocab_}, draws[i], scratch_));
    if (reductions) {
      reduce_rows(logits_, static_cast<int64_t>(vocab_), tokens, *reductions);
      ++reduced_steps;
    }
    ++sampled_steps;
  }
  void forward(std::span<const SequenceChunk> chunks, std::vector<float>& logits) override {
    cpu::CpuModel::forward(chunks, logits);
    ++logit_steps;
  }
  size_t vocab_ = 0;
  int64_t sampled_steps = 0, logit_steps = 0, reduced_steps = 0;

 private:
  std::vector<float> logits_;
  SamplerScratch scratch_;
};

}  // namespace vortex::test
