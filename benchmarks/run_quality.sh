#!/usr/bin/env bash
# The quality runs recorded in BENCHMARKS.md, exactly as run (2 CPU cores; about 2 hours in all).
# Ablations are run without the conversation stage (`~stages.N`, `~model.generator`): Table 2 of the
# paper compares recommendation only, and the 2-core budget does not cover three conversation stages.
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate

python benchmarks/bench_quality.py --corpus inspired --systems popularity kgsf \
  --set kgsf:stages.2.epochs=2 \
  --out benchmarks/results/quality-inspired.json
python benchmarks/bench_quality.py --corpus inspired --systems kgsf-no-mim kgsf-no-dbpedia \
  --set threads=1 \
  --set 'kgsf-no-mim:~stages.1' --set 'kgsf-no-mim:~model.generator' \
  --set 'kgsf-no-dbpedia:~stages.2' --set 'kgsf-no-dbpedia:~model.generator' \
  --out benchmarks/results/quality-inspired-ablations.json

# ReDial: batch 256 (lr 0.002) for the rec stages, since each step runs the R-GCN over all 64k entities
python benchmarks/bench_quality.py --corpus redial --systems popularity kgsf kgsf-no-mim kgsf-no-dbpedia \
  --set kgsf:stages.0.epochs=1 --set kgsf:stages.1.epochs=6 --set kgsf:stages.1.batch_size=256 \
  --set kgsf:stages.1.optimizer.lr=0.002 --set kgsf:stages.1.early_stopping.patience=2 --set kgsf:stages.2.epochs=1 \
  --set kgsf-no-mim:stages.0.epochs=6 --set kgsf-no-mim:stages.0.batch_size=256 \
  --set kgsf-no-mim:stages.0.optimizer.lr=0.002 --set kgsf-no-mim:stages.0.early_stopping.patience=2 \
  --set 'kgsf-no-mim:~stages.1' --set 'kgsf-no-mim:~model.generator' \
  --set kgsf-no-dbpedia:stages.0.epochs=1 --set kgsf-no-dbpedia:stages.1.epochs=6 --set kgsf-no-dbpedia:stages.1.batch_size=256 \
  --set kgsf-no-dbpedia:stages.1.optimizer.lr=0.002 --set kgsf-no-dbpedia:stages.1.early_stopping.patience=2 \
  --set 'kgsf-no-dbpedia:~stages.2' --set 'kgsf-no-dbpedia:~model.generator' \
  --out benchmarks/results/quality-redial.json
