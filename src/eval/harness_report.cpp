// Harness results as JSON, a text table and SVG figures (see harness_report.h).
#include "eval/harness_report.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <optional>

#include <fmt/format.h>

#include "eval/svg_plot.h"

namespace vortex {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// The lowest per-bin 5th percentile: the worst tail over positions; empty without α.
std::optional<double> worst_bin_p5(const SpecResult& r) {
  std::optional<double> worst;
  for (const AlphaBin& b : r.alpha.bins()) worst = std::min(worst.value_or(b.p5), b.p5);
  return worst;
}

// Dense is the reference (α 1) unless it was measured against another KV storage type.
bool reference(const SpecResult& r) { return r.dense && r.alpha.count() == 0; }

std::optional<double> alpha_mean(const SpecResult& r) { return reference(r) ? std::optional(1.0) : r.alpha.mean(); }

nlohmann::json optional_json(std::optional<double> value) { return value ? nlohmann::json(*value) : nlohmann::json(nullptr); }

// Bin-indexed lists (index = bin), null where a bin has no token.
void add_bin_lists(const SpecResult& r, nlohmann::json& out) {
  const std::vector<AlphaBin> bins = r.alpha.bins();
  const size_t size = bins.empty() ? 0 : static_cast<size_t>(bins.back().bin + 1);
  nlohmann::json mean(size, nullptr), p5(size, nullptr), tokens(size, nullptr);
  for (const AlphaBin& b : bins) {
    const auto i = static_cast<size_t>(b.bin);
    mean[i] = b.mean;
    p5[i] = b.p5;
    tokens[i] = b.tokens;
  }
  out["alpha_mean_by_bin"] = mean;
  out["alpha_p5_by_bin"] = p5;
  out["alpha_tokens_by_bin"] = tokens;
}

nlohmann::json group_json(const SelectionGroup& g, const char* key) {
  nlohmann::json out = {{"samples", g.samples}, {"recall_mean", g.recall_mean}, {"recall_p5", g.recall_p5},
                        {"mass_mean", g.mass_mean}, {"mass_p5", g.mass_p5}, {"oracle_mass_mean", g.oracle_mass_mean},
                        {"stage_recall_mean", g.stage_recall_mean}};
  if (key != nullptr) out[key] = g.key;
  return out;
}

// {"samples", "recall_mean", ..., "by_layer": [{"layer", ...}], "by_bin": [{"bin", ...}]}, or null.
nlohmann::json recall_json(const SpecResult& r) {
  const std::optional<SelectionGroup> all = r.recall.overall();
  if (!all) return nullptr;
  nlohmann::json out = group_json(*all, nullptr), layers = nlohmann::json::array(), bins = nlohmann::json::array();
  for (const SelectionGroup& g : r.recall.by_layer()) layers.push_back(group_json(g, "layer"));
  for (const SelectionGroup& g : r.recall.by_bin()) bins.push_back(group_json(g, "bin"));
  out["by_layer"] = layers;
  out["by_bin"] = bins;
  return out;
}

nlohmann::json spec_json(const SpecResult& r) {
  nlohmann::json by_op = nlohmann::json::object(), examples_by_op = nlohmann::json::object();
  for (const OpAccuracy& op : r.by_op) {
    by_op[std::to_string(op.op)] = op.accuracy;
    examples_by_op[std::to_string(op.op)] = op.examples;
  }
  nlohmann::json out = {{"attention", r.attention}, {"expanded", r.expanded}, {"examples", r.examples}, {"correct", r.correct},
                        {"accuracy", r.accuracy}, {"accuracy_by_op", by_op}, {"examples_by_op", examples_by_op},
                        {"auc", r.auc}, {"alpha_mean", optional_json(alpha_mean(r))},
                        {"alpha_tokens", r.alpha.count()}, {"alpha_p5_worst", optional_json(worst_bin_p5(r))},
                        {"tokens_per_s", r.tokens_per_s()}, {"prompt_tokens", r.prompt_tokens},
                        {"generated_tokens", r.generated_tokens}, {"prefill_s", r.prefill_s},
                        {"decode_s", r.decode_s}, {"score_s", r.score_s}, {"sparse_heads", r.sparse_heads},
                        {"dense_below_heads", r.dense_below_heads}, {"sparse_heads_by_layer", r.sparse_heads_by_layer},
                        {"dense_below_heads_by_layer", r.dense_below_heads_by_layer}, {"sparse_pages", r.sparse_pages},
                        {"sparse_pages_by_layer", r.sparse_pages_by_layer}, {"cover_heads", r.cover_heads},
                        {"cover_pages", r.cover_pages}, {"cover_pages_by_layer", r.cover_pages_by_layer}};
  add_bin_lists(r, out);
  out["selection_recall"] = recall_json(r);
  if (reference(r)) out["alpha_p5_worst"] = 1.0;
  if (!r.speculate.empty())
    out["speculation"] = {{"draft", r.speculate}, {"drafted", r.speculation.drafted}, {"accepted", r.speculation.accepted},
                          {"verifies", r.speculation.verifies}, {"acceptance_rate", r.speculation.acceptance_rate()},
                          {"tokens_per_verify", r.speculation.tokens_per_verify()}};
  return out;
}

std::string alpha_cell(const SpecResult& r, std::optional<double> value) {
  if (reference(r)) return "(ref)";
  return value ? fmt::format("{:.3f}", *value) : "n/a";
}

bool any_recall(std::span<const SpecResult> results) {
  return std::any_of(results.begin(), results.end(), [](const SpecResult& r) { return r.recall.count() > 0; });
}

std::string recall_cell(const SpecResult& r, double SelectionGroup::*field) {
  if (r.dense) return "(ref)";
  const std::optional<SelectionGroup> all = r.recall.overall();
  return all ? fmt::format("{:.3f}", (*all).*field) : "n/a";
}

std::string summary_table(std::span<const SpecResult> results) {
  size_t width = 9;
  for (const SpecResult& r : results) width = std::max(width, r.attention.size());
  const bool recall = any_recall(results);
  std::string out = fmt::format("{:>2}  {:<{}}  {:>8}  {:>7}  {:>7}  {:>14}  {:>9}", "#", "attention", width, "accuracy",
                                "AUC", "α mean", "worst-bin α p5", "tokens/s");
  out += recall ? fmt::format("  {:>7}  {:>9}  {:>7}\n", "recall", "recall p5", "mass") : "\n";
  for (size_t i = 0; i < results.size(); ++i) {
    const SpecResult& r = results[i];
    out += fmt::format("{:>2}  {:<{}}  {:>7.1f}%  {:>7.1f}  {:>7}  {:>14}  {:>9.1f}", i + 1, r.attention, width,
                       100.0 * r.accuracy, r.auc, alpha_cell(r, r.alpha.mean()), alpha_cell(r, worst_bin_p5(r)),
                       r.tokens_per_s());
    out += recall ? fmt::format("  {:>7}  {:>9}  {:>7}\n", recall_cell(r, &SelectionGroup::recall_mean),
                                recall_cell(r, &SelectionGroup::recall_p5), recall_cell(r, &SelectionGroup::mass_mean))
                  : "\n";
  }
  auto percent = [](int64_t part, int64_t whole) { return whole > 0 ? 100.0 * static_cast<double>(part) / static_cast<double>(whole) : 0.0; };
  auto per = [](int64_t part, int64_t whole) { return whole > 0 ? static_cast<double>(part) / static_cast<double>(whole) : 0.0; };
  for (const SpecResult& r : results) {
    if (r.cover_heads == 0) continue;
    out += fmt::format("{}: cover grew {} of {} sparse attentions (token, layer, kv head) ({:.1f}%); pages attended per sparse "
                       "attention: {:.1f} listed + {:.1f} added; added by layer:", r.attention, r.cover_heads, r.sparse_heads,
                       percent(r.cover_heads, r.sparse_heads), per(r.sparse_pages, r.sparse_heads), per(r.cover_pages, r.sparse_heads));
    for (size_t l = 0; l < r.sparse_heads_by_layer.size(); ++l)
      out += fmt::format(" {:.1f}", per(r.cover_pages_by_layer[l], r.sparse_heads_by_layer[l]));
    out += "\n";
  }
  for (const SpecResult& r : results) {
    if (r.dense_below_heads == 0) continue;
    out += fmt::format("{}: {} of {} sparse attentions (token, layer, kv head) attended every page ({:.1f}%, dense_below); by layer:",
                       r.attention, r.dense_below_heads, r.sparse_heads, percent(r.dense_below_heads, r.sparse_heads));
    for (size_t l = 0; l < r.sparse_heads_by_layer.size(); ++l)
      out += fmt::format(" {:.1f}%", percent(r.dense_below_heads_by_layer[l], r.sparse_heads_by_layer[l]));
    out += "\n";
  }
  for (const SpecResult& r : results)
    if (!r.speculate.empty())
      out += fmt::format("{}: self-speculation with draft {}: {} of {} drafts accepted ({:.1f}%), {:.2f} tokens per verify step\n",
                         r.attention, r.speculate, r.speculation.accepted, r.speculation.drafted,
                         100.0 * r.speculation.acceptance_rate(), r.speculation.tokens_per_verify());
  return out;
}

// One row per layer, one column per sparse spec that measured recall: "recall / mass".
std::string recall_by_layer_table(std::span<const SpecResult> results) {
  std::map<int64_t, std::vector<std::string>> rows;  // layer → one cell per spec
  for (size_t i = 0; i < results.size(); ++i)
    for (const SelectionGroup& g : results[i].recall.by_layer()) {
      auto& row = rows[g.key];
      row.resize(results.size(), "-");
      row[i] = fmt::format("{:.3f} / {:.3f}", g.recall_mean, g.mass_mean);
    }
  std::string out = fmt::format("{:>5}", "layer");
  for (size_t i = 0; i < results.size(); ++i) out += fmt::format("  {:>13}", fmt::format("#{}", i + 1));
  out += "\n";
  for (const auto& [layer, cells] : rows) {
    out += fmt::format("{:>5}", layer);
    for (size_t i = 0; i < results.size(); ++i) out += fmt::format("  {:>13}", i < cells.size() ? cells[i] : "-");
    out += "\n";
  }
  return out;
}

// One row per op, one column per spec (numbered as in the summary).
std::string by_op_table(std::span<const SpecResult> results) {
  std::map<int64_t, std::vector<std::string>> rows;  // op → one cell per spec
  for (size_t i = 0; i < results.size(); ++i) {
    for (const OpAccuracy& op : results[i].by_op) {
      auto& row = rows[op.op];
      row.resize(results.size(), "-");
      row[i] = fmt::format("{:.1f}% ({}/{})", 100.0 * op.accuracy, op.correct, op.examples);
    }
  }
  std::string out = fmt::format("{:>4}", "op");
  for (size_t i = 0; i < results.size(); ++i) out += fmt::format("  {:>16}", fmt::format("#{}", i + 1));
  out += "\n";
  for (const auto& [op, cells] : rows) {
    out += fmt::format("{:>4}", op);
    for (const std::string& cell : cells) out += fmt::format("  {:>16}", cell);
    out += "\n";
  }
  return out;
}

constexpr const char* kColumnNotes =
    "  accuracy        share of problems whose final answer names exactly the right set of variables\n"
    "  AUC             area under the accuracy(%)-vs-op curve (trapezoids, as GSM-Infinite's leaderboard);\n"
    "                  higher = accuracy kept on harder problems\n"
    "  α mean          mean over generated tokens of α = Σ_v min(p_sparse(v), p_dense(v)), dense scored on the\n"
    "                  sparse output; 1 = the sparse run predicts exactly what dense would; (ref) = dense itself;\n"
    "                  n/a = not measured (--no-alpha, or no decode step)\n"
    "  worst-bin α p5  lowest, over 2048-position bins, of the bin's 5th-percentile α (nearest rank): the\n"
    "                  rare bad tokens that derail long generations\n"
    "  tokens/s        decode throughput: generated tokens after each problem's first ÷ decode time\n";

constexpr const char* kRecallNotes =
    "  recall          per sparse (token, layer, KV head): share of the oracle's top-k pages (exact max q·k of the\n"
    "                  page, same k) that the flow selected; mean, and 5th percentile (nearest rank)\n"
    "  mass            exact attention weight (softmax over every key) that the attended pages hold, mean over\n"
    "                  the group's query heads; 1 = nothing of dense attention dropped\n";

}  // namespace

nlohmann::json harness_results_json(std::span<const SpecResult> results) {
  nlohmann::json list = nlohmann::json::array();
  for (const SpecResult& r : results) list.push_back(spec_json(r));
  return {{"results", list}};
}

std::string harness_results_table(std::span<const SpecResult> results, const std::string& heading) {
  std::string out = heading + "\n\n" + summary_table(results);
  for (size_t i = 0; i < results.size(); ++i)
    if (!results[i].expanded.empty()) out += fmt::format("#{} {} expanded to {}\n", i + 1, results[i].attention, results[i].expanded);
  out += "\naccuracy by op (correct/problems)\n" + by_op_table(results);
  if (any_recall(results)) out += "\nselection recall / attention mass by layer\n" + recall_by_layer_table(results);
  out += std::string("\ncolumns\n") + kColumnNotes;
  if (any_recall(results)) out += kRecallNotes;
  return out;
}

std::string accuracy_plot_svg(std::span<const SpecResult> results) {
  std::vector<PlotSeries> series;
  for (const SpecResult& r : results) {
    PlotSeries& s = series.emplace_back();
    s.name = r.attention;
    for (const OpAccuracy& op : r.by_op) {
      s.x.push_back(static_cast<double>(op.op));
      s.y.push_back(100.0 * op.accuracy);
    }
  }
  PlotOptions options;
  options.title = "GSM-Infinite symbolic: accuracy vs op";
  options.x_label = "op (operations in the problem)";
  options.y_label = "accuracy (%)";
  options.y_min = 0.0;
  options.y_max = 100.0;
  options.x_integer_ticks = true;
  return line_plot_svg(options, series);
}

namespace {

// A plot of values in [0, 1] against integer bins or layers.
PlotOptions unit_plot(std::string title, std::string x_label, std::string y_label, std::string empty_note) {
  PlotOptions options;
  options.title = std::move(title);
  options.x_label = std::move(x_label);
  options.y_label = std::move(y_label);
  options.y_min = 0.0;
  options.y_max = 1.0;
  options.x_integer_ticks = true;
  options.empty_note = std::move(empty_note);
  return options;
}

constexpr const char* kBinLabel = "query position bin (bin k = positions 2048·k … 2048·k+2047)";

}  // namespace

std::string alpha_plot_svg(std::span<const SpecResult> results) {
  std::vector<PlotSeries> series;
  for (size_t i = 0; i < results.size(); ++i) {
    const std::vector<AlphaBin> bins = results[i].alpha.bins();
    if (bins.empty()) continue;  // dense has bins only when measured against another KV type
    PlotSeries mean{.name = results[i].attention + " mean", .x = {}, .y = {}, .color = static_cast<int>(i), .dashed = false};
    PlotSeries p5{.name = results[i].attention + " p5", .x = {}, .y = {}, .color = static_cast<int>(i), .dashed = true};
    for (int64_t bin = 0, next = 0; bin <= bins.back().bin; ++bin) {  // NaN gaps where a bin is empty
      const bool has = bins[static_cast<size_t>(next)].bin == bin;
      mean.x.push_back(static_cast<double>(bin));
      p5.x.push_back(static_cast<double>(bin));
      mean.y.push_back(has ? bins[static_cast<size_t>(next)].mean : kNaN);
      p5.y.push_back(has ? bins[static_cast<size_t>(next)].p5 : kNaN);
      next += has ? 1 : 0;
    }
    series.push_back(std::move(mean));
    series.push_back(std::move(p5));
  }
  return line_plot_svg(unit_plot("sparse-vs-dense agreement α by position", kBinLabel, "α", "no α: no sparse spec, or --no-alpha"),
                       series);
}

std::string recall_plot_svg(std::span<const SpecResult> results, bool by_layer) {
  std::vector<PlotSeries> series;
  for (size_t i = 0; i < results.size(); ++i) {
    const std::vector<SelectionGroup> groups = by_layer ? results[i].recall.by_layer() : results[i].recall.by_bin();
    if (groups.empty()) continue;
    PlotSeries recall{.name = results[i].attention + " recall", .x = {}, .y = {}, .color = static_cast<int>(i), .dashed = false};
    PlotSeries mass{.name = results[i].attention + " mass", .x = {}, .y = {}, .color = static_cast<int>(i), .dashed = true};
    for (const SelectionGroup& g : groups) {
      recall.x.push_back(static_cast<double>(g.key));
      mass.x.push_back(static_cast<double>(g.key));
      recall.y.push_back(g.recall_mean);
      mass.y.push_back(g.mass_mean);
    }
    series.push_back(std::move(recall));
    series.push_back(std::move(mass));
  }
  return line_plot_svg(unit_plot(by_layer ? "selection recall (solid) and attention mass (dashed) by layer"
                                          : "selection recall (solid) and attention mass (dashed) by position",
                                 by_layer ? "layer" : kBinLabel, "mean", "no selection recall: no sparse spec, or no --recall"),
                       series);
}

}  // namespace vortex
