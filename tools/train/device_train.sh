#!/usr/bin/env bash
# Trains the embedded default model on the GPU machine (tools/train/README.md has the recipe).
#
#   tools/train/device_train.sh start [TRAIN_END_MIN]   # call 1 (~9 min): data, tokenizer, launch, poll
#   tools/train/device_train.sh wait                    # call 2 (<= 9.4 min): poll to the end, package
#   tools/train/device_train.sh once [TRAIN_END_MIN]    # or all in one call (~9 min): the recommended flow
#   tools/train/device_train.sh resume DIR [TRAIN_END_MIN]  # continue training the model in DIR (e.g. models/gsm-qwen3-15m):
#                                                           # one call up to 8.5 min, else like `start` (then `wait`)
#   tools/train/device_train.sh launch DIR [TRAIN_END_MIN]  # like resume, but return once train.py runs (~30 s):
#                                                           # the call goes on with other work, later calls `wait`
# Environment: VORTEX_TRAIN_WORK (work dir; one per concurrent run), VORTEX_TRAIN_END_AT (unix time the
# training loop ends, instead of TRAIN_END_MIN), VORTEX_TRAIN_ARGS (more train.py arguments, e.g.
# "--continue-mix short"), CUDA_VISIBLE_DEVICES (which GPUs: runs side by side on nvidia-h200-x2/x4),
# VORTEX_TRAIN_NPROC (N > 1: one data-parallel run over N GPUs, started with torch.distributed.run),
# VORTEX_TRAIN_DATA (the training data dir, default WORK/data: runs of one lease can share it),
# VORTEX_TRAIN_LONG (1: also noise lengths 8000 and 16000: training data, evaluation and probe sets; 0: not;
# default: 1 when VORTEX_TRAIN_ARGS names --continue-mix long16, the mix that trains on them).
#
# Run from the repository root with the CUDA build's binary carried: carry ["build-gpu/vortex", "build-gpu/lib"].
# `start` generates the training data with `vortex gsm-inf symbolic` (seeds >= 1000000; evaluation
# uses seeds < 1000000), trains the tokenizer, starts tools/train/train.py with setsid (it outlives the
# call) and polls its log until ~9 minutes after the call began. The training loop ends TRAIN_END_MIN
# (default 16; `once`: 8) minutes after the call began; then the final checkpoint is saved, reloaded
# and evaluated. train.py logs probes every 30 s ("probe ..." and "HEALTH ..." lines): whether the model
# copies names from its context yet, and how many held-out problems it would solve. `wait` polls until
# WORK/DONE appears (or the trainer is gone, or 9.3 minutes passed) and copies to $OUT (at most 8 files
# of at most 16 MiB each):
#   model.tar.part00, model.tar.part01   the model folder as one tar, split into 15 MiB pieces
#   SHA256SUMS, logs.tar.gz (train.log, prep.log, loss.csv, eval.json)
# Reassemble: cat model.tar.part* > model.tar && sha256sum -c SHA256SUMS && tar -xf model.tar  # -> model/
# `start` also leaves the newest checkpoint in $OUT when it ends, in case the lease ends before `wait`.
# `wait` must follow `start` within the machine's 30 s idle window. Work dir: /tmp/vortex-train.
set -euo pipefail

WORK=${VORTEX_TRAIN_WORK:-/tmp/vortex-train}
DATA=${VORTEX_TRAIN_DATA:-$WORK/data}
EVAL="$WORK/eval"
VORTEX=build-gpu/vortex
SELF="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
START_POLL_S=528      # `start` stops polling here (seconds since the call began) and packages
WAIT_LIMIT_S=558      # `wait` gives up polling here and packages what exists
ONCE_LIMIT_S=575      # `once` likewise
PART_BYTES=15728640   # 15 MiB: $OUT takes files of at most 16 MiB
SEED_BASE=1000000     # training seeds start here; evaluation seeds are below it
# Training data: "length examples-per-op files". Each file holds 8 ops x examples-per-op problems,
# 0.7-1M tokens. How much of each length is used, and when, is train.py's curriculum (PHASES), not the
# file counts: these only need to exceed what a run consumes (~250M tokens in 7 minutes, 35-55% of it at
# length 0, where short ops are kept first; run 7: 1340M tokens over 3 GPUs, 35% of the steps at
# length 4000). Length 3000 is not used (2000 and 4000 bracket it).
# Runs 1-6 used 60/60/60/80 files at lengths 500-4000; more since run 7, whose mix is mostly long
# contexts over several GPUs (~4 GB in all).
DATA_PLAN=(
  "0 300 240"
  "500 125 80"
  "1000 80 100"
  "2000 45 150"
  "4000 24 400"
)
# Run 9 (--continue-mix long16) adds the long lengths, after the others so that their seeds (and files) stay
# those of runs 7-8. Problems of 7.6-8.0K / 15.2-15.6K tokens: 12 / 6 per op keep a file at ~0.75M tokens
# (~3.9 MB). An ~18.5-minute run on one H200 takes ~11,000-14,000 steps (~98-82 ms each), 25% at each length:
# 5,700-6,800 length-16000 problems (2 a step) of these 11,520 and 11,400-13,700 length-8000 ones (4 a step)
# of 23,040, so no problem is seen twice. 480 files, ~1.9 GB more (~5.9 GB in all); ~3 s more to generate.
DATA_PLAN_LONG=(
  "8000 12 240"
  "16000 6 240"
)
LONG=${VORTEX_TRAIN_LONG:-auto}
if [[ $LONG == auto ]]; then
  case " ${VORTEX_TRAIN_ARGS:-} " in
    *long16*) LONG=1 ;;
    *) LONG=0 ;;
  esac
fi
[[ $LONG == 0 || $LONG == 1 ]] || { echo "VORTEX_TRAIN_LONG must be 0, 1 or auto, not '$LONG'" >&2; exit 2; }
LONG_LENGTHS=()  # the long lengths' evaluation (seed 7) and probe (seed 8) sets, when LONG
if [[ $LONG == 1 ]]; then
  DATA_PLAN+=("${DATA_PLAN_LONG[@]}")
  LONG_LENGTHS=(8000 16000)
fi

export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
# NVLink multicast stays off (the device machines' rule: it can take a shared host's GPUs down).
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1

T0=$(date +%s)
elapsed() { echo $(( $(date +%s) - T0 )); }
say() { echo "[device_train +$(elapsed)s] $*"; }
die() { echo "[device_train +$(elapsed)s] ERROR: $*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------
gen_one() {  # seed length examples-per-op: one training file, written atomically
  local out="$DATA/L$2_s$1.jsonl"
  "$VORTEX" gsm-inf symbolic --seed "$1" --length "$2" --min-op 1 --max-op 9 \
    --examples-per-op "$3" --out "$out.tmp"
  mv "$out.tmp" "$out"
}

train_pid() { cat "$WORK/train.pid" 2>/dev/null || true; }

train_alive() {
  local pid; pid=$(train_pid)
  [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null
}

show_progress() {
  if [[ -f $WORK/train.log ]]; then
    grep -E '^\[train|WARNING|Error|error' "$WORK/train.log" | grep -v ' probe step ' | tail -n 2 | sed 's/^/    /' || true
    grep -E ' probe step |HEALTH' "$WORK/train.log" | tail -n 2 | cut -c1-400 | sed 's/^/    /' || true
  fi
}

# Polls until DONE (0), the trainer is gone (1) or LIMIT seconds since the call began (2).
poll_until() {
  local limit=$1 last=0
  while :; do
    [[ -f $WORK/DONE ]] && return 0
    train_alive || { sleep 2; [[ -f $WORK/DONE ]] && return 0; return 1; }
    (( $(elapsed) >= limit )) && return 2
    if (( $(elapsed) - last >= 30 )); then
      last=$(elapsed)
      say "training running:"
      show_progress
    fi
    sleep 5
  done
}

check_prerequisites() {
  [[ -x $VORTEX ]] || die "$VORTEX not found or not executable: run from the repo root with carry [\"$VORTEX\"]"
  "$VORTEX" gsm-inf symbolic --help >/dev/null || die "$VORTEX does not run on this machine"
  python3 -c 'import torch, transformers, tokenizers, safetensors, numpy
assert torch.cuda.is_available(), "CUDA is not available"
print("python3: torch", torch.__version__, "transformers", transformers.__version__,
      "tokenizers", tokenizers.__version__, "GPU", torch.cuda.get_device_name(0))' \
    || die "python3 lacks torch/transformers/tokenizers/safetensors or a GPU"
  local free_gb; free_gb=$(df -Pk /tmp | awk 'NR==2 {print int($4 / 1048576)}')
  (( free_gb >= 12 )) || die "/tmp has ${free_gb} GB free; the data needs ~4 GB (~6 GB with VORTEX_TRAIN_LONG=1)"
  say "prerequisites ok; /tmp has ${free_gb} GB free; $(nproc) CPUs"
}

stop_previous_training() {  # a trainer left by an earlier `start` of this lease: end its process group
  if train_alive; then
    local pid; pid=$(train_pid)
    say "stopping the earlier trainer (pid $pid)"
    kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true
    sleep 3
  fi
}

write_jobs() {  # one "seed length examples-per-op" line per training file
  local seed=$SEED_BASE spec length epo files i
  for spec in "${DATA_PLAN[@]}"; do
    read -r length epo files <<<"$spec"
    for (( i = 0; i < files; i++ )); do
      echo "$seed $length $epo"
      seed=$(( seed + 1 ))
    done
  done
}

generate_data() {
  local t jobs="$WORK/jobs.txt" n_jobs n_files
  t=$(date +%s)
  write_jobs > "$jobs"
  n_jobs=$(wc -l < "$jobs")
  if [[ -f $DATA/COMPLETE ]] && cmp -s "$jobs" "$DATA/COMPLETE"; then
    say "training data already generated ($n_jobs files): reusing it"
    return
  fi
  rm -rf "$DATA" && mkdir -p "$DATA"
  say "generating $n_jobs training files (seeds $SEED_BASE..$(( SEED_BASE + n_jobs - 1 )), ops 1-8) on $(nproc) CPUs"
  xargs -P 16 -n 3 bash "$SELF" gen-one < "$jobs" || die "training data generation failed"
  n_files=$(find "$DATA" -name 'L*_s*.jsonl' -size +0 | wc -l)
  (( n_files == n_jobs )) || die "expected $n_jobs non-empty data files, found $n_files"
  cp "$jobs" "$DATA/COMPLETE"
  local spec length epo files
  for spec in "${DATA_PLAN[@]}"; do
    read -r length epo files <<<"$spec"
    say "  length $length: $files files x $(( epo * 8 )) problems = $(( files * epo * 8 )) problems"
  done
  say "training data: $(du -sh "$DATA" | cut -f1) in $(( $(date +%s) - t ))s"
}

generate_eval() {  # held-out problems, seeds < 1000000: the final check (seed 7) and the probes (seed 8)
  mkdir -p "$EVAL"
  "$VORTEX" gsm-inf symbolic --seed 7 --length 0 --min-op 1 --max-op 6 --examples-per-op 8 --out "$EVAL/L0.jsonl"
  "$VORTEX" gsm-inf symbolic --seed 7 --length 4000 --min-op 1 --max-op 6 --examples-per-op 4 \
    --out "$EVAL/L4000.jsonl"
  "$VORTEX" gsm-inf symbolic --seed 8 --length 0 --min-op 1 --max-op 6 --examples-per-op 8 --out "$EVAL/probe_L0.jsonl"
  "$VORTEX" gsm-inf symbolic --seed 8 --length 1000 --min-op 1 --max-op 6 --examples-per-op 4 \
    --out "$EVAL/probe_L1000.jsonl"
  "$VORTEX" gsm-inf symbolic --seed 8 --length 4000 --min-op 1 --max-op 6 --examples-per-op 2 \
    --out "$EVAL/probe_L4000.jsonl"
  local length
  for length in "${LONG_LENGTHS[@]}"; do  # 10 problems each (ops 1-5 x 2): both sets decode in ~35 s in all
    "$VORTEX" gsm-inf symbolic --seed 7 --length "$length" --min-op 1 --max-op 6 --examples-per-op 2 \
      --out "$EVAL/L$length.jsonl"
    "$VORTEX" gsm-inf symbolic --seed 8 --length "$length" --min-op 1 --max-op 6 --examples-per-op 2 \
      --out "$EVAL/probe_L$length.jsonl"
  done
  local evals="" probes=""
  for length in 0 4000 "${LONG_LENGTHS[@]}"; do
    evals+="${evals:+, }$(wc -l < "$EVAL/L$length.jsonl") at length $length"
  done
  for length in 0 1000 4000 "${LONG_LENGTHS[@]}"; do
    probes+="${probes:+, }$(wc -l < "$EVAL/probe_L$length.jsonl") at $length"
  done
  say "evaluation problems (seed 7): $evals; probes (seed 8): $probes"
}

eval_args() {  # train.py's --eval and --probe arguments: the sets generate_eval wrote
  local length args=(--eval "$EVAL/L0.jsonl" --eval "$EVAL/L4000.jsonl"
    --probe "$EVAL/probe_L0.jsonl" --probe "$EVAL/probe_L1000.jsonl" --probe "$EVAL/probe_L4000.jsonl")
  for length in "${LONG_LENGTHS[@]}"; do
    args+=(--eval "$EVAL/L$length.jsonl" --probe "$EVAL/probe_L$length.jsonl")
  done
  printf '%s\n' "${args[@]}"
}

launch_training() {
  local end_at
  end_at=${VORTEX_TRAIN_END_AT:-$(awk -v t0="$T0" -v m="$TRAIN_END_MIN" 'BEGIN { printf "%d", t0 + m * 60 }')}
  (( end_at > T0 + 180 )) || die "TRAIN_END_MIN=$TRAIN_END_MIN leaves no time to train"
  rm -f "$WORK/DONE" "$WORK/train.pid"
  local eval_set
  mapfile -t eval_set < <(eval_args)
  local nproc=${VORTEX_TRAIN_NPROC:-1} launcher=(python3 -u)
  if (( nproc > 1 )); then
    launcher=(python3 -u -m torch.distributed.run --standalone --nproc_per_node "$nproc")
  fi
  say "launching train.py on $nproc GPU(s) (CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-all});" \
    "the training loop ends at +$(( end_at - T0 ))s ($(date -d "@$end_at" +%H:%M:%S))"
  setsid nohup "${launcher[@]}" tools/train/train.py --data-dir "$DATA" --tokenizer-dir "$WORK/tokenizer" \
    --work-dir "$WORK" "${eval_set[@]}" --end-at "$end_at" "${EXTRA_TRAIN_ARGS[@]}" ${VORTEX_TRAIN_ARGS:-} \
    > "$WORK/train.log" 2>&1 < /dev/null &
  local i
  for (( i = 0; i < 60; i++ )); do
    [[ -s $WORK/train.pid ]] && break
    sleep 1
  done
  [[ -s $WORK/train.pid ]] || { tail -n 30 "$WORK/train.log" >&2 || true; die "train.py did not start"; }
  say "train.py running as pid $(train_pid); log: $WORK/train.log"
}

# Copies the newest checkpoint (split tar + checksum) and the logs to $OUT (8 files at most).
package_outputs() {
  local out=${OUT:-$WORK/out} model pack="$WORK/pack"
  mkdir -p "$out"
  rm -f "$out"/model.tar.part* "$out/SHA256SUMS"
  model=$(readlink -f "$WORK/model" 2>/dev/null || true)
  if [[ -n $model && -f $model/config.json ]]; then
    rm -rf "$pack" && mkdir -p "$pack/model"
    cp "$model"/* "$pack/model/"
    tar -C "$pack" -cf "$pack/model.tar" model
    (cd "$pack" && sha256sum model.tar > "$out/SHA256SUMS")
    split -b "$PART_BYTES" -d -a 2 "$pack/model.tar" "$out/model.tar.part"
    local parts=("$out"/model.tar.part*)
    say "packaged $(basename "$model") ($(du -sh "$pack/model" | cut -f1)) as ${#parts[@]} part(s)"
    ls -l "$pack/model" | sed 's/^/    /'
  else
    say "WARNING: no checkpoint exists yet: no model in \$OUT"
  fi
  # The logs as one file: the device tool returns at most 8 files per call (run 4 lost its model
  # when the logs and a concurrent job's files made more), so $OUT gets 4: 2 parts, sums, logs.
  local f logs=()
  for f in train.log prep.log loss.csv eval.json; do
    [[ -f $WORK/$f ]] && logs+=("$f")
  done
  (( ${#logs[@]} == 0 )) || tar -C "$WORK" -czf "$out/logs.tar.gz" "${logs[@]}"
  (( $(ls "$out" | wc -l) <= 8 )) || say "WARNING: more than 8 files in \$OUT: $(ls "$out" | tr '\n' ' ')"
  ls -l "$out" | sed 's/^/    /'
}

# ---------------------------------------------------------------------------------------------
# Phases
# ---------------------------------------------------------------------------------------------
prepare_and_launch() {  # END_MIN: the training loop ends END_MIN minutes after this call began
  TRAIN_END_MIN=$1
  mkdir -p "$WORK"
  stop_previous_training
  find "$WORK" -mindepth 1 -maxdepth 1 ! -name data -exec rm -rf {} +
  {
    say "$PHASE: work dir $WORK, the training loop ends at +${TRAIN_END_MIN} min"
    check_prerequisites
    generate_data
    generate_eval
    local t
    t=$(date +%s)
    if [[ -n $INIT_DIR ]]; then  # resume: the checkpoint's own tokenizer, not a new one
      mkdir -p "$WORK/tokenizer"
      cp "$INIT_DIR/tokenizer.json" "$INIT_DIR/tokenizer_config.json" "$WORK/tokenizer/"
      say "tokenizer: the one of $INIT_DIR"
      exit 0
    fi
    TOKENIZERS_PARALLELISM=true python3 -u tools/train/train_tokenizer.py --data-dir "$DATA" --out "$WORK/tokenizer" --vortex "$VORTEX" \
      || die "tokenizer training failed"
    say "tokenizer: $(( $(date +%s) - t ))s"
  } 2>&1 | tee "$WORK/prep.log"
  [[ -f $WORK/tokenizer/tokenizer.json ]] || die "preparation failed (see above)"
  launch_training
}

# After the last poll (RC from poll_until): say how it ended, package, and fail unless DONE says ok.
finish() {
  local rc=$1
  case $rc in
    0) say "DONE: $(cat "$WORK/DONE")" ;;
    1) say "WARNING: train.py is gone without DONE; packaging the newest checkpoint" ;;
    2) say "WARNING: time is up before DONE; packaging the newest checkpoint (training or evaluation unfinished)" ;;
  esac
  grep -E '^\[train .*(eval |training done|checkpoint step|HEALTH|self-test)' "$WORK/train.log" | tail -n 12 || true
  package_outputs
  if [[ $rc != 0 ]] || ! grep -q '"status": "ok"' "$WORK/DONE" 2>/dev/null; then
    tail -n 40 "$WORK/train.log" >&2
    exit 1
  fi
}

phase_start() {
  prepare_and_launch "${1:-16}"
  local rc=0
  poll_until "$START_POLL_S" || rc=$?
  show_progress
  if (( rc == 2 )); then
    say "training continues in the background: run 'tools/train/device_train.sh wait' now (30 s idle limit)"
    package_outputs  # the newest checkpoint, in case the lease ends before `wait`
  else
    finish "$rc"
  fi
}

phase_wait() {
  [[ -f $WORK/train.pid ]] || die "no training was started in this lease ($WORK/train.pid missing): run 'start' first"
  say "wait: polling $WORK/train.log until DONE (at most ${WAIT_LIMIT_S}s)"
  local rc=0
  poll_until "$WAIT_LIMIT_S" || rc=$?
  finish "$rc"
}

set_init_dir() {  # resume and launch: continue the checkpoint in DIR (carried in the tree)
  INIT_DIR=$(readlink -f "${1:?usage: $PHASE MODEL_DIR [TRAIN_END_MIN]}")
  [[ -f $INIT_DIR/config.json && -f $INIT_DIR/tokenizer.json ]] || die "$INIT_DIR is not a model directory"
  EXTRA_TRAIN_ARGS=(--init "$INIT_DIR" --lr 1.5e-3 --warmup-steps 50 --decay-start 0.3)
}

phase_launch() {  # prepare and start train.py, then return: the call's command goes on with other work
  set_init_dir "${1:-}"
  prepare_and_launch "${2:-16}"
  say "launched; follow with 'VORTEX_TRAIN_WORK=$WORK tools/train/device_train.sh wait' within the lease"
}

phase_resume() {  # continue training the checkpoint in DIR (carried in the tree) for END_MIN minutes
  set_init_dir "${1:-}"
  local minutes=${2:-8}
  if awk -v m="$minutes" 'BEGIN { exit !(m > 8.5) }'; then  # longer than one call: as `start`, then `wait`
    phase_start "$minutes"
    return
  fi
  prepare_and_launch "$minutes"
  local rc=0
  poll_until "$ONCE_LIMIT_S" || rc=$?
  finish "$rc"
}

phase_once() {  # everything in one call: ~7 minutes of training, no second call needed
  prepare_and_launch "${1:-8}"
  local rc=0
  poll_until "$ONCE_LIMIT_S" || rc=$?
  finish "$rc"
}

INIT_DIR=""
EXTRA_TRAIN_ARGS=()
PHASE=${1:-}
case "$PHASE" in
  start) phase_start "${2:-}" ;;
  wait) phase_wait ;;
  once) phase_once "${2:-}" ;;
  resume) phase_resume "${2:-}" "${3:-}" ;;
  launch) phase_launch "${2:-}" "${3:-}" ;;
  gen-one) shift; gen_one "$@" ;;
  *) echo "usage: $0 start [TRAIN_END_MIN] | wait | once [TRAIN_END_MIN] | resume|launch MODEL_DIR [TRAIN_END_MIN]" >&2; exit 2 ;;
esac
