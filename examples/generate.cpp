// The public C++ API in one program: load a model, build a chat prompt, generate with an attention
// spec, stream the text. It includes only include/vortex/ (CMake gives this target nothing else),
// so it also checks that the public headers stand on their own.
//   build/vortex_example MODEL_DIR [QUESTION] [ATTENTION]
//   build/vortex_example models/gsm-qwen3-15m "What is 2 + 3?" auto:budget=512
#include <iostream>
#include <string>

#include "vortex/engine.h"

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << "usage: " << argv[0] << " MODEL_DIR [QUESTION] [ATTENTION]\n";
    return 2;
  }
  const std::string question = argc > 2 ? argv[2] : "What does a KV page hold?";
  try {
    auto engine = vortex::Engine::open(argv[1], {.max_context = 4096});
    const vortex::ModelInfo info = engine->model_info();
    std::cerr << info.architecture << ": " << info.num_layers << " layers, vocabulary " << info.vocab_size << "\n";

    vortex::GenerateRequest request;
    std::string escaped;  // the question as a JSON string's contents
    for (char c : question) escaped += (c == '"' || c == '\\') ? std::string("\\") + c : std::string(1, c);
    request.prompt = engine->has_chat_template() ? engine->chat_tokens(R"([{"role": "user", "content": ")" + escaped + R"("}])")
                                                 : engine->tokenize(question);
    request.max_tokens = 48;
    request.sampling.temperature = 0.0f;  // greedy
    request.attention = argc > 3 ? argv[3] : "dense";
    const vortex::GenerateResult result = engine->generate(request, [](std::string_view text) { std::cout << text << std::flush; });
    std::cout << "\n";
    std::cerr << result.tokens.size() << " tokens (" << vortex::finish_reason_name(result.finish_reason) << "), "
              << result.timing.decode_tokens_per_s() << " tokens/s\n";
  } catch (const vortex::Error& e) {  // every failure the library reports names what is wrong
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
