#!/bin/bash
# Training WITH per-round evaluation, as the SageMaker container runs the built-in XGBoost
# (train and validation evaluated every round, the `[i]\ttrain-m:v\tvalidation-m:v` lines
# printed): kiln vs xgboost, same data, same threads, interleaved in one run.
#   bench/gbdt/run_eval.sh [reps]
#     env: THREADS=2 ROUNDS=100 SETS="flights" METRICS="auc logloss,error aucpr"
#          QUIET_TRIES=10 (3 s checks for an idle machine before each measurement)
#          BASE_BIN=<another gbdt_bench binary>  (also measured, as tool kiln-eval-base: a
#          before/after comparison in the same run)
# Needs: cargo, python3 with numpy pandas scikit-learn xgboost. SETS may add synthetic-1m (run
# run.sh once first: it generates bench/out/data/train_1m.csv).
set -euo pipefail
cd "$(dirname "$0")/../.."
REPS=${1:-3}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-100}
SETS=${SETS:-flights}
METRICS=${METRICS:-auc logloss,error aucpr}
SHARED=${KILN_SHARED:-../shared}
TARGET=${CARGO_TARGET_DIR:-target}
OUT=bench/out/gbdt
mkdir -p "$OUT"

cargo build --release -p kiln-algos --example gbdt_bench
BIN="$TARGET/release/examples/gbdt_bench"

# The box may be shared: wait (up to ~30 s) for the CPUs to calm down before each run.
quiet() {
  for _ in $(seq 1 "${QUIET_TRIES:-10}"); do
    a=($(head -1 /proc/stat)); sleep 3; b=($(head -1 /proc/stat))
    busy=$(( (b[1]+b[2]+b[3]+b[6]+b[7]) - (a[1]+a[2]+a[3]+a[6]+a[7]) )); tot=$(( busy + b[4]+b[5]-a[4]-a[5] ))
    [ $(( 100*busy/tot )) -lt 15 ] && return 0
  done
  echo "warning: machine busy at $(date +%T) (load $(cut -d' ' -f1 /proc/loadavg))" >&2
}
record() {  # data-name, tool-rename (or -), command...
  local data=$1 rename=$2; shift 2
  quiet
  "$@" | sed -n 's/^RESULT //p' | python3 -c "
import json,sys; r=json.loads(sys.stdin.read()); r['data']='$data'
r['loadavg']=open('/proc/loadavg').read().split()[0]
if '$rename' != '-': r['tool']='$rename'
print(json.dumps(r))" | tee -a "$OUT/eval_results.jsonl"
}

: > "$OUT/eval_results.jsonl"
for rep in $(seq 1 "$REPS"); do
  for set in $SETS; do
    if [ "$set" = synthetic-1m ]; then tr=bench/out/data/train_1m.csv; va=bench/out/data/test.csv
    else tr=$SHARED/data/flights/train.csv; va=$SHARED/data/flights/test.csv; fi
    for m in $METRICS; do
      record "$set" - "$BIN" eval "$m" "$tr" "$va" "$ROUNDS" "$THREADS"
      record "$set" - python3 bench/gbdt/ref.py xgb-eval "$tr" "$va" "$ROUNDS" "$THREADS" "$m"
      if [ -n "${BASE_BIN:-}" ]; then
        record "$set" kiln-eval-base "$BASE_BIN" eval "$m" "$tr" "$va" "$ROUNDS" "$THREADS"
      fi
    done
  done
done
python3 bench/gbdt/summarize.py "$OUT/eval_results.jsonl"
