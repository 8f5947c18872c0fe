#!/usr/bin/env bash
# Overhead of a no-op training job (create → Completed) on the embedded defaults, release build.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q --release --bin kiln
DATA=$(mktemp -d /tmp/kiln-bench.XXXXXX)
PORT=18182
target/release/kiln serve --data-dir "$DATA" --listen 127.0.0.1:$PORT >"$DATA/serve.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null; rm -rf "$DATA"' EXIT
for _ in $(seq 100); do curl -sf http://127.0.0.1:$PORT/_kiln/health >/dev/null && break; sleep 0.1; done
KEY=$(awk -F'"' '/access_key_id/{print $2}' "$DATA/keys.toml")
SECRET=$(awk -F'"' '/secret_access_key/{print $2}' "$DATA/keys.toml")
python3 bench/job_overhead.py http://127.0.0.1:$PORT "$KEY" "$SECRET" "${JOBS:-20}"
