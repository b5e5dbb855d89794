#!/usr/bin/env bash
# One command from a fresh clone: install, then train and evaluate KGSF on the built-in demo corpus.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/crs-run examples/kgsf.yaml "$@"
