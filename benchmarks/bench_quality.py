"""Quality benchmark: train and evaluate several systems on one corpus, one after another.

Each system is a registry.yaml preset run through the normal CLI in its own process
(so peak memory is per run), on top of ``benchmarks/configs/<corpus>.yaml``:

    python benchmarks/bench_quality.py --corpus inspired \
        --systems popularity kgsf kgsf-no-mim kgsf-no-dbpedia \
        --set kgsf:stages.2.epochs=2 --out benchmarks/results/quality-inspired.json

``--set SYSTEM:KEY=VALUE`` (or ``--set KEY=VALUE`` for every system) passes config
overrides, so every figure can be reproduced from the command recorded with it.
``--compare-to SYSTEM`` adds a paired bootstrap (``crs compare``) of every other system
against that one on the same test samples.  The result JSON keeps each run's full
report (and the comparisons); Markdown tables are printed.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = [
    ("R@1", "rec.recall@1"), ("R@10", "rec.recall@10"), ("R@50", "rec.recall@50"),
    ("MRR@10", "rec.mrr@10"), ("NDCG@10", "rec.ndcg@10"),
    ("Dist-2", "gen.dist-2/sentences"), ("Dist-3", "gen.dist-3/sentences"), ("Dist-4", "gen.dist-4/sentences"),
    ("BLEU-2", "gen.bleu-2"), ("F1", "gen.f1"), ("PPL", "gen.ppl"),
]


def overrides_for(system: str, sets: list[str]) -> list[str]:
    out = []
    for item in sets:
        head, sep, rest = item.partition(":")
        if sep and "=" not in head:  # SYSTEM:KEY=VALUE
            if head == system:
                out.append(rest)
        else:
            out.append(item)
    return out


def run_system(corpus: str, system: str, sets: list[str], run_root: Path) -> dict:
    run_dir = run_root / f"{corpus}-{system}"
    cmd = [sys.executable, "-m", "crs.cli", "run", str(ROOT / "benchmarks" / "configs" / f"{corpus}.yaml"),
           f"preset={system}", f"run_dir={run_dir}", "--no-progress", *overrides_for(system, sets)]
    print("$", " ".join(cmd[2:]), flush=True)
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, text=True, capture_output=True)
    wall = time.perf_counter() - started
    (run_root / f"{corpus}-{system}.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        print(proc.stdout[-2000:], proc.stderr[-4000:], file=sys.stderr)
        return {"system": system, "command": cmd[2:], "error": proc.returncode, "wall_s": wall}
    report = json.loads((run_dir / "report.json").read_text())
    # the example replies quote corpus text, which must not be copied into the repository's result files
    report.get("extra", {}).pop("examples", None)
    return {"system": system, "command": cmd[2:], "wall_s": round(wall, 1), "report": report}


def fmt(value) -> str:
    if value is None:
        return "–"
    return f"{value:.3f}" if abs(value) < 100 else f"{value:.0f}"


def table(results: list[dict]) -> str:
    head = ["system", "protocol", *[c for c, _ in COLUMNS], "train s", "samples/s (rec)", "peak MB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for res in results:
        if "report" not in res:
            lines.append(f"| {res['system']} | failed (exit {res['error']}) |")
            continue
        rep = res["report"]
        extra = rep.get("extra", {})
        rec = extra.get("training", {}).get("rec", {})
        for protocol, metrics in rep["metrics"].items():
            row = [res["system"], protocol, *[fmt(metrics.get(key)) for _, key in COLUMNS],
                   fmt(extra.get("timings_s", {}).get("train")), fmt(rec.get("samples_per_s")),
                   fmt(extra.get("peak_rss_mb"))]
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def comparisons(results: list[dict], baseline: str, run_root: Path, corpus: str) -> list[dict]:
    from crs.evaluation.significance import compare_runs

    rows = []
    for res in results:
        if res["system"] == baseline or "report" not in res:
            continue
        for row in compare_runs(run_root / f"{corpus}-{res['system']}", run_root / f"{corpus}-{baseline}",
                                metrics=["recall@1", "recall@10", "recall@50", "mrr@10"]):
            rows.append({"system": res["system"], "baseline": baseline, "protocol": row.protocol,
                         "metric": row.metric, "samples": row.samples, "system_value": row.a,
                         "baseline_value": row.b, "diff": row.diff, "ci95": [row.low, row.high], "p": row.p_value})
    return rows


def comparison_table(rows: list[dict]) -> str:
    lines = ["| system | vs | protocol | metric | n | system | baseline | diff | 95% CI | p |", "|" + "---|" * 10]
    for r in rows:
        lines.append(f"| {r['system']} | {r['baseline']} | {r['protocol']} | {r['metric']} | {r['samples']} | "
                     f"{r['system_value']:.3f} | {r['baseline_value']:.3f} | {r['diff']:+.3f} | "
                     f"[{r['ci95'][0]:+.3f}, {r['ci95'][1]:+.3f}] | {r['p']:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", required=True, help="a config in benchmarks/configs (inspired, redial)")
    parser.add_argument("--systems", nargs="+", required=True, help="registry.yaml presets")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="[SYSTEM:]KEY=VALUE")
    parser.add_argument("--run-root", default="runs/bench")
    parser.add_argument("--out", required=True, help="result JSON")
    parser.add_argument("--compare-to", default=None, metavar="SYSTEM",
                        help="paired bootstrap of each system against this one (one of --systems)")
    args = parser.parse_args(argv)
    if args.compare_to and args.compare_to not in args.systems:
        parser.error(f"--compare-to {args.compare_to} is not one of --systems")
    run_root = (ROOT / args.run_root).resolve()
    run_root.mkdir(parents=True, exist_ok=True)
    results = []
    for system in args.systems:
        results.append(run_system(args.corpus, system, args.sets, run_root))
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"corpus": args.corpus, "argv": sys.argv, "results": results}, indent=1))
    print(table(results))
    if args.compare_to and all("report" in r for r in results):
        rows = comparisons(results, args.compare_to, run_root, args.corpus)
        out.write_text(json.dumps({"corpus": args.corpus, "argv": sys.argv, "results": results,
                                   "comparisons": rows}, indent=1))
        print(comparison_table(rows))
    return 0 if all("report" in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
