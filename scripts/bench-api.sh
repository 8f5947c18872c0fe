#!/usr/bin/env bash
# Throughput of the SageMaker API with SigV4 on this machine: starts a release `kiln serve` on a fresh
# data directory and drives it with the bench_api load generator (client and server share the cores).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q --release --bin kiln --example bench_api
DATA=$(mktemp -d /tmp/kiln-bench.XXXXXX)
PORT=18181
target/release/kiln serve --data-dir "$DATA" --listen 127.0.0.1:$PORT >"$DATA/serve.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null; rm -rf "$DATA"' EXIT
for _ in $(seq 100); do curl -sf http://127.0.0.1:$PORT/_kiln/health >/dev/null && break; sleep 0.1; done
KEY=$(awk -F'"' '/access_key_id/{print $2}' "$DATA/keys.toml")
SECRET=$(awk -F'"' '/secret_access_key/{print $2}' "$DATA/keys.toml")
echo "machine: $(nproc) cores; kiln serve and the load generator share them"
target/release/examples/bench_api http://127.0.0.1:$PORT "$KEY" "$SECRET" "${CREATES:-2000}" "${DESCRIBES:-20000}" "${CONCURRENCY:-16}"
