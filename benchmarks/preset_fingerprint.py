"""Do two revisions give the same results? Every registry preset, short runs on the demo corpus.

    python benchmarks/preset_fingerprint.py BASE_REV [NEW_REV] [--out DIR]

For each revision (NEW_REV defaults to the working tree), each preset of its
registry.yaml is trained for one epoch per stage on 150 demo conversations (seed 3)
and evaluated with 40 generated replies; the script then compares, preset by preset,
report metrics, per-sample rankings (fields both revisions write) and the training
history, bit for bit.  A refactoring of the core should print "identical" everywhere;
anything else names what moved.  Revisions run from `git worktree` checkouts, with
`crs` and `crs.plugins` imported from each checkout, so one virtual environment serves both;
the worktrees are removed at the end (the outputs under --out stay).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SHORT = ["data=demo", "seed=3", "samples.max_train_conversations=150", "evaluation.max_samples=40",
         "evaluation.max_gen_tokens=12"]
# Runs `crs run` with crs <- CHECKOUT/core and crs.plugins <- CHECKOUT/plugins.
LAUNCHER = """
import importlib.util, sys
root = sys.argv[1]
for name, folder in (("crs", "core"), ("crs.plugins", "plugins")):
    spec = importlib.util.spec_from_file_location(name, f"{root}/{folder}/__init__.py",
                                                  submodule_search_locations=[f"{root}/{folder}"])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
from crs.cli import main
sys.exit(main(sys.argv[2:]))
"""


def checkout(rev: str | None, where: Path) -> Path:
    if rev is None:
        return ROOT
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-f", str(where), rev], check=True,
                   capture_output=True)
    return where


def remove_worktree(where: Path) -> None:
    """Undo :func:`checkout` (git would otherwise keep listing the worktree after --out is deleted)."""
    subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(where)], capture_output=True)


def run_presets(tree: Path, out: Path) -> list[str]:
    presets = yaml.safe_load((tree / "registry.yaml").read_text())["presets"]
    for preset, node in presets.items():
        stages = node.get("stages", [])
        args = [f"preset={preset}", *SHORT, *(f"stages.{i}.epochs=1" for i in range(len(stages)))]
        log = out / f"{preset}.log"
        with log.open("w") as handle:
            code = subprocess.run([sys.executable, "-c", LAUNCHER, str(tree), "run", *args,
                                   "--run-dir", str(out / preset), "--no-progress"],
                                  cwd=tree, stdout=handle, stderr=subprocess.STDOUT).returncode
        print(f"  {preset}: exit {code}", flush=True)
    return list(presets)


def _rankings(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def compare(preset: str, old: Path, new: Path) -> str:
    try:
        metrics = [json.loads((d / preset / "report.json").read_text())["metrics"] for d in (old, new)]
        ranks = [_rankings(d / preset / "rankings.jsonl") for d in (old, new)]
        history = [(d / preset / "history.json").read_text() for d in (old, new)]
    except FileNotFoundError as err:
        return f"missing output ({err.filename})"
    shared = set(ranks[0][0]) & set(ranks[1][0]) if ranks[0] and ranks[1] else set()
    same_ranks = [[{k: r[k] for k in shared} for r in side] for side in ranks]
    parts = [f"metrics {'identical' if metrics[0] == metrics[1] else 'DIFFER'}",
             f"rankings {'identical' if same_ranks[0] == same_ranks[1] else 'DIFFER'} ({len(ranks[0])} records)",
             f"history {'identical' if history[0] == history[1] else 'DIFFER'}"]
    return " | ".join(parts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base")
    parser.add_argument("new", nargs="?", default=None, help="default: the working tree")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="fingerprint-"))
    results = {}
    for label, rev in (("base", args.base), ("new", args.new)):
        print(f"{label}: {rev or 'working tree'}", flush=True)
        tree = checkout(rev, out / f"tree-{label}")
        (out / label).mkdir(parents=True, exist_ok=True)
        try:
            results[label] = run_presets(tree, out / label)
        finally:
            if tree != ROOT:
                remove_worktree(tree)
    for preset in results["base"]:
        verdict = compare(preset, out / "base", out / "new") if preset in results["new"] else "absent in new"
        print(f"{preset}: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
