#!/usr/bin/env bash
# Overhead of a no-op training job (create → Completed) on the embedded defaults, release build.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q --release --bin kiln
. scripts/lib.sh
start_release_server 18182
python3 bench/job_overhead.py "$ENDPOINT" "$KEY" "$SECRET" "${JOBS:-20}"
