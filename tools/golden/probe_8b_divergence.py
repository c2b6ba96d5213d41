#!/usr/bin/env python3
"""Why Vortex and transformers disagree on the Qwen3-8B shape (diagnostic; GPU machine).

compare_8b.py --layers 2 --cpu showed: Vortex's CPU and CUDA backends agree with each other (3e-6)
but both differ from transformers (f32, mean |Δ logprob| 0.025 over 255 positions), not at position
0 and growing with the position: something in attention or RoPE. This script builds the same
2-layer random model, prints what transformers uses (rope parameters, inv_freq, attention scaling)
and what it saved (config.json, `vortex info`), then finds which transformers variant reproduces
Vortex's CPU log-probs: as is, other RoPE thetas, or other attention scalings.

Usage: python3 tools/golden/probe_8b_divergence.py --vortex build-gpu/vortex
"""
import argparse
import json
import os
import subprocess
import tempfile

import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vortex", required=True)
    ap.add_argument("--config", default="configs/qwen3-8b.json")
    args = ap.parse_args()
    from transformers import Qwen3Config, Qwen3ForCausalLM

    cfg = json.load(open(args.config))
    cfg["num_hidden_layers"] = cfg["max_window_layers"] = 2
    config = Qwen3Config(**{k: v for k, v in cfg.items() if k not in ("architectures", "transformers_version", "torch_dtype", "model_type")})
    config._attn_implementation = "eager"
    print("config.rope_parameters", getattr(config, "rope_parameters", None), "head_dim", config.head_dim, flush=True)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = Qwen3ForCausalLM(config).to(torch.bfloat16).eval()
    rot = model.model.rotary_emb
    print("inv_freq[:3]", rot.inv_freq[:3].tolist(), "inv_freq[-2:]", rot.inv_freq[-2:].tolist(), "attention_scaling",
          getattr(rot, "attention_scaling", None), "scaling", model.model.layers[0].self_attn.scaling, flush=True)
    d = tempfile.mkdtemp(prefix="probe-8b-")
    model.save_pretrained(d, safe_serialization=True)
    saved = json.load(open(os.path.join(d, "config.json")))
    print("saved config", {k: saved.get(k) for k in ("rope_parameters", "rope_theta", "rope_scaling", "head_dim", "layer_types",
                                                     "sliding_window", "use_sliding_window", "tie_word_embeddings")}, flush=True)
    info = subprocess.run([args.vortex, "info", "--model", d, "--json"], capture_output=True, text=True)
    print("vortex info", info.stdout.strip()[-400:], info.stderr.strip()[-300:], flush=True)
    model = model.float()
    prompt = [(i * 7919) % 150000 + 10 for i in range(64)]
    ids = torch.tensor([prompt], device="cuda")
    out = subprocess.run([args.vortex, "score", "--model", d, "--tokens", ",".join(map(str, prompt)), "--device", "cpu", "--json"],
                         capture_output=True, text=True)
    vx = torch.tensor(json.loads(out.stdout.strip().splitlines()[-1])["logprobs"], device="cuda")

    def diff():
        with torch.no_grad():
            lg = model(ids).logits.float()[0]
        lp = torch.log_softmax(lg, -1)[:-1].gather(1, ids[0, 1:, None])[:, 0]
        return (lp - vx).abs().mean().item()

    print("as is: mean |dlogprob| vs vortex cpu", diff(), flush=True)
    original = rot.inv_freq.clone()
    dim = config.head_dim
    for theta in (1e4, 1e5, 1e6, 1e7):
        rot.inv_freq.copy_(1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.int64, device="cuda").float() / dim)))
        print(f"theta {theta:g}:", diff(), flush=True)
    rot.inv_freq.copy_(original)
    attn = [layer.self_attn for layer in model.model.layers]
    base = attn[0].scaling
    for s in (base, 1 / 8.0, 1 / 11.3137, 1.0 / 128, 1.0):
        for a in attn:
            a.scaling = s
        print(f"attention scaling {s:.5f}:", diff(), flush=True)


if __name__ == "__main__":
    main()
