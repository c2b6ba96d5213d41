// The `vortex` command: thin wrappers that parse flags (CLI11) and call the library.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "vortex/engine.h"

namespace vortex {
struct GenerateRequest;
struct SpeculationStats;
}  // namespace vortex

namespace vortex::cli {

void add_text_commands(CLI::App& app);   // tokenize, detokenize, template
void add_model_commands(CLI::App& app);  // generate, score, chat, info
void add_bench_commands(CLI::App& app);  // bench decode
void add_serve_commands(CLI::App& app);
void add_batch_commands(CLI::App& app);  // batch (offline JSONL through the scheduler)  // serve, bench serve (after add_bench_commands)
void add_rollout_commands(CLI::App& app);  // rollout (RL samples with dense log-probs and α)
void add_cost_commands(CLI::App& app);     // cost (the decode cost model)
void add_calibrate_commands(CLI::App& app);  // calibrate (a rollout budget schedule from measured α)

// A JSONL line's prompt: {"prompt": TEXT} | {"messages": [...]} (chat template) | {"prompt_tokens": [ids]}.
std::vector<int32_t> line_prompt(const nlohmann::json& line, const Engine& engine);
// Every non-blank line's prompt; an error names the file and line.
std::vector<std::vector<int32_t>> read_prompt_file(const std::string& path, const Engine& engine);

// "1,2,3" → {1, 2, 3}; a clear vortex::Error naming `flag` for anything else.
std::vector<int32_t> parse_id_list(const std::string& text, const std::string& flag);
// Prints one JSON object on one line (invalid UTF-8 in strings replaced by U+FFFD).
void print_json(const nlohmann::json& value);
// --speculate SPEC --gamma N|auto (src/cli/speculate_args.cpp).
struct SpeculateArgs {
  std::string speculate;        // the draft's spec; empty: off
  std::string gamma = "auto";
};
void add_speculate_options(CLI::App* sub, SpeculateArgs& args);
// "auto" → 0, "1".."16" → the number; a clear error naming `where` for anything else.
int32_t parse_gamma(const std::string& text, const std::string& where);
// Sets request.speculate and request.gamma (an error for --gamma without --speculate).
void apply_speculate(const SpeculateArgs& args, GenerateRequest& request);
// {"drafted", "accepted", "verifies", "acceptance_rate", "tokens_per_verify"}
nlohmann::json speculation_json(const SpeculationStats& stats);
// --prefill-chunk N of the offline throughput commands (rollout, batch, calibrate): tokens per
// forward step, 0 meaning the device's default (src/cli/speculate_args.cpp).
void add_step_tokens_option(CLI::App* sub, int64_t& tokens);
// The tokens per forward step for `device`: `given`, or for 0 4096 on cuda and 256 on cpu (a
// 16K-token rollout on an H100 ran 1.8-2.2x faster at 4096 than at 256: docs/rollouts.md).
int64_t step_tokens(int64_t given, Device device);
// --kv-dtype's help, the same in every command that opens an engine (kv/kv_rounding.h: the formats).
inline constexpr const char* kKvDtypeHelp =
    "KV cache storage: auto (the precision's: f32 on the CPU, bf16 on cuda), bf16, f32, fp8 (one byte per element and a "
    "scale per token and KV head: values e4m3, keys int8 and Hadamard-rotated), fp8-tensor (CPU, e4m3 with no scale)";
// --tensor-parallel N of every command that opens an engine (EngineOptions::tensor_parallel).
void add_tensor_parallel_option(CLI::App* sub, int64_t& ranks);
// The command line's flag for a library option named in an OptionError ("page_size" → "--page-size").
std::string flag_of(const std::string& option);

}  // namespace vortex::cli
