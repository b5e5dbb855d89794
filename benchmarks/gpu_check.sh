#!/usr/bin/env bash
# GPU check (issue 12): the KGSF ReDial benchmark and the MESE full preset on one CUDA GPU; their figures
# (GPU named) go to OUT/gpu-check.json, which BENCHMARKS.md quotes.
#
# usage: bash benchmarks/gpu_check.sh [OUT]          (default OUT: runs/gpu-check)
#
# The GPU machine reaches no package registry, so everything must travel with the checkout:
#   - Python with a CUDA build of torch, DGL for that CUDA, and crs's own dependencies (plus transformers
#     and, for a .gguf model, the `gguf` package, for MESE).  Either a virtual environment built on an x86-64
#     Linux machine with the same Python version (CRS_PYTHON=/path/to/venv/bin/python), or a folder of wheels
#     (CRS_WHEELS=wheels/): the script then makes .venv-gpu from them with `pip install --no-index`.
#     The project's .venv is a CPU-only torch: the check below refuses it with this message.
#   - The ReDial data (about 17 MB): ../shared/data does not travel.  Copy it into a folder of the checkout
#     that .git/info/exclude ignores (never commit it) and set CRS_SHARED_DATA to that folder.
#   - MESE's pretrained language models: the folders (or the .gguf file) its preset's `source:` keys name,
#     inside the checkout the same way; transformers runs offline (HF_HUB_OFFLINE=1 below).
#
# Settings (environment): PRECISION (fp32, default, comparable with the CPU figures; or bf16), MESE_PRESET
# (default mese), SKIP_MESE=1, SKIP_KGSF=1.  A failed run is recorded as failed with the end of its log;
# the script goes on to the next and exits 1 at the end if any failed.
set -uo pipefail
cd "$(dirname "$0")/.."

OUT="${1:-runs/gpu-check}"
PRECISION="${PRECISION:-fp32}"
MESE_PRESET="${MESE_PRESET:-mese}"
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1

# ---- the Python that runs crs
if [[ -n "${CRS_WHEELS:-}" ]]; then
  if [[ ! -x .venv-gpu/bin/python ]]; then
    python3 -m venv .venv-gpu || { echo "error: cannot create .venv-gpu (python3 -m venv)" >&2; exit 2; }
    .venv-gpu/bin/pip install --no-index --find-links "$CRS_WHEELS" -e ".[mese]" ||
      .venv-gpu/bin/pip install --no-index --find-links "$CRS_WHEELS" -e . ||
      { echo "error: the wheels in $CRS_WHEELS do not cover crs's dependencies (pip output above)" >&2; exit 2; }
  fi
  PY=.venv-gpu/bin/python
else
  PY="${CRS_PYTHON:-.venv/bin/python}"
fi
if ! "$PY" - <<'EOF'
import sys
import torch
if torch.version.cuda is None:
    sys.exit(f"error: {sys.executable} has torch {torch.__version__}, a CPU-only build\n"
             "  fix: carry a venv with a CUDA torch (CRS_PYTHON=...) or a folder of wheels (CRS_WHEELS=...)")
if not torch.cuda.is_available():
    sys.exit("error: torch sees no GPU (no driver, or CUDA_VISIBLE_DEVICES hides it)")
print(f"[gpu-check] {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
EOF
then
  exit 2
fi

FAILED=0
run() {  # run NAME ARGS...: one `crs run` into OUT/NAME, its log in OUT/NAME.log, wall time in OUT/NAME.wall
  local name="$1"; shift
  local started=$SECONDS
  echo "[gpu-check] $name: crs run $*"
  if "$PY" -m crs.cli run "$@" --run-dir "$OUT/$name" --overwrite --no-progress >"$OUT/$name.log" 2>&1; then
    echo "ok" >"$OUT/$name.status"
  else
    echo "failed" >"$OUT/$name.status"; FAILED=1
    echo "[gpu-check] $name failed; the end of its log:"; tail -n 15 "$OUT/$name.log"
  fi
  echo $((SECONDS - started)) >"$OUT/$name.wall"
}

# ---- KGSF on ReDial: the CPU benchmark's settings (benchmarks/run_quality.sh, redial), on the GPU
if [[ "${SKIP_KGSF:-0}" != 1 ]]; then
  run kgsf-redial benchmarks/configs/redial.yaml preset=kgsf device=cuda \
    stages.0.epochs=1 stages.1.epochs=6 stages.1.batch_size=256 stages.1.optimizer.lr=0.002 \
    stages.1.early_stopping.patience=2 stages.2.epochs=1 \
    stages.0.precision="$PRECISION" stages.1.precision="$PRECISION" stages.2.precision="$PRECISION"
fi

# ---- MESE, full preset (written by other engineers: refused cleanly while the preset does not exist)
if [[ "${SKIP_MESE:-0}" != 1 ]]; then
  if "$PY" -m crs.cli run "preset=$MESE_PRESET" data=redial --print-config >/dev/null 2>"$OUT/mese-check.log"; then
    run mese-full "preset=$MESE_PRESET" data=redial device=cuda
  else
    echo "[gpu-check] preset '$MESE_PRESET' is not available here (yet): skipped; $(head -c 300 "$OUT/mese-check.log")"
    echo "skipped: preset '$MESE_PRESET' not available" >"$OUT/mese-full.status"
  fi
fi

# ---- the figures: per run, status, wall time, metrics, samples/s and epoch time per stage
"$PY" - "$OUT" "$PRECISION" <<'EOF'
import json, sys
from pathlib import Path

import torch

out, precision = Path(sys.argv[1]), sys.argv[2]
figures = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "cuda": torch.version.cuda,
           "precision": precision, "runs": {}}
for name in ("kgsf-redial", "mese-full"):
    status = out / f"{name}.status"
    if not status.exists():
        continue
    entry = {"status": status.read_text().strip()}
    wall = out / f"{name}.wall"
    if wall.exists() and wall.read_text().strip():
        entry["wall_s"] = round(float(wall.read_text()), 1)
    report = out / name / "report.json"
    if report.exists():
        data = json.loads(report.read_text())
        entry["metrics"] = data["metrics"]
        training = data["extra"].get("training", {})
        entry["training"] = {stage: {**t, "epoch_s": round(t["train_s"] / t["epochs"], 2) if t.get("epochs") else None}
                             for stage, t in training.items()}
        entry["timings_s"] = data["extra"].get("timings_s")
    figures["runs"][name] = entry
cpu = Path("benchmarks/results/quality-redial.json")  # the same KGSF run on this project's 2-core CPU machine
if cpu.exists():
    for result in json.loads(cpu.read_text())["results"]:
        if result["system"] == "kgsf":
            figures["cpu_reference"] = {"source": str(cpu), "training": result["report"]["extra"]["training"]}
gpu_rec = figures["runs"].get("kgsf-redial", {}).get("training", {}).get("rec", {}).get("samples_per_s")
cpu_rec = figures.get("cpu_reference", {}).get("training", {}).get("rec", {}).get("samples_per_s")
if gpu_rec and cpu_rec:
    figures["kgsf_rec_speedup_vs_cpu"] = round(gpu_rec / cpu_rec, 2)
(out / "gpu-check.json").write_text(json.dumps(figures, indent=1))
print(json.dumps({k: v for k, v in figures.items() if k != "runs"}, indent=1))
for name, entry in figures["runs"].items():
    stages = {s: (t.get("samples_per_s"), t.get("epoch_s")) for s, t in entry.get("training", {}).items()}
    print(f"[gpu-check] {name}: {entry['status']}, wall {entry.get('wall_s')} s, (samples/s, s/epoch) {stages}")
print(f"[gpu-check] figures: {out / 'gpu-check.json'}")
EOF
exit $FAILED
