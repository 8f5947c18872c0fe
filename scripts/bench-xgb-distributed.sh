#!/usr/bin/env bash
# Distributed training of the built-in XGBoost: 2 hosts x 1 thread vs 1 host x 1 thread on the synthetic
# HIGGS-like 1M x 28 data of ../shared/bench/gbdt (generated once into bench/out/data/, as bench/gbdt/run.sh
# does), same hyperparameters, same validation set (the 100k test rows).
#
# No server: each host is a `kiln algo xgboost train --ml-root DIR` process on a hand-made /opt/ml tree
# (hyperparameters.json, inputdataconfig.json, resourceconfig.json, input/data/<channel>/), exactly what the
# agent runs inside a job's sandbox. The hosts find algo-1 at 127.0.0.1 (KILN_XGB_MASTER_ADDR; in a job
# its name resolves through the sandbox's /etc/hosts) on a free port (KILN_XGB_PORT). The training file is
# cut into two halves, one per host, as ShardedByS3Key would give them. The program is the kiln-algos
# `algo` example (the same code as `kiln algo`, much quicker to build in release); KILN_BIN=path/to/kiln
# runs the kiln binary instead. Wall time is from start to the last host's exit (reading the CSV included).
# Each repetition also runs two independent 1-host jobs on the halves at once: no exchanges at all,
# the most two processes sharing this machine's caches and memory allow (the "machine allows" line).
#   ROUNDS=100 REPS=2 [KILN_PROFILE=1] [METRIC=auc] [PIN=0] scripts/bench-xgb-distributed.sh
# (METRIC=logloss: training without the exact train AUC the hosts compute together every round.)
# Each process is pinned to a core of its own (taskset; the 1-host job to core 0, host K to core
# K-1), as hosts on separate machines each have theirs: left to the scheduler, two processes that
# wake each other a thousand times a second keep being moved onto one core (the waker's) and
# wait for each other there. PIN=0 measures that too.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${KILN_SHARED:-../shared}
TARGET=${CARGO_TARGET_DIR:-target}
ROUNDS=${ROUNDS:-100}
REPS=${REPS:-2}
METRIC=${METRIC:-auc}
if [ -n "${KILN_BIN:-}" ]; then
  ALGO=("$KILN_BIN" algo)
else
  cargo build -q --release -p kiln-algos --example algo
  ALGO=("$TARGET/release/examples/algo" algo)
fi

mkdir -p bench/out/data
if [ ! -f bench/out/data/train_1m.csv ]; then
  cp "$SHARED/bench/gbdt/gen_data.py" bench/out/gen_data.py
  python3 bench/out/gen_data.py 1000000
fi
W=$(mktemp -d /tmp/kiln-bench-dxgb.XXXXXX)
trap 'rm -rf "$W"' EXIT
split -n l/2 -d --additional-suffix=.csv bench/out/data/train_1m.csv "$W/part-"
split -n l/2 -d --additional-suffix=.csv bench/out/data/test.csv "$W/test-"

# tree DIR HOST|"" TRAIN_FILES...: an /opt/ml tree (links to the data, no copies).
tree() {
  local dir=$1 host=$2
  shift 2
  mkdir -p "$dir/input/config" "$dir/input/data/train" "$dir/input/data/validation"
  for f in "$@"; do ln -s "$f" "$dir/input/data/train/"; done
  ln -s "${VALID:-$PWD/bench/out/data/test.csv}" "$dir/input/data/validation/test.csv"
  cat >"$dir/input/config/hyperparameters.json" <<EOF
{"objective": "binary:logistic", "num_round": "$ROUNDS", "max_depth": "6", "eta": "0.1",
 "eval_metric": "$METRIC", "nthread": "1"}
EOF
  cat >"$dir/input/config/inputdataconfig.json" <<EOF
{"train": {"ContentType": "text/csv", "S3DistributionType": "ShardedByS3Key"},
 "validation": {"ContentType": "text/csv", "S3DistributionType": "FullyReplicated"}}
EOF
  if [ -n "$host" ]; then
    echo "{\"current_host\": \"$host\", \"hosts\": [\"algo-1\", \"algo-2\"]}" >"$dir/input/config/resourceconfig.json"
  fi
}
tree "$W/one" "" "$W/part-00.csv" "$W/part-01.csv"
tree "$W/algo-1" algo-1 "$W/part-00.csv"
tree "$W/algo-2" algo-2 "$W/part-01.csv"
VALID="$W/test-00.csv" tree "$W/half-1" "" "$W/part-00.csv"
VALID="$W/test-01.csv" tree "$W/half-2" "" "$W/part-01.csv"

now() { date +%s.%N; }
# CPU seconds (user + system) of each process, steadier than wall time on a busy machine.
TIME=()
if [ -x /usr/bin/time ]; then TIME=(/usr/bin/time -f "%U %S" -o); fi
timed() { local out=$1; shift; if [ ${#TIME[@]} -gt 0 ]; then "${TIME[@]}" "$out" "$@"; else "$@"; fi; }
# pin CPU: the command prefix that pins to core CPU (modulo the cores there are); none with PIN=0.
pin() { if [ "${PIN:-1}" != 0 ] && command -v taskset >/dev/null; then echo "taskset -c $(($1 % $(nproc)))"; fi; }
cpu() { [ -f "$1" ] && awk '{printf "%.2f", $1 + $2}' "$1" || echo "?"; }
auc() { tail -1 "$1" | tr '\t' '\n' | sed -n "s/^validation-$METRIC://p"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

pinned="each process on a core of its own"
if [ "${PIN:-1}" = 0 ] || ! command -v taskset >/dev/null; then pinned="processes placed by the scheduler"; fi
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); 1M x 28 rows, $ROUNDS rounds, depth 6; $pinned"
best1=""; best2=""; besth=""
for rep in $(seq 1 "$REPS"); do
  rm -rf "$W"/one/model "$W"/algo-*/model "$W"/half-*/model
  t=$(now)
  # shellcheck disable=SC2046 # the prefix is words
  timed "$W/one.time" $(pin 0) "${ALGO[@]}" xgboost train --ml-root "$W/one" >"$W/one.out" 2>"$W/one.err"
  one=$(echo "$(now) - $t" | bc)
  port=$(free_port)
  t=$(now)
  for h in algo-1 algo-2; do
    KILN_XGB_PORT=$port KILN_XGB_MASTER_ADDR=127.0.0.1 TRAINING_JOB_NAME=bench-dxgb \
      timed "$W/$h.time" $(pin $((${h#algo-} - 1))) "${ALGO[@]}" xgboost train --ml-root "$W/$h" >"$W/$h.out" 2>"$W/$h.err" &
  done
  wait
  two=$(echo "$(now) - $t" | bc)
  [ -f "$W/algo-1/model/xgboost-model" ] || { cat "$W"/algo-*.err >&2; exit 1; }
  # What the machine allows at the moment: two independent 1-host jobs, one on each half of the
  # training and of the validation rows, at the same time (each host's work, without exchanging
  # anything; they share the caches and memory as the hosts do).
  t=$(now)
  for h in 1 2; do
    # shellcheck disable=SC2046 # the prefix is words
    $(pin $((h - 1))) "${ALGO[@]}" xgboost train --ml-root "$W/half-$h" >"$W/half-$h.out" 2>"$W/half-$h.err" &
  done
  wait
  halves=$(echo "$(now) - $t" | bc)
  printf 'rep %d: 1 host %.2f s (validation %s %s), 2 hosts %.2f s (validation %s %s)\n' \
    "$rep" "$one" "$METRIC" "$(auc "$W/one.out")" "$two" "$METRIC" "$(auc "$W/algo-1.out")"
  printf '       two independent 1-host jobs on the halves at once: %.2f s\n' "$halves"
  echo "       CPU s (user+sys): 1 host $(cpu "$W/one.time"), algo-1 $(cpu "$W/algo-1.time"), algo-2 $(cpu "$W/algo-2.time")"
  if [ -z "$best1" ] || (( $(echo "$one < $best1" | bc) )); then best1=$one; fi
  if [ -z "$best2" ] || (( $(echo "$two < $best2" | bc) )); then best2=$two; fi
  if [ -z "$besth" ] || (( $(echo "$halves < $besth" | bc) )); then besth=$halves; fi
done
a1=$(auc "$W/one.out"); a2=$(auc "$W/algo-1.out")
printf '\n%-24s %10s %12s\n' "" "wall (best)" "valid. $METRIC"
printf '%-24s %9.2fs %12s\n' "1 host x 1 thread" "$best1" "$a1"
printf '%-24s %9.2fs %12s\n' "2 hosts x 1 thread" "$best2" "$a2"
printf '%-24s %9.2fs\n' "2 halves, independent" "$besth"
printf 'speed-up %.2fx (aim >= 1.6x), validation %s difference %+.5f (aim within +-0.001)\n' \
  "$(echo "$best1 / $best2" | bc -l)" "$METRIC" "$(echo "$a2 - $a1" | bc -l)"
printf 'the machine allows %.2fx right now (1 host / two independent halves at once): 2 hosts reach %.0f%% of it\n' \
  "$(echo "$best1 / $besth" | bc -l)" "$(echo "100 * $besth / $best2" | bc -l)"
# With KILN_PROFILE=1: where each process spent its time (the last repetition).
if [ -n "${KILN_PROFILE:-}" ]; then
  for h in one algo-1 algo-2; do echo "$h: $(grep -h allreduce "$W/$h.err" | tail -1)"; done
fi
