#include "eval/selection_stats.h"

#include <map>

#include "eval/agreement.h"

namespace vortex {
namespace {

SelectionGroup summarise(int64_t key, const std::vector<const SelectionSample*>& samples) {
  std::vector<double> recall, mass;
  double oracle = 0.0, stage = 0.0;
  for (const SelectionSample* s : samples) {
    recall.push_back(s->recall);
    mass.push_back(s->mass);
    oracle += s->oracle_mass;
    stage += s->stage_recall;
  }
  const auto n = static_cast<double>(samples.size());
  auto mean = [&](const std::vector<double>& v) {
    double sum = 0.0;
    for (double x : v) sum += x;
    return sum / n;
  };
  return {.key = key, .samples = static_cast<int64_t>(samples.size()), .recall_mean = mean(recall),
          .recall_p5 = percentile_nearest_rank(recall, 5.0), .mass_mean = mean(mass),
          .mass_p5 = percentile_nearest_rank(mass, 5.0), .oracle_mass_mean = oracle / n, .stage_recall_mean = stage / n};
}

template <class Key>
std::vector<SelectionGroup> grouped(const std::vector<SelectionSample>& samples, Key key) {
  std::map<int64_t, std::vector<const SelectionSample*>> groups;
  for (const SelectionSample& s : samples) groups[key(s)].push_back(&s);
  std::vector<SelectionGroup> out;
  for (const auto& [k, members] : groups) out.push_back(summarise(k, members));
  return out;
}

}  // namespace

void SelectionStats::add(std::span<const SelectionSample> samples) { samples_.insert(samples_.end(), samples.begin(), samples.end()); }

std::optional<SelectionGroup> SelectionStats::overall() const {
  if (samples_.empty()) return std::nullopt;
  return grouped(samples_, [](const SelectionSample&) { return int64_t{0}; }).front();
}

std::vector<SelectionGroup> SelectionStats::by_layer() const {
  return grouped(samples_, [](const SelectionSample& s) { return int64_t{s.layer}; });
}

std::vector<SelectionGroup> SelectionStats::by_bin() const {
  return grouped(samples_, [](const SelectionSample& s) { return alpha_bin(s.position); });
}

}  // namespace vortex
