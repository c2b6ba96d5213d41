// SVG line plots (see svg_plot.h). Coordinates: the plot area is a fixed box; the legend to its
// right is as wide as the longest series name needs (about 7 px a character at 12 px type).
#include "eval/svg_plot.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include <fmt/format.h>

#include "core/error.h"

namespace vortex {
namespace {

constexpr double kLeft = 72, kTop = 44, kPlotWidth = 480, kPlotHeight = 320, kBottomSpace = 56;
constexpr double kCharWidth = 7.0;
constexpr const char* kPalette[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                                    "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"};
constexpr int kPaletteSize = sizeof(kPalette) / sizeof(kPalette[0]);

struct Range { double lo = 0, hi = 1; };

// Maps data coordinates to pixels inside the plot area.
struct Frame {
  Range x, y;
  double px(double v) const { return kLeft + (v - x.lo) / (x.hi - x.lo) * kPlotWidth; }
  double py(double v) const { return kTop + kPlotHeight - (v - y.lo) / (y.hi - y.lo) * kPlotHeight; }
};

// Decimals that show ticks `step` apart without losing digits.
int tick_decimals(double step) {
  if (step >= 1.0) return 0;
  return std::clamp(static_cast<int>(std::ceil(-std::log10(step) - 1e-9)), 0, 12);
}

std::string tick_label(double value, double step) {
  if (std::abs(value) < step * 1e-9) value = 0.0;  // no "-0"
  return fmt::format("{:.{}f}", value, tick_decimals(step));
}

// Data range of one axis over every finite point; nullopt when there is none.
std::optional<Range> data_range(std::span<const PlotSeries> series, bool use_x) {
  double lo = std::numeric_limits<double>::infinity(), hi = -lo;
  for (const PlotSeries& s : series) {
    for (size_t i = 0; i < s.x.size(); ++i) {
      if (!std::isfinite(s.x[i]) || !std::isfinite(s.y[i])) continue;
      const double v = use_x ? s.x[i] : s.y[i];
      lo = std::min(lo, v);
      hi = std::max(hi, v);
    }
  }
  if (lo > hi) return std::nullopt;
  return Range{lo, hi};
}

std::string axes_svg(const Frame& f, const std::vector<double>& xt, const std::vector<double>& yt) {
  std::string out;
  const double x_step = xt.size() > 1 ? xt[1] - xt[0] : 1.0, y_step = yt.size() > 1 ? yt[1] - yt[0] : 1.0;
  for (double t : yt) {
    out += fmt::format("<line x1=\"{:.1f}\" y1=\"{:.1f}\" x2=\"{:.1f}\" y2=\"{:.1f}\" stroke=\"#e0e0e0\"/>\n", kLeft,
                       f.py(t), kLeft + kPlotWidth, f.py(t));
    out += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"end\">{}</text>\n", kLeft - 6, f.py(t) + 4,
                       tick_label(t, y_step));
  }
  for (double t : xt) {
    out += fmt::format("<line x1=\"{:.1f}\" y1=\"{:.1f}\" x2=\"{:.1f}\" y2=\"{:.1f}\" stroke=\"#e0e0e0\"/>\n", f.px(t),
                       kTop, f.px(t), kTop + kPlotHeight);
    out += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"middle\">{}</text>\n", f.px(t),
                       kTop + kPlotHeight + 18, tick_label(t, x_step));
  }
  out += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#333\"/>\n", kLeft,
                     kTop, kPlotWidth, kPlotHeight);
  return out;
}

std::string series_color(const PlotSeries& s, size_t index) {
  const int i = s.color >= 0 ? s.color : static_cast<int>(index);
  return kPalette[i % kPaletteSize];
}

// One series: polylines between NaN gaps, then a marker per point.
std::string series_svg(const Frame& f, const PlotSeries& s, const std::string& color) {
  std::string out, points;
  const std::string dash = s.dashed ? " stroke-dasharray=\"6,4\"" : "";
  auto flush = [&] {
    if (!points.empty())
      out += fmt::format("<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"2\"{} points=\"{}\"/>\n", color, dash, points);
    points.clear();
  };
  for (size_t i = 0; i < s.x.size(); ++i) {
    if (!std::isfinite(s.x[i]) || !std::isfinite(s.y[i])) { flush(); continue; }
    points += fmt::format("{}{:.1f},{:.1f}", points.empty() ? "" : " ", f.px(s.x[i]), f.py(s.y[i]));
  }
  flush();
  for (size_t i = 0; i < s.x.size(); ++i) {
    if (!std::isfinite(s.x[i]) || !std::isfinite(s.y[i])) continue;
    out += fmt::format("<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"3\" fill=\"{}\"/>\n", f.px(s.x[i]), f.py(s.y[i]), color);
  }
  return out;
}

std::string legend_svg(std::span<const PlotSeries> series) {
  std::string out;
  const double x = kLeft + kPlotWidth + 16;
  for (size_t i = 0; i < series.size(); ++i) {
    const double y = kTop + 10 + 20.0 * static_cast<double>(i);
    const std::string color = series_color(series[i], i);
    out += fmt::format("<line x1=\"{:.1f}\" y1=\"{:.1f}\" x2=\"{:.1f}\" y2=\"{:.1f}\" stroke=\"{}\" stroke-width=\"2\"{}/>\n",
                       x, y, x + 24, y, color, series[i].dashed ? " stroke-dasharray=\"6,4\"" : "");
    out += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\">{}</text>\n", x + 30, y + 4, xml_escape(series[i].name));
  }
  return out;
}

std::string labels_svg(const PlotOptions& o) {
  const double cy = kTop + kPlotHeight / 2;
  return fmt::format("<text x=\"{:.1f}\" y=\"24\" text-anchor=\"middle\" font-size=\"15\">{}</text>\n",
                     kLeft + kPlotWidth / 2, xml_escape(o.title)) +
         fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"middle\">{}</text>\n", kLeft + kPlotWidth / 2,
                     kTop + kPlotHeight + 42, xml_escape(o.x_label)) +
         fmt::format("<text x=\"18\" y=\"{:.1f}\" text-anchor=\"middle\" transform=\"rotate(-90 18 {:.1f})\">{}</text>\n",
                     cy, cy, xml_escape(o.y_label));
}

}  // namespace

std::string xml_escape(std::string_view text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&apos;"; break;
      default: out += c;
    }
  }
  return out;
}

std::vector<double> nice_ticks(double lo, double hi, int target, double min_step) {
  check(std::isfinite(lo) && std::isfinite(hi) && target >= 2, "internal: ticks over [{}, {}]", lo, hi);
  if (lo > hi) std::swap(lo, hi);
  if (hi - lo < 1e-12 * std::max(1.0, std::abs(hi))) {  // one value: a range around it
    const double pad = lo != 0.0 ? std::abs(lo) * 0.1 : 1.0;
    lo -= pad;
    hi += pad;
  }
  const double raw = (hi - lo) / (target - 1);
  const double magnitude = std::pow(10.0, std::floor(std::log10(raw)));
  const double r = raw / magnitude;
  const double step = std::max(min_step, (r <= 1.0 ? 1.0 : r <= 2.0 ? 2.0 : r <= 5.0 ? 5.0 : 10.0) * magnitude);
  const double first = std::floor(lo / step + 1e-9), last = std::ceil(hi / step - 1e-9);
  std::vector<double> ticks;
  for (double k = first; k <= last; k += 1.0) ticks.push_back(k * step);
  return ticks;
}

std::string line_plot_svg(const PlotOptions& o, std::span<const PlotSeries> series) {
  for (const PlotSeries& s : series)
    check(s.x.size() == s.y.size(), "internal: plot series '{}' has {} x and {} y values", s.name, s.x.size(), s.y.size());
  const std::optional<Range> xr = data_range(series, true), yr = data_range(series, false);
  const std::vector<double> xt = nice_ticks(xr ? xr->lo : 0.0, xr ? xr->hi : 1.0, 6, o.x_integer_ticks ? 1.0 : 0.0);
  const std::vector<double> yt = nice_ticks(o.y_min.value_or(yr ? yr->lo : 0.0), o.y_max.value_or(yr ? yr->hi : 1.0));
  const Frame frame{.x = {xt.front(), xt.back()}, .y = {yt.front(), yt.back()}};

  size_t longest = 0;
  for (const PlotSeries& s : series) longest = std::max(longest, s.name.size());
  const double width = kLeft + kPlotWidth + 16 + 30 + kCharWidth * static_cast<double>(longest) + 16;
  const double height = kTop + kPlotHeight + kBottomSpace;
  std::string out = fmt::format(
      "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{:.0f}\" "
      "height=\"{:.0f}\" viewBox=\"0 0 {:.0f} {:.0f}\" font-family=\"sans-serif\" font-size=\"12\">\n"
      "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n",
      width, height, width, height);
  out += labels_svg(o) + axes_svg(frame, xt, yt);
  for (size_t i = 0; i < series.size(); ++i) out += series_svg(frame, series[i], series_color(series[i], i));
  if (!xr || !yr)
    out += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"middle\" fill=\"#888\">{}</text>\n",
                       kLeft + kPlotWidth / 2, kTop + kPlotHeight / 2, xml_escape(o.empty_note));
  out += legend_svg(series);
  return out + "</svg>\n";
}

}  // namespace vortex
