#!/usr/bin/env bash
# `vortex eval gsm-inf` on the GPU machine with the carried build-gpu/vortex: one run, every spec on the
# same problems, the JSON (with the exact command, commit, machine and date inside) to $OUT/NAME.json.
#   tools/accuracy/gpu_eval.sh NAME MODEL SEED LENGTH OPS PER_OP SPEC...
# e.g. tools/accuracy/gpu_eval.sh L4000 models/gsm-qwen3-15m 101 4000 1-3 20 dense auto:budget=512 quest:budget=512
set -uo pipefail
cd "$(dirname "$0")/../.."
source scripts/gpu-env
name=$1 model=$2 seed=$3 length=$4 ops=$5 per_op=$6
shift 6
specs=()
for spec in "$@"; do specs+=(--attention "$spec"); done
out=${OUT:-gpu-eval-out}
mkdir -p "$out"
start=$(date +%s)
build-gpu/vortex eval gsm-inf --model "$model" --device cuda --seed "$seed" --length "$length" --ops "$ops" \
  --examples-per-op "$per_op" "${specs[@]}" --json > "$out/$name.json" 2> "$out/$name.err"
rc=$?
python3 - "$out/$name.json" "$(( $(date +%s) - start ))" <<'PY' || tail -5 "$out/$name.err"
import json, sys
rows = json.load(open(sys.argv[1]))["results"]
print(f"{sys.argv[1]}: {sys.argv[2]} s")
for r in rows:
    a = "ref" if r["alpha_mean"] is None else f"{r['alpha_mean']:.3f}"
    p5 = "n/a" if r["alpha_p5_worst"] is None else f"{r['alpha_p5_worst']:.3f}"
    print(f"  {r['attention']:48} {100 * r['accuracy']:5.1f}%  ({r['correct']}/{r['examples']})  α {a}  p5 {p5}  {r['tokens_per_s']:7.0f} tok/s")
PY
[ $rc = 0 ] && rm -f "$out/$name.err"  # the device tool returns at most 8 files
exit $rc
