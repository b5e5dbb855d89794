#!/usr/bin/env bash
# One command from a fresh clone: install with test extras, then run the whole test suite.
# Exits non-zero when any test fails (pytest's "no tests collected" counts as a failure too).
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS=test bash scripts/setup.sh
exec .venv/bin/python -m pytest -q "$@"
