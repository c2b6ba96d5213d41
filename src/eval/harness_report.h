// The harness's results as JSON, as a table a newcomer can read, and as SVG figures.
#pragma once

#include <span>
#include <string>

#include <nlohmann/json.hpp>

#include "eval/harness.h"

namespace vortex {

// {"results": [{"attention", "expanded" (auto: the spec it became, else ""), "examples", "correct", "accuracy", "accuracy_by_op": {"1": …},
//   "examples_by_op", "auc", "alpha_mean", "alpha_tokens", "alpha_mean_by_bin": […],
//   "alpha_p5_by_bin": […], "alpha_tokens_by_bin": […], "alpha_p5_worst", "tokens_per_s",
//   "prompt_tokens", "generated_tokens", "prefill_s", "decode_s", "score_s", "selection_recall"}, …]}
// Accuracies are fractions in [0, 1]; auc is on the leaderboard's scale (100 × area). The
// *_by_bin lists are indexed by bin (positions bin·2048 … bin·2048+2047), null where the bin has
// no token. Dense: alpha_mean 1, bin lists empty. Sparse without α (--no-alpha, or no decode step):
// alpha_mean null, bin lists empty. selection_recall: null unless measured (--recall), else
// {"samples", "recall_mean", "recall_p5", "mass_mean", "mass_p5", "oracle_mass_mean",
// "stage_recall_mean", "by_layer": [{"layer", …the same keys}], "by_bin": [{"bin", …}]}.
nlohmann::json harness_results_json(std::span<const SpecResult> results);

// Summary table (spec, accuracy, AUC, α mean, worst-bin α p5, tokens/s), accuracy by op (one row
// per op, one column per spec) and one-line explanations of the columns. `heading` opens it.
std::string harness_results_table(std::span<const SpecResult> results, const std::string& heading);

// Accuracy (%) vs op, one line per spec.
std::string accuracy_plot_svg(std::span<const SpecResult> results);
// α mean (solid) and nearest-rank 5th percentile (dashed) vs position bin, per sparse spec.
std::string alpha_plot_svg(std::span<const SpecResult> results);
// Selection recall (solid) and attention mass (dashed), means by layer or by position bin, per
// sparse spec that measured them.
std::string recall_plot_svg(std::span<const SpecResult> results, bool by_layer);

}  // namespace vortex
