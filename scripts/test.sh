#!/usr/bin/env bash
# The whole test suite: formatting, lints, Rust unit tests, and the integration tests that drive the
# real `kiln` binary with boto3, the AWS CLI and the SageMaker SDK. Installs what it needs (idempotent).
#   scripts/test.sh            everything (the integration tests run twice: on SQLite, then on PostgreSQL)
#   scripts/test.sh -k tags    pass pytest arguments to run part of the integration suite
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s ==\n' "$*"; }

step "python packages"
scripts/install-deps.sh

# What to stop at exit, in order; each step that starts something adds to it.
at_exit=()
run_at_exit() { for c in "${at_exit[@]}"; do eval "$c" || true; done; }
trap run_at_exit EXIT

step "PostgreSQL (a throwaway server for the store's conformance suite and the PostgreSQL runs)"
PG_DIR=$(mktemp -d /tmp/kiln-test-pg.XXXXXX)
at_exit+=('scripts/pg.sh stop "$PG_DIR"')
eval "$(scripts/pg.sh start "$PG_DIR")"
export KILN_REQUIRE_POSTGRES=1
# kiln-image's registry tests skip without docker-registry/skopeo/busybox-static; here they must run.
export KILN_REQUIRE_REGISTRY=1
# tests/test_distributed.py skips without python3-torch/openmpi/mpi4py; here they must run.
export KILN_REQUIRE_DISTRIBUTED=1
# tests/test_console.py skips without chromium/chromedriver; here it must run.
export KILN_REQUIRE_BROWSER=1

step "Slurm test cluster (2 nodes + slurmrestd, for tests/test_slurm.py; installs Debian's packages if missing)"
export KILN_SLURM_BASE=/tmp/kiln-slurm
at_exit+=('BASE=$KILN_SLURM_BASE ../shared/slurm/setup.sh stop >/dev/null')
BASE=$KILN_SLURM_BASE NODES=2 REST=1 ../shared/slurm/setup.sh >/tmp/kiln-slurm-setup.log 2>&1 ||
  { tail -30 /tmp/kiln-slurm-setup.log; exit 1; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo build"
cargo build --workspace --bins --examples

step "cargo test"
cargo test --workspace

step "integration tests (pytest)"
export KILN_BIN="$PWD/target/debug/kiln"
export KILN_XGB_PYTHONS="${KILN_XGB_PYTHONS-$PWD/.venvs/xgboost-1.7/bin/python:$PWD/.venvs/xgboost-2.1/bin/python}"
python3 -m pytest -q -ra --durations=15 tests "$@"

step "integration tests again, every server's metadata in PostgreSQL"
KILN_TEST_STORE=postgres python3 -m pytest -q -ra tests "$@"

if [ $# -eq 0 ]; then
  step "README's first command: scripts/quickstart.sh"
  scripts/quickstart.sh >/tmp/kiln-quickstart.log 2>&1 || { tail -40 /tmp/kiln-quickstart.log; exit 1; }
  grep -E "Completed in|validation:auc" /tmp/kiln-quickstart.log | head -3
fi
