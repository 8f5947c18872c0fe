#!/usr/bin/env bash
# Issue 24's chaos and soak run on the release build: JOBS (default 200) built-in XGBoost jobs while
# the server is SIGKILLed and restarted every 3 s, an agent is SIGKILLed every 0.5 s, and 300 idle,
# 20 slow-header and 20 slow-body connections are held open; prints DescribeTrainingJob's latency
# (p50/p99/max), the server's peak RSS and what was lost (bench/chaos.py).
#   JOBS=200 scripts/chaos.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q --release --bin kiln
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
KILN_BIN="${CARGO_TARGET_DIR:-target}/release/kiln" python3 bench/chaos.py "${JOBS:-200}"
