#!/usr/bin/env python3
"""The `vortex` Python module against the command line, on the small Qwen3 test model (f32, CPU).

Run by ctest (python_api) as: test_python.py --vortex build/vortex --source . with
PYTHONPATH=build/python. Greedy generation, sparse attention, sampling with a seed, log-probs,
scores, tokenizer and chat template give exactly what `vortex` prints; batched and streamed
generation give what single calls give; bad input raises vortex.Error (a ValueError) naming what is
wrong; the engine releases the GIL while it runs.
"""
import argparse
import json
import os
import subprocess
import sys
import threading
import _thread
import time
import unittest

import vortex

VORTEX = None
SOURCE = None


def model_dir():
    return os.path.join(SOURCE, "tests", "data", "models", "qwen3-f32")


def cli_json(*args):
    proc = subprocess.run([VORTEX, *args], capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise AssertionError(f"vortex {' '.join(args)} failed: {proc.stderr}")
    return json.loads(proc.stdout)


ENGINE = None


def engine():
    global ENGINE
    if ENGINE is None:
        ENGINE = vortex.Engine(model_dir(), max_batch=4)
    return ENGINE


class Generate(unittest.TestCase):
    def test_greedy_equals_the_cli(self):
        out = engine().generate("Hello", max_tokens=24, temperature=0)
        cli = cli_json("generate", "--model", model_dir(), "--prompt", "Hello", "--max-tokens", "24", "--temperature", "0", "--json")
        self.assertEqual(out.token_ids, cli["tokens"])
        self.assertEqual(out.text, cli["text"])
        self.assertEqual(out.finish_reason, cli["finish_reason"])
        self.assertEqual(out.prompt_tokens, cli["timing"]["prompt_tokens"])
        self.assertIsNone(out.logprobs)
        self.assertIn("Completion(text=", repr(out))

    def test_tensor_parallel_gives_one_ranks_tokens(self):
        two = vortex.Engine(model_dir(), tensor_parallel=2).generate("Hello", max_tokens=16, temperature=0)
        self.assertEqual(two.token_ids, engine().generate("Hello", max_tokens=16, temperature=0).token_ids)
        with self.assertRaisesRegex(Exception, "tensor_parallel 3 ranks do not divide"):
            vortex.Engine(model_dir(), tensor_parallel=3)

    def test_chat_sparse_and_seeded_sampling_equal_the_cli(self):
        cases = [
            ({"chat": True, "temperature": 0}, ["--chat", "--temperature", "0"]),
            ({"attention": "quest:budget=32,sink=16,window=16", "temperature": 0, "ignore_eos": True},
             ["--attention", "quest:budget=32,sink=16,window=16", "--temperature", "0", "--ignore-eos"]),
            ({"temperature": 0.8, "top_p": 0.9, "seed": 7}, ["--temperature", "0.8", "--top-p", "0.9", "--seed", "7"]),
        ]
        prompt = "The quick brown fox jumps over the lazy dog. " * 8
        for kwargs, flags in cases:
            with self.subTest(flags=flags):
                out = engine().generate(prompt, max_tokens=20, **kwargs)
                cli = cli_json("generate", "--model", model_dir(), "--prompt", prompt, "--max-tokens", "20", *flags, "--json")
                self.assertEqual(out.token_ids, cli["tokens"])
                self.assertEqual(out.text, cli["text"])

    def test_speculate_gives_the_dense_greedy_output(self):
        prompt = [(i * 37) % 500 + 3 for i in range(150)]
        dense = engine().generate(prompt, max_tokens=12, temperature=0, ignore_eos=True)
        self.assertIsNone(dense.speculation)
        for gamma in (3, "auto"):
            spec = engine().generate(prompt, max_tokens=12, temperature=0, ignore_eos=True,
                                        speculate="quest:budget=16,sink=16,window=16", gamma=gamma)
            self.assertEqual(spec.token_ids, dense.token_ids)
            if gamma == "auto" and spec.speculation is None:
                continue  # auto may decline to draft: this random model's drafts are rarely accepted
            self.assertGreater(spec.speculation["verifies"], 0)
            self.assertLessEqual(spec.speculation["accepted"], spec.speculation["drafted"])
        with self.assertRaisesRegex(vortex.Error, "gamma must be"):
            engine().generate(prompt, max_tokens=2, speculate="quest:budget=16", gamma="many")
        with self.assertRaisesRegex(vortex.Error, "must attend sparsely"):
            engine().generate(prompt, max_tokens=2, speculate="dense")

    def test_token_ids_and_messages_are_prompts_too(self):
        ids = engine().tokenize("Hello")
        self.assertEqual(engine().generate(ids, max_tokens=8, temperature=0).token_ids,
                         engine().generate("Hello", max_tokens=8, temperature=0).token_ids)
        messages = [{"role": "user", "content": "Hello"}]
        self.assertEqual(engine().generate(messages, max_tokens=8, temperature=0).token_ids,
                         engine().generate("Hello", chat=True, max_tokens=8, temperature=0).token_ids)

    def test_many_prompts_batch_and_equal_single_calls(self):
        prompts = ["Hello", "Once upon a time", [5, 9, 13, 2, 7], "A" * 40]
        batched = engine().generate(prompts, max_tokens=12, temperature=0, ignore_eos=True)
        self.assertEqual(len(batched), len(prompts))
        for prompt, out in zip(prompts, batched):
            self.assertEqual(out.token_ids, engine().generate(prompt, max_tokens=12, temperature=0, ignore_eos=True).token_ids)
            self.assertEqual(len(out.token_ids), 12)
            self.assertEqual(out.finish_reason, "length")

    def test_samples_of_one_prompt_share_its_pages(self):
        prompt = [(i * 37) % 500 + 3 for i in range(100)]
        samples = dict(max_tokens=10, temperature=0.9, ignore_eos=True)
        cached = [engine().generate([prompt] * 4, seed=s, **samples) for s in (1, 2)]
        plain_engine = vortex.Engine(model_dir(), max_batch=4, prefix_caching=False)
        plain = [plain_engine.generate([prompt] * 4, seed=s, **samples) for s in (1, 2)]
        for c, p in zip(cached, plain):
            self.assertEqual([o.token_ids for o in c], [o.token_ids for o in p])
        self.assertEqual(max(o.cached_tokens for o in cached[1]), 96)  # 6 full pages of 16
        self.assertEqual([o.cached_tokens for o in plain[1]], [0] * 4)

    def test_rollout_reports_dense_logprobs_and_alpha(self):
        prompt = [(i * 37) % 500 + 3 for i in range(120)]
        outs = engine().generate([prompt] * 2, max_tokens=16, temperature=1.0, seed=4, ignore_eos=True,
                                 attention="quest:budget=32,sink=16,window=16", rollout={"obrs_lambda": 1.0, "alpha_top": 0})
        for out in outs:
            t = out.rollout
            self.assertEqual(len(t["logprobs"]), 16)
            self.assertEqual(t["alpha"][0], 1.0)
            self.assertEqual(t["dense_passes"], 1)
            self.assertEqual(len(t["obrs_weight"]), 16)
            dense = engine().score(prompt + out.token_ids).logprobs[len(prompt) - 1:]
            for got, want in zip(t["dense_logprobs"], dense):
                self.assertAlmostEqual(got, want, delta=1e-3)
        self.assertIsNone(engine().generate("Hi", max_tokens=2).rollout)
        with self.assertRaisesRegex(vortex.Error, "no setting 'refresh_every'"):
            engine().generate("Hi", max_tokens=2, rollout={"refresh_every": 3})

    def test_stream_yields_the_text_in_pieces(self):
        whole = engine().generate("Hello", max_tokens=20, temperature=0, ignore_eos=True)
        stream = engine().generate("Hello", max_tokens=20, temperature=0, ignore_eos=True, stream=True)
        with self.assertRaises(vortex.Error):
            stream.completion  # not finished yet
        pieces = list(stream)
        self.assertEqual("".join(pieces), whole.text)
        self.assertGreater(len(pieces), 1)
        self.assertEqual(stream.completion.token_ids, whole.token_ids)

    def test_streams_interleave_and_a_dropped_stream_frees_its_sequence(self):
        a = engine().generate("Hello", max_tokens=30, temperature=0, ignore_eos=True, stream=True)
        b = engine().generate("Once upon a time", max_tokens=30, temperature=0, ignore_eos=True, stream=True)
        next(a), next(b)
        del b  # cancelled: the next generate runs as if it never was
        rest = "".join(a)
        self.assertEqual(a.completion.token_ids, engine().generate("Hello", max_tokens=30, temperature=0, ignore_eos=True).token_ids)
        self.assertTrue(rest)

    def test_logprobs_equal_the_scores_of_the_same_tokens(self):
        prompt = engine().tokenize("Hello there")
        out = engine().generate(prompt, max_tokens=10, temperature=0, ignore_eos=True, logprobs=3)
        self.assertEqual(len(out.logprobs), 10)
        self.assertEqual(len(out.top_logprobs), 10)
        scored = engine().score(prompt + out.token_ids)
        for i, lp in enumerate(out.logprobs):
            self.assertAlmostEqual(lp, scored.logprobs[len(prompt) - 1 + i], places=4)
            self.assertEqual(out.top_logprobs[i][0][0], out.token_ids[i])  # greedy: the best is the one taken
            self.assertEqual(len(out.top_logprobs[i]), 3)


class ScoreAndText(unittest.TestCase):
    def test_score_equals_the_cli(self):
        tokens = [1, 2, 3, 4, 5, 6, 7, 8]
        for attention, sparse_from in ((None, 0), ("streaming:sink=16,window=32", 3)):
            with self.subTest(attention=attention):
                out = engine().score(tokens, top_n=2, attention=attention, sparse_from=sparse_from)
                flags = ["--attention", attention, "--sparse-from", str(sparse_from)] if attention else []
                cli = cli_json("score", "--model", model_dir(), "--tokens", ",".join(map(str, tokens)), "--top", "2", *flags, "--json")
                self.assertEqual(len(out.logprobs), len(cli["logprobs"]))
                for a, b in zip(out.logprobs, cli["logprobs"]):
                    self.assertAlmostEqual(a, b, places=5)
                self.assertEqual([[p[0] for p in row] for row in out.top], [[p[0] for p in row] for row in cli["top"]])

    def test_fp8_kv_cache_scores_equal_the_cli(self):
        tokens = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]
        out = vortex.Engine(model_dir(), kv_dtype="fp8").score(tokens)
        cli = cli_json("score", "--model", model_dir(), "--tokens", ",".join(map(str, tokens)), "--kv-dtype", "fp8", "--json")
        for a, b in zip(out.logprobs, cli["logprobs"]):
            self.assertAlmostEqual(a, b, places=5)
        dense = engine().score(tokens)
        self.assertNotEqual(list(out.logprobs), list(dense.logprobs))  # the cache was rounded

    def test_tokenizer_and_template_equal_the_cli(self):
        text = "Hello, world! <|im_start|>user\nhi"
        ids = engine().tokenize(text)
        self.assertEqual(ids, cli_json("tokenize", "--model", model_dir(), "--text", text, "--json")["ids"])
        self.assertEqual(engine().detokenize(ids), text)
        messages = [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"},
                    {"role": "user", "content": "And 3+3?"}]
        path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"vortex-python-msgs-{os.getpid()}.json")
        with open(path, "w") as f:
            json.dump(messages, f)
        try:
            proc = subprocess.run([VORTEX, "template", "--model", model_dir(), "--messages-file", path], capture_output=True, text=True)
            self.assertEqual(proc.returncode, 0, proc.stderr)
            self.assertEqual(engine().apply_chat_template(messages), proc.stdout)
        finally:
            os.remove(path)
        self.assertNotEqual(engine().apply_chat_template(messages, add_generation_prompt=False), proc.stdout)

    def test_properties(self):
        self.assertGreater(engine().vocab_size, 0)
        self.assertGreater(engine().max_context, 0)
        self.assertEqual(engine().attention, "")


class BadInput(unittest.TestCase):
    def test_errors_name_what_is_wrong(self):
        cases = [
            (lambda: engine().generate("Hello", attention="quest:budget=oops"), "budget"),
            (lambda: engine().generate("Hello", attention="nosuchflow:budget=8"), "nosuchflow"),
            (lambda: engine().generate([10**9], max_tokens=2), "out of range"),
            (lambda: engine().generate("Hello", max_tokens=-1), "max_tokens"),
            (lambda: engine().generate("Hello", logprobs=99), "logprobs"),
            (lambda: engine().generate(3.5), "a prompt is a str"),
            (lambda: engine().generate(["Hello", "Hi"], stream=True), "one prompt"),
            (lambda: engine().score([1]), "at least two tokens"),
            (lambda: vortex.Engine("/nonexistent/model"), "/nonexistent/model"),
            (lambda: vortex.Engine(model_dir(), attention="quest:budget=oops"), "budget"),
            (lambda: vortex.Engine(model_dir(), page_size=12), "page_size takes 8, 16, 32 or 64, got 12"),
            (lambda: vortex.Engine(model_dir(), device="tpu"), "device takes cpu or cuda, got 'tpu'"),
            (lambda: vortex.Engine(model_dir(), kv_dtype="fp16"), "kv_dtype takes auto, bf16, f32, fp8 or fp8-tensor"),
            (lambda: engine().score([1, 2, 3], top_n=-1), "top_n must be >= 0"),
        ]
        for call, needle in cases:
            with self.subTest(needle=needle):
                with self.assertRaises(ValueError) as caught:
                    call()
                self.assertIsInstance(caught.exception, vortex.Error)
                self.assertIn(needle, str(caught.exception))
        # the engine still works after every error
        self.assertEqual(len(engine().generate("Hello", max_tokens=3, temperature=0, ignore_eos=True).token_ids), 3)


class Threads(unittest.TestCase):
    def test_the_gil_is_released_while_the_engine_runs(self):
        ticks = 0
        done = threading.Event()

        def run():
            # a batch long enough (~0.1 s or more) that a held GIL would show
            engine().generate([f"Hello {i}" for i in range(32)], max_tokens=300, temperature=0, ignore_eos=True)
            done.set()

        thread = threading.Thread(target=run)
        start = time.monotonic()
        thread.start()
        while not done.is_set() and time.monotonic() - start < 120:
            ticks += 1
            time.sleep(0.001)
        thread.join()
        elapsed_ms = (time.monotonic() - start) * 1e3
        # each tick sleeps 1 ms: a free main thread ticks about once per ms, a blocked one ~once in all
        self.assertGreater(ticks, min(10, elapsed_ms / 10), f"the main thread ran {ticks} times in {elapsed_ms:.0f} ms of generate()")

    def test_ctrl_c_interrupts_a_long_generate_and_the_engine_goes_on(self):
        before = engine().generate("Hello", max_tokens=10, temperature=0, ignore_eos=True).token_ids
        timer = threading.Timer(0.2, _thread.interrupt_main)  # what Ctrl-C does
        start = time.monotonic()
        timer.start()
        with self.assertRaises(KeyboardInterrupt):
            engine().generate([f"Hello {i}" for i in range(64)], max_tokens=2000, temperature=0, ignore_eos=True)  # seconds
        self.assertLess(time.monotonic() - start, 5.0)
        timer.join()
        self.assertEqual(engine().generate("Hello", max_tokens=10, temperature=0, ignore_eos=True).token_ids, before)

    def test_concurrent_callers_get_their_own_results(self):
        prompts = ["Hello", "Once upon a time", "A" * 30, "Numbers: 1 2 3"]
        expected = [engine().generate(p, max_tokens=10, temperature=0, ignore_eos=True).token_ids for p in prompts]
        got = [None] * len(prompts)

        def run(i):
            got[i] = engine().generate(prompts[i], max_tokens=10, temperature=0, ignore_eos=True).token_ids

        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(prompts))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(got, expected)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--vortex", required=True)
    parser.add_argument("--source", required=True)
    args, rest = parser.parse_known_args()
    VORTEX, SOURCE = os.path.abspath(args.vortex), os.path.abspath(args.source)
    unittest.main(argv=[sys.argv[0], *rest], verbosity=2)
