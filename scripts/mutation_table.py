"""The per-file kill-rate table of TESTING.md, from a mutmut run in .mutation/ (see TESTING.md).

    cd .mutation && ../.venv/bin/mutmut results --all true > ../mutants.txt && cd .. \
        && python scripts/mutation_table.py mutants.txt core/evaluation/evaluator.py plugins/kgsf core/training

Each argument after the results file is a source file or folder (as in the repository, core/ = crs,
plugins/ = crs.plugins); a row per file.  Mutants mutmut has not run yet ("not checked") are counted apart
and left out of the kill rate, as are mutants no selected test reaches ("no tests"), which count as
survivors: mutmut reports them separately, but no test would notice them either.
"""
from __future__ import annotations

import sys
from collections import Counter, defaultdict
from pathlib import Path


def module_of(mutant: str) -> str:
    """``crs.training.loop.xǁEpochLoopǁbatches__mutmut_3`` -> ``crs.training.loop``."""
    return mutant.split(".x", 1)[0]


def file_of(module: str) -> str:
    """``crs.plugins.kgsf.rgcn`` -> ``plugins/kgsf/rgcn.py``; ``crs.training.loop`` -> ``core/training/loop.py``."""
    parts = module.split(".")
    root = ["plugins"] if parts[1:2] == ["plugins"] else ["core"]
    rest = parts[2:] if root == ["plugins"] else parts[1:]
    return "/".join(root + rest) + ".py"


def read(path: Path) -> dict[str, Counter]:
    counts: dict[str, Counter] = defaultdict(Counter)
    for line in path.read_text(encoding="utf-8").splitlines():
        if ": " not in line:
            continue
        name, status = line.strip().rsplit(": ", 1)
        counts[file_of(module_of(name))][status] += 1
    return counts


def row(label: str, c: Counter) -> str:
    """One table row; "killed" includes timeouts, the kill rate leaves out mutants not run yet."""
    killed = c["killed"] + c["timeout"]
    run = killed + c["survived"] + c["no tests"]
    rate = f"{100 * killed / run:.1f}%" if run else "-"
    cells = [f"{sum(c.values()):,}", f"{killed:,}", f"{c['survived']:,}", f"{c['no tests']:,}",
             f"{c['not checked']:,}", rate]
    if label.startswith("**"):
        cells = [f"**{cell}**" for cell in cells]
    return f"| {label} | " + " | ".join(cells) + " |"


def main(argv: list[str]) -> int:
    results, wanted = Path(argv[0]), argv[1:]
    counts = read(results)
    rows = sorted(f for f in counts if not wanted or any(f == w or f.startswith(w.rstrip("/") + "/") for w in wanted))
    print("| file | mutants | killed | survived | no tests | not run | kill rate |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    total: Counter = Counter()
    for name in rows:
        print(row(name, counts[name]))
        total.update(counts[name])
    print(row("**total**", total))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
