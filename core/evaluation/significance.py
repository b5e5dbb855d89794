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
recall@k gains, which are frequent, do not inflate p).  A p-value of 0 only says that
no resample crossed zero, so it prints as ``p < 1/resamples`` (``< 1e-4`` by default).

Samples that only one run ranked cannot be paired and are dropped.  :class:`Matching`
counts them per protocol; ``crs compare`` always prints how many were matched, how many
were dropped from each run when any were, and a warning when a run lost more than a
few: more than :data:`FEW_SAMPLES` samples or more than :data:`FEW_SHARE` of its own.
Two runs of the same corpus and split normally match exactly; a few drops can come from
a protocol that filters on model-independent data that differs slightly (another
corpus version), more mean the comparison is not over the same test set.

Per-sample gains come from :mod:`.ranking` (the metric plugins' own functions) applied to
each record's ``rank`` and ``ties``: ties never favour the target.  A ``rankings.jsonl``
written before ``ties`` existed has optimistic integer ranks; it is read with 0 ties.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from ..errors import DataError
from .ranking import GAINS
from .report import RANKINGS_NAME

METRICS = tuple(GAINS)
SampleKey = tuple[str, int, str]  # conv_id, turn, target
Ranked = tuple[float, float]  # (mid rank, ties); a miss is (inf, 0)
FEW_SAMPLES = 5  # a run may lose up to this many unmatched samples per protocol without a warning ...
FEW_SHARE = 0.01  # ... and up to this share of its samples


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
    resamples: int = 0  # how many bootstrap resamples p comes from (0: unknown)

    @property
    def diff(self) -> float:
        return self.a - self.b


@dataclass(frozen=True)
class Matching:
    """How the two runs' samples of one protocol paired up."""

    protocol: str
    matched: int
    only_a: int  # samples A ranked that B did not: dropped from A
    only_b: int

    def dropped_too_many(self) -> list[str]:
        """``"A"``/``"B"`` for each run that lost more than a few samples (see the module doc)."""
        out = []
        for label, dropped in (("A", self.only_a), ("B", self.only_b)):
            total = self.matched + dropped
            if dropped > FEW_SAMPLES or (total and dropped / total > FEW_SHARE):
                out.append(label)
        return out


def load_rankings(run_dir: str | Path) -> dict[str, dict[SampleKey, Ranked]]:
    """``{protocol: {(conv_id, turn, target): (rank, ties)}}`` from a run's ``rankings.jsonl`` (a miss is inf)."""
    path = Path(run_dir) / RANKINGS_NAME
    if not path.is_file():
        raise DataError(str(path), "no per-sample rankings in this run folder",
                        "point at the run_dir of a finished `crs run` (it writes rankings.jsonl next to "
                        "report.json); rerun older runs to get one")
    rankings: dict[str, dict[SampleKey, Ranked]] = {}
    with open(path, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                key = (str(record["conv_id"]), int(record["turn"]), str(record["target"]))
                rank = float("inf") if record["rank"] is None else float(record["rank"])
                ties = 0.0 if record["rank"] is None else float(record.get("ties") or 0)
                protocol = str(record["protocol"])
                if not (rank >= 1 and ties >= 0):  # also catches NaN
                    raise ValueError(f"rank {record['rank']!r} / ties {record.get('ties')!r} out of range")
            except (ValueError, KeyError, TypeError, AttributeError) as err:
                raise DataError(str(path), f"malformed ranking record ({err})",
                                "the file is written by `crs run`; rerun the evaluation to rewrite it",
                                line=line_no) from None
            rankings.setdefault(protocol, {})[key] = (rank, ties)
    return rankings


def gains(ranks: np.ndarray, metric: str, ties: np.ndarray | None = None) -> np.ndarray:
    """Per-sample gain of ``NAME@k`` (NAME in :data:`METRICS`), as the metric plugins define it."""
    name, _, cutoff = metric.partition("@")
    if name not in GAINS or not cutoff.isdigit():
        raise ValueError(f"unknown metric '{metric}': use NAME@k with NAME one of {', '.join(METRICS)}")
    tie_counts = None if ties is None else torch.as_tensor(ties, dtype=torch.float64)
    return GAINS[name](torch.as_tensor(ranks, dtype=torch.float64), int(cutoff), tie_counts).numpy()


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
                 seed: int = 0, level: float = 0.95, matchings: list[Matching] | None = None) -> list[Comparison]:
    """One :class:`Comparison` per shared protocol and metric, over the samples both runs ranked.

    :param matchings: when given, one :class:`Matching` per compared protocol is appended to it.
    """
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
            raise DataError(f"{run_a}, {run_b}", f"the two runs share no sample under {protocol} (A ranked "
                            f"{len(a_all[protocol])}, B {len(b_all[protocol])}; samples pair by conv_id, turn "
                            "and target)", "compare runs evaluated on the same corpus and split")
        if matchings is not None:
            matchings.append(Matching(protocol, len(keys), len(a_all[protocol]) - len(keys),
                                      len(b_all[protocol]) - len(keys)))
        ranks_a, ties_a = np.array([a_all[protocol][k] for k in keys]).T
        ranks_b, ties_b = np.array([b_all[protocol][k] for k in keys]).T
        for metric in metrics:
            ga, gb = gains(ranks_a, metric, ties_a), gains(ranks_b, metric, ties_b)
            low, high, p = paired_bootstrap(ga, gb, resamples=resamples, seed=seed, level=level)
            out.append(Comparison(protocol, metric, len(keys), float(ga.mean()), float(gb.mean()), low, high, p,
                                  resamples))
    return out


def format_comparisons(rows: list[Comparison], label_a: str, label_b: str, level: float = 0.95) -> str:
    """A plain-text table, one row per protocol and metric."""
    ci = f"{int(round(level * 100))}% CI"
    lines = [f"A = {label_a}", f"B = {label_b}",
             f"{'protocol':<16}{'metric':<12}{'n':>6}{'A':>8}{'B':>8}{'A-B':>8}   {ci:<18}{'p':>7}"]
    for r in rows:
        lines.append(f"{r.protocol:<16}{r.metric:<12}{r.samples:>6}{r.a:>8.3f}{r.b:>8.3f}{r.diff:>+8.3f}   "
                     f"[{r.low:+.3f}, {r.high:+.3f}]{'':<3}{format_p(r.p_value, r.resamples):>7}")
    return "\n".join(lines)


def format_p(p: float, resamples: int = 0) -> str:
    """``0.042``; below 0.001 one significant digit (``2e-4``); 0 as ``< 1/resamples`` (``< 1e-4``).

    A bootstrap p of 0 means that no resample crossed zero, not that p is 0; ``0.000`` would
    read as a measured value.
    """
    if p >= 0.001:
        return f"{p:.3f}"
    if p > 0:
        return _short_e(p)
    return f"< {_short_e(1.0 / resamples)}" if resamples > 0 else "< 0.001"


def _short_e(value: float) -> str:
    mantissa, _, exponent = f"{value:.0e}".partition("e")
    return f"{mantissa}e{int(exponent)}"  # 1e-4 rather than 1e-04


def format_matching(matchings: list[Matching], label_a: str, label_b: str) -> tuple[list[str], list[str]]:
    """(information lines, warning lines) about matched and dropped samples, one protocol per line."""
    info: list[str] = []
    warnings: list[str] = []
    for m in matchings:
        line = f"{m.protocol}: {m.matched} samples matched"
        if m.only_a or m.only_b:
            line += (f"; dropped as unmatched: {m.only_a} of A's {m.matched + m.only_a}, "
                     f"{m.only_b} of B's {m.matched + m.only_b}")
        info.append(line)
        for label in m.dropped_too_many():
            dropped = m.only_a if label == "A" else m.only_b
            total = m.matched + dropped
            run = label_a if label == "A" else label_b
            warnings.append(f"warning: {m.protocol}: {dropped} of {total} samples ({dropped / total:.1%}) of "
                            f"{label} ({run}) have no counterpart in the other run and are left out, more than "
                            f"a few (> {FEW_SAMPLES} or > {FEW_SHARE:.0%}); the runs were probably not evaluated "
                            "on the same corpus, split or protocol settings")
    return info, warnings
