// Prometheus metrics of the server, in the text exposition format (version 0.0.4).
//
//   vortex_requests_total{endpoint,status}         counter   HTTP requests answered
//   vortex_prompt_tokens_total                     counter   prompt tokens of accepted requests
//   vortex_generation_tokens_total                 counter   tokens generated
//   vortex_preemptions_total                       counter   sequences sent back to the queue
//   vortex_speculative_draft_tokens_total          counter   tokens sparse drafts proposed
//   vortex_speculative_verified_tokens_total       counter   drafts judged by a verify step
//   vortex_speculative_accepted_tokens_total       counter   drafts a verify step kept
//   vortex_speculative_verify_steps_total          counter   verify steps (rounds)
//   vortex_engine_steps_total                      counter   forwards run
//   vortex_prefix_cache_queries_total              counter   prompt tokens looked up in the prefix cache
//   vortex_prefix_cache_hits_total                 counter   of which were cached (not computed)
//   vortex_time_to_first_token_seconds             histogram arrival → first token, per sequence
//   vortex_inter_token_latency_seconds             histogram gap between a sequence's tokens
//   vortex_pages_attended_per_step                 histogram KV pages read by attention per step
//   vortex_running_sequences, vortex_waiting_sequences, vortex_kv_pages_used, vortex_kv_pages_free,
//   vortex_kv_pages_cached                                                                       gauges
//
// Thread-safe: HTTP threads count requests, the engine thread reports steps.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "runtime/serving_engine.h"

namespace vortex::server {

class Histogram {
 public:
  explicit Histogram(std::vector<double> upper_bounds);  // ascending; +Inf is implicit
  void observe(double value);
  // Appends `name`_bucket{le=…}, _sum and _count lines.
  void render(const std::string& name, std::string& out) const;

 private:
  std::vector<double> bounds_;
  std::vector<int64_t> counts_;  // (bounds + 1): per bucket, not cumulative; last is +Inf
  double sum_ = 0.0;
  int64_t count_ = 0;
};

class Metrics : public ServingObserver {
 public:
  Metrics();
  void count_request(const std::string& endpoint, int status);
  void add_prompt_tokens(int64_t tokens);
  void on_step(const StepStats& stats) override;
  void on_load(const BatchLoad& load) override;
  std::string render() const;

 private:
  mutable std::mutex mutex_;
  std::map<std::pair<std::string, int>, int64_t> requests_;
  int64_t prompt_tokens_ = 0, generation_tokens_ = 0, preemptions_ = 0, steps_ = 0;
  int64_t drafted_ = 0, verified_ = 0, accepted_ = 0, verifies_ = 0;  // self-speculation
  Histogram ttft_, itl_, pages_attended_;
  BatchLoad load_;
};

}  // namespace vortex::server
