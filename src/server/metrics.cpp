#include "server/metrics.h"

#include <fmt/format.h>

namespace vortex::server {
namespace {

// Latency buckets (seconds) from 1 ms to 60 s: CPU decode steps are tens of ms, a queued request's
// first token can take many seconds under load.
std::vector<double> latency_buckets() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
}

std::vector<double> page_buckets() {
  std::vector<double> bounds;
  for (double b = 1; b <= 1 << 20; b *= 4) bounds.push_back(b);
  return bounds;
}

void header(std::string& out, const char* name, const char* type, const char* help) {
  out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
}

void scalar(std::string& out, const char* name, const char* type, const char* help, int64_t value) {
  header(out, name, type, help);
  out += fmt::format("{} {}\n", name, value);
}

}  // namespace

Histogram::Histogram(std::vector<double> upper_bounds) : bounds_(std::move(upper_bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::observe(double value) {
  size_t bucket = 0;
  while (bucket < bounds_.size() && value > bounds_[bucket]) ++bucket;
  ++counts_[bucket];
  sum_ += value;
  ++count_;
}

void Histogram::render(const std::string& name, std::string& out) const {
  int64_t cumulative = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    cumulative += counts_[i];
    out += fmt::format("{}_bucket{{le=\"{}\"}} {}\n", name, bounds_[i], cumulative);
  }
  out += fmt::format("{}_bucket{{le=\"+Inf\"}} {}\n{}_sum {}\n{}_count {}\n", name, count_, name, sum_, name, count_);
}

Metrics::Metrics() : ttft_(latency_buckets()), itl_(latency_buckets()), pages_attended_(page_buckets()) {}

void Metrics::count_request(const std::string& endpoint, int status) {
  std::lock_guard lock(mutex_);
  ++requests_[{endpoint, status}];
}

void Metrics::add_prompt_tokens(int64_t tokens) {
  std::lock_guard lock(mutex_);
  prompt_tokens_ += tokens;
}

void Metrics::on_step(const StepStats& stats) {
  std::lock_guard lock(mutex_);
  generation_tokens_ += stats.sampled;
  preemptions_ += stats.preempted;
  drafted_ += stats.drafted, verified_ += stats.verified, accepted_ += stats.accepted, verifies_ += stats.verifies;
  if (stats.chunks > 0) {
    ++steps_;
    pages_attended_.observe(static_cast<double>(stats.pages_attended));
  }
  for (double s : stats.first_token_s) ttft_.observe(s);
  for (double s : stats.inter_token_s) itl_.observe(s);
}

void Metrics::on_load(const BatchLoad& load) {
  std::lock_guard lock(mutex_);
  load_ = load;
}

std::string Metrics::render() const {
  std::lock_guard lock(mutex_);
  std::string out;
  header(out, "vortex_requests_total", "counter", "HTTP requests answered, by endpoint and status code.");
  for (const auto& [key, count] : requests_)
    out += fmt::format("vortex_requests_total{{endpoint=\"{}\",status=\"{}\"}} {}\n", key.first, key.second, count);
  scalar(out, "vortex_prompt_tokens_total", "counter", "Prompt tokens of accepted requests.", prompt_tokens_);
  scalar(out, "vortex_generation_tokens_total", "counter", "Tokens generated.", generation_tokens_);
  scalar(out, "vortex_preemptions_total", "counter", "Sequences preempted (pages released, recomputed later).", preemptions_);
  scalar(out, "vortex_engine_steps_total", "counter", "Engine steps (forwards) run.", steps_);
  scalar(out, "vortex_prefix_cache_queries_total", "counter", "Prompt tokens looked up in the prefix cache at admission.", load_.prefix.lookup_tokens);
  scalar(out, "vortex_prefix_cache_hits_total", "counter", "Prompt tokens whose KV pages came from the prefix cache (not computed).", load_.prefix.hit_tokens);
  scalar(out, "vortex_speculative_draft_tokens_total", "counter", "Tokens proposed by sparse drafts (self-speculation).", drafted_);
  scalar(out, "vortex_speculative_verified_tokens_total", "counter", "Draft tokens judged by a dense verify step.", verified_);
  scalar(out, "vortex_speculative_accepted_tokens_total", "counter", "Draft tokens a verify step kept (acceptance rate: accepted / verified).", accepted_);
  scalar(out, "vortex_speculative_verify_steps_total", "counter", "Verify steps; (accepted + verify steps) / verify steps = tokens per verify.", verifies_);
  header(out, "vortex_time_to_first_token_seconds", "histogram", "Request arrival to first generated token, per sequence.");
  ttft_.render("vortex_time_to_first_token_seconds", out);
  header(out, "vortex_inter_token_latency_seconds", "histogram", "Time between consecutive tokens of a sequence.");
  itl_.render("vortex_inter_token_latency_seconds", out);
  header(out, "vortex_pages_attended_per_step", "histogram", "KV pages read by attention in one step, per (layer, kv head): all pages of every scheduled sequence, the selected ones of sparse decode tokens.");
  pages_attended_.render("vortex_pages_attended_per_step", out);
  scalar(out, "vortex_running_sequences", "gauge", "Sequences in the running batch.", load_.running);
  scalar(out, "vortex_waiting_sequences", "gauge", "Sequences waiting for admission.", load_.waiting);
  scalar(out, "vortex_kv_pages_used", "gauge", "KV cache pages in use.", load_.pages_used);
  scalar(out, "vortex_kv_pages_free", "gauge", "KV cache pages free (or cached and held by no sequence: evictable).", load_.pages_free);
  scalar(out, "vortex_kv_pages_cached", "gauge", "KV cache pages kept by the prefix cache.", load_.pages_cached);
  return out;
}

}  // namespace vortex::server
