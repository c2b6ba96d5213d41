#!/usr/bin/env python3
"""Make the golden files that Vortex's CPU backend, tokenizer and chat templates are checked against.

Run from the repository root (on a machine with torch, transformers, tokenizers, jinja2, safetensors):

    python3 tools/golden/make_goldens.py --out tests/data
    python3 tools/golden/make_goldens.py --out tests/data --only models      # or tokenizers / templates

What it writes (formats: tests/data/README.md):
  OUT/models/<name>/                 tiny random-initialised HF checkpoints (config.json, generation_config.json,
                                     safetensors; qwen3-f32 also tokenizer.json + tokenizer_config.json)
  OUT/models/<name>/golden.json      per-token log-probs, top-5 and a 32-token greedy continuation (transformers,
                                     CPU, float32, eager attention, no KV cache: every step is a full forward)
  OUT/tokenizer/<tok>_golden.json    encode/decode of tools/golden/tokenizer_corpus.json with qwen3, llama3_1, tiny
  OUT/templates/chat_golden.json     apply_chat_template of tools/golden/template_cases.json

Everything is deterministic: each model has its own seed, prompts come from seeded generators, and the
prompt seed is the first one (0, 1, 2, ...) whose greedy continuation never has a top-1/top-2 logit gap
below MIN_GREEDY_MARGIN (preferring, among the first DIVERSITY_SEEDS, one whose continuation is not a
short loop), so an implementation that is right to float32 rounding reproduces every token.

Limits: CPU only, float32 compute (bf16/f16 checkpoints are upcast exactly after loading); it needs no
network (HF_HUB_OFFLINE is set), only the tokenizer directories passed on the command line.
"""

import argparse
import copy
import inspect
import json
import math
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

# Set before transformers is imported: no hub look-ups, and the GPU (if any) stays untouched.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parents[2]

PROMPT_LEN = 80
GREEDY_STEPS = 32
MIN_GREEDY_MARGIN = 1e-2
MAX_PROMPT_SEEDS = 300
# Prefer prompts whose greedy continuation is not a short loop (tied models like to repeat a token):
# among the first DIVERSITY_SEEDS seeds, take the first with >= MIN_DISTINCT_GREEDY distinct tokens.
MIN_DISTINCT_GREEDY = 12
DIVERSITY_SEEDS = 100
TOP_K = 5
# Mean attention entropy of layer 0, relative to log(#visible keys), is tuned into this band: low enough that
# attention is far from uniform (a wrong mask/rope/scale shows), high enough that it is not one-hot.
ENTROPY_BAND = (0.25, 0.50)
ENTROPY_MIN_ROW = 8  # rows with fewer visible keys say little about peakedness
MIN_LOGITS_STD = 1.0
MAX_MODEL_DIR_BYTES = 1 << 20  # the size the brief aims for; larger dirs only warn

# Qwen3's pre-tokenizer regex (tokenizer.json of Qwen/Qwen3-*). Read from the qwen3 tokenizer dir when present.
QWEN3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")

# (content, special). Ids 0..6 in this order; Qwen3 marks <think>/<tool_call> pairs non-special.
TINY_ADDED_TOKENS = [
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<think>", False),
    ("</think>", False),
    ("<tool_call>", False),
    ("</tool_call>", False),
]
TINY_VOCAB_SIZE = 512
TINY_EOS = "<|im_end|>"
TINY_PAD = "<|endoftext|>"

TINY_TEXT_PROMPTS = [
    "The attention mechanism lets every token look back at the tokens before it.",
    "Sparse attention keeps only the pages with the highest scores, and the rest are skipped.",
    "def softmax(x):\n    m = max(x)\n    return [math.exp(v - m) for v in x]\n",
    "In 2024 the cache held 4096 tokens; by step 128 it had grown to 8192.",
]

# A few KB of English, code and numbers for the tiny BPE. Changing it changes every qwen3-f32 golden.
TINY_CORPUS = [
    "Attention lets each position of a sequence gather information from the positions before it. "
    "A query vector is compared with every key vector, the scores are scaled by the inverse square root "
    "of the head dimension, and a softmax turns them into weights that sum to one. The output is the "
    "weighted sum of the value vectors. Multi-head attention runs several of these in parallel, and "
    "grouped-query attention lets several query heads share one key and value head to save memory.",
    "During decoding the keys and values of earlier tokens are kept in a cache, so each new token only "
    "computes its own query, key and value. The cache grows by one entry per token and per layer. For long "
    "generations, reading the cache dominates the cost of a step, which is why sparse attention reads only "
    "the pages that matter: a page summary such as the per-channel minimum and maximum of its keys bounds "
    "the score any key in the page can reach, and the top pages are kept together with a few sink pages "
    "and a local window.",
    "Rotary position embeddings rotate pairs of channels of the query and the key by an angle that grows "
    "with the position. The rotation frequencies follow a geometric series with base theta; long-context "
    "variants such as linear scaling, YaRN and the Llama 3 schedule stretch the low frequencies so that "
    "positions beyond the training length still look familiar to the model.",
    "The model is a stack of decoder layers. Each layer applies RMS normalisation, attention, a residual "
    "connection, another normalisation and a gated MLP: down(silu(gate(x)) * up(x)). The final hidden state "
    "is normalised once more and multiplied by the output embedding to give one logit per vocabulary entry.",
    "def rms_norm(x, weight, eps=1e-6):\n"
    "    variance = sum(v * v for v in x) / len(x)\n"
    "    scale = 1.0 / math.sqrt(variance + eps)\n"
    "    return [w * v * scale for w, v in zip(weight, x)]\n\n"
    "def softmax(scores):\n"
    "    m = max(scores)\n"
    "    exps = [math.exp(s - m) for s in scores]\n"
    "    total = sum(exps)\n"
    "    return [e / total for e in exps]\n\n"
    "class KVCache:\n"
    "    def __init__(self, page_size=16):\n"
    "        self.page_size = page_size\n"
    "        self.pages = []\n\n"
    "    def append(self, key, value):\n"
    "        if not self.pages or len(self.pages[-1]) == self.page_size:\n"
    "            self.pages.append([])\n"
    "        self.pages[-1].append((key, value))\n",
    "for (int i = 0; i < n; ++i) {\n    out[i] = scale * in[i] + bias[i];\n}\n"
    "if (x.size() != y.size()) { throw std::runtime_error(\"size mismatch\"); }\n",
    '{"hidden_size": 4096, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128, '
    '"rope_theta": 1000000.0, "vocab_size": 151936, "tie_word_embeddings": false}\n',
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 16 32 64 128 256 512 1024 2048 4096 8192 16384 32768 65536 131072. "
    "Pi is about 3.14159, e is about 2.71828, and one third is 0.3333. The year 2025 had 365 days; "
    "a budget of 2048 tokens is 12.5% of 16384.",
    "Questions and answers: What is the capital of France? Paris. How many legs does a spider have? Eight. "
    "Is the sky green? No, it is usually blue. Why? Because air scatters short wavelengths more strongly.",
    "The quick brown fox jumps over the lazy dog. She sells sea shells by the sea shore. "
    "It's a test; we'll see what they're doing, and I'd say you've done well.",
    "Caf\u00e9, na\u00efve, r\u00e9sum\u00e9 and \u00fcber are words with accents. "
    "Tabs\tand  double  spaces\nand new lines\n\nappear too.",
]


class GoldenError(RuntimeError):
    pass


def log(msg):
    print(f"[make_goldens {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def warn(msg):
    print(f"[make_goldens] WARNING: {msg}", flush=True)


# --------------------------------------------------------------------------------------------------
# Model specifications. Shapes are deliberately non-default: head_dim != hidden/heads where the
# architecture allows it, GQA ratios 2 and 4 (and MQA), tied and untied embeddings, every rope type.
# vocab=None means "the tiny tokenizer's vocab size".
# --------------------------------------------------------------------------------------------------
MODEL_SPECS = [
    dict(name="qwen3-f32", arch="qwen3", seed=1001, save_dtype="float32", tokenizer="tiny",
         vocab=None, hidden=96, intermediate=160, layers=2, heads=4, kv_heads=2, head_dim=32, tie=True,
         max_pos=4096, rms_eps=1e-6, rope={"rope_type": "default", "rope_theta": 1000000.0},
         bos="tiny:<|endoftext|>", eos="tiny:<|im_end|>", pad="tiny:<|endoftext|>", shards=1),
    dict(name="qwen3-bf16", arch="qwen3", seed=1002, save_dtype="bfloat16", tokenizer=None,
         vocab=None, hidden=96, intermediate=160, layers=2, heads=4, kv_heads=2, head_dim=32, tie=False,
         max_pos=4096, rms_eps=1e-6, rope={"rope_type": "default", "rope_theta": 1000000.0},
         bos=0, eos=1, pad=None, shards=1),
    dict(name="qwen3-f16-yarn", arch="qwen3", seed=1003, save_dtype="float16", tokenizer=None,
         vocab=509, hidden=80, intermediate=144, layers=2, heads=4, kv_heads=1, head_dim=32, tie=True,
         max_pos=256, rms_eps=1e-5,
         rope={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "original_max_position_embeddings": 64},
         bos=0, eos=1, pad=None, shards=1),
    dict(name="qwen2-f32-sharded", arch="qwen2", seed=1004, save_dtype="float32", tokenizer=None,
         vocab=448, hidden=128, intermediate=192, layers=3, heads=8, kv_heads=2, head_dim=None, tie=False,
         max_pos=1024, rms_eps=1e-6, rope={"rope_type": "linear", "rope_theta": 1000000.0, "factor": 2.0},
         bos=0, eos=1, pad=None, shards=3, legacy_config=True),
    dict(name="llama3-f32", arch="llama", seed=1005, save_dtype="float32", tokenizer=None,
         vocab=500, hidden=128, intermediate=256, layers=2, heads=8, kv_heads=2, head_dim=24, tie=False,
         max_pos=512, rms_eps=1e-5,
         rope={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
         bos=0, eos=1, pad=None, shards=1),
    dict(name="llama3-bf16", arch="llama", seed=1006, save_dtype="bfloat16", tokenizer=None,
         vocab=512, hidden=96, intermediate=192, layers=2, heads=4, kv_heads=2, head_dim=32, tie=True,
         max_pos=512, rms_eps=2e-5,
         rope={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
         bos=0, eos=[1, 2], pad=None, shards=1),
]


# --------------------------------------------------------------------------------------------------
# Small utilities
# --------------------------------------------------------------------------------------------------
def command_line():
    return " ".join(shlex.quote(a) for a in ["python3"] + sys.argv)


def resolve_path(p):
    """A path as given (relative to the cwd), else relative to the repository root."""
    path = Path(p)
    if path.is_absolute() or path.exists():
        return path
    alt = REPO_ROOT / path
    return alt if alt.exists() else path


def _dumps(value):
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False)
    except ValueError as e:
        raise GoldenError(f"value is not valid JSON (NaN/inf?): {e}")


def write_json(path, obj, per_line_keys=("cases", "top5")):
    """One top-level key per line; lists named in per_line_keys get one element per line."""
    lines = ["{"]
    items = list(obj.items())
    for i, (key, value) in enumerate(items):
        comma = "," if i + 1 < len(items) else ""
        if key in per_line_keys and isinstance(value, list) and value:
            lines.append(f"  {_dumps(key)}: [")
            for j, element in enumerate(value):
                lines.append("    " + _dumps(element) + ("," if j + 1 < len(value) else ""))
            lines.append("  ]" + comma)
        else:
            lines.append(f"  {_dumps(key)}: {_dumps(value)}{comma}")
    lines.append("}")
    text = "\n".join(lines) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.write_text(text, encoding="utf-8")
    except UnicodeEncodeError:  # lone surrogates in some input text: fall back to \u escapes
        text = json.dumps(obj, ensure_ascii=True, allow_nan=False, indent=1) + "\n"
        path.write_text(text, encoding="utf-8")
    if json.loads(path.read_text(encoding="utf-8")) != obj:
        raise GoldenError(f"{path}: JSON round trip changed the data")
    path.chmod(0o644)


def make_readable(directory):
    """save_pretrained may create files 0600; golden data is plain 0644."""
    for f in Path(directory).rglob("*"):
        if f.is_file():
            f.chmod(0o644)


def dir_bytes(path):
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def load_json_list(path, what):
    path = resolve_path(path)
    if not path.exists():
        raise GoldenError(f"{what} not found at {path}: it is written by hand (a JSON list); "
                          f"create it or pass its path explicitly")
    data = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(data, dict) and isinstance(data.get("cases"), list):
        data = data["cases"]
    if not isinstance(data, list):
        raise GoldenError(f"{path}: expected a JSON list, got {type(data).__name__}")
    return path, data


# --------------------------------------------------------------------------------------------------
# Library access (imported lazily so that --help works anywhere)
# --------------------------------------------------------------------------------------------------
class Libs:
    def __init__(self):
        import torch
        import transformers
        import tokenizers
        self.torch = torch
        self.transformers = transformers
        self.tokenizers = tokenizers
        torch.set_default_dtype(torch.float32)
        torch.set_grad_enabled(False)
        self.major = int(transformers.__version__.split(".")[0])

    def versions(self):
        out = {"python": platform.python_version(), "torch": self.torch.__version__,
               "transformers": self.transformers.__version__, "tokenizers": self.tokenizers.__version__}
        for mod in ("safetensors", "jinja2", "huggingface_hub"):
            try:
                out[mod] = __import__(mod).__version__
            except Exception:  # noqa: BLE001 - version is informational only
                pass
        return out

    def dtype(self, name):
        return {"float32": self.torch.float32, "bfloat16": self.torch.bfloat16,
                "float16": self.torch.float16}[name]


# --------------------------------------------------------------------------------------------------
# Tiny tokenizer (byte-level BPE with Qwen3's pipeline)
# --------------------------------------------------------------------------------------------------
def read_chat_template(tok_dir):
    cfg_path = tok_dir / "tokenizer_config.json"
    template = None
    if cfg_path.exists():
        template = json.loads(cfg_path.read_text(encoding="utf-8")).get("chat_template")
    if isinstance(template, list):  # [{"name": ..., "template": ...}]
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default") or next(iter(named.values()), None)
    jinja = tok_dir / "chat_template.jinja"
    if not template and jinja.exists():
        template = jinja.read_text(encoding="utf-8")
    if not isinstance(template, str) or not template:
        raise GoldenError(f"no chat_template in {cfg_path} (or chat_template.jinja)")
    return template


def qwen3_pipeline(qwen3_dir):
    """Qwen3's normalizer/pre_tokenizer/post_processor/decoder blocks and BPE flags, or None."""
    tj = qwen3_dir / "tokenizer.json"
    if not tj.exists():
        return None
    data = json.loads(tj.read_text(encoding="utf-8"))
    blocks = {k: data.get(k) for k in ("normalizer", "pre_tokenizer", "post_processor", "decoder")}
    model_flags = {k: v for k, v in (data.get("model") or {}).items() if k not in ("vocab", "merges")}
    return blocks, model_flags


def qwen3_pattern(qwen3_dir):
    tj = qwen3_dir / "tokenizer.json"
    if not tj.exists():
        return QWEN3_PATTERN
    pre = json.loads(tj.read_text(encoding="utf-8")).get("pre_tokenizer") or {}
    for p in pre.get("pretokenizers", []):
        if p.get("type") == "Split":
            pattern = (p.get("pattern") or {}).get("Regex")
            if pattern and pattern != QWEN3_PATTERN:
                warn("qwen3 tokenizer.json regex differs from the built-in copy; using the file's")
            return pattern or QWEN3_PATTERN
    return QWEN3_PATTERN


def train_tiny_raw(libs, pattern, pipeline):
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    try:
        tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    except TypeError:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_VOCAB_SIZE,
        min_frequency=0,
        show_progress=False,
        special_tokens=[content for content, _ in TINY_ADDED_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(TINY_CORPUS, trainer=trainer)
    # The trainer adds every special token as special=True; flip the ones Qwen3 keeps non-special.
    data = json.loads(tok.to_str())
    if pipeline is not None:
        # Same pipeline as above, but serialised exactly as Qwen3's tokenizer.json spells it (flags such as
        # trim_offsets differ between the Python constructors' defaults and Qwen3's file).
        blocks, model_flags = pipeline
        data.update(copy.deepcopy(blocks))
        for key in ("continuing_subword_prefix", "end_of_word_suffix", "fuse_unk", "byte_fallback",
                    "ignore_merges", "dropout", "unk_token"):
            if key in model_flags:
                data["model"][key] = model_flags[key]
    special = dict(TINY_ADDED_TOKENS)
    for entry in data.get("added_tokens", []):
        if entry["content"] in special:
            entry.update(special=special[entry["content"]], normalized=False, lstrip=False, rstrip=False,
                         single_word=False)
    return Tokenizer.from_str(json.dumps(data))


def build_tiny_tokenizer(libs, qwen3_dir, dest):
    """Trains the tiny tokenizer and writes tokenizer.json + tokenizer_config.json into dest."""
    log("training the tiny byte-level BPE tokenizer")
    pattern = qwen3_pattern(qwen3_dir)
    pipeline = qwen3_pipeline(qwen3_dir)
    raw = train_tiny_raw(libs, pattern, pipeline)
    again = train_tiny_raw(libs, pattern, pipeline)
    if raw.to_str() != again.to_str():
        warn("BpeTrainer is not deterministic here: two trainings differ (goldens will not be reproducible)")
    vocab = raw.get_vocab_size(with_added_tokens=True)
    ids = {content: raw.token_to_id(content) for content, _ in TINY_ADDED_TOKENS}
    log(f"  tiny vocab size {vocab}; added token ids {ids}")
    if vocab != TINY_VOCAB_SIZE:
        warn(f"tiny vocab is {vocab}, not {TINY_VOCAB_SIZE} (corpus too small for all merges?)")
    if any(v is None for v in ids.values()):
        raise GoldenError(f"tiny tokenizer lacks an added token: {ids}")

    chat_template = read_chat_template(qwen3_dir)
    dest.mkdir(parents=True, exist_ok=True)
    try:
        from transformers import PreTrainedTokenizerFast as FastCls
    except ImportError:
        from transformers import TokenizersBackend as FastCls
    fast = FastCls(tokenizer_object=libs.tokenizers.Tokenizer.from_str(raw.to_str()), eos_token=TINY_EOS, pad_token=TINY_PAD,
                   clean_up_tokenization_spaces=False, model_max_length=4096)
    fast.chat_template = chat_template
    with tempfile.TemporaryDirectory() as tmp:
        try:
            fast.save_pretrained(tmp, save_jinja_files=False)
        except TypeError:
            fast.save_pretrained(tmp)
        cfg_path = Path(tmp) / "tokenizer_config.json"
        cfg = json.loads(cfg_path.read_text(encoding="utf-8")) if cfg_path.exists() else {}
    # tokenizer.json: exactly what was trained (transformers may re-serialise it with its own tweaks).
    raw.save(str(dest / "tokenizer.json"), pretty=True)
    added = {str(t["id"]): {"content": t["content"], "lstrip": False, "normalized": False, "rstrip": False,
                            "single_word": False, "special": t["special"]}
             for t in json.loads(raw.to_str())["added_tokens"]}
    cfg.pop("chat_template", None)
    cfg.update({
        "added_tokens_decoder": added,
        "bos_token": None,
        "chat_template": chat_template,
        "clean_up_tokenization_spaces": False,
        "eos_token": TINY_EOS,
        "model_max_length": 4096,
        "pad_token": TINY_PAD,
        "split_special_tokens": False,
        "tokenizer_class": "PreTrainedTokenizerFast",
        "unk_token": None,
    })
    cfg.pop("auto_map", None)
    (dest / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n",
                                               encoding="utf-8")
    for stale in ("chat_template.jinja", "chat_template.json"):
        (dest / stale).unlink(missing_ok=True)
    check_tiny_tokenizer(libs, dest, raw, chat_template)
    return raw


def check_tiny_tokenizer(libs, tok_dir, raw, chat_template):
    tok = libs.transformers.AutoTokenizer.from_pretrained(str(tok_dir))
    if tok.eos_token != TINY_EOS:
        raise GoldenError(f"tiny tokenizer reloads with eos_token={tok.eos_token!r}")
    if tok.chat_template != chat_template:
        raise GoldenError("tiny tokenizer reloads without the Qwen3 chat template")
    for text in TINY_CORPUS + TINY_TEXT_PROMPTS + ["<|im_start|>user\nhi<think>x</think><|im_end|>"]:
        a = encode_ids(tok, text)
        b = raw.encode(text, add_special_tokens=False).ids
        if a != b:
            warn(f"tiny tokenizer: transformers and tokenizers disagree on {text[:40]!r}: {a} vs {b}")
    rendered = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                       add_generation_prompt=True, return_dict=False)
    log(f"  tiny tokenizer reloads through AutoTokenizer ({type(tok).__name__}); template renders "
        f"{rendered!r}")


def encode_ids(tok, text):
    ids = tok.encode(text, add_special_tokens=False)
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
    if isinstance(ids, dict) or hasattr(ids, "keys"):
        ids = ids["input_ids"]
    return [int(i) for i in ids]


# --------------------------------------------------------------------------------------------------
# Model construction, initialisation and checks
# --------------------------------------------------------------------------------------------------
def arch_classes(libs, arch):
    t = libs.transformers
    return {"qwen3": (t.Qwen3Config, t.Qwen3ForCausalLM),
            "qwen2": (t.Qwen2Config, t.Qwen2ForCausalLM),
            "llama": (t.LlamaConfig, t.LlamaForCausalLM)}[arch]


def uses_rope_parameters(config_cls):
    """transformers 5 keeps rope_theta/rope_scaling inside one `rope_parameters` dict."""
    fields = getattr(config_cls, "__dataclass_fields__", None) or {}
    if "rope_parameters" in fields:
        return True
    try:
        return hasattr(config_cls(), "rope_parameters")
    except Exception:  # noqa: BLE001
        return False


def effective_rope(cfg):
    rp = getattr(cfg, "rope_parameters", None)
    if isinstance(rp, dict) and rp:
        d = dict(rp)
    else:
        d = dict(getattr(cfg, "rope_scaling", None) or {})
        d["rope_theta"] = getattr(cfg, "rope_theta", None)
    d.setdefault("rope_type", d.get("type", "default"))
    return d


def check_rope(cfg, spec, where):
    got = effective_rope(cfg)
    for key, want in spec["rope"].items():
        value = got.get(key)
        ok = value == want if isinstance(want, str) else (value is not None and float(value) == float(want))
        if not ok:
            raise GoldenError(f"{spec['name']} ({where}): rope {key}={value!r}, expected {want!r}; full: {got}")
    return got


def build_config(libs, spec, vocab, bos, eos, pad):
    config_cls, _ = arch_classes(libs, spec["arch"])
    kw = dict(vocab_size=int(vocab), hidden_size=spec["hidden"], intermediate_size=spec["intermediate"],
              num_hidden_layers=spec["layers"], num_attention_heads=spec["heads"],
              num_key_value_heads=spec["kv_heads"], max_position_embeddings=spec["max_pos"],
              rms_norm_eps=float(spec["rms_eps"]), tie_word_embeddings=bool(spec["tie"]),
              hidden_act="silu", attention_dropout=0.0, use_cache=True, bos_token_id=bos, eos_token_id=eos,
              pad_token_id=pad, initializer_range=0.02)
    if spec["head_dim"] is not None:
        kw["head_dim"] = spec["head_dim"]
    if spec["arch"] in ("qwen3", "llama"):
        kw["attention_bias"] = False
    if spec["arch"] == "llama":
        kw["mlp_bias"] = False
    if uses_rope_parameters(config_cls):
        kw["rope_parameters"] = dict(spec["rope"])
    else:  # transformers 4.x
        kw["rope_theta"] = spec["rope"]["rope_theta"]
        scaling = {k: v for k, v in spec["rope"].items() if k != "rope_theta"}
        kw["rope_scaling"] = None if scaling["rope_type"] == "default" else scaling
    try:
        cfg = config_cls(attn_implementation="eager", **kw)
    except Exception as e:  # noqa: BLE001 - older/newer configs may refuse the kwarg; set it afterwards
        warn(f"{config_cls.__name__}(attn_implementation=...) failed ({e}); setting it as an attribute")
        cfg = config_cls(**kw)
    try:
        cfg._attn_implementation = "eager"
    except Exception as e:  # noqa: BLE001
        warn(f"could not set config._attn_implementation: {e}")
    check_rope(cfg, spec, "constructed config")
    hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    want_hd = spec["head_dim"] or spec["hidden"] // spec["heads"]
    if hd != want_hd:
        raise GoldenError(f"{spec['name']}: config head_dim {hd}, expected {want_hd}")
    return cfg


def fill_(libs, p, gen, kind, scale):
    torch = libs.torch
    if kind == "normal":
        values = torch.randn(p.shape, generator=gen, dtype=torch.float32) * scale
    else:  # "one_plus_uniform": scale * (1 + 0.5 * U(-1, 1))
        values = scale * (1.0 + 0.5 * (2.0 * torch.rand(p.shape, generator=gen, dtype=torch.float32) - 1.0))
    p.data.copy_(values)


def reinit_parameters(libs, model, spec, qk_gain):
    """Seeded init that makes attention peaked and logits spread (HF's default init gives near-uniform)."""
    gen = libs.torch.Generator().manual_seed(spec["seed"])
    hidden = spec["hidden"]
    qk_norm = spec["arch"] == "qwen3"
    for name, p in model.named_parameters():
        if name.endswith("embed_tokens.weight"):
            fill_(libs, p, gen, "normal", 2.0 / math.sqrt(hidden) if spec["tie"] else 1.0)
        elif name.endswith("lm_head.weight"):
            fill_(libs, p, gen, "normal", 2.0 / math.sqrt(hidden))
        elif name.endswith(("q_norm.weight", "k_norm.weight")):
            fill_(libs, p, gen, "one_plus_uniform", qk_gain)
        elif name.endswith("norm.weight"):
            fill_(libs, p, gen, "one_plus_uniform", 1.0)
        elif name.endswith(".bias"):
            fill_(libs, p, gen, "normal", 0.2)
        elif name.endswith(("q_proj.weight", "k_proj.weight")) and p.dim() == 2:
            fill_(libs, p, gen, "normal", (1.0 if qk_norm else qk_gain) / math.sqrt(p.shape[1]))
        elif name.endswith(".weight") and p.dim() == 2:
            fill_(libs, p, gen, "normal", 1.0 / math.sqrt(p.shape[1]))
        else:
            raise GoldenError(f"{spec['name']}: no init rule for parameter {name} {tuple(p.shape)}")


def check_tying(model, spec, where):
    emb = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    tied = emb.data_ptr() == head.data_ptr()
    if tied != bool(spec["tie"]):
        raise GoldenError(f"{spec['name']} ({where}): lm_head tied={tied}, expected {spec['tie']}")
    if spec["tie"] and not libs_equal(emb, head):
        raise GoldenError(f"{spec['name']} ({where}): tied lm_head differs from the embedding")


def libs_equal(a, b):
    return a.shape == b.shape and bool((a.float() == b.float()).all())


def attention_scale_params(model, arch):
    """Parameters whose scaling by s scales every attention score by s^2 (q side and k side)."""
    out = []
    for name, p in model.named_parameters():
        if arch == "qwen3":
            if name.endswith(("self_attn.q_norm.weight", "self_attn.k_norm.weight")):
                out.append(p)
        elif ".self_attn.q_proj." in name or ".self_attn.k_proj." in name:
            out.append(p)
    if not out:
        raise GoldenError(f"no q/k parameters found for arch {arch}")
    return out


def forward(libs, model, ids, output_attentions=False):
    torch = libs.torch
    with torch.no_grad():
        x = torch.tensor([list(ids)], dtype=torch.long)
        if output_attentions:
            return model(input_ids=x, use_cache=False, output_attentions=True)
        return model(input_ids=x, use_cache=False)


def attention_stats(libs, model, ids):
    """(layer-0 mean entropy / log(n), mean over layers, logits std); entropy is None if unavailable."""
    torch = libs.torch
    out = forward(libs, model, ids, output_attentions=True)
    logits_std = float(out.logits.float().std())
    attentions = getattr(out, "attentions", None)
    if not attentions or attentions[0] is None:
        return None, None, logits_std
    ratios = []
    for attn in attentions:
        a = attn[0].double()  # (heads, T, T)
        ent = -(a * torch.log(a.clamp_min(1e-300))).sum(-1)  # (heads, T)
        n = torch.arange(1, a.shape[-1] + 1, dtype=torch.float64)
        ratios.append(float((ent[:, ENTROPY_MIN_ROW:] / torch.log(n[ENTROPY_MIN_ROW:])).mean()))
    return ratios[0], sum(ratios) / len(ratios), logits_std


def tune_model(libs, model, spec, probe):
    """Scales q/k (attention sharpness) and the final norm (logit spread) into the target bands."""
    params = attention_scale_params(model, spec["arch"])
    ratio, _, std = attention_stats(libs, model, probe)
    if ratio is None:
        warn(f"{spec['name']}: output_attentions gave nothing; attention sharpness not tuned")
    for _ in range(24):
        if ratio is None or ENTROPY_BAND[0] <= ratio <= ENTROPY_BAND[1]:
            break
        s = 1.15 if ratio > ENTROPY_BAND[1] else 1.0 / 1.15
        for p in params:
            p.data.mul_(s)
        ratio, _, std = attention_stats(libs, model, probe)
    final_norm = model.model.norm.weight  # (hidden,) the RMSNorm before lm_head
    for _ in range(12):
        if std >= 1.5 * MIN_LOGITS_STD:
            break
        final_norm.data.mul_(1.3)
        ratio, _, std = attention_stats(libs, model, probe)
    return ratio, std


def save_model(libs, model, spec, out_dir):
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    dtype = libs.dtype(spec["save_dtype"])
    if dtype != libs.torch.float32:
        model.to(dtype)
    kwargs = {}
    params = inspect.signature(model.save_pretrained).parameters
    if "safe_serialization" in params:
        kwargs["safe_serialization"] = True
    total = sum(p.numel() * p.element_size() for p in model.state_dict().values())
    if spec["shards"] > 1:
        biggest = max(p.numel() * p.element_size() for p in model.state_dict().values())
        shard = max(biggest, total // (spec["shards"] + 1))
        for _ in range(6):
            model.save_pretrained(str(out_dir), max_shard_size=int(shard), **kwargs)
            n = len(list(out_dir.glob("*.safetensors")))
            if n >= spec["shards"] and (out_dir / "model.safetensors.index.json").exists():
                break
            warn(f"{spec['name']}: max_shard_size={shard} gave {n} shard(s); retrying smaller")
            shutil.rmtree(out_dir)
            out_dir.mkdir(parents=True)
            shard = max(shard // 2, 1)
        else:
            raise GoldenError(f"{spec['name']}: could not save {spec['shards']}+ shards")
    else:
        model.save_pretrained(str(out_dir), **kwargs)
    files = sorted(f.name for f in out_dir.glob("*.safetensors"))
    if not files:
        raise GoldenError(f"{spec['name']}: save_pretrained wrote no .safetensors file: {list(out_dir.iterdir())}")
    check_safetensors_dtypes(out_dir, files, spec)
    return files


def check_safetensors_dtypes(out_dir, files, spec):
    from safetensors import safe_open
    want = {"float32": "F32", "bfloat16": "BF16", "float16": "F16"}[spec["save_dtype"]]
    names = []
    for f in files:
        with open(out_dir / f, "rb") as fh:  # read the header directly: dtype strings as stored
            n = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(n))
        for k, v in header.items():
            if k == "__metadata__":
                continue
            names.append(k)
            if v["dtype"] != want:
                raise GoldenError(f"{spec['name']}: {f}:{k} stored as {v['dtype']}, expected {want}")
        with safe_open(str(out_dir / f), framework="pt") as sf:  # and it opens with safetensors itself
            list(sf.keys())
    has_head = "lm_head.weight" in names
    if has_head == bool(spec["tie"]):
        warn(f"{spec['name']}: lm_head.weight {'present' if has_head else 'absent'} with tie={spec['tie']}")
    return names


def write_generation_config(libs, out_dir, bos, eos, pad):
    gen = {"bos_token_id": bos, "do_sample": False, "eos_token_id": eos}
    if pad is not None:
        gen["pad_token_id"] = pad
    gen["transformers_version"] = libs.transformers.__version__
    (out_dir / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n", encoding="utf-8")


def load_model(libs, out_dir):
    torch = libs.torch
    auto = libs.transformers.AutoModelForCausalLM
    key = "dtype" if libs.major >= 5 else "torch_dtype"
    kwargs = {key: torch.float32, "attn_implementation": "eager", "local_files_only": True}
    model = auto.from_pretrained(str(out_dir), **kwargs)
    model = model.float().eval()
    return model


def compare_loaded(libs, ref_state, loaded, spec, where):
    got = loaded.state_dict()
    for key, want in ref_state.items():
        if key not in got:
            raise GoldenError(f"{spec['name']} ({where}): parameter {key} missing after load")
        if not libs_equal(got[key], want):
            diff = float((got[key].float() - want.float()).abs().max())
            raise GoldenError(f"{spec['name']} ({where}): {key} differs after load (max |diff| {diff})")


def logits_equal(libs, a, b, ids):
    la = forward(libs, a, ids).logits
    lb = forward(libs, b, ids).logits
    return float((la - lb).abs().max())


def rewrite_config_legacy(out_dir, spec, rope_key):
    """Rewrites config.json into the pre-transformers-5 form: top-level rope_theta + rope_scaling."""
    path = out_dir / "config.json"
    cfg = json.loads(path.read_text(encoding="utf-8"))
    cfg.pop("rope_parameters", None)
    cfg.pop("rope_scaling", None)
    cfg.pop("rope_theta", None)
    scaling = {k: v for k, v in spec["rope"].items() if k not in ("rope_theta", "rope_type")}
    scaling[rope_key] = spec["rope"]["rope_type"]
    cfg["rope_scaling"] = scaling
    cfg["rope_theta"] = spec["rope"]["rope_theta"]
    if "dtype" in cfg and "torch_dtype" not in cfg:
        cfg["torch_dtype"] = cfg.pop("dtype")
    path.write_text(json.dumps(dict(sorted(cfg.items())), indent=2) + "\n", encoding="utf-8")
    return cfg


# --------------------------------------------------------------------------------------------------
# Goldens for one model
# --------------------------------------------------------------------------------------------------
def greedy(libs, model, prompt, steps, abort_below=None):
    torch = libs.torch
    seq = list(prompt)
    tokens, margins = [], []
    for _ in range(steps):
        logits = forward(libs, model, seq).logits[0, -1].float()
        top2 = torch.topk(logits, 2).values
        margin = float(top2[0] - top2[1])
        margins.append(margin)
        if abort_below is not None and margin < abort_below:
            return tokens, margins, False
        nxt = int(torch.argmax(logits))
        tokens.append(nxt)
        seq.append(nxt)
    return tokens, margins, True


def allowed_ids(libs, vocab, excluded):
    return libs.torch.tensor([i for i in range(vocab) if i not in excluded], dtype=libs.torch.long)


def choose_prompt(libs, model, spec, vocab, excluded, max_seeds):
    allowed = allowed_ids(libs, vocab, excluded)
    best, first_ok = None, None
    for seed in range(max_seeds):
        if first_ok is not None and seed >= DIVERSITY_SEEDS:
            warn(f"{spec['name']}: no seed below {DIVERSITY_SEEDS} gives {MIN_DISTINCT_GREEDY}+ distinct greedy "
                 f"tokens; using seed {first_ok[0]} ({len(set(first_ok[2]))} distinct)")
            return first_ok
        gen = libs.torch.Generator().manual_seed(seed)
        prompt = allowed[libs.torch.randint(len(allowed), (PROMPT_LEN,), generator=gen)].tolist()
        tokens, margins, ok = greedy(libs, model, prompt, GREEDY_STEPS, abort_below=MIN_GREEDY_MARGIN)
        if ok:
            found = (seed, prompt, tokens, min(margins))
            if len(set(tokens)) >= MIN_DISTINCT_GREEDY:
                return found
            first_ok = first_ok or found
        best = max(best or 0, len(tokens))
    if first_ok is not None:
        return first_ok
    raise GoldenError(f"{spec['name']}: no prompt seed in 0..{max_seeds - 1} keeps every greedy margin >= "
                      f"{MIN_GREEDY_MARGIN} (longest run {best} steps); raise --max-prompt-seeds")


def prompt_logprobs(libs, model, prompt):
    torch = libs.torch
    logits = forward(libs, model, prompt).logits[0].float()  # (T, V)
    lp = torch.log_softmax(logits, dim=-1)
    logprobs = [float(lp[i - 1, prompt[i]]) for i in range(1, len(prompt))]
    values, indices = torch.topk(lp, TOP_K, dim=-1)
    top5 = [[[int(indices[t, k]), float(values[t, k])] for k in range(TOP_K)] for t in range(len(prompt))]
    return logprobs, top5, float(logits.std())


def make_model(libs, args, spec, out_root, tiny, versions):
    """Builds, tunes, saves, reloads and writes golden.json for one model; returns a summary row."""
    torch = libs.torch
    name = spec["name"]
    t0 = time.time()
    log(f"== {name}: {spec['arch']} {spec['save_dtype']} hidden={spec['hidden']} layers={spec['layers']} "
        f"heads={spec['heads']}/{spec['kv_heads']} head_dim={spec['head_dim']} tie={spec['tie']} "
        f"rope={spec['rope']['rope_type']}")

    def resolve_id(v):
        if isinstance(v, str) and v.startswith("tiny:"):
            return tiny["ids"][v[5:]]
        return v

    vocab = spec["vocab"] if spec["vocab"] is not None else tiny["vocab"]
    bos, eos, pad = resolve_id(spec["bos"]), resolve_id(spec["eos"]), resolve_id(spec["pad"])
    excluded = {bos} | set(eos if isinstance(eos, list) else [eos])
    if spec["tokenizer"] == "tiny" or spec["vocab"] is None:  # shares the tiny tokenizer's vocab
        excluded |= set(tiny["ids"].values())
    excluded.discard(None)

    cfg = build_config(libs, spec, vocab, bos, eos, pad)
    _, model_cls = arch_classes(libs, spec["arch"])
    torch.manual_seed(spec["seed"])
    model = model_cls(cfg).float().eval()
    check_tying(model, spec, "constructed")
    reinit_parameters(libs, model, spec, qk_gain=1.3)
    check_tying(model, spec, "after init")
    gen = torch.Generator().manual_seed(spec["seed"] + 7)
    probe_ids = allowed_ids(libs, vocab, excluded)
    probe = probe_ids[torch.randint(len(probe_ids), (PROMPT_LEN,), generator=gen)].tolist()
    ratio, std = tune_model(libs, model, spec, probe)
    log(f"  tuned f32 model: layer-0 attention entropy/log(n) = {fmt(ratio)}, logits std = {std:.3f}")

    out_dir = out_root / name
    files = save_model(libs, model, spec, out_dir)  # casts model to the save dtype in place
    # Reference: a fresh float32 model holding exactly the (rounded) saved weights. Fresh, because
    # model.to(bf16) also rounded the non-persistent rotary inv_freq buffer, which a reload recomputes.
    ref_state = {k: v.detach().float().clone() for k, v in model.state_dict().items()}
    del model
    ref_model = model_cls(cfg).float().eval()
    ref_model.load_state_dict(ref_state, strict=True)
    check_tying(ref_model, spec, "reference")
    write_generation_config(libs, out_dir, bos, eos, pad)
    if spec["tokenizer"] == "tiny":
        for f in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy2(tiny["dir"] / f, out_dir / f)
    log(f"  saved {files} ({dir_bytes(out_dir)} bytes)")

    loaded = load_model(libs, out_dir)
    compare_loaded(libs, ref_state, loaded, spec, "reload")
    check_tying(loaded, spec, "reload")
    rope = check_rope(loaded.config, spec, "reloaded config")
    d = logits_equal(libs, ref_model, loaded, probe)
    if d > 1e-4:
        raise GoldenError(f"{name}: reloaded model's logits differ from the in-memory model's by {d}")
    if d != 0.0:
        warn(f"{name}: reloaded model's logits differ from the in-memory model's by {d} (not bitwise)")
    config_form = "rope_parameters" if "rope_parameters" in json.loads(
        (out_dir / "config.json").read_text(encoding="utf-8")) else "rope_theta+rope_scaling"
    if spec.get("legacy_config"):
        loaded, config_form = make_legacy_config(libs, spec, out_dir, loaded, ref_state, probe)
    del ref_model

    ratio0, ratio_mean, std = attention_stats(libs, loaded, probe)
    log(f"  final weights: layer-0 attention entropy/log(n) = {fmt(ratio0)} (all layers {fmt(ratio_mean)}), "
        f"logits std = {std:.3f}")
    if ratio0 is not None and ratio0 >= 0.7:
        warn(f"{name}: attention is close to uniform ({ratio0:.3f})")
    if std < MIN_LOGITS_STD:
        warn(f"{name}: logits std {std:.3f} < {MIN_LOGITS_STD}")

    seed, prompt, tokens, margin = choose_prompt(libs, loaded, spec, vocab, excluded, args.max_prompt_seeds)
    logprobs, top5, _ = prompt_logprobs(libs, loaded, prompt)
    log(f"  prompt seed {seed}: min greedy margin {margin:.4f}; {len(set(tokens))} distinct greedy tokens "
        f"{tokens[:8]}...")
    golden = {
        "name": name,
        "dtype": spec["save_dtype"],
        "architecture": model_cls.__name__,
        "config_form": config_form,
        "rope": rope,
        "prompt_seed": seed,
        "min_greedy_margin": margin,
        "attention_entropy_ratio_layer0": ratio0,
        "logits_std": std,
        "prompt_tokens": prompt,
        "logprobs": logprobs,
        "greedy": tokens,
    }
    if spec["tokenizer"] == "tiny":
        golden.update(text_golden(libs, loaded, out_dir))
    golden["top5"] = top5
    golden["command"] = args.command
    golden["versions"] = versions
    write_json(out_dir / "golden.json", golden)
    make_readable(out_dir)
    size = dir_bytes(out_dir)
    if size > MAX_MODEL_DIR_BYTES:
        warn(f"{name}: directory is {size} bytes (> {MAX_MODEL_DIR_BYTES}); the shapes asked for need it")
    log(f"  wrote {out_dir / 'golden.json'} in {time.time() - t0:.1f}s")
    return dict(name=name, dtype=spec["save_dtype"], form=config_form, files=len(files), bytes=size,
                entropy=ratio0, std=std, seed=seed, margin=margin)


def make_legacy_config(libs, spec, out_dir, loaded_new, ref_state, probe):
    """Rewrites config.json to the old top-level rope keys and checks transformers reads it identically."""
    errors = []
    for rope_key in ("type", "rope_type"):
        rewrite_config_legacy(out_dir, spec, rope_key)
        try:
            legacy = load_model(libs, out_dir)
            compare_loaded(libs, ref_state, legacy, spec, f"legacy config ({rope_key})")
            check_rope(legacy.config, spec, f"legacy config ({rope_key})")
            d = logits_equal(libs, loaded_new, legacy, probe)
            if d != 0.0:
                raise GoldenError(f"logits differ by {d} from the rope_parameters config")
            if legacy_form_lost(out_dir):
                raise GoldenError("config.json no longer has the legacy keys after loading")
            log(f"  config.json rewritten to rope_theta + rope_scaling ({rope_key!r} key): "
                f"transformers loads it with identical logits")
            return legacy, f"rope_theta+rope_scaling[{rope_key}]"
        except Exception as e:  # noqa: BLE001 - try the other spelling, then report both
            errors.append(f"{rope_key}: {e}")
            warn(f"{spec['name']}: legacy config with {rope_key!r} key failed: {e}")
    raise GoldenError(f"{spec['name']}: transformers does not load the legacy config identically: {errors}")


def legacy_form_lost(out_dir):
    cfg = json.loads((out_dir / "config.json").read_text(encoding="utf-8"))
    return "rope_parameters" in cfg or "rope_scaling" not in cfg or "rope_theta" not in cfg


def text_golden(libs, model, tok_dir):
    tok = libs.transformers.AutoTokenizer.from_pretrained(str(tok_dir))
    fallback = None
    for text in TINY_TEXT_PROMPTS:
        ids = encode_ids(tok, text)
        tokens, margins, _ = greedy(libs, model, ids, GREEDY_STEPS)
        entry = {"text_prompt": text, "text_prompt_ids": ids, "text_greedy": tokens,
                 "text_min_greedy_margin": min(margins)}
        if min(margins) >= MIN_GREEDY_MARGIN:
            log(f"  text prompt {text[:40]!r}: {len(ids)} ids, min margin {min(margins):.4f}")
            return entry
        if fallback is None or entry["text_min_greedy_margin"] > fallback["text_min_greedy_margin"]:
            fallback = entry
    warn(f"no text prompt keeps greedy margins >= {MIN_GREEDY_MARGIN}; using the best "
         f"({fallback['text_min_greedy_margin']:.4g})")
    return fallback


def fmt(x):
    return "n/a" if x is None else f"{x:.3f}"


# --------------------------------------------------------------------------------------------------
# Phases
# --------------------------------------------------------------------------------------------------
def tiny_info(libs, tiny_dir):
    raw = libs.tokenizers.Tokenizer.from_file(str(tiny_dir / "tokenizer.json"))
    ids = {content: raw.token_to_id(content) for content, _ in TINY_ADDED_TOKENS}
    return {"dir": tiny_dir, "vocab": raw.get_vocab_size(with_added_tokens=True), "ids": ids}


def phase_models(libs, args, versions):
    out_root = args.out / "models"
    wanted = [s for s in MODEL_SPECS if not args.models or s["name"] in args.models]
    unknown = set(args.models or []) - {s["name"] for s in MODEL_SPECS}
    if unknown:
        raise GoldenError(f"unknown model name(s) {sorted(unknown)}; known: {[s['name'] for s in MODEL_SPECS]}")
    qwen3_dir = need_dir(args.qwen3_tokenizer, "--qwen3-tokenizer")
    with tempfile.TemporaryDirectory() as tmp:
        stage = Path(tmp) / "tiny"
        build_tiny_tokenizer(libs, qwen3_dir, stage)
        tiny = tiny_info(libs, stage)
        rows = [make_model(libs, args, spec, out_root, tiny, versions) for spec in wanted]
    return rows


def need_dir(path, flag):
    p = resolve_path(path)
    if not (p / "tokenizer.json").exists():
        raise GoldenError(f"{flag}: no tokenizer.json in {p} (run scripts/setup to fetch .deps/tokenizers, "
                          f"or pass the directory)")
    return p


def phase_tokenizers(libs, args, versions):
    corpus_path, corpus = load_json_list(args.tokenizer_corpus, "tokenizer corpus")
    texts = [c["text"] if isinstance(c, dict) else c for c in corpus]
    if not all(isinstance(t, str) for t in texts):
        raise GoldenError(f"{corpus_path}: every entry must be a string (or {{\"text\": ...}})")
    tiny_dir = args.out / "models" / "qwen3-f32"
    if not (tiny_dir / "tokenizer.json").exists():
        raise GoldenError(f"tiny tokenizer not found in {tiny_dir}: run the models phase first")
    sources = [("qwen3", need_dir(args.qwen3_tokenizer, "--qwen3-tokenizer")),
               ("llama3_1", need_dir(args.llama_tokenizer, "--llama-tokenizer")),
               ("tiny", tiny_dir)]
    rows = []
    for name, tok_dir in sources:
        rows.append(tokenizer_golden(libs, args, name, tok_dir, texts, corpus_path, versions))
    return rows


def tokenizer_golden(libs, args, name, tok_dir, texts, corpus_path, versions):
    log(f"== tokenizer {name} from {tok_dir}")
    tok = libs.transformers.AutoTokenizer.from_pretrained(str(tok_dir))
    raw = libs.tokenizers.Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
    cases, id_mismatch, text_mismatch = [], 0, 0
    for text in texts:
        ids = encode_ids(tok, text)
        decoded = tok.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        skipped = tok.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        case = {"text": text, "ids": ids, "decoded": decoded, "decoded_skip_special": skipped}
        # Cross-check against the tokenizers library reading tokenizer.json directly, which is what the
        # C++ implementation reads: a difference means transformers adds behaviour of its own.
        raw_ids = raw.encode(text, add_special_tokens=False).ids
        if raw_ids != ids:
            case["tokenizers_ids"] = raw_ids
            id_mismatch += 1
        raw_decoded = raw.decode(ids, skip_special_tokens=False)
        if raw_decoded != decoded:
            case["tokenizers_decoded"] = raw_decoded
            text_mismatch += 1
        cases.append(case)
    if id_mismatch or text_mismatch:
        warn(f"{name}: transformers and tokenizers.Tokenizer.from_file differ on {id_mismatch} encodes and "
             f"{text_mismatch} decodes (recorded per case as tokenizers_ids / tokenizers_decoded)")
    golden = {"tokenizer": name, "source": str(tok_dir), "tokenizer_class": type(tok).__name__,
              "corpus": str(corpus_path), "tokenizers_mismatches": {"ids": id_mismatch, "decoded": text_mismatch},
              "cases": cases, "command": args.command, "versions": versions}
    path = args.out / "tokenizer" / f"{name}_golden.json"
    write_json(path, golden)
    log(f"  wrote {path}: {len(cases)} cases")
    return dict(name=f"tokenizer {name}", cases=len(cases), mismatches=id_mismatch + text_mismatch)


def phase_templates(libs, args, versions):
    cases_path, cases_in = load_json_list(args.template_cases, "template cases")
    llama_template_path = resolve_path(args.llama_template)
    if not llama_template_path.exists():
        raise GoldenError(f"Llama-3.1 chat template not found at {llama_template_path}")
    llama_template = llama_template_path.read_text(encoding="utf-8")
    auto = libs.transformers.AutoTokenizer
    toks = {"qwen3": (auto.from_pretrained(str(need_dir(args.qwen3_tokenizer, "--qwen3-tokenizer"))), None),
            "llama31": (auto.from_pretrained(str(need_dir(args.llama_tokenizer, "--llama-tokenizer"))),
                        llama_template)}
    log(f"== templates: {len(cases_in)} cases from {cases_path}; llama bos_token={toks['llama31'][0].bos_token!r}")
    out_cases, errors = [], 0
    for i, case in enumerate(cases_in):
        template = case.get("template")
        if template not in toks:
            raise GoldenError(f"{cases_path}: case {i} has template {template!r} (expected qwen3 or llama31)")
        tok, chat_template = toks[template]
        kwargs = {"tools": copy.deepcopy(case.get("tools")),
                  "add_generation_prompt": bool(case.get("add_generation_prompt", False)),
                  "tokenize": False, "return_dict": False}
        if chat_template is not None:
            kwargs["chat_template"] = chat_template
        kwargs.update(copy.deepcopy(case.get("extra") or {}))
        out = dict(case)
        try:
            rendered = tok.apply_chat_template(copy.deepcopy(case["messages"]), **kwargs)
            if isinstance(rendered, list) and len(rendered) == 1 and isinstance(rendered[0], str):
                rendered = rendered[0]
            if not isinstance(rendered, str):
                raise GoldenError(f"apply_chat_template returned {type(rendered).__name__}, not str")
            out["expected"] = rendered
        except Exception as e:  # noqa: BLE001 - a template that raises is itself a golden outcome
            errors += 1
            out["expected"] = None
            out["error"] = f"{type(e).__name__}: {e}"
            warn(f"template case {i} ({template}) raised {out['error']}")
        out_cases.append(out)
    golden = {"cases": out_cases, "source": str(cases_path), "llama31_template": str(llama_template_path),
              "command": args.command, "versions": versions}
    path = args.out / "templates" / "chat_golden.json"
    write_json(path, golden)
    log(f"  wrote {path}: {len(out_cases)} cases, {errors} raised")
    return [dict(name="templates", cases=len(out_cases), mismatches=errors)]


def print_summary(model_rows, other_rows):
    print("\n" + "=" * 100)
    if model_rows:
        print(f"{'model':<20}{'dtype':<10}{'config form':<32}{'shards':>6}{'bytes':>10}{'attn H/logn':>12}"
              f"{'logit std':>10}{'seed':>6}{'margin':>9}")
        for r in model_rows:
            print(f"{r['name']:<20}{r['dtype']:<10}{r['form']:<32}{r['files']:>6}{r['bytes']:>10}"
                  f"{fmt(r['entropy']):>12}{r['std']:>10.3f}{r['seed']:>6}{r['margin']:>9.4f}")
    if other_rows:
        print(f"\n{'golden':<24}{'cases':>8}{'mismatches/errors':>20}")
        for r in other_rows:
            print(f"{r['name']:<24}{r['cases']:>8}{r['mismatches']:>20}")
    print("=" * 100, flush=True)


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--out", required=True, type=Path, help="output root, normally tests/data")
    ap.add_argument("--only", choices=["models", "tokenizers", "templates"], help="run one phase")
    ap.add_argument("--qwen3-tokenizer", default=".deps/tokenizers/qwen3")
    ap.add_argument("--llama-tokenizer", default=".deps/tokenizers/llama3_1")
    ap.add_argument("--tokenizer-corpus", default="tools/golden/tokenizer_corpus.json")
    ap.add_argument("--template-cases", default="tools/golden/template_cases.json")
    ap.add_argument("--llama-template", default="tests/data/templates/llama31_chat_template.jinja")
    ap.add_argument("--models", type=lambda s: [x for x in s.split(",") if x],
                    help="comma-separated subset of models (default: all)")
    ap.add_argument("--max-prompt-seeds", type=int, default=MAX_PROMPT_SEEDS)
    return ap.parse_args(argv)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    args.command = command_line()
    t0 = time.time()
    libs = Libs()
    versions = libs.versions()
    log(f"versions: {versions}")
    log(f"output root: {args.out.resolve()}")
    model_rows, other_rows = [], []
    try:
        if args.only in (None, "models"):
            model_rows = phase_models(libs, args, versions)
        if args.only in (None, "tokenizers"):
            other_rows += phase_tokenizers(libs, args, versions)
        if args.only in (None, "templates"):
            other_rows += phase_templates(libs, args, versions)
    except GoldenError as e:
        print_summary(model_rows, other_rows)
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 1
    print_summary(model_rows, other_rows)
    log(f"done in {time.time() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
