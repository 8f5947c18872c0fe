#!/usr/bin/env bash
# Installs what the tests need on a fresh machine; quick when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! $PY -c "import pytest, boto3" 2>/dev/null || ! [ -f .deps-python-ok ] || [ requirements-test.txt -nt .deps-python-ok ]; then
  $PY -m pip install -q --disable-pip-version-check -r requirements-test.txt
  touch .deps-python-ok
fi
command -v aws >/dev/null || $PY -m pip install -q --disable-pip-version-check awscli
