#!/usr/bin/env bash
# kiln-tune's HPO benchmark: kiln Bayesian/Random beside Optuna TPE/random on four synthetic
# objectives (sequential and 4 in flight), then kiln Hyperband on mf_bench.py's learning curves.
# Extra arguments go to the example, e.g. `bench/hpo/run.sh --seeds 3 --only branin2`.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
script="$repo/../shared/bench/hpo/hpo_bench.py"

if ! python3 -c "import optuna, numpy" 2>/dev/null; then
    pip install --quiet optuna numpy || echo "could not install optuna; running kiln only" >&2
fi

cargo build --release --quiet -p kiln-tune --example hpo_bench --manifest-path "$repo/Cargo.toml"
target="${CARGO_TARGET_DIR:-$repo/target}"
mkdir -p "$repo/bench/out"
"$target/release/examples/hpo_bench" --script "$script" "$@" | tee "$repo/bench/out/hpo.txt"
