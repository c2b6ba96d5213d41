#!/usr/bin/env python3
"""Bytes a sparse decode step reads for attention (selected K/V + the fields each pass reads), by the
formula of `vortex bench decode` (src/runtime/bench.cpp kv_bytes_read, SparseAttention::field_bytes_read,
src/sparse/field_storage.h record sizes), for a model shape, batch and context: the cost comparison of
issue #7 without a GPU. Prints one line per spec.

  tools/accuracy/bytes_per_step.py --layers 36 --kv-heads 8 --head-dim 128 --batch 16 --context 32768
"""
import argparse, math

def record_bytes(storage, rows, width):
    bits = {"f32": 32, "bf16": 16, "fp8": 8, "int8": 8, "int4": 4, "sign": 1}[storage]
    scaled = storage in ("fp8", "int8", "int4", "sign")
    scales_at = ((rows * width * bits + 7) // 8 + 3) // 4 * 4
    return scales_at + (4 * rows if scaled else 0)

# Each spec: (name, passes: list of [(storage, rows, width-is-D)], stage factors, sink, window, skip layers)
def specs(P):
    quest = [[("bf16", 1, True), ("bf16", 1, True)]]
    return {
        "quest:budget=2048,sink=16,window=64,skip_layers=0-1": (quest, [], 16, 64, 2),
        "quest (f32 fields, before 2026-12-06)": ([[("f32", 1, True), ("f32", 1, True)]], [], 16, 64, 2),
        "proxy:budget=2048,sink=16,window=64": ([[("int4", P, True)]], [], 16, 64, 0),
        "auto:budget=2048 = proxy_rerank,sink=16,window=64": ([[("int4", P, True)], [("int8", P, True)]], [2], 16, 64, 0),
        "proxy8:budget=2048,sink=16,window=64": ([[("int8", P, True)]], [], 16, 64, 0),
        "quest_proxy:budget=2048,sink=16,window=64": ([quest[0], [("int4", P, True)]], [8], 16, 64, 0),
    }

def main():
    a = argparse.ArgumentParser()
    a.add_argument("--layers", type=int, default=36); a.add_argument("--kv-heads", type=int, default=8)
    a.add_argument("--head-dim", type=int, default=128); a.add_argument("--batch", type=int, default=16)
    a.add_argument("--context", type=int, default=32768); a.add_argument("--steps", type=int, default=10)
    a.add_argument("--budget", type=int, default=2048); a.add_argument("--page", type=int, default=16)
    a.add_argument("--dense-share", type=float, default=0.0,
                   help="auto with dense_below: the share of sparse (token, layer, kv head) attentions that read every page")
    a.add_argument("--cover-added", type=float, default=0.0,
                   help="auto with cover: pages added per sparse attention over the pages its list holds (vortex eval's "
                        "cover_pages / sparse_pages)")
    o = a.parse_args()
    P, D = o.page, o.head_dim
    length = o.context + 1 + o.steps // 2           # the bench's mean length
    position = length - 1
    own = position // P
    dense = length * 2 * D * 2 * o.kv_heads          # bf16 K and V of every token, per layer
    k = o.budget // P
    rows, tokens_of = {}, {}
    for name, (passes, factors, sink, window, skip) in specs(P).items():
        sink_pages = min(math.ceil(sink / P), own)
        window_first = max(0, position - window + 1) // P if window > 0 else own
        candidates = max(0, min(window_first, own) - sink_pages)
        always = sink_pages + (own - max(sink_pages, window_first) + 1)
        tokens = min(length, (always + min(k, candidates)) * P)
        tokens_of[name] = tokens
        fields, scored = 0, candidates
        for i, fs in enumerate(passes):
            fields += scored * sum(record_bytes(s, r, D if w else 1) for s, r, w in fs)
            if i < len(factors):
                scored = min(scored, math.ceil(factors[i] * k))
        per_layer = o.kv_heads * (2 * tokens * D * 2 + fields)
        total = o.batch * (skip * dense + (o.layers - skip) * per_layer)
        rows[name] = total
    if o.dense_share > 0:  # the fields are read either way; a dense share reads every K/V row instead of the selection
        auto = "auto:budget=2048 = proxy_rerank,sink=16,window=64"
        selected = o.batch * o.layers * o.kv_heads * 2 * min(length, tokens_of[auto]) * D * 2
        rows[f"auto, dense_below with {o.dense_share:.1%} dense"] = rows[auto] + o.dense_share * (o.batch * o.layers * dense - selected)
    if o.cover_added > 0:  # the fields are read either way; cover reads its added pages' K/V rows too
        auto = "auto:budget=2048 = proxy_rerank,sink=16,window=64"
        selected = o.batch * o.layers * o.kv_heads * 2 * min(length, tokens_of[auto]) * D * 2
        rows[f"auto, cover adding {o.cover_added:.2f}x its listed pages"] = rows[auto] + min(
            o.cover_added * selected, o.batch * o.layers * dense - selected)
    base = rows["quest:budget=2048,sink=16,window=64,skip_layers=0-1"]
    dense_total = o.batch * o.layers * dense
    print(f"attention bytes per decode step, {o.layers} layers x {o.kv_heads} kv heads x D {D}, batch {o.batch}, "
          f"context {o.context}, budget {o.budget}, page {P}; dense: {dense_total / 1e9:.2f} GB")
    for name, total in rows.items():
        print(f"  {name:55} {total / 1e9:7.2f} GB  {total / base:5.2f}x quest  {total / dense_total:6.3f} of dense")

if __name__ == "__main__":
    main()
