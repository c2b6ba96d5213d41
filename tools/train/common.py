"""What the tokenizer trainer, the model trainer and the evaluation must agree on.

The chat format, the special tokens and the answer grader live here once. The C++ engine renders the
same chat template (it is stored in tokenizer_config.json), so a prompt built by `chat_prefix` is
byte-identical to what `vortex eval gsm-inf` feeds the model; train_tokenizer.py checks that with
transformers' apply_chat_template (and with the carried vortex binary).

Plain Python: no torch, no transformers.
"""

import json
import re
from pathlib import Path

ENDOFTEXT = "<|endoftext|>"  # id 0: padding and bos
IM_START = "<|im_start|>"  # id 1
IM_END = "<|im_end|>"  # id 2: end of an assistant turn, the model's eos
SPECIAL_TOKENS = [ENDOFTEXT, IM_START, IM_END]  # in id order

VOCAB_SIZE = 2048  # tokenizer vocabulary (special tokens included) = model vocab_size
# Model max_position_embeddings and tokenizer model_max_length. 32768 since run 9 (noise length 16000 gives
# examples of up to ~15.6K tokens); 8192 before. train.py writes it into every checkpoint it saves, --init included
# (config.json is built from it; tokenizer_config.json copied from the --init model is rewritten with it).
MAX_POSITIONS = 32768

# Qwen-style ChatML, minimal: one turn per message, then the assistant's opening when asked for.
# The backslash-n inside the Jinja string literals is an escape that Jinja (and vortex's Jinja) expands.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- endif %}"
)

# Training files are named L<length>_s<seed>.jsonl by device_train.sh.
DATA_FILE_RE = re.compile(r"^L(\d+)_s(\d+)\.jsonl$")
NAME_RE = re.compile(r"V\d{6}")
ANSWER_MARK = "ANSWER:"


def chat_prefix(prompt):
    """The chat template applied to one user message, with the generation prompt (as text)."""
    return f"{IM_START}user\n{prompt}{IM_END}\n{IM_START}assistant\n"


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def data_files_by_length(data_dir):
    """{length: [paths sorted by seed]} for every L<length>_s<seed>.jsonl in data_dir."""
    groups = {}
    for path in Path(data_dir).iterdir():
        m = DATA_FILE_RE.match(path.name)
        if m:
            groups.setdefault(int(m.group(1)), []).append((int(m.group(2)), path))
    return {length: [p for _, p in sorted(items)] for length, items in sorted(groups.items())}


def parse_answer(text):
    """The set of variable names after the last 'ANSWER:', or None when the text has no answer line."""
    at = text.rfind(ANSWER_MARK)
    if at < 0:
        return None
    return set(NAME_RE.findall(text[at + len(ANSWER_MARK):]))


def is_correct(text, answer_list):
    got = parse_answer(text)
    return got is not None and got == set(answer_list)
