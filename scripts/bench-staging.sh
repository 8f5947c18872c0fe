#!/usr/bin/env bash
# A job's channel staged from the embedded S3 endpoint, next to a plain copy of the same bytes:
# a release `kiln serve` on its embedded defaults, SIZE_MB (default 2048) of random bytes uploaded
# in two layouts, `one` (a single object) and `many` (16 objects of SIZE_MB/16), and per round
# `cp -r` + `sync` of the layout's directory, then a no-op job (kiln/noop) whose File-mode `train`
# channel is that prefix, timed by its `Downloading` transition (bench/staging.py).
# BEFORE_BIN=/path/to/an/older/kiln runs a second server with that binary beside this build's,
# and each round runs the job on both: a before/after pair measured in the same run.
#   SIZE_MB=2048 ROUNDS=3 LAYOUTS="one many" [BEFORE_BIN=...] scripts/bench-staging.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MB=${SIZE_MB:-2048}
ROUNDS=${ROUNDS:-3}
LAYOUTS=${LAYOUTS:-one many}
PORT=${PORT:-18283}
cargo build -q --release --bin kiln
. scripts/lib.sh
start_release_server "$PORT"
SERVERS=("this build" "$ENDPOINT" "$KEY" "$SECRET")
if [ -n "${BEFORE_BIN:-}" ]; then
  BEFORE_DATA=$(mktemp -d /tmp/kiln-bench-before.XXXXXX)
  "$BEFORE_BIN" serve --data-dir "$BEFORE_DATA" --listen "127.0.0.1:$((PORT + 1))" >"$BEFORE_DATA/serve.log" 2>&1 &
  BEFORE_SERVER=$!
  trap 'kill "$BEFORE_SERVER" 2>/dev/null; wait "$BEFORE_SERVER" 2>/dev/null; rm -rf "$BEFORE_DATA"; stop_release_server' EXIT
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$((PORT + 1))/_kiln/health" >/dev/null && break; sleep 0.1; done
  SERVERS+=("before" "http://127.0.0.1:$((PORT + 1))"
    "$(awk -F'"' '/access_key_id/{print $2; exit}' "$BEFORE_DATA/keys.toml")"
    "$(awk -F'"' '/secret_access_key/{print $2; exit}' "$BEFORE_DATA/keys.toml")")
fi
SRC="$DATA/src"
mkdir -p "$SRC/one" "$SRC/many"
head -c "$((SIZE_MB * 1024 * 1024))" /dev/urandom >"$SRC/one/data.bin"
split -n 16 -d -a 2 "$SRC/one/data.bin" "$SRC/many/part-"
sync
python3 bench/staging.py "$SRC" "$ROUNDS" "$LAYOUTS" "${SERVERS[@]}"
