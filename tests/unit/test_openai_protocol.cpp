// The server's pure parts: the attention spec grammar, OpenAI request validation (every bad
// input the issue lists gets its 4xx and names the field), response and stream formats, metrics.
#include <gtest/gtest.h>

#include "common/test_util.h"
#include "core/error.h"
#include "io/chat_template.h"
#include "io/tokenizer.h"
#include "sparse/attention_spec.h"
#include "server/metrics.h"
#include "server/openai_protocol.h"
#include "server/openai_responses.h"

namespace vortex::server {
namespace {

using json = nlohmann::json;

ServedModel served() { return {.names = {"tiny", "models/tiny"}, .max_context = 64, .vocab_size = 512, .default_attention = "dense", .default_speculate = "", .default_gamma = 0}; }

CompletionParams parse(Endpoint endpoint, const std::string& body) { return parse_request(endpoint, body, served()); }
CompletionParams chat(const std::string& body) { return parse(Endpoint::kChatCompletions, body); }
CompletionParams completion(const std::string& body) { return parse(Endpoint::kCompletions, body); }

// The ApiError of a body, checked for status and that the message mentions `needle`.
void expect_error(Endpoint endpoint, const std::string& body, int status, const std::string& needle) {
  try {
    parse(endpoint, body);
    ADD_FAILURE() << "accepted: " << body;
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status, status) << body << " → " << e.what();
    std::string text = std::string(e.what()) + " " + e.param;
    EXPECT_NE(text.find(needle), std::string::npos) << body << " → " << text;
  }
}

TEST(OpenAiProtocol, ParsesAChatRequest) {
  auto p = chat(R"({"model":"tiny","messages":[{"role":"developer","content":"be brief"},
      {"role":"user","content":[{"type":"text","text":"hi "},{"type":"text","text":"there"}]}],
      "max_completion_tokens":5,"max_tokens":9,"temperature":0.5,"top_p":0.9,"top_k":-1,"min_p":0.1,"seed":-3,
      "stop":"\n","n":2,"logprobs":true,"top_logprobs":3,"stream":true,"stream_options":{"include_usage":true},
      "some_future_field":{"x":1},"vortex":{"attention":"dense","ignore_eos":true}})");
  EXPECT_EQ(p.messages[0]["role"], "system");  // developer → system, as chat templates expect
  EXPECT_EQ(p.messages[1]["content"], "hi there");
  EXPECT_EQ(p.max_tokens, 5);                  // max_completion_tokens wins
  EXPECT_FLOAT_EQ(p.sampling.temperature, 0.5f);
  EXPECT_EQ(p.sampling.top_k, 0);              // -1 = off
  EXPECT_TRUE(p.seed_given);
  EXPECT_EQ(p.stop, std::vector<std::string>{"\n"});
  EXPECT_EQ(p.n, 2);
  EXPECT_EQ(p.logprobs, 3);
  EXPECT_TRUE(p.stream && p.include_usage && p.ignore_eos);
  EXPECT_EQ(p.attention, "dense");
}

TEST(OpenAiProtocol, ParsesEveryCompletionPromptForm) {
  EXPECT_EQ(completion(R"({"model":"tiny","prompt":"a"})").prompt_texts.size(), 1u);
  EXPECT_EQ(completion(R"({"model":"tiny","prompt":["a","b"]})").prompt_texts.size(), 2u);
  auto ids = completion(R"({"model":"tiny","prompt":[1,2,3],"logprobs":2})");
  ASSERT_TRUE(ids.prompt_is_tokens);
  EXPECT_EQ(ids.prompt_tokens[0], (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ(ids.logprobs, 2);
  EXPECT_EQ(completion(R"({"model":"models/tiny","prompt":[[1],[2,3]]})").prompt_tokens.size(), 2u);
}

TEST(OpenAiProtocol, EveryBadInputIsA4xxNamingTheField) {
  const Endpoint C = Endpoint::kCompletions, H = Endpoint::kChatCompletions;
  expect_error(C, R"({"model":"tiny","prompt":"a",)", 400, "not valid JSON");
  expect_error(C, R"({"model":"tiny","prompt":"a","temperature":6666666666e666})", 400, "not valid JSON");  // beyond a double
  expect_error(C, "[1,2]", 400, "JSON object");
  expect_error(C, "{\"model\":\"tiny\",\"prompt\":\"\xff\xfe\"}", 400, "UTF-8");
  expect_error(C, R"({"model":"tiny","prompt":"\ud800"})", 400, "UTF-8");  // a lone surrogate
  expect_error(C, R"({"model":"gpt-9","prompt":"a"})", 404, "gpt-9");
  expect_error(C, R"({"prompt":"a"})", 400, "model");
  expect_error(C, R"({"model":"tiny","prompt":"a","max_tokens":"5"})", 400, "max_tokens");
  expect_error(C, R"({"model":"tiny","prompt":"a","max_tokens":-1})", 400, "max_tokens");
  expect_error(C, R"({"model":"tiny","prompt":"a","max_tokens":0})", 400, "max_tokens");
  expect_error(C, R"({"model":"tiny","prompt":"a","max_tokens":1.5})", 400, "max_tokens");
  expect_error(C, R"({"model":"tiny","prompt":"a","max_tokens":99999999999999999999})", 400, "max_tokens");
  expect_error(C, R"({"model":"tiny","prompt":"a","temperature":"hot"})", 400, "temperature");
  expect_error(C, R"({"model":"tiny","prompt":"a","temperature":3})", 400, "temperature");
  expect_error(C, R"({"model":"tiny","prompt":"a","top_p":0})", 400, "top_p");
  expect_error(C, R"({"model":"tiny","prompt":"a","n":0})", 400, "n");
  expect_error(C, R"({"model":"tiny","prompt":"a","stop":[""]})", 400, "stop");
  expect_error(C, R"({"model":"tiny","prompt":"a","stop":7})", 400, "stop");
  expect_error(C, R"({"model":"tiny","prompt":"a","stream":"yes"})", 400, "stream");
  expect_error(C, R"({"model":"tiny","prompt":"a","stream_options":{"include_usage":true}})", 400, "stream_options");
  expect_error(C, R"({"model":"tiny","prompt":[]})", 400, "prompt");
  expect_error(C, R"({"model":"tiny","prompt":[1,99999]})", 400, "99999");
  expect_error(C, R"({"model":"tiny","prompt":[1,"a"]})", 400, "prompt");
  expect_error(C, R"({"model":"tiny","prompt":"a","echo":true})", 400, "echo");
  EXPECT_EQ(completion(R"({"model":"tiny","prompt":"a","vortex":{"attention":"quest:budget=1024"}})").attention,
            "quest:budget=1024");  // sparse specs are served (the engine resolves them)
  expect_error(C, R"({"model":"tiny","prompt":"a","vortex":{"attention":"flow:/tmp/x.flow,budget=64"}})", 400, "read files");
  expect_error(C, R"({"model":"tiny","prompt":"a","vortex":{"attention":"quest:budget=abc"}})", 400, "budget");
  expect_error(C, R"({"model":"tiny","prompt":"a","vortex":{"attention":7}})", 400, "vortex.attention");
  // Self-speculation: a draft spec and gamma per request, validated like attention.
  const CompletionParams spec = completion(R"({"model":"tiny","prompt":"a","vortex":{"speculate":"quest:budget=256","gamma":3}})");
  EXPECT_EQ(spec.speculate, "quest:budget=256");
  EXPECT_EQ(spec.gamma, 3);
  EXPECT_EQ(completion(R"({"model":"tiny","prompt":"a","vortex":{"speculate":"quest:budget=256","gamma":"auto"}})").gamma, 0);
  expect_error(C, R"({"model":"tiny","prompt":"a","vortex":{"speculate":"quest:budget=256","gamma":0}})", 400, "1..16");
  expect_error(C, R"({"model":"tiny","prompt":"a","vortex":{"speculate":"quest:budget=256","gamma":2.5}})", 400, "vortex.gamma");
  expect_error(C, R"({"model":"tiny","prompt":"a","vortex":{"gamma":4}})", 400, "needs vortex.speculate");
  expect_error(C, R"({"model":"tiny","prompt":"a","vortex":{"speculate":"flow:/tmp/x.flow,budget=64"}})", 400, "read files");
  expect_error(C, R"({"model":"tiny","prompt":"a","vortex":{"speculate":["quest"]}})", 400, "vortex.speculate");
  expect_error(H, R"({"model":"tiny","messages":[]})", 400, "messages");
  expect_error(H, R"({"model":"tiny","messages":"hi"})", 400, "messages");
  expect_error(H, R"({"model":"tiny","messages":[{"role":"wizard","content":"x"}]})", 400, "wizard");
  expect_error(H, R"({"model":"tiny","messages":[{"content":"x"}]})", 400, "role");
  expect_error(H, R"({"model":"tiny","messages":[{"role":"user"}]})", 400, "content");
  expect_error(H, R"({"model":"tiny","messages":[{"role":"user","content":5}]})", 400, "content");
  expect_error(H, R"({"model":"tiny","messages":[{"role":"user","content":[{"type":"image_url"}]}]})", 400, "image_url");
  expect_error(H, R"({"model":"tiny","messages":[{"role":"user","content":"x"}],"top_logprobs":2})", 400, "top_logprobs");
}

TEST(OpenAiProtocol, ContextLimitsAreCheckedAfterTokenisation) {
  auto p = completion(R"({"model":"tiny","prompt":[1,2,3],"n":2,"seed":10})");
  auto requests = build_requests(p, p.prompt_tokens, served(), 99);
  ASSERT_EQ(requests.size(), 2u);
  EXPECT_EQ(requests[0].max_tokens, 16);  // OpenAI's completions default
  EXPECT_EQ(requests[0].sampling.seed, 10u);
  EXPECT_EQ(requests[1].sampling.seed, 11u);  // n choices differ, reproducibly
  auto c = chat(R"({"model":"tiny","messages":[{"role":"user","content":"x"}]})");
  EXPECT_EQ(build_requests(c, {{1, 2, 3, 4}}, served(), 0)[0].max_tokens, 60);  // chat: the rest of the context
  auto big = completion(R"({"model":"tiny","prompt":[1,2,3],"max_tokens":62})");
  try {
    build_requests(big, big.prompt_tokens, served(), 0);
    ADD_FAILURE();
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status, 400);
    EXPECT_EQ(e.param, "max_tokens");
  }
  std::vector<std::vector<int32_t>> long_prompt{std::vector<int32_t>(64, 5)};
  try {
    build_requests(c, long_prompt, served(), 0);
    ADD_FAILURE();
  } catch (const ApiError& e) {
    EXPECT_EQ(e.code, "context_length_exceeded");
    EXPECT_NE(std::string(e.what()).find("64"), std::string::npos);
  }
}

TEST(OpenAiProtocol, ChatTemplateIsApplied) {
  auto dir = test::data_dir() / "models" / "qwen3-f32";
  Tokenizer tokenizer = Tokenizer::load(dir);
  ChatTemplate chat_template = ChatTemplate::load(dir);
  auto p = chat(R"({"model":"tiny","messages":[{"role":"user","content":"hello"}]})");
  ServedModel model = served();
  model.max_context = 4096;
  auto prompts = tokenize_prompts(p, &tokenizer, &chat_template, model);
  ASSERT_EQ(prompts.size(), 1u);
  std::string text = tokenizer.decode(prompts[0]);
  EXPECT_NE(text.find("<|im_start|>user\nhello<|im_end|>"), std::string::npos) << text;
  EXPECT_NE(text.find("<|im_start|>assistant"), std::string::npos) << text;
  EXPECT_THROW(tokenize_prompts(p, &tokenizer, nullptr, model), ApiError);  // no template: 400
}

TEST(OpenAiResponses, ChatStreamHasOpenAisChunkSequence) {
  ResponseMeta meta{.endpoint = Endpoint::kChatCompletions, .id = "chatcmpl-1", .created = 7, .model = "tiny", .logprobs = -1};
  StreamFormatter f(meta, 1, 4, /*include_usage=*/true, nullptr);
  std::string out = f.begin();
  StreamEvent token;
  token.token.text = "Hi";
  out += f.on_event(token);
  StreamEvent held;  // a token whose text is held back writes nothing
  out += f.on_event(held);
  StreamEvent finish;
  finish.kind = StreamEvent::Kind::kFinish;
  finish.text = "!";
  finish.finish_reason = FinishReason::kStop;
  finish.generated_tokens = 3;
  finish.cached_tokens = 2;
  out += f.on_event(finish);
  ASSERT_TRUE(f.finished());
  out += f.end();
  std::vector<json> chunks;
  size_t pos = 0;
  for (size_t end; (end = out.find("\n\n", pos)) != std::string::npos; pos = end + 2) {
    std::string event = out.substr(pos, end - pos);
    ASSERT_EQ(event.rfind("data: ", 0), 0u) << event;
    if (event == "data: [DONE]") { EXPECT_EQ(end + 2, out.size()); break; }
    chunks.push_back(json::parse(event.substr(6)));
  }
  ASSERT_EQ(chunks.size(), 5u);
  EXPECT_EQ(chunks[0]["choices"][0]["delta"], (json{{"role", "assistant"}, {"content", ""}}));
  EXPECT_EQ(chunks[1]["choices"][0]["delta"]["content"], "Hi");
  EXPECT_TRUE(chunks[1]["choices"][0]["finish_reason"].is_null());
  EXPECT_TRUE(chunks[1]["usage"].is_null());
  EXPECT_EQ(chunks[2]["choices"][0]["delta"]["content"], "!");
  EXPECT_EQ(chunks[3]["choices"][0]["delta"], json::object());
  EXPECT_EQ(chunks[3]["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(chunks[4]["choices"], json::array());
  EXPECT_EQ(chunks[4]["usage"], (json{{"prompt_tokens", 4}, {"completion_tokens", 3}, {"total_tokens", 7},
                                       {"prompt_tokens_details", {{"cached_tokens", 2}}}}));
  for (const auto& c : chunks) {
    EXPECT_EQ(c["object"], "chat.completion.chunk");
    EXPECT_EQ(c["id"], "chatcmpl-1");
  }
}

// A model without tokenizer (serve --random-weights) has no text: each generated token still
// makes a chunk, with empty text and no finish_reason, so a client sees the stream advance.
TEST(OpenAiResponses, TextlessStreamsMakeAChunkPerToken) {
  ResponseMeta meta{.endpoint = Endpoint::kCompletions, .id = "cmpl-1", .created = 7, .model = "shapes", .logprobs = -1,
                    .textless = true};
  StreamFormatter f(meta, 1, 4, /*include_usage=*/false, nullptr);
  std::string out = f.begin();
  StreamEvent token;
  for (int i = 0; i < 3; ++i) out += f.on_event(token);
  StreamEvent finish;
  finish.kind = StreamEvent::Kind::kFinish;
  finish.finish_reason = FinishReason::kLength;
  finish.generated_tokens = 3;
  out += f.on_event(finish);
  out += f.end();
  std::vector<json> chunks;
  size_t pos = 0;
  for (size_t end; (end = out.find("\n\n", pos)) != std::string::npos; pos = end + 2) {
    std::string event = out.substr(pos, end - pos);
    if (event == "data: [DONE]") break;
    chunks.push_back(json::parse(event.substr(6)));
  }
  ASSERT_EQ(chunks.size(), 4u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(chunks[static_cast<size_t>(i)]["choices"][0]["text"], "");
    EXPECT_TRUE(chunks[static_cast<size_t>(i)]["choices"][0]["finish_reason"].is_null());
  }
  EXPECT_EQ(chunks[3]["choices"][0]["finish_reason"], "length");
}

TEST(OpenAiResponses, CompletionWithLogprobs) {
  auto dir = test::data_dir() / "models" / "qwen3-f32";
  Tokenizer tokenizer = Tokenizer::load(dir);
  ResponseMeta meta{.endpoint = Endpoint::kCompletions, .id = "cmpl-1", .created = 7, .model = "tiny", .logprobs = 1};
  ResponseCollector c(meta, 1, 3, &tokenizer);
  StreamEvent t;
  t.token = {.token = 100, .stop_token = false, .logprob = -0.5f, .top = {{100, -0.5f}}, .text = tokenizer.decode({100})};
  c.on_event(t);
  StreamEvent eos;
  eos.token = {.token = 2, .stop_token = true, .logprob = -1.0f, .top = {}, .text = ""};
  c.on_event(eos);
  StreamEvent finish;
  finish.kind = StreamEvent::Kind::kFinish;
  finish.finish_reason = FinishReason::kStop;
  finish.generated_tokens = 2;
  c.on_event(finish);
  ASSERT_TRUE(c.finished());
  json r = json::parse(dump_json(c.response()));
  EXPECT_EQ(r["object"], "text_completion");
  EXPECT_EQ(r["choices"][0]["text"], tokenizer.decode({100}));
  EXPECT_EQ(r["choices"][0]["finish_reason"], "stop");
  const json& lp = r["choices"][0]["logprobs"];
  ASSERT_EQ(lp["tokens"].size(), 1u);  // the stop token is not part of the output
  EXPECT_FLOAT_EQ(lp["token_logprobs"][0].get<float>(), -0.5f);
  EXPECT_EQ(lp["text_offset"][0], 0);
  EXPECT_EQ(r["usage"]["total_tokens"], 5);
}

TEST(Metrics, RendersPrometheusText) {
  Metrics m;
  m.count_request("/v1/completions", 200);
  m.count_request("/v1/completions", 400);
  m.add_prompt_tokens(12);
  StepStats step;
  step.chunks = 2;
  step.sampled = 2;
  step.pages_attended = 5;
  step.first_token_s = {0.03};
  step.inter_token_s = {0.002, 0.5};
  m.on_step(step);
  m.on_load({.running = 2, .waiting = 1, .pages_used = 5, .pages_free = 11, .pages_cached = 0, .prefix = {}});
  std::string text = m.render();
  for (const char* line : {"vortex_requests_total{endpoint=\"/v1/completions\",status=\"400\"} 1",
                           "vortex_prompt_tokens_total 12", "vortex_generation_tokens_total 2",
                           "vortex_time_to_first_token_seconds_bucket{le=\"0.05\"} 1",
                           "vortex_inter_token_latency_seconds_bucket{le=\"0.0025\"} 1",
                           "vortex_inter_token_latency_seconds_count 2", "vortex_pages_attended_per_step_sum 5",
                           "vortex_running_sequences 2", "vortex_waiting_sequences 1", "vortex_kv_pages_used 5",
                           "vortex_kv_pages_free 11", "# TYPE vortex_time_to_first_token_seconds histogram"})
    EXPECT_NE(text.find(line), std::string::npos) << line << "\n" << text;
}

}  // namespace
}  // namespace vortex::server
