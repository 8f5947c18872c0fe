#!/usr/bin/env bash
# What kiln adds to Slurm's own start-up: create → Training of a no-op job on the Slurm executor next
# to Slurm's submit → RUNNING of a trivial job, measured in the same run on the test cluster of
# ../shared/slurm/setup.sh (started here unless it is up; stopped at the end if started here).
#   scripts/bench-slurm.sh        ROUNDS=20 scripts/bench-slurm.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q --release --bin kiln
SLURM_BASE=${SLURM_BASE:-/tmp/kiln-slurm}
started_cluster=""
if ! { [ -f "$SLURM_BASE/env.sh" ] && . "$SLURM_BASE/env.sh" &&
       curl -sf -o /dev/null -H "X-SLURM-USER-NAME: root" -H "X-SLURM-USER-TOKEN: $SLURMRESTD_TOKEN" \
         "$SLURMRESTD_URL/slurm/v0.0.38/ping"; }; then
  NODES=2 REST=1 ../shared/slurm/setup.sh >/tmp/kiln-bench-slurm-setup.log
  . "$SLURM_BASE/env.sh"
  started_cluster=1
fi
. scripts/lib.sh
PORT=18186
WORK=$(mktemp -d /tmp/kiln-bench-slurm-work.XXXXXX)
BENCH_CONFIG="[jobs]
executor = \"slurm\"
public_url = \"http://127.0.0.1:$PORT\"
[slurm]
url = \"$SLURMRESTD_URL\"
user = \"root\"
jwt_key = \"$SLURM_BASE/etc/jwt_hs256.key\"
partition = \"debug\"
work_dir = \"$WORK\""
start_release_server "$PORT"
finish() {
  stop_release_server
  rm -rf "$WORK"
  [ -n "$started_cluster" ] && ../shared/slurm/setup.sh stop >/dev/null
  return 0
}
trap finish EXIT
python3 bench/slurm_latency.py "$ENDPOINT" "$KEY" "$SECRET" "$SLURMRESTD_URL" "$SLURMRESTD_TOKEN" "${ROUNDS:-10}"
