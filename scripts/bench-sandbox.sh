#!/usr/bin/env bash
# What the sandbox and the environments cost, release build on this machine:
#  - a script-mode job's create → Completed with [jobs] sandbox = "bwrap" and with "none" (two servers,
#    jobs interleaved; bench/sandbox_overhead.py);
#  - the first and the cached build of a framework image's pinned environment (SKLearn 1.2-1, uv).
#   JOBS=10 scripts/bench-sandbox.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q --release --bin kiln
scripts/install-deps.sh >/dev/null
A=$(mktemp -d /tmp/kiln-bench.XXXXXX); B=$(mktemp -d /tmp/kiln-bench.XXXXXX); E=$(mktemp -d /tmp/kiln-bench.XXXXXX)
MAP='[[environments]]
image = "*pytorch-training*"
python = "python3"'
printf '[jobs]\nsandbox = "bwrap"\n%s\n' "$MAP" >"$A/kiln.toml"
printf '[jobs]\nsandbox = "none"\n%s\n' "$MAP" >"$B/kiln.toml"
target/release/kiln serve --data-dir "$A" --listen 127.0.0.1:18191 >"$A/serve.log" 2>&1 & PA=$!
target/release/kiln serve --data-dir "$B" --listen 127.0.0.1:18192 >"$B/serve.log" 2>&1 & PB=$!
trap 'kill $PA $PB 2>/dev/null; wait $PA $PB 2>/dev/null; rm -rf "$A" "$B" "$E"' EXIT
for p in 18191 18192; do for _ in $(seq 100); do curl -sf "http://127.0.0.1:$p/_kiln/health" >/dev/null && break; sleep 0.1; done; done
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
python3 bench/sandbox_overhead.py http://127.0.0.1:18191 http://127.0.0.1:18192 "$A/keys.toml" "$B/keys.toml" "${JOBS:-10}"

IMAGE=683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3
t0=$(date +%s.%N); target/release/kiln --data-dir "$E" environments build "$IMAGE" >"$E/build1.log" 2>&1; t1=$(date +%s.%N)
target/release/kiln --data-dir "$E" environments build "$IMAGE" >"$E/build2.log" 2>&1; t2=$(date +%s.%N)
echo "environment of $IMAGE (uv, empty caches): first build $(echo "$t1 - $t0" | bc) s, cached $(echo "$t2 - $t1" | bc) s"
grep -E "relaxed|exact pins" "$E/build1.log" | head -2 || true
