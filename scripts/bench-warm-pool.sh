#!/usr/bin/env bash
# What a warm pool saves, release build on this machine: a script-mode job with a requirements.txt,
# create -> Completed, started cold (a fresh server and caches), reusing a warm pool, and anew with
# warm caches (bench/warm_pool.py).
#   ROUNDS=5 scripts/bench-warm-pool.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q --release --bin kiln
scripts/install-deps.sh >/dev/null
D=$(mktemp -d /tmp/kiln-bench.XXXXXX)
target/release/kiln serve --data-dir "$D" --listen 127.0.0.1:18193 >"$D/serve.log" 2>&1 & P=$!
trap 'kill $P 2>/dev/null; wait $P 2>/dev/null; rm -rf "$D"' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:18193/_kiln/health" >/dev/null && break; sleep 0.1; done
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
python3 bench/warm_pool.py http://127.0.0.1:18193 "$D/keys.toml" "${ROUNDS:-5}"
