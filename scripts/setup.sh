#!/usr/bin/env bash
# Creates .venv (once) and installs the project into it. torch is pinned to the CPU build on purpose:
# an unpinned torch pulls several GB of CUDA packages. EXTRAS selects optional dependencies ("test").
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==2.13.0" -e ".${EXTRAS:+[$EXTRAS]}"
