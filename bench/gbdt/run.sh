#!/bin/bash
# GBDT benchmark: kiln vs xgboost `hist` vs LightGBM on the same data, same threads, one run.
#   bench/gbdt/run.sh [reps]        (default 3; env THREADS=2 ROUNDS=100)
# Needs: cargo, python3 with numpy scikit-learn pandas xgboost lightgbm. Data goes to bench/out/.
set -euo pipefail
cd "$(dirname "$0")/../.."
REPS=${1:-3}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-100}
SHARED=${KILN_SHARED:-../shared}
TARGET=${CARGO_TARGET_DIR:-target}
OUT=bench/out/gbdt
mkdir -p "$OUT" bench/out/data

cargo build --release -p kiln-algos --example gbdt_bench
BIN="$TARGET/release/examples/gbdt_bench"

# Synthetic HIGGS-like 1M x 28 (generated once, reused).
if [ ! -f bench/out/data/train_1m.csv ]; then
  cp "$SHARED/bench/gbdt/gen_data.py" bench/out/gen_data.py
  python3 bench/out/gen_data.py 1000000
fi

# The box may be shared: wait (up to ~30 s) for the CPUs to calm down before each run.
quiet() {
  for _ in $(seq 1 10); do
    a=($(head -1 /proc/stat)); sleep 3; b=($(head -1 /proc/stat))
    busy=$(( (b[1]+b[2]+b[3]+b[6]+b[7]) - (a[1]+a[2]+a[3]+a[6]+a[7]) )); tot=$(( busy + b[4]+b[5]-a[4]-a[5] ))
    [ $(( 100*busy/tot )) -lt 15 ] && return 0
  done
  echo "warning: machine busy at $(date +%T) (load $(cut -d' ' -f1 /proc/loadavg))" >&2
}
record() {  # data-name, command...
  local data=$1; shift
  quiet
  "$@" | sed -n 's/^RESULT //p' | python3 -c "import json,sys; r=json.loads(sys.stdin.read()); r['data']='$data'; print(json.dumps(r))" \
    | tee -a "$OUT/results.jsonl"
}

: > "$OUT/results.jsonl"
for rep in $(seq 1 "$REPS"); do
  for set in synthetic-1m flights; do
    if [ $set = synthetic-1m ]; then tr=bench/out/data/train_1m.csv; te=bench/out/data/test.csv
    else tr=$SHARED/data/flights/train.csv; te=$SHARED/data/flights/test.csv; fi
    record $set "$BIN" parse "$tr" "$THREADS"
    record $set "$BIN" "$tr" "$te" "$ROUNDS" "$THREADS" 6
    record $set python3 bench/gbdt/ref.py xgb "$tr" "$te" "$ROUNDS" "$THREADS"
    record $set python3 bench/gbdt/ref.py lgb "$tr" "$te" "$ROUNDS" "$THREADS"
  done
done
python3 bench/gbdt/summarize.py "$OUT/results.jsonl"
