// --speculate SPEC and --gamma N|auto, shared by generate, batch, eval and serve; the statistics'
// JSON, shared by their outputs.
#include <string>

#include "cli/cli.h"
#include "core/error.h"
#include "runtime/batch_engine.h"

namespace vortex::cli {

void add_speculate_options(CLI::App* sub, SpeculateArgs& args) {
  sub->add_option("--speculate", args.speculate,
                  "Self-speculative decoding: the sparse draft's attention spec, e.g. quest:budget=256,sink=16,window=64; "
                  "one dense step verifies its drafts, so the output is dense decoding's (docs/speculation.md)");
  sub->add_option("--gamma", args.gamma, "Drafts per verify step with --speculate: 1..16, or auto (chosen per round "
                  "from measured step times and the acceptance rate)")->capture_default_str();
}

int32_t parse_gamma(const std::string& text, const std::string& where) {
  if (text == "auto") return 0;
  size_t used = 0;
  int value = 0;
  try {
    value = std::stoi(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  check(used > 0 && used == text.size() && value >= 1 && value <= BatchEngine::kMaxGamma,
        "{}: '{}' is not a gamma (give 1..{} or auto)", where, text, BatchEngine::kMaxGamma);
  return value;
}

void apply_speculate(const SpeculateArgs& args, GenerateRequest& request) {
  if (args.speculate.empty()) {
    check(args.gamma == "auto", "--gamma {} needs --speculate (the draft's attention spec)", args.gamma);
    return;
  }
  request.speculate = args.speculate;
  request.gamma = parse_gamma(args.gamma, "--gamma");
}

nlohmann::json speculation_json(const SpeculationStats& s) {
  return {{"drafted", s.drafted}, {"accepted", s.accepted}, {"verifies", s.verifies},
          {"acceptance_rate", s.acceptance_rate()}, {"tokens_per_verify", s.tokens_per_verify()}};
}

void add_step_tokens_option(CLI::App* sub, int64_t& tokens) {
  sub->add_option("--prefill-chunk", tokens,
                  "Tokens per forward step: prefill chunks, dense passes and decode tokens (0: 4096 on cuda, 256 on cpu)")
      ->capture_default_str();
}

void add_tensor_parallel_option(CLI::App* sub, int64_t& ranks) {
  sub->add_option("--tensor-parallel", ranks,
                  "Ranks to split the model over (heads, MLP, vocabulary): on the CPU threads with their shards, the oracle for "
                  "the GPU's tensor parallelism (not built yet on cuda: 1 there)")
      ->capture_default_str();
}

int64_t step_tokens(int64_t given, Device device) { return given != 0 ? given : device == Device::kCuda ? 4096 : 256; }

}  // namespace vortex::cli
