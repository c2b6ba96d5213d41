// The `vortex` Python module (pybind11): an Engine over a model directory with generate (one
// prompt, many prompts batched continuously, or a stream of text pieces), score, tokenize /
// detokenize and the chat template. docs/python.md is its guide.
//
// Every call runs the engine with the GIL released. One thread at a time steps the engine (a
// mutex); a stream steps it only inside next(), so sequences of several open streams (and a
// generate() called meanwhile) advance together in one continuous batch. Callbacks run on the
// stepping thread and only fill C++ state; Python objects are built after the GIL is back.
// vortex::Error becomes vortex.Error, a ValueError.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <pybind11/stl/filesystem.h>

#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/chat_template.h"
#include "io/hf_config.h"
#include "io/tokenizer.h"
#include "runtime/batch_engine.h"
#include "runtime/engine_access.h"
#include "runtime/generation.h"
#include "vortex/engine.h"

namespace py = pybind11;

namespace vortex::python {
namespace {

// One generated sequence, as Python sees it.
struct Completion {
  std::string text;
  std::vector<int32_t> token_ids;
  std::string finish_reason;
  std::optional<std::vector<float>> logprobs;                                    // with logprobs=N
  std::optional<std::vector<std::vector<std::pair<int32_t, float>>>> top_logprobs;  // N alternatives per token
  int64_t prompt_tokens = 0, cached_tokens = 0;
  double prefill_ms = 0.0, decode_ms = 0.0;
  std::optional<SpeculationStats> speculation;  // with speculate=...
  std::optional<RolloutTrace> rollout;          // with rollout=...
};

// What one sequence's callbacks deliver, shared with them (they may outlive a dropped stream).
struct SequenceState {
  bool want_logprobs = false;
  std::deque<std::string> pieces;  // text not yet taken by a stream
  Completion completion;
  bool done = false;
  std::string error;
};

SequenceCallbacks callbacks_for(const std::shared_ptr<SequenceState>& state) {
  return {.on_token =
              [state](const TokenOutput& out) {
                if (!out.text.empty()) state->pieces.push_back(out.text);
                if (!state->want_logprobs || out.stop_token) return;
                state->completion.logprobs->push_back(out.logprob);
                state->completion.top_logprobs->push_back(out.top);
              },
          .on_finish =
              [state](const SequenceFinish& finish) {
                if (!finish.text.empty()) state->pieces.push_back(finish.text);
                Completion& c = state->completion;
                c.text = finish.result.text;
                c.token_ids = finish.result.tokens;
                c.finish_reason = finish_reason_name(finish.result.finish_reason);
                c.prompt_tokens = finish.result.timing.prompt_tokens;
                c.cached_tokens = finish.result.timing.cached_tokens;
                c.prefill_ms = finish.result.timing.prefill_ms;
                c.decode_ms = finish.result.timing.decode_ms;
                if (finish.result.speculation.verifies > 0) c.speculation = finish.result.speculation;
                if (!finish.result.rollout.logprobs.empty()) c.rollout = finish.result.rollout;
                state->error = finish.error;
                state->done = true;
              }};
}

// The sampling and stopping arguments of generate(), as given from Python.
struct GenerateArgs {
  int64_t max_tokens = 256;
  float temperature = 1.0f, top_p = 1.0f, min_p = 0.0f;
  int32_t top_k = 0;
  uint64_t seed = 0;
  std::vector<std::string> stop;
  std::vector<int32_t> stop_token_ids;
  std::optional<int32_t> logprobs;
  bool ignore_eos = false;
  std::optional<std::string> attention;
  std::string speculate;  // self-speculation's draft spec ('' = off)
  int32_t gamma = 0;      // 0 = auto
  RolloutOptions rollout;
};

// rollout=True or {"refresh": M, "alpha_top": N, "obrs_lambda": λ} (any subset); None/False: off.
RolloutOptions rollout_options(const py::object& value) {
  RolloutOptions out;
  if (value.is_none() || (py::isinstance<py::bool_>(value) && !value.cast<bool>())) return out;
  out.enabled = true;
  if (py::isinstance<py::bool_>(value)) return out;
  check(py::isinstance<py::dict>(value), "rollout must be True or a dict of refresh, alpha_top, obrs_lambda");
  for (const auto& [key, item] : value.cast<py::dict>()) {
    const std::string name = py::str(key).cast<std::string>();
    if (name == "refresh") out.refresh = item.cast<int64_t>();
    else if (name == "alpha_top") out.alpha_top = item.cast<int32_t>();
    else if (name == "obrs_lambda") out.obrs_lambda = item.cast<double>();
    else fail("rollout has no setting '{}' (it takes refresh, alpha_top, obrs_lambda)", name);
  }
  return out;
}

class PyEngine;

// Between steps, with the GIL released: a pending Ctrl-C (or another signal whose handler raised)
// becomes a Python exception thrown here.
void check_interrupt() {
  py::gil_scoped_acquire held;
  if (PyErr_CheckSignals() != 0) throw py::error_already_set();
}

// generate(..., stream=True): an iterator of text pieces; .completion once it is exhausted.
class TextStream {
 public:
  TextStream(std::shared_ptr<PyEngine> engine, SequenceId id, std::shared_ptr<SequenceState> state)
      : engine_(std::move(engine)), id_(id), state_(std::move(state)) {}
  ~TextStream();
  std::string next();
  const Completion& completion() const {
    check(state_->done, "the stream has not finished: iterate it to the end first");
    return state_->completion;
  }

 private:
  std::shared_ptr<PyEngine> engine_;  // a stream keeps its engine alive
  SequenceId id_;
  std::shared_ptr<SequenceState> state_;
};

class PyEngine : public std::enable_shared_from_this<PyEngine> {
 public:
  PyEngine(const std::filesystem::path& model_dir, const std::string& device, const std::string& precision,
           const std::string& kv_dtype, const std::string& attention, int64_t max_batch, int64_t page_size, int64_t max_context, double kv_memory_gib,
           int64_t prefill_chunk, bool prefix_caching, int64_t tensor_parallel)
      : default_attention_(attention) {
    EngineOptions options;
    options.device = parse_device(device);
    options.precision = parse_precision(precision);
    options.kv_dtype = parse_kv_dtype(kv_dtype);
    options.page_size = page_size;
    options.max_context = max_context;
    options.max_batch = max_batch;
    options.kv_memory_gib = kv_memory_gib;
    options.prefill_chunk = prefill_chunk;
    options.prefix_caching = prefix_caching;
    options.tensor_parallel = tensor_parallel;
    py::gil_scoped_release unlocked;
    engine_ = Engine::open(model_dir, options);
    if (!default_attention_.empty()) batch_engine(*engine_).resolve_checked(default_attention_);  // a bad spec fails here
  }

  // A prompt: text (tokenized as is), token ids, or chat messages (the chat template applied).
  std::vector<int32_t> prompt_ids(const py::handle& prompt, bool chat) const {
    if (py::isinstance<py::str>(prompt)) {
      const std::string text = prompt.cast<std::string>();
      if (!chat) return EngineAccess::require_tokenizer(*engine_).encode(text);
      nlohmann::json messages = nlohmann::json::array({{{"role", "user"}, {"content", text}}});
      return EngineAccess::require_tokenizer(*engine_).encode(EngineAccess::require_chat_template(*engine_).apply(messages, ChatTemplateOptions{}));
    }
    if (is_messages(prompt)) return EngineAccess::require_tokenizer(*engine_).encode(render_chat(prompt, true, py::none()));
    check(!chat, "chat=True needs the prompt as text (or give a list of messages)");
    try {
      return prompt.cast<std::vector<int32_t>>();
    } catch (const py::cast_error&) {
      fail("a prompt is a str, a list of token ids, or a list of {{'role': ..., 'content': ...}} messages; got {}",
           py::str(py::type::handle_of(prompt)).cast<std::string>());
    }
  }

  static bool is_messages(const py::handle& prompt) {
    return py::isinstance<py::list>(prompt) && py::len(prompt) > 0 && py::isinstance<py::dict>(prompt.cast<py::list>()[0]);
  }

  // One request per prompt, from generate()'s arguments.
  GenerateRequest request(std::vector<int32_t> ids, const GenerateArgs& a) const {
    GenerateRequest r;
    r.prompt = std::move(ids);
    r.max_tokens = a.max_tokens;
    r.sampling = {.temperature = a.temperature, .top_k = a.top_k, .top_p = a.top_p, .min_p = a.min_p, .seed = a.seed};
    r.stop_strings = a.stop;
    r.stop_token_ids = a.stop_token_ids;
    r.ignore_eos = a.ignore_eos;
    if (a.logprobs) {
      check(*a.logprobs >= 0 && *a.logprobs <= 20, "logprobs must be between 0 and 20, got {}", *a.logprobs);
      r.logprobs = *a.logprobs;
    }
    r.attention = a.attention ? *a.attention : default_attention_;
    r.speculate = a.speculate;
    r.gamma = a.gamma;
    r.rollout = a.rollout;
    return r;
  }

  // Submits every request (validated first, so a bad one submits none), steps until all finish.
  std::vector<Completion> run_all(const std::vector<GenerateRequest>& requests) {
    std::vector<std::shared_ptr<SequenceState>> states;
    std::vector<SequenceId> ids;
    {
      py::gil_scoped_release unlocked;
      std::lock_guard lock(mutex_);
      BatchEngine& batch = batch_engine(*engine_);
      for (const GenerateRequest& r : requests) batch.validate(r);
      for (const GenerateRequest& r : requests) {
        auto state = std::make_shared<SequenceState>();
        start(*state, r);
        ids.push_back(batch.submit(r, callbacks_for(state)));
        states.push_back(std::move(state));
      }
      try {
        for (const auto& state : states)
          while (!state->done) {
            batch.step();  // every step computes a token of some unfinished sequence
            check_interrupt();
          }
      } catch (...) {  // Ctrl-C (or an internal failure): the sequences give their pages back
        for (SequenceId id : ids) batch.cancel(id);
        throw;
      }
    }
    std::vector<Completion> out;
    for (const auto& state : states) {
      check(state->error.empty(), "{}", state->error);
      out.push_back(std::move(state->completion));
    }
    return out;
  }

  std::unique_ptr<TextStream> open_stream(const GenerateRequest& r) {
    auto state = std::make_shared<SequenceState>();
    SequenceId id = 0;
    {
      py::gil_scoped_release unlocked;
      std::lock_guard lock(mutex_);
      start(*state, r);
      id = batch_engine(*engine_).submit(r, callbacks_for(state));
    }
    return std::make_unique<TextStream>(shared_from_this(), id, std::move(state));
  }

  // Steps until `state` has a piece of text or has finished; the GIL is released meanwhile.
  void step_until_text(SequenceState& state) {
    py::gil_scoped_release unlocked;
    std::lock_guard lock(mutex_);
    while (state.pieces.empty() && !state.done) {
      batch_engine(*engine_).step();
      check_interrupt();
    }
  }

  void cancel(SequenceId id) {
    py::gil_scoped_release unlocked;
    std::lock_guard lock(mutex_);
    batch_engine(*engine_).cancel(id);
  }

  ScoreResult score(const py::handle& tokens, const std::optional<std::string>& attention, int64_t sparse_from, int32_t top_n) {
    const std::vector<int32_t> ids = prompt_ids(tokens, false);
    ScoreOptions options;
    options.top_n = top_n;
    options.attention = attention ? *attention : default_attention_;
    options.sparse_from = sparse_from;
    py::gil_scoped_release unlocked;
    std::lock_guard lock(mutex_);
    return engine_->score(ids, options);
  }

  std::string render_chat(const py::handle& messages, bool add_generation_prompt, const py::object& enable_thinking) const {
    const py::module_ json = py::module_::import("json");
    const auto parsed = nlohmann::ordered_json::parse(json.attr("dumps")(messages).cast<std::string>());
    check(parsed.is_array() && !parsed.empty(), "messages must be a non-empty list of {{'role': ..., 'content': ...}}");
    ChatTemplateOptions options;
    options.add_generation_prompt = add_generation_prompt;
    if (!enable_thinking.is_none()) options.extra_context["enable_thinking"] = enable_thinking.cast<bool>();
    return EngineAccess::require_chat_template(*engine_).apply(parsed, options);
  }

  const Engine& engine() const { return *engine_; }
  const std::string& default_attention() const { return default_attention_; }

 private:
  void start(SequenceState& state, const GenerateRequest& r) const {
    state.want_logprobs = r.logprobs >= 0;
    if (state.want_logprobs) state.completion.logprobs.emplace(), state.completion.top_logprobs.emplace();
  }

  std::unique_ptr<Engine> engine_;
  std::string default_attention_;
  std::mutex mutex_;  // one thread steps the batch engine (or scores) at a time
};

TextStream::~TextStream() {
  if (state_->done) return;
  try {
    py::gil_scoped_acquire held;  // the destructor may run where the GIL is not held
    engine_->cancel(id_);         // a stream dropped early gives its pages back
  } catch (...) {
  }
}

std::string TextStream::next() {
  if (state_->pieces.empty() && !state_->done) engine_->step_until_text(*state_);
  if (state_->pieces.empty()) {
    check(state_->error.empty(), "{}", state_->error);
    throw py::stop_iteration();
  }
  std::string piece = std::move(state_->pieces.front());
  state_->pieces.pop_front();
  return piece;
}

std::string completion_repr(const Completion& c) {
  const std::string text = py::repr(py::str(c.text)).cast<std::string>();
  return "Completion(text=" + text + ", tokens=" + std::to_string(c.token_ids.size()) + ", finish_reason='" + c.finish_reason + "')";
}

}  // namespace
}  // namespace vortex::python

PYBIND11_MODULE(vortex, m) {
  using namespace vortex;
  using namespace vortex::python;
  m.doc() = "Vortex: an inference engine for long generations with page-sparse attention (docs/python.md).";
  static py::exception<Error> error(m, "Error", PyExc_ValueError);
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const Error& e) {
      error(e.what());
    }
  });

  py::class_<Completion>(m, "Completion", "One generated sequence.")
      .def_readonly("text", &Completion::text, "the text, stop token and stop string excluded")
      .def_readonly("token_ids", &Completion::token_ids, "generated ids (a stop token that ended generation included)")
      .def_readonly("finish_reason", &Completion::finish_reason, "'stop' or 'length'")
      .def_readonly("logprobs", &Completion::logprobs, "log p of each generated token (with logprobs=N), else None")
      .def_readonly("top_logprobs", &Completion::top_logprobs, "per token, the N most likely (id, logprob), best first")
      .def_readonly("prompt_tokens", &Completion::prompt_tokens)
      .def_readonly("cached_tokens", &Completion::cached_tokens, "of the prompt, taken from the prefix cache (not computed)")
      .def_readonly("prefill_ms", &Completion::prefill_ms)
      .def_readonly("decode_ms", &Completion::decode_ms)
      .def_property_readonly(
          "speculation",
          [](const Completion& c) -> py::object {
            if (!c.speculation) return py::none();
            const SpeculationStats& s = *c.speculation;
            py::dict d;
            d["drafted"] = s.drafted, d["accepted"] = s.accepted, d["verifies"] = s.verifies;
            d["acceptance_rate"] = s.acceptance_rate(), d["tokens_per_verify"] = s.tokens_per_verify();
            return d;
          },
          "with speculate=...: {drafted, accepted, verifies, acceptance_rate, tokens_per_verify}, else None")
      .def_property_readonly(
          "rollout",
          [](const Completion& c) -> py::object {
            if (!c.rollout) return py::none();
            const RolloutTrace& t = *c.rollout;
            py::dict d;
            d["logprobs"] = t.logprobs, d["dense_logprobs"] = t.dense_logprobs, d["alpha"] = t.alpha;
            d["dense_sampled"] = std::vector<int>(t.dense_sampled.begin(), t.dense_sampled.end());
            d["alpha_error"] = t.alpha_error, d["dense_passes"] = t.dense_passes;
            if (!t.obrs_accept.empty()) d["obrs_accept"] = t.obrs_accept, d["obrs_weight"] = t.obrs_weight;
            return d;
          },
          "with rollout=...: {logprobs, dense_logprobs, alpha, dense_sampled, alpha_error, dense_passes[, obrs_accept, "
          "obrs_weight]} per generated token, else None")
      .def("__repr__", &completion_repr);

  py::class_<ScoreResult>(m, "ScoreResult", "Teacher-forced log-probabilities.")
      .def_readonly("logprobs", &ScoreResult::logprobs, "log p(token_i | tokens_<i) for i = 1 .. n-1")
      .def_readonly("top", &ScoreResult::top, "per scored position, the top_n (id, logprob), best first");

  py::class_<TextStream>(m, "TextStream", "Text pieces of one generation as they become final.")
      .def("__iter__", [](TextStream& s) -> TextStream& { return s; })
      .def("__next__", &TextStream::next)
      .def_property_readonly("completion", &TextStream::completion, py::return_value_policy::reference_internal,
                             "the whole Completion, once the stream is exhausted");

  py::class_<PyEngine, std::shared_ptr<PyEngine>>(m, "Engine", "A model loaded on a device.")
      .def(py::init<const std::filesystem::path&, const std::string&, const std::string&, const std::string&, const std::string&, int64_t, int64_t,
                    int64_t, double, int64_t, bool, int64_t>(),
           py::arg("model_dir"), py::kw_only(), py::arg("device") = "cpu", py::arg("precision") = "bf16", py::arg("kv_dtype") = "auto",
           py::arg("attention") = "",
           py::arg("max_batch") = 16, py::arg("page_size") = 16, py::arg("max_context") = 0, py::arg("kv_memory_gib") = 0.0,
           py::arg("prefill_chunk") = 256, py::arg("prefix_caching") = true, py::arg("tensor_parallel") = 1,
           "Loads a Hugging Face model directory. device: 'cpu' or 'cuda'; precision (cuda): 'bf16' or 'f32'; kv_dtype: "
           "'auto', 'bf16', 'f32', 'fp8' or 'fp8-tensor' (what the KV cache stores); attention: "
           "the default attention spec ('' = dense; e.g. 'auto:budget=1024'); max_batch: sequences decoded together; "
           "prefix_caching: share the KV pages of common prompt prefixes; tensor_parallel: ranks to split the model over "
           "(the CPU's, threads with their shards: the oracle for the GPU's, which is not built yet).")
      .def(
          "generate",
          [](PyEngine& self, const py::object& prompt, int64_t max_tokens, float temperature, float top_p, int32_t top_k, float min_p,
             uint64_t seed, std::vector<std::string> stop, std::vector<int32_t> stop_token_ids, std::optional<int32_t> logprobs,
             bool ignore_eos, std::optional<std::string> attention, bool chat, bool stream, std::string speculate,
             const py::object& gamma, const py::object& rollout) -> py::object {
            int32_t gamma_value = 0;  // "auto"
            if (!(py::isinstance<py::str>(gamma) && gamma.cast<std::string>() == "auto")) {
              check(py::isinstance<py::int_>(gamma), "gamma must be an int (1..{}) or 'auto'", BatchEngine::kMaxGamma);
              gamma_value = gamma.cast<int32_t>();
              check(gamma_value >= 1, "gamma must be in 1..{} or 'auto', got {}", BatchEngine::kMaxGamma, gamma_value);
            }
            if (speculate.empty()) gamma_value = 0;  // gamma means nothing without a draft
            const GenerateArgs args{.max_tokens = max_tokens, .temperature = temperature, .top_p = top_p, .min_p = min_p,
                                    .top_k = top_k, .seed = seed, .stop = std::move(stop), .stop_token_ids = std::move(stop_token_ids),
                                    .logprobs = logprobs, .ignore_eos = ignore_eos, .attention = std::move(attention),
                                    .speculate = std::move(speculate), .gamma = gamma_value, .rollout = rollout_options(rollout)};
            // Many prompts: a list whose items are prompts themselves (text, ids or messages).
            const bool many = py::isinstance<py::list>(prompt) && !PyEngine::is_messages(prompt) && py::len(prompt) > 0 &&
                              !py::isinstance<py::int_>(prompt.cast<py::list>()[0]);
            if (many) {
              check(!stream, "stream=True takes one prompt");
              std::vector<GenerateRequest> requests;
              for (const py::handle& p : prompt.cast<py::list>()) requests.push_back(self.request(self.prompt_ids(p, chat), args));
              return py::cast(self.run_all(requests));
            }
            GenerateRequest r = self.request(self.prompt_ids(prompt, chat), args);
            if (stream) return py::cast(self.open_stream(r));
            return py::cast(std::move(self.run_all({r}).front()));
          },
          py::arg("prompt"), py::kw_only(), py::arg("max_tokens") = 256, py::arg("temperature") = 1.0f, py::arg("top_p") = 1.0f,
          py::arg("top_k") = 0, py::arg("min_p") = 0.0f, py::arg("seed") = 0, py::arg("stop") = std::vector<std::string>{},
          py::arg("stop_token_ids") = std::vector<int32_t>{}, py::arg("logprobs") = py::none(), py::arg("ignore_eos") = false,
          py::arg("attention") = py::none(), py::arg("chat") = false, py::arg("stream") = false, py::arg("speculate") = "",
          py::arg("gamma") = "auto", py::arg("rollout") = py::none(),
          "Generates from a prompt (text, token ids, or chat messages) and returns a Completion; a list of prompts returns a "
          "list, decoded together in one continuous batch; stream=True returns a TextStream of text pieces. chat=True wraps "
          "a text prompt as a user message with the chat template. temperature=0 is greedy. speculate='quest:budget=256' "
          "drafts with that sparse spec and verifies densely (the output is dense decoding's; gamma: drafts per verify "
          "step, 1..16 or 'auto'; docs/speculation.md). rollout=True (or a dict of refresh, alpha_top, obrs_lambda) "
          "adds per token the policy's and the dense log-probs and alpha (Completion.rollout; docs/rollouts.md).")
      .def("score", &PyEngine::score, py::arg("tokens"), py::kw_only(), py::arg("attention") = py::none(), py::arg("sparse_from") = 0,
           py::arg("top_n") = 0,
           "Teacher-forced log-probabilities of tokens (ids or text). With a sparse attention, positions >= sparse_from "
           "attend as decode steps would.")
      .def(
          "tokenize", [](const PyEngine& self, const std::string& text) { return self.engine().tokenize(text); },
          py::arg("text"))
      .def(
          "detokenize",
          [](const PyEngine& self, const std::vector<int32_t>& ids, bool skip_special_tokens) {
            return self.engine().detokenize(ids, skip_special_tokens);
          },
          py::arg("ids"), py::kw_only(), py::arg("skip_special_tokens") = false)
      .def("apply_chat_template", &PyEngine::render_chat, py::arg("messages"), py::kw_only(), py::arg("add_generation_prompt") = true,
           py::arg("enable_thinking") = py::none(), "The prompt text for a conversation, exactly as transformers renders it.")
      .def_property_readonly("attention", &PyEngine::default_attention, "the default attention spec ('' = dense)")
      .def_property_readonly("max_context", [](const PyEngine& self) { return self.engine().max_context(); })
      .def_property_readonly("vocab_size", [](const PyEngine& self) { return self.engine().model_info().vocab_size; })
      .def_property_readonly("eos_token_ids", [](const PyEngine& self) { return self.engine().model_info().eos_token_ids; });
}
