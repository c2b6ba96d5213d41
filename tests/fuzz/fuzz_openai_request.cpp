// libFuzzer target: the OpenAI request parser (parse_request) on arbitrary bodies, for both
// endpoints: every byte of a request body comes from a client.
//
// Each input either parses or throws ApiError (a 4xx with a message): no crash, sanitizer report,
// other exception, leak or hang. A request that parses has its bounded fields within their bounds.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "core/error.h"
#include "server/openai_protocol.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view body(reinterpret_cast<const char*>(data), size);
  static const vortex::server::ServedModel model{.names = {"m", "alias"}, .max_context = 4096, .vocab_size = 1000, .default_attention = "dense"};
  for (vortex::server::Endpoint endpoint : {vortex::server::Endpoint::kCompletions, vortex::server::Endpoint::kChatCompletions}) {
    try {
      const vortex::server::CompletionParams p = vortex::server::parse_request(endpoint, body, model);
      const bool sane = p.n >= 1 && p.n <= 16 && p.logprobs >= -1 && p.logprobs <= 20 && (!p.max_tokens || *p.max_tokens >= 0) &&
                        p.sampling.temperature >= 0.0f && p.sampling.top_p > 0.0f && p.sampling.top_p <= 1.0f;
      if (!sane) {
        std::fprintf(stderr, "fuzz_openai_request: accepted out-of-range fields (n %d, logprobs %d, temperature %g, top_p %g)\n", p.n,
                     p.logprobs, p.sampling.temperature, p.sampling.top_p);
        std::abort();
      }
      for (const auto& ids : p.prompt_tokens)
        for (int32_t id : ids)
          if (id < 0 || id >= model.vocab_size) {
            std::fprintf(stderr, "fuzz_openai_request: accepted token id %d\n", id);
            std::abort();
          }
    } catch (const vortex::server::ApiError& e) {
      if (e.status < 400 || e.status > 499) {
        std::fprintf(stderr, "fuzz_openai_request: status %d for a bad body\n", e.status);
        std::abort();
      }
    }
  }
  return 0;
}
