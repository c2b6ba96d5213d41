#!/usr/bin/env python3
"""Trains the default model's tokenizer: a 2048-entry byte-level BPE over GSM-Infinite text.

Run from the repository root on the GPU machine (needs tokenizers and transformers; device_train.sh
calls it after generating the training data):

    python3 tools/train/train_tokenizer.py --data-dir /tmp/vortex-train/data \
        --out /tmp/vortex-train/tokenizer [--vortex build-gpu/vortex]

It reads a sample of the generated training files (L<length>_s<seed>.jsonl: prompts and solutions),
trains Hugging Face tokenizers' BpeTrainer and writes OUT/tokenizer.json and OUT/tokenizer_config.json.

The file has Llama-3's tokenizer.json structure, which Vortex's C++ tokenizer reads: no normalizer;
pre_tokenizer Sequence[Split(Llama-3 regex, digits in groups of 1-3, Isolated),
ByteLevel(add_prefix_space=false, use_regex=false)]; BPE over the 256-symbol ByteLevel alphabet (every
byte has a token, so nothing is unknown; no byte_fallback); ByteLevel decoder; no post-processor
tokens (no BOS). Special tokens <|endoftext|>, <|im_start|>, <|im_end|> are ids 0, 1, 2.

Checks (any failure exits 1): each special token is one id; encode -> decode gives the text back on
the sample and on rendered chats; transformers' AutoTokenizer reloads the directory and its
apply_chat_template equals common.chat_prefix. With --vortex, the C++ tokenizer and template
renderer are compared too (a mismatch only warns: training can go on, but the model would then be
fed other ids by the engine, so read the warning).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import common  # noqa: E402  (tools/train is sys.path[0] when this script runs)

# Llama-3's pre-tokenizer regex, verbatim from its tokenizer.json.
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                  r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}
CHARS_PER_LENGTH = 4_000_000  # training text taken from each length class
STATS_EXAMPLES = 200  # examples per length class for the token statistics


def log(msg):
    print(f"[train_tokenizer {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def fail(msg):
    print(f"[train_tokenizer] ERROR: {msg}", file=sys.stderr, flush=True)
    sys.exit(1)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", required=True, help="folder of L<length>_s<seed>.jsonl training files")
    p.add_argument("--out", required=True, help="folder to write tokenizer.json and tokenizer_config.json to")
    p.add_argument("--vortex", help="vortex binary: compare its tokenizer and template with this one's")
    return p.parse_args()


# ------------------------------------------------------------------------------------------------
# Corpus
# ------------------------------------------------------------------------------------------------
def sample_rows(data_dir):
    """{length: [row, ...]}: whole files in seed order, until CHARS_PER_LENGTH of text per length."""
    groups = common.data_files_by_length(data_dir)
    if not groups:
        fail(f"no L<length>_s<seed>.jsonl files in {data_dir}")
    samples = {}
    for length, paths in groups.items():
        rows, chars = [], 0
        for path in paths:
            for row in common.read_jsonl(path):
                rows.append(row)
                chars += len(row["prompt"]) + len(row["solution"])
            if chars >= CHARS_PER_LENGTH:
                break
        samples[length] = rows
        log(f"  length {length}: {len(rows)} examples, {chars / 1e6:.1f}M characters")
    return samples


def corpus(samples):
    for rows in samples.values():
        for row in rows:
            yield row["prompt"]
            yield row["solution"]


# ------------------------------------------------------------------------------------------------
# Training
# ------------------------------------------------------------------------------------------------
def train_bpe(samples):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=common.VOCAB_SIZE,
        min_frequency=2,
        show_progress=False,
        special_tokens=list(common.SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    n_texts = 2 * sum(len(rows) for rows in samples.values())
    tok.train_from_iterator(corpus(samples), trainer=trainer, length=n_texts)
    return canonical(tok)


def canonical(tok):
    """The trained tokenizer re-serialised with exactly Llama-3's pipeline blocks and BPE flags."""
    from tokenizers import Tokenizer
    data = json.loads(tok.to_str())
    data["normalizer"] = None
    data["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": LLAMA3_PATTERN}, "behavior": "Isolated", "invert": False},
        dict(BYTE_LEVEL),
    ]}
    data["post_processor"] = None
    data["decoder"] = dict(BYTE_LEVEL)
    data["model"].update(dropout=None, unk_token=None, continuing_subword_prefix=None, end_of_word_suffix=None,
                         fuse_unk=False, byte_fallback=False, ignore_merges=False)
    for entry in data["added_tokens"]:
        entry.update(special=True, normalized=False, lstrip=False, rstrip=False, single_word=False)
    return Tokenizer.from_str(json.dumps(data))


def tokenizer_config(tok):
    added = {str(t["id"]): {"content": t["content"], "lstrip": False, "normalized": False, "rstrip": False,
                            "single_word": False, "special": True}
             for t in json.loads(tok.to_str())["added_tokens"]}
    return {
        "added_tokens_decoder": added,
        "backend": "tokenizers",
        "bos_token": None,
        "chat_template": common.CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": common.IM_END,
        "model_max_length": common.MAX_POSITIONS,
        "pad_token": common.ENDOFTEXT,
        "split_special_tokens": False,
        "tokenizer_class": "PreTrainedTokenizerFast",
        "unk_token": None,
    }


def save(tok, out):
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"), pretty=True)
    text = json.dumps(tokenizer_config(tok), indent=2, ensure_ascii=False) + "\n"
    (out / "tokenizer_config.json").write_text(text, encoding="utf-8")
    for stale in ("chat_template.jinja", "special_tokens_map.json"):
        (out / stale).unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------------
# Checks
# ------------------------------------------------------------------------------------------------
def check_specials(tok):
    for want_id, content in enumerate(common.SPECIAL_TOKENS):
        got = tok.token_to_id(content)
        ids = tok.encode(content, add_special_tokens=False).ids
        if got != want_id or ids != [want_id]:
            fail(f"special token {content}: token_to_id={got}, encodes to {ids}; expected the single id {want_id}")
    size = tok.get_vocab_size(with_added_tokens=True)
    if size > common.VOCAB_SIZE:
        fail(f"vocabulary has {size} entries, more than {common.VOCAB_SIZE}")
    log(f"  vocabulary {size} entries (limit {common.VOCAB_SIZE}); special ids "
        f"{ {c: tok.token_to_id(c) for c in common.SPECIAL_TOKENS} }")


def check_round_trip(tok, samples):
    texts = []
    for rows in samples.values():
        for row in rows[:50]:
            texts += [row["prompt"], row["solution"]]
            texts.append(common.chat_prefix(row["prompt"]) + row["solution"] + common.IM_END)
    texts += ["12345678 = 1,234,567.5; caf\u00e9 \u00fcber \u4e2d\u6587 \U0001F600\n\n\tend", " leading space", ""]
    for text in texts:
        ids = tok.encode(text, add_special_tokens=False).ids
        back = tok.decode(ids, skip_special_tokens=False)
        if back != text:
            fail(f"round trip changed the text: {text[:80]!r} -> {back[:80]!r}")
    log(f"  encode -> decode round trip exact on {len(texts)} texts (chats with special tokens included)")


def encode_ids(hf_tok, text):
    ids = hf_tok.encode(text, add_special_tokens=False)
    if hasattr(ids, "keys"):
        ids = ids["input_ids"]
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
    return [int(i) for i in ids]


def check_transformers(out, tok, samples):
    """transformers reloads the folder, renders the chat template as chat_prefix and encodes the same ids."""
    from transformers import AutoTokenizer
    hf = AutoTokenizer.from_pretrained(str(out), local_files_only=True)
    if hf.eos_token != common.IM_END or hf.pad_token != common.ENDOFTEXT:
        fail(f"transformers reloads eos={hf.eos_token!r} pad={hf.pad_token!r}")
    row = next(iter(samples.values()))[0]
    for prompt in (row["prompt"], "hi\nthere"):
        rendered = hf.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                          add_generation_prompt=True, return_dict=False)
        if rendered != common.chat_prefix(prompt):
            fail(f"apply_chat_template gives {rendered[-60:]!r}, expected {common.chat_prefix(prompt)[-60:]!r}")
        text = rendered + row["solution"] + common.IM_END
        if encode_ids(hf, text) != tok.encode(text, add_special_tokens=False).ids:
            fail("transformers and tokenizers encode a chat differently")
    log(f"  transformers reloads it ({type(hf).__name__}); apply_chat_template == chat_prefix; same ids")


def print_stats(tok, samples):
    """Tokens per example by length class: what train.py's batches will hold."""
    for length, rows in samples.items():
        rows = rows[:STATS_EXAMPLES]
        prompt = [len(tok.encode(common.chat_prefix(r["prompt"]), add_special_tokens=False).ids) for r in rows]
        solution = [len(tok.encode(r["solution"], add_special_tokens=False).ids) + 1 for r in rows]
        total = [a + b for a, b in zip(prompt, solution)]
        chars = sum(len(r["prompt"]) + len(r["solution"]) for r in rows)
        log(f"  length {length:5d}: prompt {sum(prompt) / len(rows):6.0f} tokens, solution "
            f"{sum(solution) / len(rows):4.0f} (max {max(solution)}), total max {max(total)}; "
            f"{chars / sum(total):.2f} characters/token")
        if max(total) >= common.MAX_POSITIONS:
            fail(f"length {length}: an example of {max(total)} tokens exceeds {common.MAX_POSITIONS} positions")
    name = "V029724 = V936710 - 1 = 9 - 1 =8;\n"
    log(f"  {name!r} -> {[tok.id_to_token(i) for i in tok.encode(name, add_special_tokens=False).ids]}")


def run_vortex(args):
    return subprocess.run(args, capture_output=True, timeout=60, check=False)


def check_vortex(vortex, out, tok, samples):
    """The C++ tokenizer and template renderer against this tokenizer; warns, never fails."""
    row = next(iter(samples.values()))[-1]
    longest = samples[max(samples)][0]
    problems = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, prompt, solution in (("short", row["prompt"], row["solution"]),
                                       ("long", longest["prompt"], longest["solution"])):
            messages = Path(tmp) / f"{name}.json"
            messages.write_text(json.dumps([{"role": "user", "content": prompt}]), encoding="utf-8")
            r = run_vortex([vortex, "template", "--model", str(out), "--messages-file", str(messages)])
            if r.returncode != 0 or r.stdout.decode("utf-8") != common.chat_prefix(prompt):
                problems.append(f"template ({name}): rc={r.returncode} {r.stderr.decode()[-300:]!r} "
                                f"tail {r.stdout.decode('utf-8', 'replace')[-40:]!r}")
            text = common.chat_prefix(prompt) + solution + common.IM_END
            text_file = Path(tmp) / f"{name}.txt"
            text_file.write_text(text, encoding="utf-8")
            r = run_vortex([vortex, "tokenize", "--model", str(out), "--text-file", str(text_file), "--json"])
            want = tok.encode(text, add_special_tokens=False).ids
            got = json.loads(r.stdout)["ids"] if r.returncode == 0 else None
            if got != want:
                problems.append(f"tokenize ({name}): rc={r.returncode} {r.stderr.decode()[-300:]!r} "
                                f"ids differ (vortex {len(got or [])} ids, tokenizers {len(want)})")
    for p in problems:
        print(f"[train_tokenizer] WARNING: vortex disagrees: {p}", flush=True)
    if not problems:
        log(f"  {vortex}: same template text and same ids on a short and a {len(want)}-token chat")


def main():
    args = parse_args()
    out = Path(args.out)
    t0 = time.time()
    log(f"sampling training text from {args.data_dir}")
    samples = sample_rows(args.data_dir)
    log("training byte-level BPE")
    tok = train_bpe(samples)
    log(f"  trained in {time.time() - t0:.1f}s")
    check_specials(tok)
    check_round_trip(tok, samples)
    save(tok, out)
    check_transformers(out, tok, samples)
    print_stats(tok, samples)
    if args.vortex:
        try:
            check_vortex(args.vortex, out, tok, samples)
        except Exception as e:  # noqa: BLE001 - the C++ comparison is informational
            print(f"[train_tokenizer] WARNING: vortex comparison did not run: {e!r}", flush=True)
    log(f"wrote {out}/tokenizer.json and tokenizer_config.json in {time.time() - t0:.1f}s")


if __name__ == "__main__":
    main()
