// The OpenAI-compatible HTTP front end (cpp-httplib): routes, JSON error bodies, server-sent
// event streaming, client-disconnect cancellation and the SIGTERM drain.
//
//   POST /v1/completions, /v1/chat/completions   (stream or not)
//   GET  /v1/models, /health, /metrics
//
// Each connection runs on a pool thread; a streaming response holds its thread while it streams,
// reading events the engine thread queued for it. A write that fails (client gone) cancels the
// request's sequences, which frees their KV pages at the next step boundary.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "server/metrics.h"
#include "server/openai_protocol.h"

namespace vortex {
class Engine;
class ServingEngine;
}  // namespace vortex

namespace vortex::server {

struct HttpOptions {
  std::string host = "127.0.0.1";
  int port = 8000;                        // 0: any free port (bind() returns it)
  int64_t max_body_bytes = 8 << 20;       // larger bodies get 413
  int threads = 256;                      // connection threads: each open stream holds one
};

class HttpServer {
 public:
  HttpServer(Engine& engine, ServingEngine& serving, Metrics& metrics, ServedModel model, HttpOptions options);
  ~HttpServer();
  // Binds the listening socket; returns the port. Throws vortex::Error when the address is taken.
  int bind();
  // Serves until drain() has taken effect and every accepted request has been answered.
  void run();
  // Stops accepting connections; requests in flight finish, new ones on open connections get 503.
  // Safe from any thread.
  void drain();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace vortex::server
