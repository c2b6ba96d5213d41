// vortex bench serve: drives a running server with concurrent streaming completions and reports
// requests/s, output tokens/s, time to first token and inter-token latency (p50, p99) per
// concurrency level. Output length is fixed (ignore_eos) so levels are comparable.
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

namespace vortex::server {

struct ServeBenchOptions {
  std::string url = "http://127.0.0.1:8000";  // http://HOST:PORT
  int64_t concurrency = 1;     // requests in flight at once
  int64_t requests = 32;       // requests in this level
  int64_t max_tokens = 32;     // generated tokens per request
  int64_t prompt_words = 32;   // words in each prompt
  int64_t prompt_tokens = 0;   // > 0: each prompt as this many token ids instead of words (servers without tokenizer)
  std::string model;           // empty: the first model /v1/models lists
  std::string attention;       // non-empty: every request's "vortex": {"attention": ...}
  double timeout_s = 600;      // per request
};

// Runs one concurrency level; throws vortex::Error when the server cannot be reached.
nlohmann::json run_serve_bench(const ServeBenchOptions& options);

}  // namespace vortex::server
