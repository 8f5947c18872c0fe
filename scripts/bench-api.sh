#!/usr/bin/env bash
# Throughput of the SageMaker API with SigV4 on this machine: a release `kiln serve` on a fresh data
# directory driven by the bench_api load generator (client and server share the cores).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q --release --bin kiln --example bench_api
. scripts/lib.sh
start_release_server 18181
target/release/examples/bench_api "$ENDPOINT" "$KEY" "$SECRET" "${CREATES:-2000}" "${DESCRIBES:-20000}" "${CONCURRENCY:-16}"
