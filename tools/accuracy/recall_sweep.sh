#!/usr/bin/env bash
# Selection recall of the flows at noise length 4000 (docs/accuracy.md, "Why quest loses answers"):
# `vortex eval gsm-inf --recall` on the CPU, every spec on the same problems (seed 11, ops 1-3,
# PER_OP per op), budget 256 tokens with sink 16 and window 16 (what the earlier quest sweeps used),
# at page size 16, then quest, oracle and proxy at pages of 32 and 8. Writes OUT_PREFIX-p{16,32,8}.json.
#   tools/accuracy/recall_sweep.sh bench/results/2026-12-06-recall-L4000
set -euo pipefail
cd "$(dirname "$0")/../.."
prefix=${1:-recall}
per_op=${PER_OP:-2}
budget=${BUDGET:-256}
model=${MODEL:-models/gsm-qwen3-15m}
e=tools/accuracy/exp
b="budget=$budget,sink=16,window=16"
run() {  # page, output, specs...
  local page=$1 out=$2; shift 2
  local specs=()
  for spec in "$@"; do specs+=(--attention "$spec"); done
  build/vortex eval gsm-inf --model "$model" --seed 11 --length 4000 --ops 1-3 --examples-per-op "$per_op" \
    --page-size "$page" --no-alpha --recall "${specs[@]}" --json > "$out"
}
run 16 "$prefix-p16.json" dense "oracle:$b" "flow:$e/oraclemax.flow,$b" "quest:$b" "quest_gqa:$b" \
  "flow:$e/quest_sub2.flow,$b" "flow:$e/quest_sub4.flow,$b" "quest:$b,skip_layers=0-1" "quest:budget=$budget,sink=64,window=64" \
  "proxy:$b" "flow:$e/proxy4.flow,$b" "proxy8:$b" "flow:$e/proxyfp8.flow,$b" "flow:$e/sign.flow,$b" \
  "proxy_rerank:$b" "quest_proxy:$b" "flow:$e/qp4.flow,$b" "flow:$e/s4p4.flow,$b"
run 32 "$prefix-p32.json" "oracle:$b" "quest:$b" "proxy:$b"
run 8 "$prefix-p8.json" "oracle:$b" "quest:$b" "proxy:$b"
python3 - "$prefix" <<'PY'
import json, sys
for page in (16, 32, 8):
    data = json.load(open(f"{sys.argv[1]}-p{page}.json"))
    print(f"page {page}: {data['run']['command']}")
    print("| attention | accuracy | recall mean / p5 | mass mean (oracle's) | stage recall | recall by layer |")
    print("|---|---|---|---|---|---|")
    for r in data["results"]:
        s = r["selection_recall"]
        if s is None:
            print(f"| `{r['attention']}` | {r['correct']}/{r['examples']} | | | | |")
            continue
        layers = " ".join(f"{l['recall_mean']:.2f}" for l in s["by_layer"])
        print(f"| `{r['attention']}` | {r['correct']}/{r['examples']} | {s['recall_mean']:.3f} / {s['recall_p5']:.3f} | "
              f"{s['mass_mean']:.3f} ({s['oracle_mass_mean']:.3f}) | {s['stage_recall_mean']:.3f} | {layers} |")
PY
