#!/usr/bin/env python3
"""Trains Vortex's embedded default model: a small Qwen3 that solves GSM-Infinite symbolic problems.

Run from the repository root on the GPU machine (device_train.sh starts it with setsid; see README.md):

    python3 tools/train/train.py --data-dir /tmp/vortex-train/data --tokenizer-dir /tmp/vortex-train/tokenizer \
        --work-dir /tmp/vortex-train --eval /tmp/vortex-train/eval/L0.jsonl --eval /tmp/vortex-train/eval/L4000.jsonl \
        [--minutes 10 | --end-at UNIX_TIME]

What it does:
  1. Data workers (processes) read the L<length>_s<seed>.jsonl files, tokenize each example as
     chat_prefix(prompt) + solution + <|im_end|>, and cut each file into length-sorted, right-padded
     micro-batches of at most --micro-tokens tokens. Only the solution and the final <|im_end|> carry loss.
  2. A Qwen3ForCausalLM (random init, fp32 master weights, bf16 autocast, SDPA causal attention) is
     trained with AdamW; the learning rate follows warmup + cosine over the *wall-clock* budget, so the
     run ends on time whatever the throughput. One step = --micro-per-step micro-batches.
  3. Every --save-every-min minutes and at the end it writes a checkpoint in Hugging Face layout (bf16
     safetensors shards <= 14 MB, config.json, generation_config.json, tokenizer files) to
     WORK/checkpoints/step-N and points the symlink WORK/model at it (atomic rename), so an interrupted
     run still leaves a usable model.
  4. It reloads the final checkpoint with transformers, checks the weights are the ones saved, and
     greedy-decodes the --eval problems (held-out seeds), grading the ANSWER line as a set.
  5. It writes WORK/eval.json and, last, WORK/DONE ({"status": "ok"} or the error).

Logs go to stdout (device_train.sh sends them to WORK/train.log); WORK/loss.csv gets one row per log.
Limits: one GPU; the model shape is fixed below (MODEL) to keep the checkpoint within 40 MB.
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
MODEL = dict(hidden_size=384, intermediate_size=1152, num_hidden_layers=8, num_attention_heads=6,
             num_key_value_heads=2, head_dim=64, rope_theta=100000.0, rms_norm_eps=1e-6)
INIT_STD = 0.02
CONTEXT_LOSS = os.environ.get("VORTEX_TRAIN_CONTEXT_LOSS", "1") == "1"  # see make_micro_batch
SHARD_LIMIT = 14_000_000  # bytes per safetensors file (the "shards <= 14 MB")
MODEL_DIR_LIMIT = 40_000_000  # bytes for the whole model directory
KEEP_CHECKPOINTS = 2


def log(msg):
    print(f"[train {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--tokenizer-dir", required=True, help="tokenizer.json + tokenizer_config.json")
    p.add_argument("--work-dir", required=True, help="checkpoints/, model (symlink), loss.csv, eval.json, DONE")
    p.add_argument("--eval", action="append", default=[], help="held-out JSONL problems to grade at the end")
    p.add_argument("--minutes", type=float, default=10.0, help="wall-clock budget of the training loop")
    p.add_argument("--end-at", type=float, help="unix time the training loop must end by (overrides --minutes)")
    p.add_argument("--lr", type=float, default=1.5e-3)
    p.add_argument("--min-lr-frac", type=float, default=0.1, help="final lr as a fraction of --lr")
    p.add_argument("--warmup-frac", type=float, default=0.03, help="warmup, as a fraction of the budget")
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--micro-tokens", type=int, default=65536, help="padded tokens per micro-batch (B*T) at most")
    p.add_argument("--micro-per-step", type=int, default=4, help="micro-batches accumulated per optimizer step")
    p.add_argument("--workers", type=int, default=12, help="data worker processes")
    p.add_argument("--save-every-min", type=float, default=2.0)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--max-new-tokens", type=int, default=600, help="greedy decoding limit in the evaluation")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


# ------------------------------------------------------------------------------------------------
# Data: worker processes turn JSONL files into micro-batches
# ------------------------------------------------------------------------------------------------
def tokenize_file(tok, path, im_end):
    """[(ids (L,) int32, n_prompt)] for every example of one file; ids = prefix + solution + <|im_end|>."""
    rows = common.read_jsonl(path)
    prefixes = tok.encode_batch([common.chat_prefix(r["prompt"]) for r in rows], add_special_tokens=False)
    solutions = tok.encode_batch([r["solution"] for r in rows], add_special_tokens=False)
    examples = []
    for p, s in zip(prefixes, solutions):
        ids = np.array(p.ids + s.ids + [im_end], dtype=np.int32)
        if len(ids) <= common.MAX_POSITIONS:
            examples.append((ids, len(p.ids)))
    return examples


def make_micro_batch(group, pad_id, length):
    """Right-padded inputs and the flat positions whose next token is supervised.

    Right padding needs no attention mask: under the causal mask a real token never sees the padding
    after it, and padded positions carry no loss.
    """
    T = max(len(ids) for ids, _ in group) - 1
    x = np.full((len(group), T), pad_id, dtype=np.int32)  # (B, T)
    positions, targets, tokens = [], [], 0
    for b, (ids, n_prompt) in enumerate(group):
        n = len(ids)
        x[b, :n - 1] = ids[:-1]
        # input position j predicts ids[j + 1]; the solution starts at ids[n_prompt]. With
        # CONTEXT_LOSS the context's tokens are predicted too: variable names recur inside it,
        # which is the signal that teaches the model to look names up (copying), not only the
        # solution's format.
        first = 0 if CONTEXT_LOSS else n_prompt - 1
        positions.append(b * T + np.arange(first, n - 1, dtype=np.int64))
        targets.append(ids[first + 1:].astype(np.int64))
        tokens += n - 1
    return {"x": x,  # (B, T) int32
            "idx": np.concatenate(positions),  # (N,) int64, flat index into B*T
            "tgt": np.concatenate(targets),  # (N,) int64
            "tokens": tokens, "padded": x.size, "length": length}


def micro_batches(examples, micro_tokens, pad_id, length, rng):
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
    batches = [make_micro_batch(g, pad_id, length) for g in groups]
    rng.shuffle(batches)
    return batches


def worker_main(worker_id, files, tokenizer_path, micro_tokens, seed, out_queue):
    """Loops over its files forever (a second pass repeats data, and says so) putting micro-batches."""
    try:
        from tokenizers import Tokenizer
        tok = Tokenizer.from_file(tokenizer_path)
        pad_id, im_end = tok.token_to_id(common.ENDOFTEXT), tok.token_to_id(common.IM_END)
        rng = random.Random(seed * 1009 + worker_id)
        for epoch in range(1_000_000):
            if epoch == 1:
                print(f"[data worker {worker_id}] WARNING: all {len(files)} files used; repeating data", flush=True)
            order = list(files)
            rng.shuffle(order)
            for path, length in order:
                examples = tokenize_file(tok, path, im_end)
                rng.shuffle(examples)
                for batch in micro_batches(examples, micro_tokens, pad_id, length, rng):
                    out_queue.put(batch)
    except Exception:  # noqa: BLE001 - reported to the main process, which stops
        out_queue.put({"error": f"data worker {worker_id}: {traceback.format_exc()}"})


def start_workers(args):
    groups = common.data_files_by_length(args.data_dir)
    files = [(str(p), length) for length, paths in groups.items() for p in paths]
    if not files:
        raise SystemExit(f"error: no L<length>_s<seed>.jsonl files in {args.data_dir}")
    for length, paths in groups.items():
        size = sum(p.stat().st_size for p in paths)
        log(f"data: length {length:5d}: {len(paths):4d} files, {size / 1e9:.2f} GB")
    random.Random(args.seed).shuffle(files)
    n = min(args.workers, len(files))
    ctx = mp.get_context("fork")  # before any CUDA work; workers use numpy and tokenizers only
    out_queue = ctx.Queue(maxsize=8 * n)
    tokenizer_path = str(Path(args.tokenizer_dir) / "tokenizer.json")
    workers = []
    for w in range(n):
        proc = ctx.Process(target=worker_main, daemon=True,
                           args=(w, files[w::n], tokenizer_path, args.micro_tokens, args.seed, out_queue))
        proc.start()
        workers.append(proc)
    log(f"data: {len(files)} files over {n} worker processes")
    return workers, out_queue


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


def build_model(cfg, device):
    from transformers import Qwen3ForCausalLM
    torch.manual_seed(0)
    model = Qwen3ForCausalLM(cfg).float()
    if model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr():
        log("lm_head was not tied to the embedding by transformers; tying it")
        model.lm_head.weight = model.model.embed_tokens.weight
    init_weights(model)
    model.to(device).train()
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model: Qwen3 {MODEL}, vocab {cfg.vocab_size}, tied embeddings, {n_params / 1e6:.2f}M parameters "
        f"({n_params * 2 / 1e6:.1f} MB in bf16), attention {cfg._attn_implementation}")
    return model


def build_optimizer(model, args):
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.95), eps=1e-8, fused=True)


def lr_at(frac, args):
    """Linear warmup over the first warmup_frac of the budget, then cosine down to min_lr_frac * lr."""
    if frac < args.warmup_frac:
        return args.lr * max(frac / args.warmup_frac, 0.01)
    progress = min((frac - args.warmup_frac) / (1.0 - args.warmup_frac), 1.0)
    return args.lr * (args.min_lr_frac + (1.0 - args.min_lr_frac) * 0.5 * (1.0 + math.cos(math.pi * progress)))


# ------------------------------------------------------------------------------------------------
# Training
# ------------------------------------------------------------------------------------------------
def micro_loss(model, batch, device):
    """Summed cross-entropy over the supervised positions of one micro-batch, and its count N."""
    x = torch.from_numpy(batch["x"]).to(device, non_blocking=True).long()  # (B, T)
    idx = torch.from_numpy(batch["idx"]).to(device, non_blocking=True)  # (N,)
    tgt = torch.from_numpy(batch["tgt"]).to(device, non_blocking=True)  # (N,)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        hidden = model.model(input_ids=x, use_cache=False)[0]  # (B, T, C)
        picked = hidden.reshape(-1, hidden.shape[-1]).index_select(0, idx)  # (N, C)
        logits = model.lm_head(picked)  # (N, V): only supervised positions reach the vocabulary
    return F.cross_entropy(logits.float(), tgt, reduction="sum")


def train_step(model, opt, batches, device, meter):
    n_supervised = sum(len(b["tgt"]) for b in batches)
    for batch in batches:
        loss = micro_loss(model, batch, device)
        (loss / n_supervised).backward()
        meter.add(batch, loss.detach())
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    meter.grad_norms.append(grad_norm.detach())


class Meter:
    """Loss per length class and token counts between two log lines (one GPU sync per log line)."""

    def __init__(self):
        self.tokens_total, self.supervised_total, self.padded_total = 0, 0, 0
        self.reset()

    def reset(self):
        self.loss_sums, self.counts, self.grad_norms = {}, {}, []
        self.tokens, self.padded = 0, 0

    def add(self, batch, loss_sum):
        length = batch["length"]
        self.loss_sums[length] = self.loss_sums.get(length, 0.0) + loss_sum
        self.counts[length] = self.counts.get(length, 0) + len(batch["tgt"])
        self.tokens += batch["tokens"]
        self.padded += batch["padded"]
        self.tokens_total += batch["tokens"]
        self.supervised_total += len(batch["tgt"])
        self.padded_total += batch["padded"]

    def summary(self):
        by_length = {k: float(v) / self.counts[k] for k, v in sorted(self.loss_sums.items())}
        loss = float(sum(float(v) for v in self.loss_sums.values())) / max(sum(self.counts.values()), 1)
        grad = float(torch.stack(self.grad_norms).mean()) if self.grad_norms else float("nan")
        return loss, by_length, grad


def log_progress(step, elapsed, interval, lr, meter, csv, data_wait):
    loss, by_length, grad = meter.summary()
    if not math.isfinite(loss):
        raise RuntimeError(f"loss is {loss} at step {step}: training diverged")
    rate = meter.tokens / max(interval, 1e-9)
    pad = 1.0 - meter.tokens / max(meter.padded, 1)
    mem = torch.cuda.max_memory_allocated() / 2**30
    per_length = " ".join(f"{k}:{v:.3f}" for k, v in by_length.items())
    log(f"step {step:5d} t={elapsed:6.1f}s lr={lr:.2e} loss={loss:.4f} gnorm={grad:.2f} "
        f"tok/s={rate / 1e3:.0f}K tokens={meter.tokens_total / 1e6:.1f}M sup={meter.supervised_total / 1e6:.1f}M "
        f"pad={pad:.0%} wait={data_wait:.0f}s mem={mem:.1f}G | loss by length {per_length}")
    csv.write(f"{step},{elapsed:.1f},{meter.tokens_total},{loss:.5f},{lr:.6e},"
              f"{meter.supervised_total},{grad:.4f},{rate:.0f}\n")
    csv.flush()
    meter.reset()


def train(args, model, opt, workers, out_queue, saver, device):
    budget = (args.end_at - time.time()) if args.end_at else args.minutes * 60.0
    if budget < 60:
        raise RuntimeError(f"training budget of {budget:.0f}s is too short")
    log(f"training for {budget / 60:.2f} min: {args.micro_per_step} x {args.micro_tokens} tokens per step, "
        f"lr {args.lr} (warmup {args.warmup_frac:.0%}, cosine to {args.min_lr_frac:.0%})")
    csv = open(Path(args.work_dir) / "loss.csv", "w", encoding="utf-8")
    csv.write("step,elapsed_s,tokens,loss,lr,supervised_tokens,grad_norm,tokens_per_s\n")
    meter, step, data_wait = Meter(), 0, 0.0
    start = last_log = time.time()
    next_save = start + args.save_every_min * 60.0
    while True:
        now = time.time()
        frac = (now - start) / budget
        if frac >= 1.0:
            break
        lr = lr_at(frac, args)
        for group in opt.param_groups:
            group["lr"] = lr
        t = time.time()
        batches = take_micro_batches(out_queue, workers, args.micro_per_step)
        data_wait += time.time() - t
        train_step(model, opt, batches, device, meter)
        step += 1
        if step == 1 or step % args.log_every == 0:
            now = time.time()
            log_progress(step, now - start, now - last_log, lr, meter, csv, data_wait)
            last_log = now
        if time.time() >= next_save:
            saver.save(model, step)
            next_save = time.time() + args.save_every_min * 60.0
    csv.close()
    seconds = time.time() - start
    log(f"training done: {step} steps, {meter.tokens_total / 1e6:.1f}M tokens "
        f"({meter.supervised_total / 1e6:.1f}M supervised, {1 - meter.tokens_total / max(meter.padded_total, 1):.0%} "
        f"padding) in {seconds:.0f}s = {meter.tokens_total / seconds / 1e3:.0f}K tokens/s; data wait {data_wait:.0f}s")
    return {"steps": step, "tokens": meter.tokens_total, "supervised_tokens": meter.supervised_total,
            "train_seconds": round(seconds, 1), "tokens_per_s": round(meter.tokens_total / seconds)}


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
        for name in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copyfile(self.tokenizer_dir / name, tmp / name)
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
    return model.to(device).eval()


@torch.no_grad()
def greedy(model, prompts, pad_id, eos_id, max_new_tokens, device):
    """Greedy continuations (token lists, cut at eos) of left-padded prompts."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)  # (B, T)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p)
        mask[i, width - len(p):] = 1
    out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=max_new_tokens,
                         do_sample=False, eos_token_id=eos_id, pad_token_id=pad_id)
    results = []
    for row in out[:, width:].tolist():
        results.append(row[:row.index(eos_id)] if eos_id in row else row)
    return results


def evaluate_file(model, tok, path, args, device):
    rows = common.read_jsonl(path)
    pad_id, eos_id = tok.token_to_id(common.ENDOFTEXT), tok.token_to_id(common.IM_END)
    prompts = [tok.encode(common.chat_prefix(r["prompt"]), add_special_tokens=False).ids for r in rows]
    t0 = time.time()
    outputs = greedy(model, prompts, pad_id, eos_id, args.max_new_tokens, device)
    by_op, first_wrong = {}, None
    for row, out in zip(rows, outputs):
        text = tok.decode(out, skip_special_tokens=True)
        ok = common.is_correct(text, row["answer_list"])
        by_op.setdefault(str(row["op"]), []).append(ok)
        if not ok and first_wrong is None:
            first_wrong = (row, text, len(out))
    correct = sum(sum(v) for v in by_op.values())
    result = {"file": str(path), "length": rows[0]["length"], "n": len(rows), "accuracy": correct / len(rows),
              "accuracy_by_op": {k: sum(v) / len(v) for k, v in sorted(by_op.items(), key=lambda kv: int(kv[0]))},
              "prompt_tokens_max": max(len(p) for p in prompts), "seconds": round(time.time() - t0, 1)}
    log(f"eval {Path(path).name}: accuracy {correct}/{len(rows)} = {result['accuracy']:.1%}, by op "
        f"{result['accuracy_by_op']} ({result['seconds']}s)")
    if first_wrong:
        row, text, n = first_wrong
        log(f"  first wrong (op {row['op']}, answer {sorted(row['answer_list'])}, {n} tokens):\n{text[-600:]}")
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
    for path in args.eval:
        if not Path(path).is_file():
            raise RuntimeError(f"evaluation file {path} does not exist")
    workers, out_queue = start_workers(args)  # fork before CUDA is touched
    if not torch.cuda.is_available():
        raise RuntimeError("CUDA is not available")
    device = torch.device("cuda")
    log(f"GPU {torch.cuda.get_device_name(0)}")
    cfg = build_config(special_ids)
    model = build_model(cfg, device)
    opt = build_optimizer(model, args)
    saver = Saver(work, args.tokenizer_dir, cfg)
    try:
        summary = train(args, model, opt, workers, out_queue, saver, device)
    finally:
        stop_workers(workers)
    final_dir = saver.save(model, summary["steps"])
    del opt
    torch.cuda.empty_cache()
    summary["checkpoint"] = final_dir.name
    summary["eval"] = evaluate(args, saver, final_dir, device)
    write_json(work / "eval.json", summary)
    return summary


def main():
    args = parse_args()
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    (work / "DONE").unlink(missing_ok=True)
    (work / "train.pid").write_text(f"{os.getpid()}\n")
    t0 = time.time()
    done = {"status": "failed", "error": "unknown"}
    try:
        summary = run(args, work)
        done = {"status": "ok", **{k: v for k, v in summary.items() if k != "eval"}}
    except BaseException as e:  # noqa: BLE001 - DONE must say why, whatever happened
        log(f"FAILED: {e!r}\n{traceback.format_exc()}")
        done = {"status": "failed", "error": repr(e)}
        raise
    finally:
        done["wall_seconds"] = round(time.time() - t0, 1)
        write_json(work / "DONE", done)
        log(f"DONE: {json.dumps(done)}")


if __name__ == "__main__":
    main()
