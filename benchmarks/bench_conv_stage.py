"""Benchmark: KGSF's conversation stage on the demo corpus, with and without two of its speed-ups.

The README's demo run spends most of its time in the conversation stage (5 epochs of the KGSF
decoder). This script measures, in one process and one after the other on the same machine:

- ``dropout``: ``nn.Dropout`` (one Mersenne-Twister draw per element) or ``crs.nn.dropout.Dropout``
  (one 64-bit draw per four elements); chosen by swapping the class the Transformer layers build;
- ``batches``: random batches, or the stage key ``group_by_length: true``.

The third speed-up, the encoder running on packed real tokens (``crs.nn.transformer``), has no
switch: compare against the code before it with the same ``crs run`` command at that revision
(BENCHMARKS.md, section 1, gives both).

Each variant is a whole ``crs run`` of ``examples/kgsf.yaml`` with one MIM and one recommendation
epoch, ``--epochs`` conversation epochs and no generation at evaluation; the figure is the
conversation stage's training seconds per epoch (``report.json``, ``extra.training.conv``), and
its best validation loss shows what the change does to training. ``--rounds`` repeats the variants in turn.

    python benchmarks/bench_conv_stage.py                  # 2 conversation epochs, 1 round
    python benchmarks/bench_conv_stage.py --rounds 2 --json out.json
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import tempfile
from pathlib import Path

import torch
from bench_report import finish  # same folder: run as python benchmarks/bench_conv_stage.py

import crs.nn.transformer as transformer
from crs.nn.dropout import Dropout
from crs.runner import run

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = [("nn.Dropout", False), ("crs Dropout", False), ("nn.Dropout", True), ("crs Dropout", True)]


def one_run(dropout: str, grouped: bool, epochs: int) -> dict:
    """Seconds per conversation epoch and the best validation loss of one variant."""
    transformer.Dropout = torch.nn.Dropout if dropout == "nn.Dropout" else Dropout
    with tempfile.TemporaryDirectory() as folder:
        overrides = ["stages.0.epochs=1", "stages.1.epochs=1", f"stages.2.epochs={epochs}",
                     f"stages.2.group_by_length={str(grouped).lower()}", "evaluation.generate=false",
                     f"run_dir={folder}/run"]
        with contextlib.redirect_stdout(io.StringIO()):
            code = run(str(ROOT / "examples" / "kgsf.yaml"), overrides, progress=False)
        assert code == 0, f"the run failed ({code})"
        report = json.loads((Path(folder) / "run" / "report.json").read_text())
    conv = report["extra"]["training"]["conv"]
    valid = [row["valid"]["loss"] for row in report["extra"]["history"]["conv"] if "valid" in row]
    return {"s_per_epoch": conv["train_s"] / conv["epochs"], "valid_loss": min(valid) if valid else None}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=2, help="conversation epochs per run")
    parser.add_argument("--rounds", type=int, default=1, help="times each variant runs (in turn)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    runs: dict[str, list[dict]] = {}
    for _ in range(max(1, args.rounds)):
        for dropout, grouped in VARIANTS:
            name = f"{dropout}, {'grouped by length' if grouped else 'random batches'}"
            runs.setdefault(name, []).append(one_run(dropout, grouped, args.epochs))
    base = statistics.median(r["s_per_epoch"] for r in runs[next(iter(runs))])
    lines = [f"KGSF conversation stage, demo corpus, {args.epochs} epochs per run, {args.rounds} round(s), "
             f"{torch.get_num_threads()} threads:"]
    result = {"epochs": args.epochs, "rounds": args.rounds, "threads": torch.get_num_threads(), "variants": {}}
    for name, rows in runs.items():
        seconds = statistics.median(r["s_per_epoch"] for r in rows)
        loss = rows[-1]["valid_loss"]
        result["variants"][name] = {"s_per_epoch": [r["s_per_epoch"] for r in rows], "valid_loss": loss}
        lines.append(f"  {name:<38} {seconds:6.1f} s/epoch  x{base / seconds:4.2f}  valid loss {loss:.4f}")
    return finish(result, lines, args.json)


if __name__ == "__main__":
    main()
