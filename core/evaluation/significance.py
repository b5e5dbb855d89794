"""Is run A really better than run B?  A paired bootstrap over their per-sample ranks.

With a few hundred test samples (INSPIRED has 252) two systems' Recall@10 can differ by
0.03 by chance alone.  Both runs write ``rankings.jsonl`` (see :mod:`.report`); the
samples are paired by ``(protocol, conv_id, turn, target)`` and the per-sample gain
(the metric plugins' own: hit@k for recall, 1/rank for MRR, 1/log2(rank + 1) for NDCG)
is resampled with replacement, the same indices for both runs, so that the spread
reflects only which samples happened to be drawn.

For each protocol and metric the result gives both means, their difference, a
percentile confidence interval of the difference and a two-sided bootstrap p-value
(twice the share of resampled differences on the far side of zero, at most 1; a
difference of exactly zero counts half to each side, so that ties between two
recall@k gains, which are frequent, do not inflate p).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from ..errors import DataError
import torch

from .ranking import GAINS
from .report import RANKINGS_NAME

METRICS = tuple(GAINS)
SampleKey = tuple[str, int, str]  # conv_id, turn, target


@dataclass(frozen=True)
class Comparison:
    protocol: str
    metric: str  # e.g. "recall@10"
    samples: int
    a: float
    b: float
    low: float  # confidence interval of a - b
    high: float
    p_value: float

    @property
    def diff(self) -> float:
        return self.a - self.b


def load_rankings(run_dir: str | Path) -> dict[str, dict[SampleKey, float]]:
    """``{protocol: {(conv_id, turn, target): rank}}`` from a run's ``rankings.jsonl`` (a miss is inf)."""
    path = Path(run_dir) / RANKINGS_NAME
    if not path.is_file():
        raise DataError(str(path), "no per-sample rankings in this run folder",
                        "point at the run_dir of a finished `crs run` (it writes rankings.jsonl next to "
                        "report.json); rerun older runs to get one")
    rankings: dict[str, dict[SampleKey, float]] = {}
    with open(path, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                key = (str(record["conv_id"]), int(record["turn"]), str(record["target"]))
                rank = float("inf") if record["rank"] is None else float(record["rank"])
                protocol = str(record["protocol"])
            except (ValueError, KeyError, TypeError) as err:
                raise DataError(str(path), f"malformed ranking record ({err})",
                                "the file is written by `crs run`; rerun the evaluation to rewrite it",
                                line=line_no) from None
            rankings.setdefault(protocol, {})[key] = rank
    return rankings


def gains(ranks: np.ndarray, metric: str) -> np.ndarray:
    """Per-sample gain of ``NAME@k`` (NAME in :data:`METRICS`), as the metric plugins define it."""
    name, _, cutoff = metric.partition("@")
    if name not in GAINS or not cutoff.isdigit():
        raise ValueError(f"unknown metric '{metric}': use NAME@k with NAME one of {', '.join(METRICS)}")
    return GAINS[name](torch.as_tensor(ranks, dtype=torch.float64), int(cutoff)).numpy()


def paired_bootstrap(a: np.ndarray, b: np.ndarray, *, resamples: int = 10_000, seed: int = 0,
                     level: float = 0.95) -> tuple[float, float, float]:
    """(low, high, p) for mean(a) - mean(b), resampling sample indices jointly for a and b."""
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError("a and b must be non-empty 1-D arrays of the same length")
    rng = np.random.default_rng(seed)
    diffs = np.empty(resamples)
    per_sample = a - b
    for start in range(0, resamples, 1000):  # chunks keep memory flat for large test splits
        stop = min(start + 1000, resamples)
        idx = rng.integers(0, len(a), size=(stop - start, len(a)))
        diffs[start:stop] = per_sample[idx].mean(axis=1)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(diffs, [tail, 1.0 - tail])
    zero = float((diffs == 0).mean()) / 2.0
    p = min(1.0, 2.0 * min(float((diffs < 0).mean()) + zero, float((diffs > 0).mean()) + zero))
    return float(low), float(high), p


def compare_runs(run_a: str | Path, run_b: str | Path, *, metrics: Iterable[str] = ("recall@1", "recall@10",
                 "recall@50"), protocols: Iterable[str] | None = None, resamples: int = 10_000,
                 seed: int = 0, level: float = 0.95) -> list[Comparison]:
    """One :class:`Comparison` per shared protocol and metric, over the samples both runs ranked."""
    a_all, b_all = load_rankings(run_a), load_rankings(run_b)
    shared = [p for p in a_all if p in b_all]
    wanted = list(protocols) if protocols is not None else shared
    missing = [p for p in wanted if p not in shared]
    if missing or not wanted:
        raise DataError(f"{run_a}, {run_b}", f"protocol(s) {', '.join(missing) or '(none)'} not ranked in "
                        f"both runs (shared: {', '.join(shared) or 'none'})",
                        "compare runs evaluated under the same protocols, or pass --protocol")
    out = []
    for protocol in wanted:
        keys = sorted(set(a_all[protocol]) & set(b_all[protocol]))
        if not keys:
            raise DataError(f"{run_a}, {run_b}", f"the two runs share no sample under {protocol}",
                            "compare runs evaluated on the same corpus and split")
        ranks_a = np.array([a_all[protocol][k] for k in keys])
        ranks_b = np.array([b_all[protocol][k] for k in keys])
        for metric in metrics:
            ga, gb = gains(ranks_a, metric), gains(ranks_b, metric)
            low, high, p = paired_bootstrap(ga, gb, resamples=resamples, seed=seed, level=level)
            out.append(Comparison(protocol, metric, len(keys), float(ga.mean()), float(gb.mean()), low, high, p))
    return out


def format_comparisons(rows: list[Comparison], label_a: str, label_b: str, level: float = 0.95) -> str:
    """A plain-text table, one row per protocol and metric."""
    ci = f"{int(round(level * 100))}% CI"
    lines = [f"A = {label_a}", f"B = {label_b}",
             f"{'protocol':<16}{'metric':<12}{'n':>6}{'A':>8}{'B':>8}{'A-B':>8}   {ci:<18}{'p':>7}"]
    for r in rows:
        lines.append(f"{r.protocol:<16}{r.metric:<12}{r.samples:>6}{r.a:>8.3f}{r.b:>8.3f}{r.diff:>+8.3f}   "
                     f"[{r.low:+.3f}, {r.high:+.3f}]{'':<3}{r.p_value:>7.3f}")
    return "\n".join(lines)
