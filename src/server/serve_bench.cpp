#include "server/serve_bench.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include <httplib.h>

#include "core/error.h"

namespace vortex::server {
namespace {

using Clock = std::chrono::steady_clock;
double seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

struct RequestTiming {
  bool ok = false;
  double ttft_s = 0.0;
  std::vector<double> gaps_s;   // between content chunks
  int64_t output_tokens = 0;    // from the usage chunk
  std::string error;            // why it failed
};

// Drawn once per process: no prompt of this run begins like a prompt of another run against the
// same server (or of another concurrency level of this run), so no request finds another's pages
// in the prefix cache and every level prefills what it measures.
uint64_t run_nonce() {
  static const uint64_t nonce = (uint64_t{std::random_device{}()} << 32) ^ std::random_device{}();
  return nonce;
}

uint64_t mix(uint64_t x) {  // splitmix64's finaliser
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

std::string prompt_text(int64_t words, int64_t index) {
  static const char* kWords[] = {"the", "engine", "reads", "pages", "of", "keys", "and", "values", "for", "every", "step"};
  std::string text = fmt::format("Request {:x}-{}:", run_nonce() & 0xffffff, index);
  for (int64_t i = 0; i < words; ++i) text += std::string(" ") + kWords[(i + index) % 11];
  return text;
}

// `tokens` pseudo-random ids in 3..502 (valid in any vocabulary this project serves), from the
// run's nonce, the request's index and the position: requests share no prefix pages.
std::vector<int32_t> prompt_ids(int64_t tokens, int64_t index) {
  std::vector<int32_t> ids;
  const uint64_t request = mix(run_nonce() ^ mix(static_cast<uint64_t>(index)));
  for (int64_t i = 0; i < tokens; ++i) ids.push_back(static_cast<int32_t>(mix(request + static_cast<uint64_t>(i)) % 500 + 3));
  return ids;
}

// Splits the SSE byte stream into `data:` payloads and times the content chunks.
class SseTimer {
 public:
  SseTimer(Clock::time_point sent, RequestTiming& timing) : sent_(sent), last_(sent), timing_(timing) {}
  bool feed(const char* data, size_t size) {
    buffer_.append(data, size);
    for (size_t end; (end = buffer_.find("\n\n")) != std::string::npos; buffer_.erase(0, end + 2)) on_event(buffer_.substr(0, end));
    return true;
  }

 private:
  void on_event(const std::string& event) {
    if (event.rfind("data: ", 0) != 0) return;
    std::string payload = event.substr(6);
    if (payload == "[DONE]") { timing_.ok = true; return; }
    auto chunk = nlohmann::json::parse(payload, nullptr, false);
    if (chunk.is_discarded()) return;
    if (chunk.contains("usage") && chunk["usage"].is_object()) timing_.output_tokens = chunk["usage"].value("completion_tokens", 0);
    // A token's chunk: text, or (a server without tokenizer) an empty text without finish_reason.
    if (!chunk.contains("choices") || chunk["choices"].empty()) return;
    const nlohmann::json& choice = chunk["choices"][0];
    const bool finishing = choice.contains("finish_reason") && !choice["finish_reason"].is_null();
    if (choice.value("text", "").empty() && finishing) return;
    auto now = Clock::now();
    if (!seen_) timing_.ttft_s = seconds(now - sent_);
    else timing_.gaps_s.push_back(seconds(now - last_));
    seen_ = true;
    last_ = now;
  }

  Clock::time_point sent_, last_;
  RequestTiming& timing_;
  std::string buffer_;
  bool seen_ = false;
};

RequestTiming run_request(httplib::Client& client, const ServeBenchOptions& o, const std::string& model, int64_t index) {
  nlohmann::json body = {{"model", model}, {"max_tokens", o.max_tokens}, {"temperature", 0}, {"stream", true},
                         {"stream_options", {{"include_usage", true}}}, {"vortex", {{"ignore_eos", true}}}};
  if (o.prompt_tokens > 0) body["prompt"] = prompt_ids(o.prompt_tokens, index);
  else body["prompt"] = prompt_text(o.prompt_words, index);
  if (!o.attention.empty()) body["vortex"]["attention"] = o.attention;
  RequestTiming timing;
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/completions";
  req.body = body.dump();
  req.set_header("Content-Type", "application/json");
  SseTimer timer(Clock::now(), timing);
  req.content_receiver = [&](const char* data, size_t size, uint64_t, uint64_t) { return timer.feed(data, size); };
  auto result = client.send(req);
  if (!result || result->status != 200) {
    timing.ok = false;
    timing.error = result ? fmt::format("HTTP {}", result->status) : httplib::to_string(result.error());
  } else if (!timing.ok) {
    timing.error = "the stream ended without data: [DONE]";
  }
  return timing;
}

double percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0.0;
  std::sort(values.begin(), values.end());
  auto rank = static_cast<size_t>(p / 100.0 * static_cast<double>(values.size() - 1) + 0.5);
  return values[std::min(rank, values.size() - 1)];
}

std::string first_model(httplib::Client& client, const std::string& url) {
  auto res = client.Get("/v1/models");
  check(res && res->status == 200, "bench serve: {} does not answer GET /v1/models", url);
  auto models = nlohmann::json::parse(res->body, nullptr, false);
  check(!models.is_discarded() && models.contains("data") && !models["data"].empty(), "bench serve: {}/v1/models lists no model", url);
  return models["data"][0].value("id", "");
}

nlohmann::json summarise(const ServeBenchOptions& o, const std::vector<RequestTiming>& timings, double wall_s) {
  std::vector<double> ttft, itl;
  int64_t completed = 0, tokens = 0;
  std::map<std::string, int64_t> errors;
  for (const auto& t : timings) {
    if (!t.ok) { ++errors[t.error]; continue; }
    ++completed;
    tokens += t.output_tokens;
    ttft.push_back(t.ttft_s * 1e3);
    for (double g : t.gaps_s) itl.push_back(g * 1e3);
  }
  return {{"bench", "serve"}, {"url", o.url}, {"concurrency", o.concurrency}, {"requests", o.requests},
          {"completed", completed}, {"failed", o.requests - completed}, {"max_tokens", o.max_tokens},
          {"prompt_words", o.prompt_words}, {"prompt_tokens", o.prompt_tokens}, {"attention", o.attention}, {"duration_s", wall_s},
          {"requests_per_s", completed / wall_s}, {"output_tokens_per_s", tokens / wall_s},
          {"ttft_ms", {{"p50", percentile(ttft, 50)}, {"p99", percentile(ttft, 99)}}},
          {"itl_ms", {{"p50", percentile(itl, 50)}, {"p99", percentile(itl, 99)}}}, {"errors", errors}};
}

}  // namespace

nlohmann::json run_serve_bench(const ServeBenchOptions& o) {
  check(o.url.rfind("http://", 0) == 0, "bench serve: --url must start with http:// (got '{}')", o.url);
  check(o.concurrency > 0 && o.requests > 0 && o.max_tokens > 0, "bench serve: concurrency, requests and max tokens must be positive");
  httplib::Client probe(o.url);
  const std::string model = o.model.empty() ? first_model(probe, o.url) : o.model;
  std::vector<RequestTiming> timings(static_cast<size_t>(o.requests));
  std::atomic<int64_t> next{0};
  // Prompts are numbered across the calls of this process (one per concurrency level), so a level
  // never finds an earlier level's prompts cached.
  static std::atomic<int64_t> issued{0};
  const int64_t first = issued.fetch_add(o.requests);
  auto worker = [&] {
    httplib::Client client(o.url);
    client.set_read_timeout(static_cast<time_t>(o.timeout_s), 0);
    for (int64_t i; (i = next.fetch_add(1)) < o.requests;) timings[static_cast<size_t>(i)] = run_request(client, o, model, first + i);
  };
  auto start = Clock::now();
  std::vector<std::thread> threads;
  for (int64_t t = 0; t < std::min(o.concurrency, o.requests); ++t) threads.emplace_back(worker);
  for (auto& t : threads) t.join();
  return summarise(o, timings, seconds(Clock::now() - start));
}

}  // namespace vortex::server
