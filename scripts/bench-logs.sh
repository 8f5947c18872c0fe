#!/usr/bin/env bash
# Log ingest (lines/s) and read speed of the CloudWatch Logs API on this machine, release build.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q --release --bin kiln --example bench_logs
. scripts/lib.sh
start_release_server 18183
target/release/examples/bench_logs "$ENDPOINT" "$KEY" "$SECRET" "${LINES:-400000}" "${WRITERS:-4}"
