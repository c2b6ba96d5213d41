// A small self-contained SVG line-plot writer (no dependencies) for the harness's figures:
// accuracy vs op per attention spec, α vs position bin per sparse spec.
//
// Output: one standalone <svg> document (UTF-8, XML-escaped text) with a frame, axes whose ticks
// are "nice" numbers (1, 2, 5 × 10^k) with labels, light grid lines, one polyline with point
// markers per series (a NaN y breaks the line), and a legend on the right naming every series.
// A plot without any point still renders its frame and says "no data".
#pragma once

#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace vortex {

struct PlotSeries {
  std::string name;       // legend text
  std::vector<double> x;  // (P) point x values
  std::vector<double> y;  // (P) point y values; NaN = no point (the line breaks there)
  int color = -1;         // palette index; -1 = the series' position in the list
  bool dashed = false;
};

struct PlotOptions {
  std::string title;
  std::string x_label;
  std::string y_label;
  std::optional<double> y_min;  // fixed y range ends; unset = from the data, padded to nice ticks
  std::optional<double> y_max;
  bool x_integer_ticks = false;  // ticks at integers only (ops)
  std::string empty_note = "no data";  // shown when no series has a point
};

// The document, ready to write to a .svg file. Throws vortex::Error when a series' x and y differ
// in length.
std::string line_plot_svg(const PlotOptions& options, std::span<const PlotSeries> series);

// Ticks covering [lo, hi] at a nice step (1, 2, 5 × 10^k, at least min_step), about `target` of
// them, ascending, the first ≤ lo and the last ≥ hi; lo == hi gives ticks around the value.
std::vector<double> nice_ticks(double lo, double hi, int target = 6, double min_step = 0.0);

// Escapes & < > " ' for XML text and attributes. Exposed for tests.
std::string xml_escape(std::string_view text);

}  // namespace vortex
