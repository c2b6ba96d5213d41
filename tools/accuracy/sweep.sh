#!/usr/bin/env bash
# Accuracy vs budget of every built-in flow on the embedded model (docs/accuracy.md, "Results"):
# one `vortex eval gsm-inf` run, so every spec sees the same problems. Writes the JSON to $1
# (default: accuracy-sweep.json) and prints the table of docs/accuracy.md.
#   tools/accuracy/sweep.sh bench/results/2026-11-28-accuracy-sweep-L500-run7.json
#   LENGTH=4000 BUDGETS="256 512" FLOWS="quest oracle" PER_OP=4 tools/accuracy/sweep.sh F.json   # a long-context subset
# (bench/results/2026-11-28-accuracy-sweep.json is an earlier sweep: length 0, ops 1-2, 16 per op, budgets 16-64)
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-accuracy-sweep.json}
model=${MODEL:-models/gsm-qwen3-15m}
length=${LENGTH:-500}           # noise length: 500 gives ~600-token sequences (~38 pages of 16)
budgets=${BUDGETS:-32 64 128 256}
flows=${FLOWS:-quest quest_gqa centroid centroid_gqa meanstd h2o oracle}  # streaming is always added
per_op=${PER_OP:-8}
specs=(--attention dense)
for budget in $budgets; do
  for flow in $flows; do
    specs+=(--attention "$flow:budget=$budget,sink=16,window=16")
  done
  specs+=(--attention "streaming:sink=16,window=$((16 + budget))")  # the same number of tokens, all recent
done
build/vortex eval gsm-inf --model "$model" --seed 11 --length "$length" --ops 1-3 --examples-per-op "$per_op" "${specs[@]}" --json > "$out"
python3 - "$out" <<'PY'
import json, re, sys
rows = json.load(open(sys.argv[1]))["results"]
dense = rows[0]
print(f"dense: accuracy {dense['accuracy']:.3f} (" + ", ".join(f"op {k} {v:.3f}" for k, v in dense["accuracy_by_op"].items()) + ")")
table = {}
for r in rows[1:]:
    flow = r["attention"].split(":")[0]
    m = re.search(r"budget=(\d+)", r["attention"]) or re.search(r"window=(\d+)", r["attention"])
    budget = int(m.group(1)) - (16 if flow == "streaming" else 0)
    table.setdefault(flow, {})[budget] = r
budgets = sorted({b for v in table.values() for b in v})
print("| flow | " + " | ".join(f"budget {b}: accuracy / α" for b in budgets) + " |")
print("|---|" + "---|" * len(budgets))
for flow, by in table.items():
    print(f"| `{flow}` | " + " | ".join(f"{by[b]['accuracy']:.3f} / {by[b]['alpha_mean']:.3f}" for b in budgets) + " |")
PY
