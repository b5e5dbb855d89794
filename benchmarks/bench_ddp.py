"""DDP scaling: samples/s of KGSF's rec stage on the demo corpus with 1 and 2 CPU processes, against the ideal.

    python benchmarks/bench_ddp.py [--epochs 2] [--rounds 1] [--json out.json]

Each configuration is a whole ``crs run`` (the figure is the rec stage's own ``samples_per_s`` from
report.json: training samples over training seconds, validation and evaluation excluded):

- ``1 process, 1 thread``: the baseline the ideal is computed from (2 processes = 2x it);
- ``1 process, 2 threads``: the same two cores used by intra-op threads instead of processes;
- ``2 processes (torchrun, gloo), 1 thread each``: global batch = the stage's batch_size, half on each rank.

The pretraining stage is skipped (0 epochs), validation is off and the generator is dropped, so the
training loop is what is timed.  On a machine whose cores are shared with other work the figures move
with the load; the machine's load average is printed with them.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_report import finish, summary  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def overrides(epochs: int, threads: int) -> list[str]:
    return ["preset=kgsf", "data=demo", "seed=7", f"threads={threads}", "evaluation.generate=false",
            "~stages.2", "~model.generator", "stages.0.epochs=0", f"stages.1.epochs={epochs}",
            "stages.1.validate=false", "~stages.1.early_stopping", "--no-progress"]


def rec_samples_per_s(command: list[str], run_dir: Path) -> float:
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    done = subprocess.run([*command, f"--run-dir={run_dir}"], cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"benchmark run failed ({' '.join(command)}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    report = json.loads((run_dir / "report.json").read_text())
    return float(report["extra"]["training"]["rec"]["samples_per_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2, help="rec-stage epochs per run")
    parser.add_argument("--rounds", type=int, default=1, help="runs per configuration (median and best kept)")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args()

    single = [sys.executable, "-m", "crs.cli", "run"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                "-m", "crs.cli", "run"]
    configurations = {
        "1 process, 1 thread": single + overrides(args.epochs, 1),
        "1 process, 2 threads": single + overrides(args.epochs, 2),
        "2 processes (gloo), 1 thread each": torchrun + overrides(args.epochs, 1),
    }
    rates: dict[str, list[float]] = {name: [] for name in configurations}
    with tempfile.TemporaryDirectory(prefix="bench-ddp-") as scratch:
        for round_index in range(args.rounds):
            for number, (name, command) in enumerate(configurations.items()):
                rates[name].append(rec_samples_per_s(command, Path(scratch) / f"r{round_index}-{number}"))
    figures = {name: summary(values, best=max) for name, values in rates.items()}
    base = figures["1 process, 1 thread"]["median"]
    ddp = figures["2 processes (gloo), 1 thread each"]["median"]
    result = {"epochs": args.epochs, "rounds": args.rounds, "samples_per_s": figures,
              "ideal_2_processes": 2 * base, "ddp_speedup": ddp / base, "ddp_efficiency": ddp / (2 * base)}
    lines = ["KGSF rec stage on the demo corpus, samples/s (median / best of "
             f"{args.rounds} run{'s' * (args.rounds != 1)}, {args.epochs} epochs each):"]
    lines += [f"  {name:<36} {f['median']:8.1f} / {f['best']:8.1f}" for name, f in figures.items()]
    lines.append(f"  ideal for 2 processes: {2 * base:.1f}; DDP speed-up {ddp / base:.2f}x "
                 f"({100 * ddp / (2 * base):.0f}% of ideal)")
    finish(result, lines, args.json)


if __name__ == "__main__":
    main()
