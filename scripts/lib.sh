# Shared by the benchmark scripts: start a release `kiln serve` on a fresh data directory.
#   start_release_server PORT [ARGS...]   sets DATA, SERVER, KEY, SECRET, ENDPOINT and stops/cleans up on
#                                         exit; ARGS go to `kiln serve` (e.g. --database-url URL);
#                                         $BENCH_CONFIG, if set, is written to the data dir's kiln.toml
start_release_server() {
  local port=$1
  shift
  DATA=$(mktemp -d /tmp/kiln-bench.XXXXXX)
  [ -n "${BENCH_CONFIG:-}" ] && printf '%s\n' "$BENCH_CONFIG" >"$DATA/kiln.toml"
  target/release/kiln serve --data-dir "$DATA" --listen "127.0.0.1:$port" "$@" >"$DATA/serve.log" 2>&1 &
  SERVER=$!
  trap 'stop_release_server' EXIT
  ENDPOINT=http://127.0.0.1:$port
  for _ in $(seq 100); do curl -sf "$ENDPOINT/_kiln/health" >/dev/null && break; sleep 0.1; done
  KEY=$(awk -F'"' '/access_key_id/{print $2}' "$DATA/keys.toml")
  SECRET=$(awk -F'"' '/secret_access_key/{print $2}' "$DATA/keys.toml")
  echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); kiln serve and the load generator share them"
}

stop_release_server() {
  [ -n "${SERVER:-}" ] && { kill "$SERVER" 2>/dev/null; wait "$SERVER" 2>/dev/null; }
  [ -n "${DATA:-}" ] && rm -rf "$DATA"
  SERVER=""
  DATA=""
}
