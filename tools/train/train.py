#!/usr/bin/env python3
"""Trains Vortex's embedded default model: a small Qwen3 that solves GSM-Infinite symbolic problems.

Run from the repository root on the GPU machine (device_train.sh starts it with setsid; see README.md):

    python3 tools/train/train.py --data-dir /tmp/vortex-train/data --tokenizer-dir /tmp/vortex-train/tokenizer \
        --work-dir /tmp/vortex-train --eval /tmp/vortex-train/eval/L0.jsonl --eval /tmp/vortex-train/eval/L4000.jsonl \
        --probe /tmp/vortex-train/eval/probe_L0.jsonl --probe /tmp/vortex-train/eval/probe_L4000.jsonl \
        [--minutes 7 | --end-at UNIX_TIME]

What it does:
  0. Self-tests the attention path on the GPU before training: RoPE inverse frequencies; causality (changing a
     token never changes an earlier position's output) and visibility (it changes every later one), in fp32 and
     under bf16 autocast; layer 0's output against a from-scratch causal GQA attention with QK-norm and RoPE.
     A causality, visibility or RoPE failure stops the run (DONE says why); a reference mismatch only warns.
  1. Data worker processes build micro-batches from a curriculum (PHASES, by fraction of the wall-clock
     budget): a synthetic copy task (a list of random V###### names, repeated in the answer), which makes the
     model learn to copy tokens from its context early, then the L<length>_s<seed>.jsonl problems, short noise
     lengths and small op counts first. A micro-batch holds examples of one source, sorted by length and
     right-padded, at most --micro-tokens tokens. Loss: every solution token (and the final <|im_end|>) with
     weight 1, and, inside the prompt, the second 3-digit group of every variable name that already occurred
     earlier in that prompt, with weight --ctx-weight (a pure copying signal; other prompt tokens carry no loss).
  2. A Qwen3ForCausalLM (random init, fp32 master weights, bf16 autocast, SDPA causal attention) is trained
     with AdamW: warmup over --warmup-steps, constant lr, cosine decay over the last part of the *wall-clock*
     budget, so the run ends on time whatever the throughput. One step = --micro-per-step micro-batches.
  3. Health probes every --probe-every-s seconds (fixed held-out data, teacher-forced, one forward each):
     the copy probe's loss on name digits, and per --probe file the solution loss, the loss and accuracy on
     name digits, and the exact-match rate (every teacher-forced argmax right: greedy decoding then reproduces
     the reference solution, so it is a lower bound on greedy accuracy); every --greedy-every-s seconds, greedy
     accuracy on 10 length-0 problems of ops 1-3. "HEALTH" lines mark when copying and name lookups emerge.
  4. Every --save-every-min minutes and at the end it writes a checkpoint in Hugging Face layout (bf16
     safetensors shards <= 14 MB, config.json, generation_config.json, tokenizer files) to
     WORK/checkpoints/step-N and points the symlink WORK/model at it (atomic rename), so an interrupted
     run still leaves a usable model.
  5. It reloads the final checkpoint with transformers, checks the weights are the ones saved and that a
     left-padded prompt gives the same next token as the prompt alone, and greedy-decodes the --eval problems
     (held-out seeds), grading the ANSWER line as a set.
  6. It writes WORK/eval.json (with the probe history) and, last, WORK/DONE ({"status": "ok"} or the error).

Logs go to stdout (device_train.sh sends them to WORK/train.log); WORK/loss.csv gets one row per log line.

Several GPUs (data parallel): start it with `python3 -m torch.distributed.run --standalone --nproc_per_node N`
(device_train.sh does, with VORTEX_TRAIN_NPROC=N). Every rank has its own data workers (their own slices of the
files, their own seeds) and its own micro-batches; after the backward pass the gradients are averaged over the
ranks (one NCCL all-reduce of the flattened gradients), so every rank takes the same optimizer step and the
weights stay identical (checked at the end). Rank 0 decides the schedule (the budget fraction, probes,
checkpoints) every DECIDE_EVERY steps and broadcasts it; rank 0 alone probes, saves, evaluates and writes DONE.
The model shape is fixed below (MODEL) to keep the checkpoint within 40 MB.
"""

import argparse
import json
import math
import multiprocessing as mp
import os
import queue as queue_lib
import random
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # the data workers are processes; no Rust threads
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import common  # noqa: E402  (tools/train is sys.path[0] when this script runs)

# Shape letters used in comments: B batch, T padded sequence length, C hidden size (384),
# N supervised positions in a micro-batch, V vocabulary (2048).
# RoPE theta stays 1e5 when the context grows (8192 -> 32768 positions for run 9): pair i of head_dim 64 turns
# 1e5^(-i/32) rad per position, so the slowest pair (i = 31) has a wavelength of ~438K positions and has turned only
# 0.47 rad at distance 32768: it is monotonic over the whole context, so no two distances within 32K alias. The
# fast pairs (i <= 18, wavelengths under the ~4.3K positions trained so far) see nothing new at 16K; pairs 19-31
# reach angles never seen before, which the 8K/16K training teaches. A new theta would instead move every
# frequency the trained model uses, the fast ones that carry its local, within-line attention included.
MODEL = dict(hidden_size=384, intermediate_size=1152, num_hidden_layers=8, num_attention_heads=6,
             num_key_value_heads=2, head_dim=64, rope_theta=100000.0, rms_norm_eps=1e-6)
INIT_STD = 0.02
SHARD_LIMIT = 14_000_000  # bytes per safetensors file (the "shards <= 14 MB")
MODEL_DIR_LIMIT = 40_000_000  # bytes for the whole model directory
KEEP_CHECKPOINTS = 2

# The curriculum. "until": where the phase ends, as a fraction of the wall-clock budget. "mix": the share of
# micro-batches (= of optimizer steps with --micro-per-step 1) drawn from each source: "copy" is the synthetic
# copy task, "L<n>" the generated problems of noise length n (a source without files is dropped and the
# others renormalised). "max_op": problems with a larger op are skipped. "copy_names": the number of names in
# a copy example is drawn log-uniformly from this range. Phase A teaches copying and the solution format on
# short contexts, where the attention signal is strong; B adds medium noise; C adds the long contexts.
PHASES = [
    {"name": "A", "until": 0.20, "max_op": 4, "copy_names": (2, 48),
     "mix": {"copy": 0.45, "L0": 0.55}},
    {"name": "B", "until": 0.45, "max_op": 6, "copy_names": (4, 160),
     "mix": {"copy": 0.10, "L0": 0.50, "L500": 0.20, "L1000": 0.20}},
    {"name": "C", "until": 1.00, "max_op": 8, "copy_names": (4, 160),
     "mix": {"copy": 0.05, "L0": 0.35, "L500": 0.10, "L1000": 0.15, "L2000": 0.15, "L4000": 0.20}},
]
# --init (continuing from a checkpoint that already solves short problems): no copy task (run 3 never
# learned it while the problems' own name lookups improved), every length from the start.
# --continue-mix picks the continuation's mix: "all" (every length), "short" (length 0 first: the
# length-0 target of issue #5; run 4 showed name lookups improve at length 0 but not yet at 500+), "long"
# (mostly 1000-4000, for the length-4k target, continuing a model that already solves length 0 and 500) or
# "long16" (half of the steps at 8000 and 16000, continuing a model that solves lengths 0-4000: run 9).
CONTINUE_MIXES = {
    "all": {"L0": 0.35, "L500": 0.15, "L1000": 0.15, "L2000": 0.15, "L4000": 0.20},
    "short": {"L0": 0.80, "L500": 0.20},
    "long": {"L0": 0.10, "L500": 0.10, "L1000": 0.20, "L2000": 0.25, "L4000": 0.35},
    # Run 9: noise lengths 8000 and 16000 (prompts of ~7.6K / ~15.2K tokens) for half of the steps, the lengths the
    # model already solves kept with the other half. Shares are of steps (~32K tokens each); a 16K step costs about
    # 3x a length-0 one, so 16K gets ~40% of the GPU time. Needs the long data: device_train.sh makes it when
    # VORTEX_TRAIN_ARGS names this mix (or VORTEX_TRAIN_LONG=1).
    "long16": {"L0": 0.08, "L500": 0.07, "L1000": 0.05, "L2000": 0.10, "L4000": 0.20, "L8000": 0.25,
               "L16000": 0.25},
}
# Mixes whose every source must have data files: a run of these without its long lengths is a wasted run, so the
# missing lengths stop it (other mixes and PHASES drop the missing sources with a warning).
CONTINUE_MIXES_STRICT = {"long16"}
CONTINUE_MIX = "all"  # set from --continue-mix in main()
PHASES_CONTINUE = [
    {"name": "D", "until": 1.00, "max_op": 8, "copy_names": (4, 160), "mix": CONTINUE_MIXES["all"]},
]
CONTINUE = False  # set from --init in main(), before the data workers fork
COPY_QUESTION = "Repeat the variables of the context, in the same order."
COPY_EXAMPLES_PER_LOAD = 1024  # copy examples a worker makes at a time (~9 micro-batches of 32K tokens)
PROBE_MAX_EXAMPLES = 40  # per probe set
PROBE_MAX_OP = 5  # the targets are about ops 1-5
GREEDY_PROBE_PROBLEMS = 10  # length-0 problems of ops 1-3 decoded greedily by the periodic probe


# Data parallelism (torch.distributed.run sets RANK, LOCAL_RANK and WORLD_SIZE); set in main().
RANK, LOCAL_RANK, WORLD = 0, 0, 1
DECIDE_EVERY = 20  # with several ranks: steps between rank 0's schedule broadcasts (one host sync each)


def log(msg, every_rank=False):
    """Rank 0 logs; other ranks only what every_rank marks (failures)."""
    if RANK == 0 or every_rank:
        where = f" rank {RANK}" if WORLD > 1 and RANK else ""
        print(f"[train{where} {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def dist_sum(values, device):
    """The element-wise sum of a list of numbers over the ranks (the list itself with one rank)."""
    if WORLD == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t)
    return t.tolist()


def dist_from_rank0(values, device):
    """Rank 0's list of numbers, on every rank."""
    if WORLD == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    torch.distributed.broadcast(t, 0)
    return t.tolist()


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--tokenizer-dir", required=True, help="tokenizer.json + tokenizer_config.json")
    p.add_argument("--work-dir", required=True, help="checkpoints/, model (symlink), loss.csv, eval.json, DONE")
    p.add_argument("--eval", action="append", default=[], help="held-out JSONL problems to grade at the end")
    p.add_argument("--probe", action="append", default=[],
                   help="held-out JSONL problems for the periodic teacher-forced probes (ops <= 5 used)")
    p.add_argument("--minutes", type=float, default=7.0, help="wall-clock budget of the training loop")
    p.add_argument("--end-at", type=float, help="unix time the training loop must end by (overrides --minutes)")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup-steps", type=int, default=200, help="linear warmup, in optimizer steps")
    p.add_argument("--decay-start", type=float, default=0.5,
                   help="fraction of the budget after which the lr decays (cosine) to --min-lr-frac")
    p.add_argument("--min-lr-frac", type=float, default=0.05, help="final lr as a fraction of --lr")
    p.add_argument("--weight-decay", type=float, default=0.1, help="on the linear layers (not embeddings, norms)")
    p.add_argument("--ctx-weight", type=float, default=0.25,
                   help="loss weight of the repeated-name digits inside the prompt (0: solution only)")
    p.add_argument("--micro-tokens", type=int, default=32768, help="padded tokens per micro-batch (B*T) at most")
    p.add_argument("--micro-per-step", type=int, default=1, help="micro-batches accumulated per optimizer step")
    p.add_argument("--workers", type=int, default=12, help="data worker processes")
    p.add_argument("--save-every-min", type=float, default=2.0)
    p.add_argument("--log-every", type=int, default=50, help="optimizer steps between log lines")
    p.add_argument("--probe-every-s", type=float, default=30.0, help="seconds between teacher-forced probes")
    p.add_argument("--greedy-every-s", type=float, default=120.0, help="seconds between greedy probes (0: never)")
    p.add_argument("--max-new-tokens", type=int, default=320,
                   help="greedy decoding limit in the final evaluation (op-5 solutions are <= ~230 tokens)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init", help="continue from this Hugging Face checkpoint (its weights; same tokenizer) with "
                                  "the PHASES_CONTINUE curriculum instead of training from random weights")
    p.add_argument("--continue-mix", choices=sorted(CONTINUE_MIXES), default="all",
                   help="with --init: the lengths the continuation trains on (see CONTINUE_MIXES)")
    return p.parse_args()


# ------------------------------------------------------------------------------------------------
# Tokens of variable names
# ------------------------------------------------------------------------------------------------
def name_tables(tok):
    """Boolean tables over token ids: (starts a name: 'V' or ' V', is a 3-digit group such as '029')."""
    vocab = tok.get_vocab()
    size = max(common.VOCAB_SIZE, max(vocab.values()) + 1)
    vmark = np.zeros(size, dtype=bool)
    digit3 = np.zeros(size, dtype=bool)
    for text, i in vocab.items():
        if len(text) == 3 and text.isascii() and text.isdigit():
            digit3[i] = True
    for text in ("V", "\u0120V"):  # ByteLevel spells a leading space as U+0120
        if text in vocab:
            vmark[vocab[text]] = True
    return vmark, digit3


def name_starts(ids, tables):
    """Positions p with ids[p] in {V, ' V'} and ids[p+1], ids[p+2] 3-digit groups: a name V######."""
    vmark, digit3 = tables
    if len(ids) < 3:
        return np.zeros(0, dtype=np.int64)
    hit = vmark[ids[:-2]] & digit3[ids[1:-1]] & digit3[ids[2:]]
    return np.nonzero(hit)[0].astype(np.int64)


def repeated_name_inputs(ids, n_prompt, tables):
    """Input positions j < n_prompt - 1 whose next token ids[j+1] is the second digit group of a name that
    already occurred earlier in the prompt: predictable only by finding that occurrence (induction)."""
    starts = name_starts(ids[:n_prompt], tables)
    if len(starts) < 2:
        return np.zeros(0, dtype=np.int64)
    keys = ids[starts + 1].astype(np.int64) * 65536 + ids[starts + 2]
    _, first = np.unique(keys, return_index=True)
    repeat = np.ones(len(starts), dtype=bool)
    repeat[first] = False
    return starts[repeat] + 1


def name_digit_mask(ids, tables):
    """(L,) bool: ids[q] is one of the two digit groups of a name."""
    mask = np.zeros(len(ids), dtype=bool)
    starts = name_starts(ids, tables)
    mask[starts + 1] = True
    mask[starts + 2] = True
    return mask


# ------------------------------------------------------------------------------------------------
# Examples and micro-batches
# ------------------------------------------------------------------------------------------------
def encode_examples(tok, prefixes, solutions, im_end):
    """[(ids (L,) int32, n_prompt)]; ids = prefix + solution + <|im_end|>, each part tokenized on its own."""
    p_enc = tok.encode_batch(prefixes, add_special_tokens=False)
    s_enc = tok.encode_batch(solutions, add_special_tokens=False)
    examples = []
    for p, s in zip(p_enc, s_enc):
        ids = np.array(p.ids + s.ids + [im_end], dtype=np.int32)
        if len(ids) <= common.MAX_POSITIONS:
            examples.append((ids, len(p.ids)))
    return examples


def problem_examples(tok, rows, im_end):
    return encode_examples(tok, [common.chat_prefix(r["prompt"]) for r in rows], [r["solution"] for r in rows],
                           im_end)


def copy_examples(tok, rng, count, names_range, im_end):
    """The synthetic copy task: a context of k random names; the answer repeats them in order."""
    lo, hi = names_range
    prefixes, solutions = [], []
    for _ in range(count):
        k = min(max(int(math.exp(rng.uniform(math.log(lo), math.log(hi + 1)))), lo), hi)
        names = [f"V{rng.randrange(1_000_000):06d}" for _ in range(k)]
        prefixes.append(common.chat_prefix("<context>\n" + " ".join(names) + "\n</context>\n\n" + COPY_QUESTION))
        solutions.append(" ".join(names))
    return encode_examples(tok, prefixes, solutions, im_end)


def make_micro_batch(group, pad_id, source, ctx_weight, tables):
    """Right-padded inputs, the flat positions whose next token carries loss, their targets and weights.

    Right padding needs no attention mask: under the causal mask a real token never sees the padding
    after it, and padded positions carry no loss. Input position j predicts ids[j + 1]: the solution
    starts at ids[n_prompt], so positions n_prompt-1 .. n-2 predict the solution and <|im_end|>.
    """
    T = max(len(ids) for ids, _ in group) - 1
    x = np.full((len(group), T), pad_id, dtype=np.int32)  # (B, T)
    idx, tgt, weights, sol, tokens = [], [], [], [], 0
    for b, (ids, n_prompt) in enumerate(group):
        n = len(ids)
        x[b, :n - 1] = ids[:-1]
        sol_pos = np.arange(n_prompt - 1, n - 1, dtype=np.int64)
        ctx_pos = repeated_name_inputs(ids, n_prompt, tables) if ctx_weight > 0 else np.zeros(0, dtype=np.int64)
        pos = np.concatenate([ctx_pos, sol_pos])
        inner = pos[pos + 1 < n - 1]
        if not np.array_equal(x[b, inner + 1], ids[inner + 1]):  # the target is the next input token
            raise AssertionError("micro-batch targets are not aligned with the inputs")
        idx.append(b * T + pos)
        tgt.append(ids[pos + 1].astype(np.int64))
        weights.append(np.concatenate([np.full(len(ctx_pos), ctx_weight, dtype=np.float32),
                                       np.ones(len(sol_pos), dtype=np.float32)]))
        sol.append(np.concatenate([np.zeros(len(ctx_pos), dtype=bool), np.ones(len(sol_pos), dtype=bool)]))
        tokens += n - 1
    w = np.concatenate(weights)
    return {"x": x,  # (B, T) int32
            "idx": np.concatenate(idx),  # (N,) int64, flat index into B*T
            "tgt": np.concatenate(tgt),  # (N,) int64
            "w": w,  # (N,) float32 loss weights
            "sol": np.concatenate(sol),  # (N,) bool: a solution position (else a repeated name in the prompt)
            "weight_sum": float(w.sum()), "tokens": tokens, "padded": x.size, "source": source}


def micro_batches(examples, micro_tokens, pad_id, source, ctx_weight, tables, rng):
    """Sorts by length and cuts so that B*T <= micro_tokens; returns the micro-batches shuffled."""
    examples = sorted(examples, key=lambda e: len(e[0]))
    groups, current = [], []
    for ex in examples:
        t = len(ex[0]) - 1  # the longest so far: examples are sorted
        if current and (len(current) + 1) * t > micro_tokens:
            groups.append(current)
            current = []
        current.append(ex)
    if current:
        groups.append(current)
    batches = [make_micro_batch(g, pad_id, source, ctx_weight, tables) for g in groups]
    rng.shuffle(batches)
    return batches


# ------------------------------------------------------------------------------------------------
# Data workers
# ------------------------------------------------------------------------------------------------
def resolve_phases(available):
    """PHASES with the sources that have no data files dropped and the shares renormalised."""
    phases = []
    for phase in (PHASES_CONTINUE if CONTINUE else PHASES):
        mix = {s: w for s, w in phase["mix"].items() if s == "copy" or s in available}
        dropped = sorted(set(phase["mix"]) - set(mix))
        if dropped and CONTINUE and CONTINUE_MIX in CONTINUE_MIXES_STRICT:
            raise RuntimeError(f"--continue-mix {CONTINUE_MIX}: no data files for {dropped} "
                               f"(device_train.sh makes them with VORTEX_TRAIN_LONG=1)")
        if dropped:
            log(f"WARNING: phase {phase['name']}: no data files for {dropped}; their share goes to the others")
        total = sum(mix.values())
        phases.append({**phase, "mix": {s: w / total for s, w in mix.items()}})
    return phases


def worker_main(worker_id, files_by_source, phases, tokenizer_path, micro_tokens, ctx_weight, seed, out_queue,
                phase_value):
    """Puts micro-batches forever, drawing each one's source from the current phase's mix."""
    try:
        from tokenizers import Tokenizer
        tok = Tokenizer.from_file(tokenizer_path)
        pad_id, im_end = tok.token_to_id(common.ENDOFTEXT), tok.token_to_id(common.IM_END)
        tables = name_tables(tok)
        rng = random.Random(seed * 1009 + worker_id)
        orders = {s: rng.sample(paths, len(paths)) for s, paths in files_by_source.items()}
        cursors = {s: 0 for s in files_by_source}
        pools, current, phase = {}, None, None

        def load(source):
            if source == "copy":
                examples = copy_examples(tok, rng, COPY_EXAMPLES_PER_LOAD, phase["copy_names"], im_end)
            else:
                paths, examples = orders[source], []
                for _ in range(len(paths)):
                    path = paths[cursors[source] % len(paths)]
                    cursors[source] += 1
                    if cursors[source] == len(paths) + 1:
                        print(f"[data worker {worker_id}] WARNING: all {len(paths)} {source} files used; "
                              f"repeating data", flush=True)
                    rows = [r for r in common.read_jsonl(path) if r["op"] <= phase["max_op"]]
                    examples = problem_examples(tok, rows, im_end)
                    if examples:
                        break
                if not examples:
                    raise RuntimeError(f"no {source} problems with op <= {phase['max_op']}")
            rng.shuffle(examples)
            return micro_batches(examples, micro_tokens, pad_id, source, ctx_weight, tables, rng)

        while True:
            if phase_value.value != current:  # a new phase: its mix, op limit and copy lengths from now on
                current = phase_value.value
                phase, pools = phases[current], {}
                sources = list(phase["mix"])
                shares = [phase["mix"][s] for s in sources]
            source = rng.choices(sources, shares)[0]
            if not pools.get(source):
                pools[source] = load(source)
            batch = pools[source].pop()
            batch["phase"] = current
            out_queue.put(batch)
    except Exception:  # noqa: BLE001 - reported to the main process, which stops
        out_queue.put({"error": f"data worker {worker_id}: {traceback.format_exc()}"})


def start_workers(args):
    groups = common.data_files_by_length(args.data_dir)
    by_source = {f"L{length}": [str(p) for p in paths] for length, paths in groups.items()}
    if not by_source:
        raise SystemExit(f"error: no L<length>_s<seed>.jsonl files in {args.data_dir}")
    for length, paths in groups.items():
        size = sum(p.stat().st_size for p in paths)
        log(f"data: length {length:5d}: {len(paths):4d} files, {size / 1e9:.2f} GB")
    phases = resolve_phases(set(by_source))
    for phase in phases:
        mix = " ".join(f"{s}:{w:.0%}" for s, w in phase["mix"].items())
        log(f"curriculum: phase {phase['name']} until {phase['until']:.0%} of the budget, ops <= {phase['max_op']}, "
            f"copy names {phase['copy_names']}, mix {mix}")
    n = max(1, args.workers)
    total = n * WORLD  # every rank's workers read their own slice of the files, with their own seeds
    ctx = mp.get_context("fork")  # before any CUDA work; workers use numpy and tokenizers only
    out_queue = ctx.Queue(maxsize=4 * n)  # small: a phase change reaches the trainer within a few seconds
    phase_value = ctx.Value("i", 0)
    tokenizer_path = str(Path(args.tokenizer_dir) / "tokenizer.json")
    workers = []
    for w in range(RANK * n, (RANK + 1) * n):
        # Each worker reads its own slice of every length's files (all of them when there are fewer than workers).
        mine = {s: (paths[w::total] if len(paths) >= total else paths[w % len(paths):] + paths[:w % len(paths)])
                for s, paths in by_source.items()}
        proc = ctx.Process(target=worker_main, daemon=True,
                           args=(w, mine, phases, tokenizer_path, args.micro_tokens, args.ctx_weight, args.seed,
                                 out_queue, phase_value))
        proc.start()
        workers.append(proc)
    log(f"data: {sum(len(p) for p in by_source.values())} files over {n} worker processes"
        + (f" per rank, {total} in all" if WORLD > 1 else ""))
    return workers, out_queue, phase_value, phases


def take_micro_batches(out_queue, workers, count):
    batches = []
    while len(batches) < count:
        try:
            item = out_queue.get(timeout=60)
        except queue_lib.Empty:
            alive = sum(p.is_alive() for p in workers)
            raise RuntimeError(f"no training data for 60 s ({alive}/{len(workers)} data workers alive)")
        if "error" in item:
            raise RuntimeError(item["error"])
        batches.append(item)
    return batches


def stop_workers(workers):
    for p in workers:
        p.terminate()
    for p in workers:
        p.join(timeout=5)


# ------------------------------------------------------------------------------------------------
# Model
# ------------------------------------------------------------------------------------------------
def uses_rope_parameters(config_cls):
    """transformers 5 keeps rope_theta inside one `rope_parameters` dict."""
    fields = getattr(config_cls, "__dataclass_fields__", None) or {}
    if "rope_parameters" in fields:
        return True
    try:
        return hasattr(config_cls(), "rope_parameters")
    except Exception:  # noqa: BLE001
        return False


def build_config(special_ids):
    from transformers import Qwen3Config
    kw = dict(vocab_size=common.VOCAB_SIZE, hidden_size=MODEL["hidden_size"],
              intermediate_size=MODEL["intermediate_size"], num_hidden_layers=MODEL["num_hidden_layers"],
              num_attention_heads=MODEL["num_attention_heads"], num_key_value_heads=MODEL["num_key_value_heads"],
              head_dim=MODEL["head_dim"], hidden_act="silu", max_position_embeddings=common.MAX_POSITIONS,
              rms_norm_eps=MODEL["rms_norm_eps"], tie_word_embeddings=True, attention_bias=False,
              attention_dropout=0.0, use_cache=True, initializer_range=INIT_STD,
              bos_token_id=special_ids[common.ENDOFTEXT], eos_token_id=special_ids[common.IM_END],
              pad_token_id=special_ids[common.ENDOFTEXT])
    if uses_rope_parameters(Qwen3Config):
        kw["rope_parameters"] = {"rope_type": "default", "rope_theta": MODEL["rope_theta"]}
    else:  # transformers 4.x
        kw["rope_theta"] = MODEL["rope_theta"]
    try:
        cfg = Qwen3Config(attn_implementation="sdpa", **kw)
    except Exception as e:  # noqa: BLE001 - some versions refuse the kwarg; set it afterwards
        log(f"Qwen3Config(attn_implementation=...) failed ({e!r}); setting it as an attribute")
        cfg = Qwen3Config(**kw)
    try:
        cfg._attn_implementation = "sdpa"
    except Exception as e:  # noqa: BLE001
        log(f"could not set config._attn_implementation: {e!r}")
    rope = getattr(cfg, "rope_parameters", None) or {"rope_theta": getattr(cfg, "rope_theta", None)}
    if float(rope.get("rope_theta") or 0) != MODEL["rope_theta"] or cfg.head_dim != MODEL["head_dim"]:
        raise RuntimeError(f"Qwen3Config did not take rope_theta/head_dim: {rope}, head_dim={cfg.head_dim}")
    layer_types = getattr(cfg, "layer_types", None) or []
    if any(t != "full_attention" for t in layer_types) or getattr(cfg, "use_sliding_window", False):
        raise RuntimeError(f"Qwen3Config has sliding-window layers: {layer_types}, "
                           f"window {getattr(cfg, 'sliding_window', None)}")
    if not getattr(cfg, "is_causal", True):
        raise RuntimeError("Qwen3Config.is_causal is False")
    return cfg


def init_weights(model):
    """N(0, 0.02) for matrices (output projections scaled by 1/sqrt(2 * layers)), ones for RMSNorm weights."""
    out_scale = 1.0 / math.sqrt(2 * MODEL["num_hidden_layers"])
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2:
                std = INIT_STD * (out_scale if name.endswith(("o_proj.weight", "down_proj.weight")) else 1.0)
                p.normal_(0.0, std)
            elif p.dim() == 1 and name.endswith("norm.weight"):
                p.fill_(1.0)
            else:
                raise RuntimeError(f"no init rule for {name} {tuple(p.shape)}")


def build_model(cfg, device, init_dir=None):
    from transformers import Qwen3ForCausalLM
    torch.manual_seed(0)
    model = Qwen3ForCausalLM(cfg).float()
    if model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr():
        log("lm_head was not tied to the embedding by transformers; tying it")
        model.lm_head.weight = model.model.embed_tokens.weight
    if init_dir:
        from safetensors.torch import load_file
        state = {}
        for shard in sorted(Path(init_dir).glob("*.safetensors")):
            state.update(load_file(str(shard)))
        state.pop("lm_head.weight", None)  # tied to the embedding
        missing, unexpected = model.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
        missing = [k for k in missing if k != "lm_head.weight"]
        if missing or unexpected:
            raise RuntimeError(f"--init {init_dir}: missing {missing}, unexpected {unexpected}")
        log(f"initialised from {init_dir} ({len(state)} tensors)")
    else:
        init_weights(model)
    model.to(device).train()
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model: Qwen3 {MODEL}, vocab {cfg.vocab_size}, tied embeddings, {n_params / 1e6:.2f}M parameters "
        f"({n_params * 2 / 1e6:.1f} MB in bf16), attention {cfg._attn_implementation}")
    return model


def build_optimizer(model, args):
    """AdamW; weight decay on the linear layers only (not on the tied embedding, whose rare digit-group
    rows would shrink between their updates, nor on the RMSNorm / QK-norm gains)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():  # the tied lm_head is listed once, as embed_tokens
        (decay if p.dim() >= 2 and "embed_tokens" not in name else no_decay).append(p)
    log(f"optimizer: AdamW lr {args.lr}, weight decay {args.weight_decay} on {sum(p.numel() for p in decay) / 1e6:.2f}M "
        f"parameters, none on {sum(p.numel() for p in no_decay) / 1e6:.2f}M (embedding, norms)")
    groups = [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.95), eps=1e-8, fused=True)


def lr_at(step, frac, args):
    """Linear warmup over --warmup-steps, constant to --decay-start of the budget, cosine to --min-lr-frac."""
    warm = min(1.0, (step + 1) / max(args.warmup_steps, 1))
    if frac <= args.decay_start:
        mult = 1.0
    else:
        progress = min((frac - args.decay_start) / max(1.0 - args.decay_start, 1e-9), 1.0)
        mult = args.min_lr_frac + (1.0 - args.min_lr_frac) * 0.5 * (1.0 + math.cos(math.pi * progress))
    return args.lr * warm * mult


# ------------------------------------------------------------------------------------------------
# Self-tests of the attention path (before training)
# ------------------------------------------------------------------------------------------------
def rotate_half(t):
    half = t.shape[-1] // 2
    return torch.cat((-t[..., half:], t[..., :half]), dim=-1)


@torch.no_grad()
def reference_layer0(model, x, device):
    """Layer 0's attention output computed by the model and from scratch (fp32): causal softmax attention,
    GQA (query head h reads kv head h // group), QK-norm per head, RoPE theta MODEL['rope_theta']."""
    attn = model.model.layers[0].self_attn
    captured = {}

    def hook(module, args, kwargs, output):
        captured["h"] = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        captured["out"] = output[0] if isinstance(output, tuple) else output

    handle = attn.register_forward_hook(hook, with_kwargs=True)
    try:
        model.model(input_ids=x.to(device), use_cache=False)
    finally:
        handle.remove()
    h, out = captured["h"].float(), captured["out"].float()
    B, T, _ = h.shape
    H, KV, D = MODEL["num_attention_heads"], MODEL["num_key_value_heads"], MODEL["head_dim"]
    q = attn.q_norm(attn.q_proj(h).view(B, T, H, D)).transpose(1, 2)  # (B, H, T, D)
    k = attn.k_norm(attn.k_proj(h).view(B, T, KV, D)).transpose(1, 2)  # (B, KV, T, D)
    v = attn.v_proj(h).view(B, T, KV, D).transpose(1, 2)  # (B, KV, T, D)
    inv_freq = 1.0 / (MODEL["rope_theta"] ** (torch.arange(0, D, 2, dtype=torch.float32, device=device) / D))
    angles = torch.arange(T, dtype=torch.float32, device=device)[:, None] * inv_freq[None, :]  # (T, D/2)
    cos, sin = torch.cat((angles, angles), -1).cos(), torch.cat((angles, angles), -1).sin()  # (T, D)
    q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
    k, v = k.repeat_interleave(H // KV, dim=1), v.repeat_interleave(H // KV, dim=1)  # (B, H, T, D)
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(D)  # (B, H, T, T)
    future = torch.triu(torch.ones(T, T, dtype=torch.bool, device=device), diagonal=1)
    probs = torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1)
    ref = attn.o_proj((probs @ v).transpose(1, 2).reshape(B, T, H * D))  # (B, T, C)
    return out, ref


def self_test(model, device):
    """Fails the run if attention is not causal, cannot see the past, or RoPE is not what the config says."""
    report = {}
    D = MODEL["head_dim"]
    want = 1.0 / (MODEL["rope_theta"] ** (torch.arange(0, D, 2, dtype=torch.float64) / D))
    got = model.model.rotary_emb.inv_freq.detach().double().cpu()
    if got.shape != want.shape or not torch.allclose(got, want, rtol=1e-5, atol=0.0):
        raise RuntimeError(f"self-test: RoPE inv_freq is not 1/theta^(2i/d) with theta {MODEL['rope_theta']}: "
                           f"{got[:4].tolist()} vs {want[:4].tolist()}")
    gen = torch.Generator().manual_seed(1234)
    B, T, p = 2, 192, 77
    x = torch.randint(3, common.VOCAB_SIZE, (B, T), generator=gen)  # (B, T)
    x2 = x.clone()
    x2[:, p] = 3 + (x[:, p] - 3 + 1 + torch.randint(0, 100, (B,), generator=gen)) % (common.VOCAB_SIZE - 3)
    for label, amp in (("fp32", False), ("bf16", True)):
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            h1 = model.model(input_ids=x.to(device), use_cache=False)[0].float()  # (B, T, C)
            h2 = model.model(input_ids=x2.to(device), use_cache=False)[0].float()
        change = (h1 - h2).abs().amax(-1) / h1.abs().mean()  # (B, T), relative
        before, after = float(change[:, :p].max()), float(change[:, p:].min())
        report[f"{label}_change_before"], report[f"{label}_change_after_min"] = before, after
        if before > (1e-5 if label == "fp32" else 2e-2):
            raise RuntimeError(f"self-test ({label}): changing token {p} changes earlier outputs by {before:.2e}: "
                               "attention is not causal")
        if label == "fp32" and after <= 1e-7:
            raise RuntimeError(f"self-test (fp32): some position after {p} does not change ({after:.2e}) when "
                               f"token {p} does: attention cannot see the past")
    try:
        out, ref = reference_layer0(model, x[:, :96], device)
        err = float((out - ref).abs().max() / out.abs().max())
        report["layer0_reference_rel_err"] = err
        if err > 1e-3:
            log(f"SELF-TEST WARNING: layer 0 attention differs from a from-scratch causal RoPE/QK-norm/GQA "
                f"attention by {err:.2e} (relative): read transformers' Qwen3Attention before trusting this run")
    except Exception as e:  # noqa: BLE001 - the reference is a cross-check; the tests above are the gate
        log(f"SELF-TEST WARNING: the layer-0 reference check did not run: {e!r}")
        report["layer0_reference_rel_err"] = None
    log(f"self-test ok: RoPE theta {MODEL['rope_theta']:g}; causal (a change at {p} moves earlier outputs by "
        f"{report['fp32_change_before']:.1e} fp32 / {report['bf16_change_before']:.1e} bf16) and every later "
        f"position sees it (min {report['fp32_change_after_min']:.1e}); layer 0 vs reference "
        f"{report['layer0_reference_rel_err']}")
    return report


# ------------------------------------------------------------------------------------------------
# Training
# ------------------------------------------------------------------------------------------------
def micro_loss(model, batch, device):
    """Weighted cross-entropy sum over the supervised positions of one micro-batch, and the plain sums over
    its solution positions and its prompt (repeated-name) positions, for the log."""
    x = torch.from_numpy(batch["x"]).to(device, non_blocking=True).long()  # (B, T)
    idx = torch.from_numpy(batch["idx"]).to(device, non_blocking=True)  # (N,)
    tgt = torch.from_numpy(batch["tgt"]).to(device, non_blocking=True)  # (N,)
    w = torch.from_numpy(batch["w"]).to(device, non_blocking=True)  # (N,)
    sol = torch.from_numpy(batch["sol"]).to(device, non_blocking=True)  # (N,) bool
    with torch.autocast("cuda", dtype=torch.bfloat16):
        hidden = model.model(input_ids=x, use_cache=False)[0]  # (B, T, C)
        picked = hidden.reshape(-1, hidden.shape[-1]).index_select(0, idx)  # (N, C)
        logits = model.lm_head(picked)  # (N, V): only supervised positions reach the vocabulary
    ce = F.cross_entropy(logits.float(), tgt, reduction="none")  # (N,)
    plain = ce.detach()
    return (ce * w).sum(), (plain * sol).sum(), (plain * ~sol).sum()


def train_step(model, opt, batches, device, meter):
    total_weight = sum(b["weight_sum"] for b in batches)
    for batch in batches:
        loss, sol_sum, ctx_sum = micro_loss(model, batch, device)
        (loss / total_weight).backward()
        meter.add(batch, sol_sum, ctx_sum)
    if WORLD > 1:  # the mean of the ranks' gradients, so that every rank takes the same step
        grads = [p.grad for p in model.parameters()]
        flat = torch._utils._flatten_dense_tensors(grads)
        torch.distributed.all_reduce(flat)
        flat.div_(WORLD)
        for g, synced in zip(grads, torch._utils._unflatten_dense_tensors(flat, grads)):
            g.copy_(synced)
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    meter.grad_norms.append(grad_norm.detach())


def source_order(name):
    return (-1, 0) if name == "copy" else (0, int(name[1:]))


class Meter:
    """Loss per source between two log lines (one GPU sync per log line) and token counts."""

    def __init__(self):
        self.tokens_total, self.supervised_total, self.padded_total = 0, 0, 0
        self.reset()

    def reset(self):
        self.sol, self.ctx, self.grad_norms = {}, {}, []
        self.tokens, self.padded = 0, 0

    def add(self, batch, sol_sum, ctx_sum):
        n_sol = int(batch["sol"].sum())
        n_ctx = len(batch["sol"]) - n_sol
        for table, value, n in ((self.sol, sol_sum, n_sol), (self.ctx, ctx_sum, n_ctx)):
            if n:
                acc = table.setdefault(batch["source"], [0.0, 0])
                acc[0], acc[1] = acc[0] + value, acc[1] + n
        self.tokens += batch["tokens"]
        self.padded += batch["padded"]
        self.tokens_total += batch["tokens"]
        self.supervised_total += len(batch["tgt"])
        self.padded_total += batch["padded"]

    def summary(self):
        def means(table):
            return {k: float(s) / n for k, (s, n) in sorted(table.items(), key=lambda kv: source_order(kv[0]))}
        real = [(float(s), n) for k, (s, n) in self.sol.items() if k != "copy"]
        loss = sum(s for s, _ in real) / max(sum(n for _, n in real), 1) if real else float("nan")
        grad = float(torch.stack(self.grad_norms).mean()) if self.grad_norms else float("nan")
        return loss, means(self.sol), means(self.ctx), grad


def log_progress(step, elapsed, interval, lr, phase, meter, csv, data_wait, device):
    """One log line and CSV row (rank 0). Token counts are summed over the ranks; the losses are rank 0's."""
    tokens, padded, tokens_total, supervised_total = dist_sum(
        [meter.tokens, meter.padded, meter.tokens_total, meter.supervised_total], device)
    if RANK != 0:
        return
    loss, sol, ctx, grad = meter.summary()
    if any(not math.isfinite(v) for v in list(sol.values()) + list(ctx.values())):
        raise RuntimeError(f"loss is not finite at step {step}: training diverged ({sol} {ctx})")
    rate = tokens / max(interval, 1e-9)
    pad = 1.0 - tokens / max(padded, 1)
    mem = torch.cuda.max_memory_allocated() / 2**30
    sol_s = " ".join(f"{k}:{v:.3f}" for k, v in sol.items())
    ctx_s = " ".join(f"{k}:{v:.2f}" for k, v in ctx.items())
    log(f"step {step:5d} t={elapsed:6.1f}s phase {phase} lr={lr:.2e} loss={loss:.4f} gnorm={grad:.2f} "
        f"tok/s={rate / 1e3:.0f}K tokens={tokens_total / 1e6:.1f}M sup={supervised_total / 1e6:.1f}M "
        f"pad={pad:.0%} wait={data_wait:.0f}s mem={mem:.1f}G | solution {sol_s} | prompt repeats {ctx_s}")
    csv.write(f"{step},{elapsed:.1f},{int(tokens_total)},{loss:.5f},{lr:.6e},"
              f"{int(supervised_total)},{grad:.4f},{rate:.0f},{phase}\n")
    csv.flush()


# ------------------------------------------------------------------------------------------------
# Health probes: fixed held-out data, teacher-forced (one forward per set) and greedy
# ------------------------------------------------------------------------------------------------
class Probes:
    """Is the model learning to copy and to look names up? Answers within the first minutes of a run.

    Sets: "copy" (48 held-out copy examples: the loss on their name digits falls from ~6.9 = ln 1000 towards 0
    once the model copies from its context) and one per --probe file (its problems of ops <= 5): solution loss,
    loss and accuracy on the name digits of the solution (the tokens a model that cannot look names up gets
    wrong), and the exact-match rate per op (every teacher-forced argmax right, i.e. greedy decoding would
    reproduce the reference solution). Greedy: 10 length-0 problems of ops 1-3, decoded and graded.
    """

    def __init__(self, args, tok, device):
        self.device = device
        self.tok = tok
        self.tables = name_tables(tok)
        self.pad_id, self.im_end = tok.token_to_id(common.ENDOFTEXT), tok.token_to_id(common.IM_END)
        self.sets, self.greedy_rows, self.history, self.flags = [], [], [], set()
        self.sets.append(self.build("copy", copy_examples(tok, random.Random(4242), 48, (8, 64), self.im_end), None))
        for path in args.probe:
            rows = [r for r in common.read_jsonl(path) if r["op"] <= PROBE_MAX_OP][:PROBE_MAX_EXAMPLES]
            if not rows:
                log(f"probe {path}: no problems with op <= {PROBE_MAX_OP}; skipped")
                continue
            name = f"L{rows[0]['length']}"
            examples = problem_examples(tok, rows, self.im_end)
            if len(examples) != len(rows):
                raise RuntimeError(f"probe {path}: a problem is longer than {common.MAX_POSITIONS} tokens")
            self.sets.append(self.build(name, examples, [r["op"] for r in rows]))
            if rows[0]["length"] == 0 and not self.greedy_rows:
                by_op = {op: [r for r in rows if r["op"] == op] for op in (1, 2, 3)}
                while len(self.greedy_rows) < GREEDY_PROBE_PROBLEMS and any(by_op.values()):
                    for op in (1, 2, 3):
                        if by_op[op] and len(self.greedy_rows) < GREEDY_PROBE_PROBLEMS:
                            self.greedy_rows.append(by_op[op].pop(0))
        self.greedy_prompts = [tok.encode(common.chat_prefix(r["prompt"]), add_special_tokens=False).ids
                               for r in self.greedy_rows]
        log("probes: " + ", ".join(f"{s['name']} ({s['n']} examples, {s['x'].size} tokens)" for s in self.sets)
            + f"; greedy: {len(self.greedy_rows)} length-0 problems of ops 1-3")

    def build(self, name, examples, ops):
        batch = make_micro_batch(examples, self.pad_id, name, 0.0, self.tables)  # solution positions only
        digits, example = [], []
        for b, (ids, n_prompt) in enumerate(examples):
            digits.append(name_digit_mask(ids, self.tables)[n_prompt:])  # over the targets ids[n_prompt:]
            example.append(np.full(len(ids) - n_prompt, b, dtype=np.int64))
        return {"name": name, "n": len(examples), "x": batch["x"], "idx": batch["idx"], "tgt": batch["tgt"],
                "digits": np.concatenate(digits), "example": np.concatenate(example), "ops": ops}

    @torch.no_grad()
    def teacher_forced(self, model):
        results = {}
        for s in self.sets:
            x = torch.from_numpy(s["x"]).to(self.device).long()  # (B, T)
            idx = torch.from_numpy(s["idx"]).to(self.device)  # (N,)
            tgt = torch.from_numpy(s["tgt"]).to(self.device)  # (N,)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                hidden = model.model(input_ids=x, use_cache=False)[0]  # (B, T, C)
                logits = model.lm_head(hidden.reshape(-1, hidden.shape[-1]).index_select(0, idx)).float()  # (N, V)
            ce = F.cross_entropy(logits, tgt, reduction="none").cpu().numpy()  # (N,)
            ok = (logits.argmax(-1) == tgt).cpu().numpy()  # (N,)
            digits = s["digits"]
            exact = np.bincount(s["example"], weights=(~ok).astype(np.float64), minlength=s["n"]) == 0  # (B,)
            r = {"loss": round(float(ce.mean()), 4),
                 "name_loss": round(float(ce[digits].mean()), 4) if digits.any() else None,
                 "name_acc": round(float(ok[digits].mean()), 4) if digits.any() else None,
                 "exact": round(float(exact.mean()), 4)}
            if s["ops"]:
                by_op = {}
                for op, e in zip(s["ops"], exact):
                    by_op.setdefault(op, []).append(bool(e))
                r["exact_by_op"] = {str(op): round(sum(v) / len(v), 2) for op, v in sorted(by_op.items())}
            results[s["name"]] = r
        return results

    @torch.no_grad()
    def greedy_accuracy(self, model):
        if not self.greedy_rows:
            return None
        model.eval()
        try:
            outputs = greedy(model, self.greedy_prompts, self.pad_id, self.im_end, 180, self.device)
        finally:
            model.train()
        texts = [self.tok.decode(o, skip_special_tokens=True) for o in outputs]
        right = [common.is_correct(t, r["answer_list"]) for t, r in zip(texts, self.greedy_rows)]
        return {"accuracy": sum(right) / len(right), "right": sum(right), "n": len(right),
                "sample": texts[0][-240:], "sample_answer": sorted(self.greedy_rows[0]["answer_list"])}

    def run(self, model, step, elapsed, frac, with_greedy):
        t0 = time.time()
        entry = {"step": step, "t": round(elapsed, 1), "tf": self.teacher_forced(model)}
        if with_greedy:
            entry["greedy"] = self.greedy_accuracy(model)
        self.history.append(entry)
        parts = []
        for name, r in entry["tf"].items():
            text = f"{name}: loss {r['loss']:.3f}"
            if r["name_loss"] is not None:
                text += f", name digits loss {r['name_loss']:.3f} acc {r['name_acc']:.0%}"
            text += f", exact {r['exact']:.0%}"
            if "exact_by_op" in r:
                text += " " + "/".join(f"{v:.0%}" for v in r["exact_by_op"].values())
            parts.append(text)
        log(f"probe step {step} t={elapsed:.0f}s: " + "; ".join(parts) + f" ({time.time() - t0:.1f}s)")
        g = entry.get("greedy")
        if g:
            log(f"probe step {step}: greedy length 0 ops 1-3: {g['right']}/{g['n']} right; first one (answer "
                f"{g['sample_answer']}) ends: {g['sample']!r}")
        self.health(entry, step, elapsed, frac)
        return entry

    def health(self, entry, step, elapsed, frac):
        tf = entry["tf"]
        copy = tf.get("copy", {}).get("name_loss")
        l0 = tf.get("L0", {}).get("name_loss")
        if copy is not None and copy < 1.0 and "copy" not in self.flags:
            self.flags.add("copy")
            log(f"HEALTH: copying has emerged at step {step} (t={elapsed:.0f}s): copy-probe name-digit loss "
                f"{copy:.3f} < 1.0 (6.9 = no copying)")
        if l0 is not None and l0 < 1.0 and "lookup" not in self.flags:
            self.flags.add("lookup")
            log(f"HEALTH: names are looked up in the context at step {step} (t={elapsed:.0f}s): length-0 "
                f"name-digit loss {l0:.3f} < 1.0")
        if frac >= 0.35 and copy is not None and copy > 3.0 and "no-copy" not in self.flags:
            self.flags.add("no-copy")
            log(f"HEALTH WARNING: no copying after {frac:.0%} of the budget (copy-probe name-digit loss {copy:.2f}): "
                "this run will not learn the task; see tools/train/README.md, 'Diagnosis'")


def train(args, model, opt, workers, out_queue, phase_value, phases, saver, probes, device):
    """The training loop. With several ranks, rank 0 alone probes and saves (the others wait for it at the next
    collective) and its clock decides the schedule, broadcast every DECIDE_EVERY steps."""
    budget = (args.end_at - time.time()) if args.end_at else args.minutes * 60.0
    budget = dist_from_rank0([budget], device)[0]
    if budget < 60:
        raise RuntimeError(f"training budget of {budget:.0f}s is too short")
    log(f"training for {budget / 60:.2f} min: {args.micro_per_step} x {args.micro_tokens} tokens per step"
        + (f" on each of {WORLD} GPUs (gradients averaged)" if WORLD > 1 else "")
        + f", lr {args.lr} (warmup {args.warmup_steps} steps, cosine from {args.decay_start:.0%} of the budget to "
        f"{args.min_lr_frac:.0%}), prompt-repeat loss weight {args.ctx_weight}")
    csv = None
    if RANK == 0:
        csv = open(Path(args.work_dir) / "loss.csv", "w", encoding="utf-8")
        csv.write("step,elapsed_s,tokens,loss,lr,supervised_tokens,grad_norm,tokens_per_s,phase\n")
        probes.run(model, 0, 0.0, 0.0, with_greedy=False)  # the untrained baseline
    meter, step, data_wait, phase, frac = Meter(), 0, 0.0, 0, 0.0
    start = last_log = time.time()
    next_save = start + args.save_every_min * 60.0
    next_probe = start + args.probe_every_s
    next_greedy = start + args.greedy_every_s if args.greedy_every_s > 0 else float("inf")
    decide_every = 1 if WORLD == 1 else DECIDE_EVERY
    log(f"phase {phases[0]['name']} starts: mix {phases[0]['mix']}")
    while True:
        if step % decide_every == 0:  # rank 0's clock: the budget fraction, and whether to probe or save now
            now = time.time()
            frac, probe_now, save_now = dist_from_rank0(
                [(now - start) / budget, float(now >= next_probe), float(now >= next_save)], device)
            if frac >= 1.0:
                break
            if RANK == 0 and probe_now:
                with_greedy = now >= next_greedy
                probes.run(model, step, now - start, frac, with_greedy=with_greedy)
                next_probe = time.time() + args.probe_every_s
                if with_greedy:
                    next_greedy = time.time() + args.greedy_every_s
            if RANK == 0 and save_now:
                saver.save(model, step)
                next_save = time.time() + args.save_every_min * 60.0
        want = next(i for i, ph in enumerate(phases) if frac < ph["until"] or i == len(phases) - 1)
        if want != phase:
            phase = want
            phase_value.value = phase
            log(f"phase {phases[phase]['name']} starts at step {step} (t={time.time() - start:.0f}s): ops <= "
                f"{phases[phase]['max_op']}, mix " + " ".join(f"{s}:{w:.0%}" for s, w in phases[phase]["mix"].items()))
        lr = lr_at(step, frac, args)
        for group in opt.param_groups:
            group["lr"] = lr
        t = time.time()
        batches = take_micro_batches(out_queue, workers, args.micro_per_step)
        data_wait += time.time() - t
        train_step(model, opt, batches, device, meter)
        step += 1
        if step == 1 or step % args.log_every == 0:
            now = time.time()
            log_progress(step, now - start, now - last_log, lr, phases[phase]["name"], meter, csv, data_wait, device)
            meter.reset()
            last_log = now
    seconds = time.time() - start
    tokens, supervised, padded = dist_sum([meter.tokens_total, meter.supervised_total, meter.padded_total], device)
    if WORLD > 1:  # every rank took the same steps from the same weights: the weights must still be identical
        mine = torch.stack([p.detach().double().sum() for p in model.parameters()])
        mean = mine.clone()
        torch.distributed.all_reduce(mean)
        diff = float((mean / WORLD - mine).abs().max())
        (log if diff < 1e-6 else lambda m: log("WARNING: " + m, every_rank=True))(
            f"the {WORLD} ranks' weights agree: parameter sums differ from the mean by {diff:.1e} at most")
    if RANK != 0:
        return {"steps": step}
    csv.close()
    log(f"training done: {step} steps, {tokens / 1e6:.1f}M tokens ({supervised / 1e6:.1f}M supervised, "
        f"{1 - tokens / max(padded, 1):.0%} padding) in {seconds:.0f}s = {tokens / seconds / 1e3:.0f}K tokens/s"
        + (f" over {WORLD} GPUs" if WORLD > 1 else "") + f"; data wait {data_wait:.0f}s")
    probes.run(model, step, seconds, 1.0, with_greedy=True)
    return {"steps": step, "tokens": int(tokens), "supervised_tokens": int(supervised),
            "train_seconds": round(seconds, 1), "tokens_per_s": round(tokens / seconds), "gpus": WORLD}


# ------------------------------------------------------------------------------------------------
# Checkpoints (Hugging Face layout, bf16)
# ------------------------------------------------------------------------------------------------
def config_json(cfg):
    """config.json as transformers writes it, with dtype bfloat16, architectures and the token ids."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg.save_pretrained(tmp)
        data = json.loads((Path(tmp) / "config.json").read_text(encoding="utf-8"))
    data["architectures"] = ["Qwen3ForCausalLM"]
    data["dtype"] = "bfloat16"
    if "torch_dtype" in data:
        data["torch_dtype"] = "bfloat16"
    for key in ("bos_token_id", "eos_token_id", "pad_token_id", "tie_word_embeddings"):
        data[key] = getattr(cfg, key)
    return dict(sorted(data.items()))


def tokenizer_config_json(path):
    """The tokenizer's tokenizer_config.json text with model_max_length = common.MAX_POSITIONS, in
    train_tokenizer.py's layout: a --init model's file (8192 before run 9) gets the config's new length."""
    text = path.read_text(encoding="utf-8")
    data = json.loads(text)
    if data.get("model_max_length") == common.MAX_POSITIONS:
        return text
    log(f"tokenizer_config.json: model_max_length {data.get('model_max_length')} -> {common.MAX_POSITIONS} "
        f"(max_position_embeddings)")
    data["model_max_length"] = common.MAX_POSITIONS
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def generation_config_json(cfg):
    import transformers
    return {"bos_token_id": cfg.bos_token_id, "do_sample": False, "eos_token_id": cfg.eos_token_id,
            "pad_token_id": cfg.pad_token_id, "transformers_version": transformers.__version__}


def export_tensors(model):
    """bf16 CPU copies of the weights; the tied lm_head is left out, as transformers does."""
    out = {}
    for name, t in model.state_dict().items():
        if name == "lm_head.weight" and model.config.tie_word_embeddings:
            continue
        out[name] = t.detach().to(torch.bfloat16).cpu().contiguous()
        if not torch.isfinite(out[name]).all():
            raise RuntimeError(f"weight {name} is not finite: not saving")
    return out


def plan_shards(tensors):
    """Greedy, in order, each shard's tensor bytes under SHARD_LIMIT less room for its header."""
    shards, size = [[]], 0
    for name, t in tensors.items():
        n = t.numel() * t.element_size()
        if shards[-1] and size + n > SHARD_LIMIT - 65536:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += n
    return shards


def write_weights(tensors, directory):
    from safetensors.torch import save_file
    shards = plan_shards(tensors)
    if len(shards) == 1:
        save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
        return
    weight_map = {}
    for i, names in enumerate(shards):
        file = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file({n: tensors[n] for n in names}, str(directory / file), metadata={"format": "pt"})
        weight_map.update({n: file for n in names})
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")


def check_sizes(directory):
    files = {f.name: f.stat().st_size for f in directory.iterdir()}
    for name, size in files.items():
        if name.endswith(".safetensors") and size > SHARD_LIMIT:
            raise RuntimeError(f"{directory}/{name} is {size} bytes, over the {SHARD_LIMIT}-byte shard limit")
    if sum(files.values()) > MODEL_DIR_LIMIT:
        raise RuntimeError(f"{directory} holds {sum(files.values())} bytes, over {MODEL_DIR_LIMIT}")
    return files


class Saver:
    """Writes WORK/checkpoints/step-N atomically and repoints the WORK/model symlink at it."""

    def __init__(self, work_dir, tokenizer_dir, cfg):
        self.root = Path(work_dir) / "checkpoints"
        self.link = Path(work_dir) / "model"
        self.tokenizer_dir = Path(tokenizer_dir)
        self.config = config_json(cfg)
        self.generation = generation_config_json(cfg)
        self.tokenizer_config = tokenizer_config_json(self.tokenizer_dir / "tokenizer_config.json")
        self.root.mkdir(parents=True, exist_ok=True)
        self.last_tensors = None

    def save(self, model, step):
        t0 = time.time()
        final = self.root / f"step-{step:06d}"
        if final.is_dir() and self.last_tensors is not None:  # saved at this very step already: same weights
            return final
        tmp = self.root / f".tmp-step-{step:06d}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        self.last_tensors = export_tensors(model)
        write_weights(self.last_tensors, tmp)
        (tmp / "config.json").write_text(json.dumps(self.config, indent=2) + "\n", encoding="utf-8")
        (tmp / "generation_config.json").write_text(json.dumps(self.generation, indent=2) + "\n", encoding="utf-8")
        shutil.copyfile(self.tokenizer_dir / "tokenizer.json", tmp / "tokenizer.json")
        (tmp / "tokenizer_config.json").write_text(self.tokenizer_config, encoding="utf-8")
        files = check_sizes(tmp)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        link_tmp = self.link.with_name(".model-link")
        link_tmp.unlink(missing_ok=True)
        os.symlink(final, link_tmp)
        os.replace(link_tmp, self.link)  # atomic: a reader sees the old or the new checkpoint
        self.prune(final)
        log(f"checkpoint {final.name}: {len(files)} files, {sum(files.values()) / 1e6:.1f} MB, "
            f"largest {max(files.values()) / 1e6:.1f} MB, in {time.time() - t0:.1f}s")
        return final

    def prune(self, keep):
        steps = sorted(p for p in self.root.iterdir() if p.name.startswith("step-"))
        for p in steps[:-KEEP_CHECKPOINTS]:
            if p != keep:
                shutil.rmtree(p, ignore_errors=True)


# ------------------------------------------------------------------------------------------------
# Evaluation: reload the saved checkpoint, greedy-decode held-out problems, grade the ANSWER line
# ------------------------------------------------------------------------------------------------
def load_checkpoint(directory, saved, device):
    import transformers
    from transformers import Qwen3ForCausalLM
    key = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
    model = Qwen3ForCausalLM.from_pretrained(str(directory), attn_implementation="sdpa", local_files_only=True,
                                             **{key: torch.bfloat16})
    state = model.state_dict()
    for name, t in saved.items():
        if name not in state or not torch.equal(state[name].cpu(), t):
            raise RuntimeError(f"{directory}: weight {name} reloads differently")
    if not torch.equal(model.lm_head.weight.cpu(), saved["model.embed_tokens.weight"]):
        raise RuntimeError(f"{directory}: lm_head does not reload tied to the embedding")
    log(f"reloaded {directory} with transformers: all {len(saved)} tensors identical, lm_head tied")
    tokenizer_config = json.loads((Path(directory) / "tokenizer_config.json").read_text(encoding="utf-8"))
    max_len = tokenizer_config.get("model_max_length")
    if model.config.max_position_embeddings != common.MAX_POSITIONS or max_len != common.MAX_POSITIONS:
        log(f"WARNING: {directory}: max_position_embeddings {model.config.max_position_embeddings}, tokenizer "
            f"model_max_length {max_len}; expected {common.MAX_POSITIONS}")
    return model.to(device).eval()


def left_pad(prompts, pad_id):
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)  # (B, T)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p)
        mask[i, width - len(p):] = 1
    return ids, mask


@torch.no_grad()
def greedy(model, prompts, pad_id, eos_id, max_new_tokens, device):
    """Greedy continuations (token lists, cut at eos) of left-padded prompts."""
    ids, mask = left_pad(prompts, pad_id)
    out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=max_new_tokens,
                         do_sample=False, eos_token_id=eos_id, pad_token_id=pad_id)
    results = []
    for row in out[:, ids.shape[1]:].tolist():
        results.append(row[:row.index(eos_id)] if eos_id in row else row)
    return results


@torch.no_grad()
def check_left_padding(model, prompts, pad_id, device):
    """The shortest prompt's next-token logits alone and left-padded to the batch width (as greedy() feeds it,
    with generate's position ids): a mismatch means the evaluation, not the model, is wrong."""
    shortest = min(prompts, key=len)
    alone = model(input_ids=torch.tensor([shortest], device=device)).logits[0, -1].float()
    ids, mask = left_pad([shortest, max(prompts, key=len)], pad_id)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    padded = model(input_ids=ids.to(device), attention_mask=mask.to(device),
                   position_ids=positions.to(device)).logits[0, -1].float()
    diff = float((alone - padded).abs().max())
    same = int(alone.argmax()) == int(padded.argmax())
    (log if same and diff < 0.5 else lambda m: log("WARNING: " + m))(
        f"left-padding check: a {len(shortest)}-token prompt padded to {ids.shape[1]}: next-token logits differ "
        f"by {diff:.3f} at most, same argmax: {same}")
    return {"max_logit_diff": round(diff, 4), "same_argmax": same}


def evaluate_file(model, tok, path, args, device):
    rows = common.read_jsonl(path)
    pad_id, eos_id = tok.token_to_id(common.ENDOFTEXT), tok.token_to_id(common.IM_END)
    prompts = [tok.encode(common.chat_prefix(r["prompt"]), add_special_tokens=False).ids for r in rows]
    padding = check_left_padding(model, prompts, pad_id, device)
    t0 = time.time()
    outputs = greedy(model, prompts, pad_id, eos_id, args.max_new_tokens, device)
    by_op, first_wrong, first_right = {}, None, None
    for row, out in zip(rows, outputs):
        text = tok.decode(out, skip_special_tokens=True)
        ok = common.is_correct(text, row["answer_list"])
        by_op.setdefault(str(row["op"]), []).append(ok)
        if not ok and first_wrong is None:
            first_wrong = (row, text, len(out))
        if ok and first_right is None:
            first_right = (row, text, len(out))
    correct = sum(sum(v) for v in by_op.values())
    result = {"file": str(path), "length": rows[0]["length"], "n": len(rows), "accuracy": correct / len(rows),
              "accuracy_by_op": {k: sum(v) / len(v) for k, v in sorted(by_op.items(), key=lambda kv: int(kv[0]))},
              "prompt_tokens_max": max(len(p) for p in prompts), "seconds": round(time.time() - t0, 1),
              "left_padding_check": padding}
    log(f"eval {Path(path).name}: accuracy {correct}/{len(rows)} = {result['accuracy']:.1%}, by op "
        f"{result['accuracy_by_op']} ({result['seconds']}s)")
    for label, item in (("first wrong", first_wrong), ("first right", first_right)):
        if item:
            row, text, n = item
            log(f"  {label} (op {row['op']}, answer {sorted(row['answer_list'])}, {n} tokens):\n{text[-600:]}")
    return result


def evaluate(args, saver, final_dir, device):
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(str(Path(args.tokenizer_dir) / "tokenizer.json"))
    model = load_checkpoint(final_dir, saver.last_tensors, device)
    results = []
    for path in args.eval:
        try:
            results.append(evaluate_file(model, tok, path, args, device))
        except Exception as e:  # noqa: BLE001 - one failing set must not lose the others
            log(f"eval {path} FAILED: {e!r}\n{traceback.format_exc()}")
            results.append({"file": str(path), "error": repr(e)})
    return results


# ------------------------------------------------------------------------------------------------
def write_json(path, data):
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def run(args, work):
    from tokenizers import Tokenizer
    import transformers
    log(f"torch {torch.__version__}, transformers {transformers.__version__}, python {sys.version.split()[0]}")
    tok = Tokenizer.from_file(str(Path(args.tokenizer_dir) / "tokenizer.json"))
    special_ids = {t: tok.token_to_id(t) for t in common.SPECIAL_TOKENS}
    if list(special_ids.values()) != [0, 1, 2] or tok.get_vocab_size() > common.VOCAB_SIZE:
        raise RuntimeError(f"unexpected tokenizer: special ids {special_ids}, vocab {tok.get_vocab_size()}")
    vmark, digit3 = name_tables(tok)
    log(f"tokenizer: {int(digit3.sum())} of the 1000 3-digit groups are single tokens; name starts "
        f"{[tok.id_to_token(int(i)) for i in np.nonzero(vmark)[0]]}")
    if not vmark.any() or digit3.sum() < 900:
        log("WARNING: names are not V + two 3-digit tokens: the copy/lookup probes and the prompt-repeat loss "
            "will see few names")
    for path in args.eval + args.probe:
        if not Path(path).is_file():
            raise RuntimeError(f"evaluation/probe file {path} does not exist")
    workers, out_queue, phase_value, phases = start_workers(args)  # fork before CUDA is touched
    try:
        if not torch.cuda.is_available():
            raise RuntimeError("CUDA is not available")
        device = torch.device("cuda", LOCAL_RANK)
        torch.cuda.set_device(device)
        if WORLD > 1:
            import datetime
            torch.distributed.init_process_group("nccl", device_id=device, timeout=datetime.timedelta(minutes=10))
        log(f"GPU {torch.cuda.get_device_name(device)}" + (f", data parallel over {WORLD} GPUs" if WORLD > 1 else ""))
        cfg = build_config(special_ids)
        model = build_model(cfg, device, args.init)
        self_test_report = self_test(model, device)
        opt = build_optimizer(model, args)
        saver = Saver(work, args.tokenizer_dir, cfg) if RANK == 0 else None
        probes = Probes(args, tok, device) if RANK == 0 else None
        summary = train(args, model, opt, workers, out_queue, phase_value, phases, saver, probes, device)
    finally:
        stop_workers(workers)
    if WORLD > 1:
        torch.distributed.destroy_process_group()
    if RANK != 0:
        return summary
    final_dir = saver.save(model, summary["steps"])
    del opt
    torch.cuda.empty_cache()
    summary["checkpoint"] = final_dir.name
    summary["eval"] = evaluate(args, saver, final_dir, device)
    summary["self_test"] = self_test_report
    summary["phases"] = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in ph.items()} for ph in phases]
    summary["probes"] = probes.history
    write_json(work / "eval.json", summary)
    return summary


def main():
    global CONTINUE, CONTINUE_MIX, RANK, LOCAL_RANK, WORLD
    RANK, LOCAL_RANK = int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0))
    WORLD = int(os.environ.get("WORLD_SIZE", 1))
    args = parse_args()
    CONTINUE = bool(args.init)
    CONTINUE_MIX = args.continue_mix
    PHASES_CONTINUE[0]["mix"] = CONTINUE_MIXES[args.continue_mix]
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    if RANK == 0:  # rank 0 is the run: device_train.sh polls its pid and waits for its DONE
        (work / "DONE").unlink(missing_ok=True)
        (work / "train.pid").write_text(f"{os.getpid()}\n")
    t0 = time.time()
    done = {"status": "failed", "error": "unknown"}
    try:
        summary = run(args, work)
        done = {"status": "ok", **{k: v for k, v in summary.items() if k not in ("eval", "probes", "phases",
                                                                                  "self_test")}}
    except BaseException as e:  # noqa: BLE001 - DONE must say why, whatever happened
        log(f"FAILED: {e!r}\n{traceback.format_exc()}", every_rank=True)
        done = {"status": "failed", "error": (f"rank {RANK}: " if WORLD > 1 else "") + repr(e)}
        raise
    finally:
        done["wall_seconds"] = round(time.time() - t0, 1)
        if RANK == 0:
            write_json(work / "DONE", done)
            log(f"DONE: {json.dumps(done)}")


if __name__ == "__main__":
    main()
