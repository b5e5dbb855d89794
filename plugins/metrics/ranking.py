"""Recommendation metrics: Recall@k, MRR@k and NDCG@k for one target item per sample.

Fed by the evaluator with ``update(scores (B, n_items), targets (B,))`` where the
protocol's excluded candidates already hold ``-inf``.  Ranks and gains follow
:mod:`crs.evaluation.ranking`: ties never favour the target (each gain is its
average over the positions of the target's tied block, i.e. its expected value
under a random tie-break); an excluded target is a miss.
A cut-off ``k`` larger than the number of candidates simply means every ranked
target counts.  Keys: ``rec.<name>@<k>``, e.g. ``rec.recall@10``.  With no
sample seen, every value is NaN (written as ``null`` in report.json).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from crs.errors import ConfigError
from crs.evaluation.ranking import mrr_gain, ndcg_gain, rank_targets, recall_gain
from crs.interfaces import BuildDeps, Metric


@dataclass
class CutoffConfig:
    ks: list[int] = field(default_factory=lambda: [1, 10, 50])  # cut-offs, each >= 1


def positive_ints(values: list, path: str, example: str) -> list[int]:
    """``values`` sorted and de-duplicated; a ConfigError at ``path`` unless all are integers >= 1."""
    values = list(values)
    if not values or any(not isinstance(v, int) or isinstance(v, bool) or v < 1 for v in values):
        raise ConfigError(path, f"expected a non-empty list of integers >= 1, got {values}", example)
    return sorted(set(values))


class RankMetric(Metric):
    """Averages a per-sample gain of the target's rank over all samples, per cut-off."""

    task = "rec"
    Config = CutoffConfig
    name: ClassVar[str] = ""

    def __init__(self, config: CutoffConfig, deps: BuildDeps):
        super().__init__(config, deps)
        self.ks = positive_ints(config.ks, f"{deps.path}.ks", "e.g. `ks: [1, 10, 50]`")
        self.reset()

    def reset(self) -> None:
        self._sums = {k: 0.0 for k in self.ks}
        self._count = 0

    def update(self, scores: torch.Tensor, targets: torch.Tensor) -> None:
        ranks, ties = rank_targets(scores, targets)
        for k in self.ks:
            self._sums[k] += float(self.gain(ranks, k, ties).sum())
        self._count += int(ranks.numel())

    def compute(self) -> dict[str, float]:
        return {f"rec.{self.name}@{k}": (self._sums[k] / self._count if self._count else float("nan"))
                for k in self.ks}

    @staticmethod
    def gain(ranks: torch.Tensor, k: int, ties: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """Per-sample value in [0, 1] given 1-based mid ranks (``inf`` = not ranked) and tie counts."""
        raise NotImplementedError


class Recall(RankMetric):
    """Recall@k (= hit rate, one relevant item): 1 if the target's rank <= k, else 0."""

    name = "recall"

    gain = staticmethod(recall_gain)


class MRR(RankMetric):
    """MRR@k: 1 / rank when the target's rank <= k, else 0."""

    name = "mrr"

    gain = staticmethod(mrr_gain)


class NDCG(RankMetric):
    """NDCG@k with a single relevant item: 1 / log2(rank + 1) when rank <= k, else 0 (ideal DCG = 1)."""

    name = "ndcg"

    gain = staticmethod(ndcg_gain)
