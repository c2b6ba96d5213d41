#include "server/http_server.h"

#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <random>

#include <httplib.h>

#include "core/error.h"
#include "runtime/engine_access.h"
#include "runtime/serving_engine.h"
#include "server/openai_responses.h"
#include "vortex/engine.h"

namespace vortex::server {
namespace {

using namespace std::chrono_literals;

// httplib::Server whose listening socket can be shut without Server::stop(): stop() also ends
// chunked responses mid-stream (their writers watch for it), which a drain must not do. After
// stop_accepting(), listen() returns once every connection thread has finished.
class Listener : public httplib::Server {
 public:
  void stop_accepting() {
    auto sock = svr_sock_.load();
    if (sock != INVALID_SOCKET) ::shutdown(sock, SHUT_RDWR);
  }
  // Debian's build fixes the listen backlog at 5: a burst of connections overflows it and clients
  // see resets. listen() again on the bound socket raises it (Linux updates the backlog in place).
  bool raise_backlog(int backlog) {
    auto sock = svr_sock_.load();
    return sock != INVALID_SOCKET && ::listen(sock, backlog) == 0;
  }
};

std::string endpoint_label(const std::string& path) {
  for (const char* known : {"/v1/completions", "/v1/chat/completions", "/v1/models", "/health", "/metrics"})
    if (path == known) return path;
  return "other";
}

void send_error(httplib::Response& res, const ApiError& error) {
  res.status = error.status;
  res.set_content(dump_json(error_json(error)), "application/json");
}

uint64_t random_u64() {
  thread_local std::mt19937_64 rng(std::random_device{}());
  return rng();
}

std::string random_id(const char* prefix) { return fmt::format("{}{:016x}{:08x}", prefix, random_u64(), random_u64() >> 32); }

int64_t unix_seconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// Events → server-sent events. Each pump() waits briefly for events, writes what it has in one
// chunk, and after the last choice writes the usage chunk and [DONE].
struct SseSession {
  ServingEngine& serving;
  std::shared_ptr<RequestStream> stream;
  StreamFormatter formatter;
  bool started = false;

  bool pump(httplib::DataSink& sink) {
    std::string out = started ? std::string() : formatter.begin();
    started = true;
    StreamEvent event;
    if (stream->next(event, 200ms)) {
      out += formatter.on_event(event);
      while (stream->next(event, 0ms)) out += formatter.on_event(event);
    }
    if (formatter.finished()) out += formatter.end();
    // An empty write would end httplib's chunked loop, so only write text.
    if (!out.empty() && !sink.write(out.data(), out.size())) return false;  // client gone
    if (formatter.finished()) sink.done();
    return true;
  }
};

// Events → one JSON response. While waiting it writes a space every kHeartbeat (JSON allows
// leading whitespace): a failed write is how a disconnected client is noticed, so its sequences
// stop. TCP reports a closed peer on the second write after it left, so the interval bounds how
// much work a vanished client can still cause: 50 ms is ~100 ms of decode (20 bytes/s of spaces).
constexpr auto kHeartbeat = std::chrono::milliseconds(50);

struct JsonSession {
  std::shared_ptr<RequestStream> stream;
  ResponseCollector collector;

  bool pump(httplib::DataSink& sink) {
    StreamEvent event;
    // The deadline ends the wait even while events keep coming: on a GPU the tokens of a long
    // request arrive faster than any timeout, and a heartbeat that waited for a pause would not
    // be written before the request finished (a GPU run of the disconnect suite found this).
    const auto deadline = std::chrono::steady_clock::now() + kHeartbeat;
    while (!collector.finished()) {
      const auto left = deadline - std::chrono::steady_clock::now();
      if (left <= 0ns || !stream->next(event, std::chrono::duration_cast<std::chrono::milliseconds>(left) + 1ms)) break;
      collector.on_event(event);
    }
    if (!collector.finished()) return sink.write(" ", 1);
    std::string body = collector.error().empty() ? dump_json(collector.response())
                                                 : dump_json(error_json(ApiError(500, collector.error(), {}, "server_error")));
    if (!sink.write(body.data(), body.size())) return false;
    sink.done();
    return true;
  }
};

}  // namespace

struct HttpServer::Impl {
  Impl(Engine& e, ServingEngine& s, Metrics& m, ServedModel sm, HttpOptions o)
      : engine(e), serving(s), metrics(m), model(std::move(sm)), options(std::move(o)) {}
  Engine& engine;
  ServingEngine& serving;
  Metrics& metrics;
  ServedModel model;
  HttpOptions options;
  Listener server;
  std::atomic<bool> draining{false};

  void routes();
  void handle_generate(Endpoint endpoint, const httplib::Request& req, httplib::Response& res);
  void respond_stream(const CompletionParams& params, const ResponseMeta& meta, std::shared_ptr<RequestStream> stream,
                      int64_t prompt_tokens, httplib::Response& res);
  void respond_json(const ResponseMeta& meta, std::shared_ptr<RequestStream> stream, int64_t prompt_tokens, httplib::Response& res);
};

void HttpServer::Impl::handle_generate(Endpoint endpoint, const httplib::Request& req, httplib::Response& res) {
  try {
    if (draining) throw ApiError(503, "The server is shutting down.", {}, "server_error");
    if (static_cast<int64_t>(req.body.size()) > options.max_body_bytes)
      throw ApiError(413, fmt::format("The request body has {} bytes; the limit is {}.", req.body.size(), options.max_body_bytes));
    CompletionParams params = parse_request(endpoint, req.body, model);
    auto prompts = tokenize_prompts(params, EngineAccess::tokenizer(engine), EngineAccess::chat_template(engine), model);
    auto requests = build_requests(params, prompts, model, random_u64());
    int64_t prompt_tokens = 0;
    for (const auto& p : prompts) prompt_tokens += static_cast<int64_t>(p.size());
    auto stream = serving.submit(std::move(requests));
    metrics.add_prompt_tokens(prompt_tokens);
    ResponseMeta meta{.endpoint = endpoint, .id = random_id(endpoint == Endpoint::kChatCompletions ? "chatcmpl-" : "cmpl-"),
                      .created = unix_seconds(), .model = params.model, .logprobs = params.logprobs,
                      .textless = EngineAccess::tokenizer(engine) == nullptr};
    if (params.stream) respond_stream(params, meta, std::move(stream), prompt_tokens, res);
    else respond_json(meta, std::move(stream), prompt_tokens, res);
  } catch (const ApiError& e) {
    send_error(res, e);
  } catch (const ShuttingDownError& e) {
    send_error(res, ApiError(503, e.what(), {}, "server_error"));
  } catch (const Error& e) {  // the engine's own validation: a user mistake
    send_error(res, ApiError(400, e.what()));
  } catch (const std::exception& e) {
    send_error(res, ApiError(500, std::string("internal: ") + e.what(), {}, "server_error"));
  }
}

void HttpServer::Impl::respond_stream(const CompletionParams& params, const ResponseMeta& meta,
                                      std::shared_ptr<RequestStream> stream, int64_t prompt_tokens, httplib::Response& res) {
  auto session = std::make_shared<SseSession>(SseSession{
      .serving = serving, .stream = stream,
      .formatter = StreamFormatter(meta, stream->choices(), prompt_tokens, params.include_usage, EngineAccess::tokenizer(engine))});
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream", [session](size_t, httplib::DataSink& sink) { return session->pump(sink); },
      [session](bool) { session->serving.cancel(session->stream); });  // no-op for sequences that finished
}

void HttpServer::Impl::respond_json(const ResponseMeta& meta, std::shared_ptr<RequestStream> stream, int64_t prompt_tokens,
                                    httplib::Response& res) {
  auto session = std::make_shared<JsonSession>(
      JsonSession{.stream = stream, .collector = ResponseCollector(meta, stream->choices(), prompt_tokens, EngineAccess::tokenizer(engine))});
  ServingEngine* engine_front = &serving;
  // "; charset=utf-8" keeps httplib from gzip-compressing the body, which would swallow the heartbeat.
  res.set_chunked_content_provider(
      "application/json; charset=utf-8", [session](size_t, httplib::DataSink& sink) { return session->pump(sink); },
      [session, engine_front](bool) { engine_front->cancel(session->stream); });
}

void HttpServer::Impl::routes() {
  server.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    res.status = draining ? 503 : 200;
    res.set_content(draining ? R"({"status":"draining"})" : R"({"status":"ok"})", "application/json");
  });
  server.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(dump_json(models_json(model, unix_seconds())), "application/json");
  });
  server.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(metrics.render(), "text/plain; version=0.0.4");
  });
  server.Post("/v1/completions", [this](const httplib::Request& req, httplib::Response& res) {
    handle_generate(Endpoint::kCompletions, req, res);
  });
  server.Post("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res) {
    handle_generate(Endpoint::kChatCompletions, req, res);
  });
  for (const char* path : {"/v1/completions", "/v1/chat/completions"})
    server.Get(path, [](const httplib::Request&, httplib::Response& res) {
      send_error(res, ApiError(405, "Use POST for this endpoint."));
    });
}

HttpServer::HttpServer(Engine& engine, ServingEngine& serving, Metrics& metrics, ServedModel model, HttpOptions options)
    : impl_(std::make_unique<Impl>(engine, serving, metrics, std::move(model), options)) {
  Impl& m = *impl_;
  const int threads = options.threads;
  m.server.new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };
  m.server.set_payload_max_length(static_cast<size_t>(options.max_body_bytes));
  m.server.set_keep_alive_max_count(100);
  m.server.set_tcp_nodelay(true);  // a streamed token must not wait for Nagle
  // httplib's default also sets SO_REUSEPORT, which lets a second server bind the same port and
  // silently take half the connections; a port in use must be an error instead.
  m.server.set_socket_options([](socket_t sock) {
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  m.routes();
  // Errors httplib produces itself (404, 413 payload too large, 400 bad request line) get an
  // OpenAI-style body too; responses that already have one are left alone.
  m.server.set_error_handler(httplib::Server::HandlerWithResponse([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty() || res.is_chunked_content_provider_) return httplib::Server::HandlerResponse::Unhandled;
    std::string message = res.status == 404   ? fmt::format("Not found: {} {}", req.method, req.path)
                          : res.status == 413 ? std::string("The request body is over the size limit.")
                                              : fmt::format("The request could not be read (HTTP {}).", res.status);
    res.set_content(dump_json(error_json(ApiError(res.status, message))), "application/json");
    return httplib::Server::HandlerResponse::Handled;
  }));
  m.server.set_logger([&metrics = m.metrics](const httplib::Request& req, const httplib::Response& res) {
    metrics.count_request(endpoint_label(req.path), res.status);
  });
}

HttpServer::~HttpServer() = default;

int HttpServer::bind() {
  Impl& m = *impl_;
  int port = m.options.port;
  if (port == 0) {
    port = m.server.bind_to_any_port(m.options.host);
    check(port > 0, "cannot listen on {}: no free port", m.options.host);
  } else {
    check(m.server.bind_to_port(m.options.host, port), "cannot listen on {}:{} (in use, or not a local address)",
          m.options.host, port);
  }
  check(m.server.raise_backlog(SOMAXCONN), "cannot listen on {}:{}: listen() failed", m.options.host, port);
  return port;
}

void HttpServer::run() { impl_->server.listen_after_bind(); }

void HttpServer::drain() {
  impl_->draining = true;
  impl_->server.stop_accepting();
}

}  // namespace vortex::server
