#!/usr/bin/env bash
# Log ingest (lines/s) and read speed of the CloudWatch Logs API on this machine, release build.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q --release --bin kiln --example bench_logs
DATA=$(mktemp -d /tmp/kiln-bench.XXXXXX)
PORT=18183
target/release/kiln serve --data-dir "$DATA" --listen 127.0.0.1:$PORT >"$DATA/serve.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null; rm -rf "$DATA"' EXIT
for _ in $(seq 100); do curl -sf http://127.0.0.1:$PORT/_kiln/health >/dev/null && break; sleep 0.1; done
KEY=$(awk -F'"' '/access_key_id/{print $2}' "$DATA/keys.toml")
SECRET=$(awk -F'"' '/secret_access_key/{print $2}' "$DATA/keys.toml")
echo "machine: $(nproc) cores; kiln serve and the load generator share them"
target/release/examples/bench_logs http://127.0.0.1:$PORT "$KEY" "$SECRET" "${LINES:-400000}" "${WRITERS:-4}"
