#!/usr/bin/env bash
# Throughput of the SageMaker API with SigV4 on this machine, on each metadata store: a release
# `kiln serve` on a fresh data directory (SQLite), then on a fresh PostgreSQL database (a throwaway
# server started by scripts/pg.sh), driven by the same bench_api load generator (client, server and
# database share the cores). The servers run no jobs (executor = "none"), so only the API is measured.
#   CREATES=2000 DESCRIBES=20000 CONCURRENCY=16 scripts/bench-api.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q --release --bin kiln --example bench_api
. scripts/lib.sh
export BENCH_CONFIG='[jobs]
executor = "none"'
run() {
  target/release/examples/bench_api "$ENDPOINT" "$KEY" "$SECRET" "${CREATES:-2000}" "${DESCRIBES:-20000}" "${CONCURRENCY:-16}"
}

echo "== SQLite (files under the data directory) =="
start_release_server 18181
sqlite=$(run)
echo "$sqlite"
stop_release_server

echo "== PostgreSQL =="
PG=$(mktemp -d /tmp/kiln-bench-pg.XXXXXX)
eval "$(scripts/pg.sh start "$PG")"
psql -q "$KILN_TEST_DATABASE_URL" -c "CREATE DATABASE kiln_bench" >/dev/null
start_release_server 18182 --database-url "${KILN_TEST_DATABASE_URL%/*}/kiln_bench"
postgres=$(run)
echo "$postgres"
stop_release_server
scripts/pg.sh stop "$PG"

rate() { awk -v op="$1" '$1 == op":" {print $2}' <<<"$2"; }
printf '\n%-22s %10s %12s %s\n' "operation" "SQLite/s" "PostgreSQL/s" "aim on PostgreSQL"
printf '%-22s %10s %12s %s\n' "CreateTrainingJob" "$(rate CreateTrainingJob "$sqlite")" "$(rate CreateTrainingJob "$postgres")" ">= 500/s"
printf '%-22s %10s %12s %s\n' "DescribeTrainingJob" "$(rate DescribeTrainingJob "$sqlite")" "$(rate DescribeTrainingJob "$postgres")" ">= 2,000/s"
