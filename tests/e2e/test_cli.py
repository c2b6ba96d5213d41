#!/usr/bin/env python3
"""The `vortex` command end to end: every subcommand's output, and every kind of bad input.

Bad input must give exit code 1 and one line 'error: ...' naming what is wrong — never a crash
(negative exit code), a hang (timeout) or a traceback. Standard library only.
Usage: test_cli.py --vortex build/vortex --source .
"""
import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import unittest

VORTEX = None
SOURCE = None


# scripts/sanitize raises it: a sanitized binary runs several times slower.
TIME_SCALE = float(os.environ.get("VORTEX_TEST_TIME_SCALE", "1"))


def run(*args, stdin=None, timeout=120, cwd=None):
    proc = subprocess.run([VORTEX, *args], input=stdin, capture_output=True, text=True, timeout=timeout * TIME_SCALE, cwd=cwd)
    return proc.returncode, proc.stdout, proc.stderr


def model_dir(name="qwen3-f32"):
    return os.path.join(SOURCE, "tests", "data", "models", name)


def qwen3_tokenizer():
    return os.path.join(SOURCE, ".deps", "tokenizers", "qwen3")


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + n]), data[8 + n:]


def write_safetensors(path, header, body, header_len=None):
    raw = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw) if header_len is None else header_len))
        f.write(raw)
        f.write(body)


class Commands(unittest.TestCase):
    def json_of(self, *args, stdin=None, timeout=120):
        code, out, err = run(*args, stdin=stdin, timeout=timeout)
        self.assertEqual(code, 0, err)
        lines = [l for l in out.splitlines() if l.strip()]
        self.assertEqual(len(lines), 1, f"--json must print exactly one line, got: {out!r}")
        return json.loads(lines[0])

    def test_tensor_parallel_on_the_cpu_gives_one_ranks_output(self):
        # --tensor-parallel N (issue #20): the CPU's ranks are threads with their shards, the oracle
        # for the GPU's; the same greedy tokens and log-probs as one rank, in generate, score and
        # bench decode (which reports the ranks and their time in collectives).
        args = ["generate", "--model", model_dir(), "--prompt", "Hello there", "--max-tokens", "12", "--json"]
        one, two = self.json_of(*args), self.json_of(*args, "--tensor-parallel", "2")
        self.assertEqual(one["tokens"], two["tokens"])
        score = ["score", "--model", model_dir(), "--tokens", "5,17,200,3,99,41", "--json"]
        a, b = self.json_of(*score)["logprobs"], self.json_of(*score, "--tensor-parallel", "4")["logprobs"]
        self.assertEqual(len(a), len(b))
        for x, y in zip(a, b):
            self.assertAlmostEqual(x, y, delta=1e-4)
        r = self.json_of("bench", "decode", "--config", os.path.join(model_dir(), "config.json"), "--random-weights", "--batch", "2",
                         "--context", "32", "--steps", "2", "--tensor-parallel", "2", "--json")
        self.assertEqual(r["tensor_parallel"], 2)
        self.assertEqual(len(r["communication_ms_per_step"]), 2)

    def test_embedded_model_ships_within_limits_and_solves_ops_1_to_5(self):
        # models/gsm-qwen3-15m (docs/model.md): Hugging Face layout with its own tokenizer, at most
        # 40 MB with shards of at most 14 MB; greedy on the CPU it solves every problem of ops 1-5 of
        # a held-out seed at noise length 0, as measured when it shipped (a regression check of the
        # model and the engine: one wrong token in a chain loses the answer; the accuracy
        # targets are measured in docs/model.md on larger sets).
        m = os.path.join(SOURCE, "models", "gsm-qwen3-15m")
        files = os.listdir(m)
        for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors.index.json"):
            self.assertIn(name, files)
        shards = [f for f in files if f.endswith(".safetensors")]
        self.assertTrue(shards)
        for f in shards:
            self.assertLessEqual(os.path.getsize(os.path.join(m, f)), 14_000_000, f)
        self.assertLessEqual(sum(os.path.getsize(os.path.join(m, f)) for f in files), 40_000_000)
        r = self.json_of("eval", "gsm-inf", "--model", m, "--seed", "7", "--length", "0", "--ops", "1-5",
                         "--examples-per-op", "4", "--attention", "dense", "--json")
        self.assertEqual(r["results"][0]["accuracy_by_op"], {str(op): 1.0 for op in range(1, 6)})

    def test_embedded_model_solves_ops_1_to_5_at_noise_length_4000(self):
        # The long-context half of issue #5's targets, as a regression check: ~3,900-token prompts
        # whose few relevant equations hide among ~340 noise equations, one problem per op.
        m = os.path.join(SOURCE, "models", "gsm-qwen3-15m")
        r = self.json_of("eval", "gsm-inf", "--model", m, "--seed", "7", "--length", "4000", "--ops", "1-5",
                         "--examples-per-op", "1", "--attention", "dense", "--no-alpha", "--json",
                         # ~19K prompt tokens of CPU prefill: 25 s alone on 2 cores here, but more than 120 s on
                         # CI's 2 cores while ctest -j2 runs the server and Python suites beside it.
                         timeout=600)
        self.assertEqual(r["results"][0]["accuracy_by_op"], {str(op): 1.0 for op in range(1, 6)})

    def test_generate_json_greedy_is_deterministic(self):
        args = ["generate", "--model", model_dir(), "--prompt", "The attention layer", "--max-tokens", "12",
                "--temperature", "0", "--json"]
        a, b = self.json_of(*args), self.json_of(*args)
        self.assertEqual(set(a), {"tokens", "text", "finish_reason", "timing"})
        self.assertIn(a["finish_reason"], ("stop", "length"))
        self.assertEqual(a["tokens"], b["tokens"])
        self.assertLessEqual(len(a["tokens"]), 12)
        for key in ("prefill_ms", "decode_ms", "prompt_tokens", "generated_tokens", "decode_tokens_per_s"):
            self.assertIn(key, a["timing"])

    def test_generate_sampling_seed(self):
        base = ["generate", "--model", model_dir(), "--prompt-tokens", "5,6,7,8", "--max-tokens", "16",
                "--temperature", "1.0", "--top-p", "0.95", "--top-k", "50", "--min-p", "0.01", "--ignore-eos", "--json"]
        a = self.json_of(*base, "--seed", "1")
        self.assertEqual(a["tokens"], self.json_of(*base, "--seed", "1")["tokens"])
        self.assertNotEqual(a["tokens"], self.json_of(*base, "--seed", "2")["tokens"])
        self.assertEqual(len(a["tokens"]), 16)
        self.assertEqual(a["finish_reason"], "length")

    def test_generate_stop_string_and_stop_token(self):
        full = self.json_of("generate", "--model", model_dir(), "--prompt", "Hello", "--max-tokens", "24",
                            "--temperature", "0", "--ignore-eos", "--json")
        text = full["text"]
        self.assertGreater(len(text), 4)
        stop = text[len(text) // 2:len(text) // 2 + 2]
        cut = self.json_of("generate", "--model", model_dir(), "--prompt", "Hello", "--max-tokens", "24",
                           "--temperature", "0", "--ignore-eos", "--stop", stop, "--json")
        self.assertEqual(cut["finish_reason"], "stop")
        self.assertEqual(cut["text"], text[:text.index(stop)])
        tok = self.json_of("generate", "--model", model_dir(), "--prompt", "Hello", "--max-tokens", "24",
                           "--temperature", "0", "--ignore-eos", "--stop-tokens", str(full["tokens"][3]), "--json")
        self.assertEqual(tok["finish_reason"], "stop")
        self.assertEqual(tok["tokens"], full["tokens"][:full["tokens"].index(full["tokens"][3]) + 1])

    def test_generate_streams_text(self):
        code, out, err = run("generate", "--model", model_dir(), "--prompt", "Hi", "--max-tokens", "8",
                             "--temperature", "0", "--ignore-eos")
        self.assertEqual(code, 0, err)
        streamed = out.rstrip("\n")
        js = self.json_of("generate", "--model", model_dir(), "--prompt", "Hi", "--max-tokens", "8",
                          "--temperature", "0", "--ignore-eos", "--json")
        self.assertEqual(streamed, js["text"])

    def test_generate_chat(self):
        js = self.json_of("generate", "--model", model_dir(), "--prompt", "Hi", "--chat", "--max-tokens", "4",
                          "--temperature", "0", "--json")
        self.assertGreaterEqual(len(js["tokens"]), 1)

    def test_score(self):
        js = self.json_of("score", "--model", model_dir(), "--tokens", "3,4,5,6,7", "--top", "3", "--json")
        self.assertEqual(len(js["logprobs"]), 4)
        self.assertEqual(len(js["top"]), 4)
        for row in js["top"]:
            self.assertEqual(len(row), 3)
            self.assertGreaterEqual(row[0][1], row[1][1])
        self.assertTrue(all(lp <= 0 for lp in js["logprobs"]))

    def test_score_matches_golden(self):
        golden = json.load(open(os.path.join(model_dir("llama3-f32"), "golden.json")))
        tokens = ",".join(map(str, golden["prompt_tokens"]))
        js = self.json_of("score", "--model", model_dir("llama3-f32"), "--tokens", tokens, "--json")
        worst = max(abs(a - b) for a, b in zip(js["logprobs"], golden["logprobs"]))
        self.assertLessEqual(worst, 2e-3)

    def test_info(self):
        js = self.json_of("info", "--model", model_dir(), "--json")
        self.assertEqual(js["architecture"], "Qwen3ForCausalLM")
        for key in ("parameters", "dtype", "context_length", "kv_bytes_per_token_bf16"):
            self.assertIn(key, js)
        self.assertEqual(js["kv_bytes_per_token_bf16"], 2 * 2 * 2 * 32 * 2)

    def test_tokenize_detokenize_real_qwen3(self):
        text = "Hello, world! <|im_start|>user\n你好 👩‍💻 12345"
        ids = self.json_of("tokenize", "--model", qwen3_tokenizer(), "--text", text, "--json")["ids"]
        self.assertIn(151644, ids)  # <|im_start|> recognised as one token
        code, out, err = run("detokenize", "--model", qwen3_tokenizer(), "--ids", ",".join(map(str, ids)))
        self.assertEqual(code, 0, err)
        self.assertEqual(out, text)
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
            f.write(text)
        self.assertEqual(self.json_of("tokenize", "--model", qwen3_tokenizer(), "--text-file", f.name, "--json")["ids"], ids)
        os.unlink(f.name)

    def test_template(self):
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump([{"role": "user", "content": "Hi"}], f)
        code, out, err = run("template", "--model", qwen3_tokenizer(), "--messages-file", f.name, "--enable-thinking", "false")
        self.assertEqual(code, 0, err)
        self.assertEqual(out, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n")
        code, out, err = run("template", "--model", qwen3_tokenizer(), "--messages-file", f.name, "--no-generation-prompt")
        self.assertEqual(out, "<|im_start|>user\nHi<|im_end|>\n")
        os.unlink(f.name)

    def test_batch_runs_many_requests_in_order(self):
        with tempfile.TemporaryDirectory() as tmp:
            prompts, out = os.path.join(tmp, "in.jsonl"), os.path.join(tmp, "out.jsonl")
            lines = [{"prompt": "The attention layer", "max_tokens": 10, "temperature": 0, "ignore_eos": True},
                     {"prompt_tokens": [5, 6, 7], "max_tokens": 6, "temperature": 0.8, "seed": 3, "ignore_eos": True},
                     {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "temperature": 0},
                     {"prompt": "Stop here", "max_tokens": 12, "temperature": 0, "ignore_eos": True, "stop": ["e"]}]
            with open(prompts, "w") as f:
                f.write("\n".join(json.dumps(l) for l in lines) + "\n")
            code, _, err = run("batch", "--model", model_dir(), "--prompts", prompts, "--out", out, "--max-batch", "3")
            self.assertEqual(code, 0, err)
            results = [json.loads(l) for l in open(out)]
            self.assertEqual([r["index"] for r in results], [0, 1, 2, 3])
            self.assertEqual(len(results[0]["tokens"]), 10)
            alone = self.json_of("generate", "--model", model_dir(), "--prompt", "The attention layer", "--max-tokens", "10",
                                 "--temperature", "0", "--ignore-eos", "--json")
            self.assertEqual(results[0]["tokens"], alone["tokens"])  # batching does not change greedy output
            seeded = self.json_of("generate", "--model", model_dir(), "--prompt-tokens", "5,6,7", "--max-tokens", "6",
                                  "--temperature", "0.8", "--seed", "3", "--ignore-eos", "--json")
            self.assertEqual(results[1]["tokens"], seeded["tokens"])
            self.assertNotIn("e", results[3]["text"])
            # --prefill-first changes the order of work, not a token (the CPU kernels are row-independent).
            first_out, stats_path = os.path.join(tmp, "first.jsonl"), os.path.join(tmp, "stats.json")
            code, _, err = run("batch", "--model", model_dir(), "--prompts", prompts, "--out", first_out, "--max-batch", "3",
                               "--prefill-first", "--stats", stats_path)
            self.assertEqual(code, 0, err)
            self.assertEqual([json.loads(l)["tokens"] for l in open(first_out)], [r["tokens"] for r in results])
            self.assertGreater(json.load(open(stats_path))["profile"]["prefill"]["steps"], 0)

    def test_rollout_reports_dense_logprobs_that_score_reproduces(self):
        # 2 prompts x 8 samples, sparse policy: each sample's dense log-probs equal `vortex score` of
        # the same tokens (1e-3, CPU f32), the 8 samples prefill their prompt once, α lies in [0, 1].
        with tempfile.TemporaryDirectory() as tmp:
            prompts, out = os.path.join(tmp, "in.jsonl"), os.path.join(tmp, "out.jsonl")
            with open(prompts, "w") as f:
                f.write(json.dumps({"prompt_tokens": [(i * 37) % 500 + 3 for i in range(90)]}) + "\n")
                f.write(json.dumps({"prompt": "The attention layer reads every page " * 6}) + "\n")
            summary = self.json_of("rollout", "--model", model_dir(), "--prompts", prompts, "--out", out, "--n-samples", "8",
                                   "--max-tokens", "24", "--attention", "quest:budget=32,sink=16,window=16", "--seed", "5",
                                   "--ignore-eos", "--obrs-lambda", "0.9", "--prefill-chunk", "64", "--json")
            with open(out) as f:
                lines = [json.loads(l) for l in f]
            self.assertEqual([l["index"] for l in lines], [0, 1])
            self.assertEqual(summary["generated_tokens"], 2 * 8 * 24)
            full_pages = sum((len(l["prompt_tokens"]) - 1) // 16 * 16 for l in lines)  # the last token is computed
            self.assertEqual(summary["prefix_cache_hit_tokens"], 7 * full_pages)
            self.assertLess(summary["alpha_mean"], 1.0)  # the sparse policy differs from dense
            for line in lines:
                self.assertEqual(len(line["samples"]), 8)
                self.assertEqual(len({tuple(s["tokens"]) for s in line["samples"]}), 8)  # the seeds differ
                sample = line["samples"][3]
                scored = self.json_of("score", "--model", model_dir(), "--tokens",
                                      ",".join(map(str, line["prompt_tokens"] + sample["tokens"])), "--json")
                expected = scored["logprobs"][len(line["prompt_tokens"]) - 1:]
                self.assertEqual(len(expected), len(sample["dense_logprobs"]))
                for got, want in zip(sample["dense_logprobs"], expected):
                    self.assertAlmostEqual(got, want, delta=1e-3)
                self.assertTrue(all(0.0 <= a <= 1.0 for a in sample["alpha"]))
                self.assertEqual(sample["alpha"][0], 1.0)  # the first token comes from the prompt's dense row
                self.assertEqual(len(sample["obrs_accept"]), 24)
                self.assertTrue(all(0.0 <= a <= 1.0 for a in sample["obrs_accept"]))
            self.assertGreater(summary["obrs_acceptance"], 0.0)
            # More tokens per forward step (1024 instead of 64: fewer steps for prefill and the dense passes)
            # changes no token, log-prob or alpha on the CPU.
            wide_out = os.path.join(tmp, "wide.jsonl")
            wide = self.json_of("rollout", "--model", model_dir(), "--prompts", prompts, "--out", wide_out, "--n-samples", "8",
                                "--max-tokens", "24", "--attention", "quest:budget=32,sink=16,window=16", "--seed", "5",
                                "--ignore-eos", "--obrs-lambda", "0.9", "--prefill-chunk", "1024", "--json")
            steps = lambda p: p["dense_pass"]["steps"] + p["prefill"]["steps"]
            self.assertLess(steps(wide["profile"]), steps(summary["profile"]))
            with open(wide_out) as f:
                for mine, theirs in zip(lines, [json.loads(l) for l in f]):
                    for a, b in zip(mine["samples"], theirs["samples"]):
                        self.assertEqual(a["tokens"], b["tokens"])
                        for key in ("dense_logprobs", "alpha"):
                            for x, y in zip(a[key], b[key]):
                                self.assertAlmostEqual(x, y, delta=1e-4)
            code, _, err = run("rollout", "--model", model_dir(), "--prompts", prompts, "--out", out, "--refresh", "-3")
            self.assertEqual(code, 1)
            self.assertIn("refresh", err)

    def test_calibrate_writes_a_schedule_that_meets_its_target_per_bin(self):
        with tempfile.TemporaryDirectory() as tmp:
            prompts, out = os.path.join(tmp, "in.jsonl"), os.path.join(tmp, "schedule.json")
            with open(prompts, "w") as f:
                f.write(json.dumps({"prompt_tokens": [(i * 37) % 500 + 3 for i in range(40)]}) + "\n")
            code, _, err = run("calibrate", "--model", model_dir(), "--prompts", prompts, "--out", out, "--flow", "quest",
                               "--flow-args", "sink=16,window=16", "--budgets", "16,32,100000", "--n-samples", "3",
                               "--max-tokens", "40", "--bin", "32", "--target-p5", "0.99", "--seed", "3",
                               cwd=tmp)  # the GPU models are found beside the binary, not in the working directory
            self.assertEqual(code, 0, err)
            with open(out) as f:
                schedule = json.load(f)
            self.assertEqual(schedule["attention"], "quest:sink=16,window=16")
            self.assertEqual(schedule["bin_tokens"], 32)
            self.assertTrue(set(schedule["budgets"]) <= {16, 32, 100000}, schedule["budgets"])
            self.assertIn(100000, schedule["budgets"])  # a budget covering every page is dense: alpha 1 meets any target
            self.assertIn("measured worst-bin p5", err)
            self.assertIn("over dense", err)
            # the schedule runs as an attention spec
            self.json_of("generate", "--model", model_dir(), "--prompt-tokens", "5,6,7", "--max-tokens", "4",
                         "--attention", "schedule:table=" + out, "--json")

    def test_cost_predicts_dense_and_sparse_generations(self):
        config = os.path.join(SOURCE, "configs", "qwen3-8b.json")
        code, out, err = run("cost", "--config", config, "--batch", "16", "--prompt-len", "32768", "--gen-len", "1024",
                             "--attention", "quest:budget=2048,sink=16,window=64,skip_layers=0-1", "--gpu", "h200", "--json",
                             cwd=tempfile.gettempdir())
        self.assertEqual(code, 0, err)
        r = json.loads(out)
        self.assertGreater(r["predicted_speedup"], 1.5)  # a 2048-token budget at 32K context reads a fraction of the KV
        for side in ("dense", "spec"):
            first = r[side]["first_step"]
            self.assertAlmostEqual(first["eflops"], first["flops"] + r["flops_per_byte"] * first["bytes"], delta=first["eflops"] * 1e-9)
            self.assertGreater(r[side]["last_step"]["bytes"], first["bytes"])  # the context grows
        code, _, err = run("cost", "--config", config, "--gpu", "a100")
        self.assertEqual(code, 1)
        self.assertIn("no GPU model 'a100'", err)

    def test_chat_keeps_the_conversation(self):
        code, out, err = run("chat", "--model", model_dir(), "--max-tokens", "4", "--temperature", "0",
                             stdin="hello\nand again\n/exit\n")
        self.assertEqual(code, 0, err)
        self.assertEqual(err.count("> "), 3)


TIMING_KEYS = {"tokens_per_s", "prefill_s", "decode_s", "score_s"}


def eval_args(*extra, ops="1-2", per_op="2", max_tokens="24", model=None):
    return ["eval", "gsm-inf", "--model", model or model_dir(), "--ops", ops, "--examples-per-op", per_op,
            "--max-tokens", max_tokens, *extra]


def without_timing(results):
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in results]


class EvalGsm(unittest.TestCase):
    """vortex eval gsm-inf on the tiny random model: the pipeline, keys and ranges (accuracy is ~0)."""

    def json_of(self, *args):
        return Commands.json_of(self, *args)

    def test_json_keys_and_value_ranges(self):
        js = self.json_of(*eval_args("--attention", "dense", "--json"))
        self.assertEqual(list(js), ["kv_dtype", "results", "run"])
        self.assertEqual(js["kv_dtype"], "f32")  # what the KV cache stored: the CPU's default
        self.assertEqual(set(js["run"]), {"command", "commit", "machine", "date"})
        self.assertIn("eval gsm-inf", js["run"]["command"])
        self.assertRegex(js["run"]["date"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
        (r,) = js["results"]
        for key in ("attention", "accuracy", "accuracy_by_op", "auc", "alpha_mean", "alpha_p5_by_bin", "tokens_per_s",
                    "examples", "examples_by_op", "alpha_mean_by_bin", "generated_tokens", "prompt_tokens"):
            self.assertIn(key, r)
        self.assertEqual(r["attention"], "dense")
        self.assertEqual(r["examples"], 4)
        self.assertEqual(r["examples_by_op"], {"1": 2, "2": 2})
        self.assertEqual(set(r["accuracy_by_op"]), {"1", "2"})
        for acc in [r["accuracy"], *r["accuracy_by_op"].values()]:
            self.assertTrue(0.0 <= acc <= 1.0)
        self.assertTrue(0.0 <= r["auc"] <= 100.0)
        self.assertEqual(r["alpha_mean"], 1)
        self.assertTrue(all(a == 1 for a in r["alpha_p5_by_bin"]))
        self.assertGreater(r["tokens_per_s"], 0)
        self.assertTrue(0 < r["generated_tokens"] <= 4 * 24)

    def test_deterministic_and_specs_run_on_the_same_problems(self):
        a = self.json_of(*eval_args("--attention", "dense", "--attention", "dense", "--json"))["results"]
        b = self.json_of(*eval_args("--attention", "dense", "--json"))["results"]
        self.assertEqual(len(a), 2)
        self.assertEqual(without_timing(a)[0], without_timing(a)[1])
        self.assertEqual(without_timing(a)[0], without_timing(b)[0])
        other_seed = self.json_of(*eval_args("--attention", "dense", "--seed", "2", "--json"))["results"]
        self.assertNotEqual(a[0]["prompt_tokens"], other_seed[0]["prompt_tokens"])

    def test_table_explains_its_columns(self):
        code, out, err = run(*eval_args("--attention", "dense"))
        self.assertEqual(code, 0, err)
        for needle in ("attention", "accuracy", "AUC", "α mean", "worst-bin α p5", "tokens/s", "accuracy by op",
                       "dense", "(0/2)", "4 problems", "seed 1"):
            self.assertIn(needle, out)
        self.assertEqual(err, "")  # no progress bar when stderr is not a terminal

    def test_svg_plots(self):
        import xml.dom.minidom
        with tempfile.TemporaryDirectory() as tmp:
            svg = os.path.join(tmp, "plots")
            code, _, err = run(*eval_args("--attention", "dense", "--json", "--svg", svg))
            self.assertEqual(code, 0, err)
            acc = xml.dom.minidom.parse(os.path.join(svg, "accuracy.svg"))
            texts = [t.firstChild.data for t in acc.getElementsByTagName("text") if t.firstChild]
            self.assertIn("dense", texts)
            self.assertIn("accuracy (%)", texts)
            self.assertEqual(len(acc.getElementsByTagName("polyline")), 1)
            self.assertEqual(len(acc.getElementsByTagName("circle")), 2)  # ops 1 and 2
            alpha = xml.dom.minidom.parse(os.path.join(svg, "alpha.svg"))
            self.assertIn("no sparse spec", alpha.toxml())

    def test_problems_file_gives_the_generated_results(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "p.jsonl")
            code, _, err = run("gsm-inf", "symbolic", "--seed", "1", "--length", "0", "--max-op", "3",
                               "--examples-per-op", "2", "--out", path)
            self.assertEqual(code, 0, err)
            from_file = self.json_of("eval", "gsm-inf", "--model", model_dir(), "--problems", path, "--max-tokens", "24",
                                     "--attention", "dense", "--json")["results"]
        generated = self.json_of(*eval_args("--attention", "dense", "--json"))["results"]
        self.assertEqual(without_timing(from_file), without_timing(generated))

    def test_model_without_chat_template_uses_the_raw_prompt(self):
        with tempfile.TemporaryDirectory() as tmp:
            m = os.path.join(tmp, "m")
            shutil.copytree(model_dir(), m)
            os.remove(os.path.join(m, "tokenizer_config.json"))
            raw = self.json_of(*eval_args("--attention", "dense", "--json", model=m))["results"][0]
        chat = self.json_of(*eval_args("--attention", "dense", "--json"))["results"][0]
        self.assertLess(raw["prompt_tokens"], chat["prompt_tokens"])  # no chat markup around the problem


class EvalSparse(unittest.TestCase):
    """Sparse specs in the harness: these need the sparse engine (before it: 'not available yet')."""

    def json_of(self, *args):
        return Commands.json_of(self, *args)

    def test_budget_covering_every_page_equals_dense(self):
        dense, quest = self.json_of(*eval_args("--attention", "dense", "--attention", "quest:budget=100000", "--json",
                                               ops="1-3", max_tokens="48"))["results"]
        self.assertEqual(quest["accuracy_by_op"], dense["accuracy_by_op"])
        self.assertEqual(quest["generated_tokens"], dense["generated_tokens"])
        self.assertEqual(quest["alpha_mean"], 1.0)
        self.assertGreater(quest["alpha_tokens"], 0)
        self.assertTrue(all(p == 1.0 for p in quest["alpha_p5_by_bin"] if p is not None))
        self.assertTrue(any(p is not None for p in quest["alpha_p5_by_bin"]))

    def test_streaming_window_differs_and_is_plotted(self):
        with tempfile.TemporaryDirectory() as tmp:
            import xml.dom.minidom
            (r,) = self.json_of(*eval_args("--attention", "streaming:sink=16,window=32", "--json", "--svg", tmp,
                                           ops="1-3", max_tokens="48"))["results"]
            self.assertTrue(0.0 < r["alpha_mean"] < 1.0)
            p5 = [p for p in r["alpha_p5_by_bin"] if p is not None]
            self.assertTrue(p5 and all(0.0 <= p < 1.0 for p in p5))
            self.assertEqual(len(r["alpha_p5_by_bin"]), len(r["alpha_mean_by_bin"]))
            alpha = xml.dom.minidom.parse(os.path.join(tmp, "alpha.svg")).toxml()
            self.assertIn("streaming:sink=16,window=32 p5", alpha)
        skipped = self.json_of(*eval_args("--attention", "streaming:sink=16,window=32", "--no-alpha", "--json"))["results"][0]
        self.assertIsNone(skipped["alpha_mean"])
        self.assertEqual(skipped["alpha_p5_by_bin"], [])


class SparseCli(unittest.TestCase):
    """--attention on score, generate, batch and bench decode: sparse output, the spec echoed, bad specs named."""

    PROMPT = [(i * 37) % 500 + 3 for i in range(150)]

    def json_of(self, *args):
        return Commands.json_of(self, *args)

    def score(self, *extra):
        return self.json_of("score", "--model", model_dir(), "--tokens", ",".join(map(str, self.PROMPT)), "--json", *extra)

    def generate(self, *extra):
        return self.json_of("generate", "--model", model_dir(), "--prompt-tokens", ",".join(map(str, self.PROMPT)),
                            "--max-tokens", "12", "--temperature", "0", "--ignore-eos", "--json", *extra)["tokens"]

    def expect_bad_spec(self, args, *needles):
        code, out, err = run(*args)
        self.assertEqual(code, 1, f"exit {code}; stderr: {err}")
        self.assertTrue(err.startswith("error: "), err)
        self.assertEqual(err.count("\n"), 1, err)
        for needle in needles:
            self.assertIn(needle, err)

    def test_score_sparse_from(self):
        dense = self.score()["logprobs"]
        self.assertEqual(self.score("--attention", "quest:budget=100000")["logprobs"], dense)
        sparse = self.score("--attention", "quest:budget=16,window=16", "--sparse-from", "80")["logprobs"]
        self.assertEqual(sparse[:80], dense[:80])  # logprobs[i] is predicted at position i
        self.assertGreater(max(abs(a - b) for a, b in zip(sparse[80:], dense[80:])), 1e-4)
        for page in ("32", "64"):
            paged = self.score("--attention", f"quest:budget=100000,page={page}", "--page-size", page)["logprobs"]
            self.assertEqual(paged, self.score("--page-size", page)["logprobs"])

    def test_generate_sparse(self):
        dense = self.generate()
        self.assertEqual(self.generate("--attention", "quest:budget=100000,sink=16,window=16"), dense)
        for spec in ("h2o:budget=32,window=16", "streaming:sink=16,window=16", "quest:budget=32,window=16"):
            self.assertEqual(len(self.generate("--attention", spec)), 12, spec)
        self.assertEqual(len(self.generate("--attention", "quest:budget=32,page=32,window=32", "--page-size", "32")), 12)

    def test_batch_attention_field(self):
        specs = ["dense", "quest:budget=32,window=16", "h2o:budget=32,window=16", "streaming:sink=16,window=32", None]
        with tempfile.TemporaryDirectory() as tmp:
            prompts, out = os.path.join(tmp, "in.jsonl"), os.path.join(tmp, "out.jsonl")
            with open(prompts, "w") as f:
                for spec in specs:
                    line = {"prompt_tokens": self.PROMPT, "max_tokens": 12, "temperature": 0, "ignore_eos": True}
                    if spec:
                        line["attention"] = spec
                    f.write(json.dumps(line) + "\n")
            code, _, err = run("batch", "--model", model_dir(), "--prompts", prompts, "--out", out, "--max-batch", "4",
                               "--attention", "centroid:budget=25%")
            self.assertEqual(code, 0, err)
            with open(out) as f:
                results = [json.loads(l) for l in f]
        self.assertEqual(len({tuple(r["tokens"]) for r in results}), len(specs))  # each line ran its own spec
        for spec, result in zip(specs, results):
            alone = self.generate("--attention", spec or "centroid:budget=25%")
            self.assertEqual(result["tokens"], alone, spec)

    def test_batch_bad_attention_names_the_line_and_spec(self):
        with tempfile.TemporaryDirectory() as tmp:
            prompts, out = os.path.join(tmp, "in.jsonl"), os.path.join(tmp, "out.jsonl")
            with open(prompts, "w") as f:
                f.write(json.dumps({"prompt_tokens": [5, 6, 7], "max_tokens": 2, "attention": "quest:window=4"}) + "\n")
                f.write(json.dumps({"prompt_tokens": [5, 6, 7], "max_tokens": 2, "attention": "quest:budget=64"}) + "\n")
            code, _, err = run("batch", "--model", model_dir(), "--prompts", prompts, "--out", out)
            self.assertEqual(code, 1, err)
            with open(out) as f:
                bad, good = [json.loads(l) for l in f]
        self.assertIn("line 1", bad["error"])
        self.assertIn("quest:window=4", bad["error"])
        self.assertIn("needs a budget", bad["error"])
        self.assertEqual(len(good["tokens"]), 2)

    def test_bench_decode_echoes_the_spec(self):
        bench = ["bench", "decode", "--config", os.path.join(SOURCE, "configs", "qwen3-0.6b.json"), "--random-weights",
                 "--batch", "1", "--context", "512", "--steps", "2", "--json"]
        js = self.json_of(*bench, "--attention", "quest:budget=256")
        self.assertEqual(js["attention"], "quest:budget=256")
        self.assertGreater(js["tokens_per_s"], 0)
        self.expect_bad_spec([*bench, "--attention", "quest:budget=256,page=32"], "'quest:budget=256,page=32'", "page=32")
        self.expect_bad_spec([*bench, "--attention", "quest"], "'quest'", "needs parameters")

    def test_speculate_keeps_the_dense_output_everywhere(self):
        dense = self.generate()
        draft = "quest:budget=16,sink=16,window=16"
        for gamma in ("1", "5", "auto"):
            js = self.json_of("generate", "--model", model_dir(), "--prompt-tokens", ",".join(map(str, self.PROMPT)),
                              "--max-tokens", "12", "--temperature", "0", "--ignore-eos", "--json",
                              "--speculate", draft, "--gamma", gamma)
            self.assertEqual(js["tokens"], dense, gamma)
            spec = js["speculation"]
            self.assertGreater(spec["verifies"], 0)
            self.assertLessEqual(spec["accepted"], spec["drafted"])
            self.assertEqual(spec["tokens_per_verify"], (spec["accepted"] + spec["verifies"]) / spec["verifies"])
        with tempfile.TemporaryDirectory() as tmp:
            prompts, out = os.path.join(tmp, "in.jsonl"), os.path.join(tmp, "out.jsonl")
            with open(prompts, "w") as f:
                for extra in ({}, {"gamma": 2}, {"speculate": ""}, {"speculate": "streaming:sink=16,window=32", "gamma": "auto"}):
                    line = {"prompt_tokens": self.PROMPT, "max_tokens": 12, "temperature": 0, "ignore_eos": True, **extra}
                    f.write(json.dumps(line) + "\n")
            stats_path = os.path.join(tmp, "stats.json")
            code, _, err = run("batch", "--model", model_dir(), "--prompts", prompts, "--out", out, "--max-batch", "4",
                               "--speculate", draft, "--gamma", "3", "--stats", stats_path)
            self.assertEqual(code, 0, err)
            self.assertIn("speculation:", err)
            with open(out) as f:
                results = [json.loads(l) for l in f]
            with open(stats_path) as f:
                stats = json.load(f)
        # --stats: every step in one kind; drafts and verify chunks in steps of their own kinds.
        self.assertEqual(stats["requests"], 4)
        profile = stats["profile"]
        kinds = ["decode", "draft", "verify", "dense_pass", "prefill", "other"]
        self.assertEqual(sum(profile[k]["generated"] for k in kinds), 4 * 12)
        self.assertEqual(profile["decode_only"]["generated"], 4 * 12 - profile["prefill"]["generated"])
        self.assertGreater(profile["prefill"]["steps"], 0)
        self.assertGreater(profile["draft"]["steps"], 0)
        self.assertGreater(profile["verify"]["steps"], 0)
        self.assertEqual(stats["speculation"]["drafted"], sum(r.get("speculation", {}).get("drafted", 0) for r in results))
        for r in results:
            self.assertEqual(r["tokens"], dense)
        self.assertNotIn("speculation", results[2])
        self.assertIn("speculation", results[3])
        evaluated = self.json_of(*eval_args("--attention", "dense", "--speculate", draft, "--gamma", "4", "--json", per_op="1"))
        plain = self.json_of(*eval_args("--attention", "dense", "--json", per_op="1"))
        self.assertEqual(evaluated["results"][0]["correct"], plain["results"][0]["correct"])
        self.assertEqual(evaluated["results"][0]["generated_tokens"], plain["results"][0]["generated_tokens"])
        self.assertEqual(evaluated["results"][0]["speculation"]["draft"], draft)

    def test_speculate_bad_input_is_named(self):
        gen = ["generate", "--model", model_dir(), "--prompt-tokens", "3,4,5", "--max-tokens", "4"]
        self.expect_bad_spec([*gen, "--gamma", "3"], "--gamma 3 needs --speculate")
        self.expect_bad_spec([*gen, "--speculate", "quest:budget=16", "--gamma", "0"], "'0' is not a gamma")
        self.expect_bad_spec([*gen, "--speculate", "quest:budget=16", "--gamma", "many"], "'many' is not a gamma")
        self.expect_bad_spec([*gen, "--speculate", "dense"], "must attend sparsely")
        self.expect_bad_spec([*gen, "--speculate", "quest:budgt=16"], "'budgt'")
        self.expect_bad_spec([*gen, "--speculate", "quest:budget=16", "--attention", "quest:budget=32"], "give one or the other")
        self.expect_bad_spec(["eval", "gsm-inf", "--model", model_dir(), "--attention", "quest:budget=32",
                              "--speculate", "quest:budget=16"], "add --attention dense")

    def test_bad_specs_are_named(self):
        tokens = ["--tokens", "3,4,5,6"]
        for spec, *needles in (("quest:budgt=16", "'quest:budgt=16'", "'budgt'"),
                               ("nonsense", "unknown method 'nonsense'"),
                               ("quest:sink=4", "'quest:sink=4'", "needs a budget"),
                               ("quest:budget=64,page=32", "'quest:budget=64,page=32'", "--page-size 32"),
                               ("quest:budget=150%", "'quest:budget=150%'", "'150%'"),
                               ("flow:/no/such.flow,budget=8", "/no/such.flow")):
            self.expect_bad_spec(["score", "--model", model_dir(), *tokens, "--attention", spec], *needles)
            self.expect_bad_spec(["generate", "--model", model_dir(), "--prompt-tokens", "3,4,5", "--attention", spec], *needles)


class BadInput(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="vortex-cli-")

    def tearDown(self):
        shutil.rmtree(self.tmp)

    def expect_error(self, args, *needles, stdin=None):
        code, out, err = run(*args, stdin=stdin)
        self.assertEqual(code, 1, f"exit {code}; stderr: {err}")
        self.assertTrue(err.startswith("error: "), err)
        self.assertNotIn("internal", err)
        for needle in needles:
            self.assertIn(needle, err)
        return err

    def copy_model(self, name="qwen3-f32"):
        dst = os.path.join(self.tmp, name)
        shutil.copytree(model_dir(name), dst)
        return dst

    def generate(self, model, *extra):
        return ["generate", "--model", model, "--prompt-tokens", "1,2,3", "--max-tokens", "2", "--json", *extra]

    def test_bad_engine_options_name_their_flags(self):
        # The library names its options (page_size, kv_memory_gib, top_n); the CLI prints its flags.
        self.expect_error(self.generate(model_dir(), "--page-size", "12"), "error: --page-size takes 8, 16, 32 or 64, got 12")
        self.expect_error(["batch", "--model", model_dir(), "--prompts", "/dev/null", "--out", os.path.join(self.tmp, "out.jsonl"), "--kv-memory", "-1"], "error: --kv-memory must be >= 0")
        self.expect_error(["score", "--model", model_dir(), "--tokens", "1,2,3", "--top", "-1"], "error: --top must be >= 0")
        self.expect_error(self.generate(model_dir(), "--kv-dtype", "fp16"), "error: --kv-dtype takes auto, bf16, f32, fp8 or fp8-tensor, got 'fp16'")
        self.expect_error(["bench", "decode", "--config", os.path.join(SOURCE, "configs", "qwen3-0.6b.json"), "--random-weights",
                           "--kv-dtype", "fp8"], "--kv-dtype fp8 runs on --device cuda")
        self.expect_error(self.generate(model_dir(), "--tensor-parallel", "3"), "error: --tensor-parallel 3 ranks do not divide the model's 4 query heads")
        self.expect_error(self.generate(model_dir(), "--tensor-parallel", "0"), "error: --tensor-parallel must be at least 1, got 0")
        self.expect_error(self.generate(model_dir(), "--tensor-parallel", "4", "--attention", "quest:budget=32,sink=16,window=16"),
                          "error: --tensor-parallel 4 ranks replicate the model's KV heads")

    def test_missing_model_dir(self):
        self.expect_error(self.generate(os.path.join(self.tmp, "nope")), "nope")

    def test_missing_config(self):
        m = self.copy_model()
        os.remove(os.path.join(m, "config.json"))
        self.expect_error(self.generate(m), "config.json")

    def test_invalid_config_json(self):
        m = self.copy_model()
        open(os.path.join(m, "config.json"), "w").write("{\"architectures\": [")
        self.expect_error(self.generate(m), "config.json", "invalid JSON")

    def test_unsupported_architecture(self):
        m = self.copy_model()
        cfg = json.load(open(os.path.join(m, "config.json")))
        cfg["architectures"] = ["MixtralForCausalLM"]
        json.dump(cfg, open(os.path.join(m, "config.json"), "w"))
        self.expect_error(self.generate(m), "MixtralForCausalLM")

    def test_missing_weights(self):
        m = self.copy_model()
        os.remove(os.path.join(m, "model.safetensors"))
        self.expect_error(self.generate(m), "model.safetensors")

    def test_truncated_safetensors(self):
        m = self.copy_model()
        path = os.path.join(m, "model.safetensors")
        data = open(path, "rb").read()
        open(path, "wb").write(data[:len(data) // 2])
        self.expect_error(self.generate(m), "model.safetensors")

    def test_header_length_beyond_file(self):
        m = self.copy_model()
        path = os.path.join(m, "model.safetensors")
        header, body = read_safetensors(path)
        write_safetensors(path, header, body, header_len=10 ** 9)
        self.expect_error(self.generate(m), "model.safetensors")

    def test_offsets_out_of_range_and_overlapping(self):
        for mutate in ("out_of_range", "overlap"):
            m = self.copy_model()
            path = os.path.join(m, "model.safetensors")
            header, body = read_safetensors(path)
            names = sorted((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][0])
            if mutate == "out_of_range":
                begin, end = header[names[-1]]["data_offsets"]
                header[names[-1]]["data_offsets"] = [begin + 64, end + 64]
            else:
                header[names[1]]["data_offsets"] = [header[names[0]]["data_offsets"][0] + 2,
                                                    header[names[0]]["data_offsets"][0] + 2 +
                                                    header[names[1]]["data_offsets"][1] - header[names[1]]["data_offsets"][0]]
            write_safetensors(path, header, body)
            err = self.expect_error(self.generate(m), "model.safetensors")
            shutil.rmtree(m)

    def test_shape_disagreeing_with_config(self):
        m = self.copy_model()
        cfg = json.load(open(os.path.join(m, "config.json")))
        cfg["intermediate_size"] = cfg["intermediate_size"] + 8
        json.dump(cfg, open(os.path.join(m, "config.json"), "w"))
        self.expect_error(self.generate(m), "mlp.gate_proj.weight", "shape")

    def test_dtype_disagreeing(self):
        m = self.copy_model()
        path = os.path.join(m, "model.safetensors")
        header, body = read_safetensors(path)
        name = next(k for k in header if k.endswith("q_proj.weight"))
        header[name]["dtype"] = "I32"
        write_safetensors(path, header, body)
        self.expect_error(self.generate(m), name)

    def test_token_id_out_of_range(self):
        self.expect_error(["generate", "--model", model_dir(), "--prompt-tokens", "1,999999", "--json"], "999999", "out of range")
        self.expect_error(["score", "--model", model_dir(), "--tokens", "1,-4", "--json"], "-4")
        self.expect_error(["detokenize", "--model", qwen3_tokenizer(), "--ids", "1,99999999"], "99999999")

    def test_prompt_longer_than_context(self):
        m = self.copy_model()
        cfg = json.load(open(os.path.join(m, "config.json")))
        cfg["max_position_embeddings"] = 8
        json.dump(cfg, open(os.path.join(m, "config.json"), "w"))
        self.expect_error(["generate", "--model", m, "--prompt-tokens", ",".join(["5"] * 20), "--json"], "context")

    def test_malformed_token_lists_and_flags(self):
        self.expect_error(["score", "--model", model_dir(), "--tokens", "1,x,3"], "--tokens", "'x'")
        self.expect_error(["generate", "--model", model_dir(), "--prompt-tokens", "", "--json"], "--prompt-tokens")
        self.expect_error(["generate", "--model", model_dir(), "--json"], "--prompt")
        self.expect_error(["generate", "--model", model_dir(), "--prompt", "x", "--temperature", "-1"], "temperature")
        self.expect_error(["generate", "--model", model_dir(), "--prompt", "x", "--bogus"], "bogus")
        self.expect_error(["frobnicate"], "frobnicate")
        self.expect_error(["score", "--model", model_dir(), "--tokens", "5"], "two tokens")

    def test_model_without_tokenizer(self):
        m = self.copy_model()
        for f in ("tokenizer.json", "tokenizer_config.json"):
            os.remove(os.path.join(m, f))
        self.expect_error(["generate", "--model", m, "--prompt", "hello"], "tokenizer.json", "--prompt-tokens")
        js = subprocess.run([VORTEX, *self.generate(m)], capture_output=True, text=True, timeout=60)
        self.assertEqual(js.returncode, 0, js.stderr)
        self.expect_error(["tokenize", "--model", m, "--text", "hi"], "tokenizer.json")

    def test_batch_reports_bad_lines_and_runs_the_rest(self):
        prompts, out = os.path.join(self.tmp, "in.jsonl"), os.path.join(self.tmp, "out.jsonl")
        with open(prompts, "w") as f:
            f.write('{"prompt_tokens": [1, 2], "max_tokens": 3}\n{not json\n{"prompt_tokens": [1, 999999]}\n{"max_tokens": "many", "prompt": "x"}\n')
        err = self.expect_error(["batch", "--model", model_dir(), "--prompts", prompts, "--out", out], "3 of 4 requests failed")
        results = [json.loads(l) for l in open(out)]
        self.assertEqual(len(results[0]["tokens"]), 3)
        self.assertIn("invalid JSON", results[1]["error"])
        self.assertIn("999999", results[2]["error"])
        self.assertIn("max_tokens", results[3]["error"])
        open(prompts, "w").close()
        self.expect_error(["batch", "--model", model_dir(), "--prompts", prompts, "--out", out], "empty")

    def test_broken_or_missing_chat_template_is_named(self):
        m = self.copy_model()
        path = os.path.join(m, "tokenizer_config.json")
        config = json.load(open(path))
        config["chat_template"] = "{% if messages %}unclosed"
        json.dump(config, open(path, "w"))
        self.expect_error(["generate", "--model", m, "--chat", "--prompt", "hi"], "unclosed 'if'", "line 1")
        del config["chat_template"]
        json.dump(config, open(path, "w"))
        self.expect_error(["generate", "--model", m, "--chat", "--prompt", "hi"], "no chat template")
        # Without --chat the model still works.
        code, _, err = run("generate", "--model", m, "--prompt", "hi", "--max-tokens", "2", "--json")
        self.assertEqual(code, 0, err)

    def test_bad_tokenizer_and_template_files(self):
        d = os.path.join(self.tmp, "tok")
        os.makedirs(d)
        open(os.path.join(d, "tokenizer.json"), "w").write("{]")
        self.expect_error(["tokenize", "--model", d, "--text", "hi"], "tokenizer.json")
        msgs = os.path.join(self.tmp, "m.json")
        open(msgs, "w").write("[{\"role\": \"user\", \"content\": \"hi\"}")
        self.expect_error(["template", "--model", qwen3_tokenizer(), "--messages-file", msgs], "m.json")
        self.expect_error(["template", "--model", qwen3_tokenizer(), "--messages-file", os.path.join(self.tmp, "none.json")], "none.json")

    def test_eval_bad_subcommands_and_options(self):
        self.expect_error(["eval", "frob"], "frob", "gsm-inf")
        self.expect_error(["eval"], "gsm-inf")
        self.expect_error(["gsm-inf", "frob"], "frob", "symbolic")
        self.expect_error(eval_args("--attention", "dense", "--length", "4x"), "--length", "'4x'")
        self.expect_error(eval_args("--attention", "dense", ops="0-3"), "--ops", "out of range")
        self.expect_error(eval_args("--attention", "dense", ops="5-2"), "--ops", "out of range")
        self.expect_error(eval_args("--attention", "dense", ops="1-2000000"), "--ops", "out of range")
        self.expect_error(eval_args("--attention", "dense", ops="x"), "--ops", "'x'")
        self.expect_error(eval_args("--attention", "dense", per_op="0"), "--examples-per-op")
        self.expect_error(eval_args("--attention", "dense", max_tokens="0"), "--max-tokens")
        self.expect_error(eval_args("--attention", "nonsense:x=1"), "nonsense")
        self.expect_error(eval_args(), "--attention")
        self.expect_error(eval_args("--attention", "dense", "--length", "32k", ops="1"), "context", "--length")
        self.expect_error(eval_args("--attention", "dense", "--device", "tpu"), "tpu")

    def test_eval_model_without_tokenizer(self):
        bare = model_dir("qwen3-bf16")
        self.assertFalse(os.path.exists(os.path.join(bare, "tokenizer.json")))
        self.expect_error(eval_args("--attention", "dense", model=bare), "tokenizer.json")

    def test_eval_broken_chat_template(self):
        m = self.copy_model()
        path = os.path.join(m, "tokenizer_config.json")
        with open(path) as f:
            config = json.load(f)
        config["chat_template"] = "{% if messages %}unclosed"
        with open(path, "w") as f:
            json.dump(config, f)
        self.expect_error(eval_args("--attention", "dense", model=m), "unclosed 'if'")

    def test_eval_problems_file_errors(self):
        path = os.path.join(self.tmp, "p.jsonl")
        base = ["eval", "gsm-inf", "--model", model_dir(), "--attention", "dense", "--problems", path]
        self.expect_error(base, "p.jsonl", "cannot open")
        open(path, "w").close()
        self.expect_error(base, "p.jsonl", "empty")
        good = json.dumps({"op": 1, "id": 0, "prompt": "assign V1 = 1.", "answer_list": ["V1"]})
        with open(path, "w") as f:
            f.write(good + "\n" + good + "\n{not json\n")
        self.expect_error(base, "p.jsonl line 3", "invalid JSON")
        with open(path, "w") as f:
            f.write(good + "\n" + json.dumps({"op": 1, "answer_list": []}) + "\n")
        self.expect_error(base, "line 2", "prompt")
        self.expect_error(base + ["--seed", "3"], "--problems")

    def test_eval_svg_into_a_file(self):
        blocker = os.path.join(self.tmp, "file")
        open(blocker, "w").close()
        self.expect_error(eval_args("--attention", "dense", "--svg", blocker, per_op="1", max_tokens="2"), "--svg")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--vortex", required=True)
    parser.add_argument("--source", required=True)
    args, rest = parser.parse_known_args()
    VORTEX, SOURCE = os.path.abspath(args.vortex), os.path.abspath(args.source)
    unittest.main(argv=[sys.argv[0], *rest], verbosity=2)
