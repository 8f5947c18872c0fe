#!/usr/bin/env bash
# Installs what the tests need on a fresh machine; quick when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"

apt_missing=()
# The AWS CLI v2 (Debian's awscli) for `aws logs tail`; the pip CLI (v1) stays the default `aws`.
/usr/bin/aws --version 2>/dev/null | grep -q '^aws-cli/2' || apt_missing+=(awscli)
# bubblewrap: every host's sandbox.
command -v bwrap >/dev/null || apt_missing+=(bubblewrap)
# A registry, a client that pushes to it and a static busybox, for kiln-image's tests that pull images.
command -v docker-registry >/dev/null || apt_missing+=(docker-registry)
command -v skopeo >/dev/null || apt_missing+=(skopeo)
dpkg -s busybox-static >/dev/null 2>&1 || apt_missing+=(busybox-static)
# Distributed training's tests: Debian's CPU PyTorch (torchrun, gloo), OpenMPI and mpi4py, for the
# system Python (PyPI's torch wheels pull gigabytes of CUDA libraries).
dpkg -s python3-torch >/dev/null 2>&1 || apt_missing+=(python3-torch)
command -v mpirun >/dev/null || apt_missing+=(openmpi-bin)
dpkg -s python3-mpi4py >/dev/null 2>&1 || apt_missing+=(python3-mpi4py)
# The console's browser tests: headless Chromium and its WebDriver (selenium drives them).
command -v chromium >/dev/null || apt_missing+=(chromium)
command -v chromedriver >/dev/null || apt_missing+=(chromium-driver)
if [ ${#apt_missing[@]} -gt 0 ]; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${apt_missing[@]}" >/dev/null
fi

if ! [ -f .deps-python-ok ] || [ requirements-test.txt -nt .deps-python-ok ] || ! $PY -c "import pytest, boto3" 2>/dev/null; then
  $PY -m pip install -q --disable-pip-version-check -r requirements-test.txt
  touch .deps-python-ok
fi
command -v aws >/dev/null || $PY -m pip install -q --disable-pip-version-check awscli

# Older xgboost releases, each in its own venv, so the tests can check that kiln's model files load and
# predict the same in xgboost 1.7 and 2.x as in the 3.x of requirements-test.txt.
xgb_venv() {  # dir, pip requirements...
  local dir=$1; shift
  [ -x "$dir/bin/python" ] && "$dir/bin/python" -c "import xgboost" 2>/dev/null && return
  rm -rf "$dir"
  $PY -m venv "$dir"
  "$dir/bin/pip" install -q --disable-pip-version-check "$@"
}
xgb_venv .venvs/xgboost-1.7 "xgboost==1.7.6" "numpy<2"
xgb_venv .venvs/xgboost-2.1 "xgboost-cpu==2.1.4"
