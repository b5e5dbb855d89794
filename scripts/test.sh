#!/usr/bin/env bash
# One command from a fresh clone: install with test extras, lint with ruff, then run the whole test suite.
# Exits non-zero when the lint finds a violation or any test fails (pytest's "no tests collected" counts
# as a failure too). The tests run even after a lint failure, so that one run reports both.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS=test bash scripts/setup.sh
lint=0
.venv/bin/ruff check . || lint=$?  # rules and exclusions: [tool.ruff] in pyproject.toml
tests=0
.venv/bin/python -m pytest -q "$@" || tests=$?
if [ "$lint" -ne 0 ] && [ "$tests" -eq 0 ]; then
    echo "ruff check . failed (see above); the tests passed" >&2
fi
exit $(( tests != 0 ? tests : lint ))
