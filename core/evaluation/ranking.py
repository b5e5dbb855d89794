"""Ranking arithmetic shared by the recommendation metrics, the evaluator and ``crs compare``.

Conventions (every rec metric and report relies on them):

- ``scores`` is a float tensor (B, n_items); a candidate the protocol excludes
  holds ``-inf`` and is never ranked.
- **Ties never favour the target.**  Let ``better`` be the number of candidates
  scored strictly higher than the target and ``ties`` the number of *other*
  candidates scored exactly as high.  The target's tied block occupies positions
  ``better + 1 .. better + 1 + ties``, and nothing in the scores says where in it
  the target stands.  So:

  - its **rank** is the mid (average) rank of the block,
    ``better + 1 + ties / 2``: the expected position under a random tie-break;
  - each metric's per-sample **gain** (hit@k, 1/rank, 1/log2(rank + 1)) is the
    average of that gain over the block's positions, i.e. its exact expected
    value under a random tie-break (McSherry & Najork, ECIR 2008).

  Why not the optimistic rank (``better + 1``, which this module used before):
  a model that scores every item alike would rank every target first and score
  Recall@1 = 1.  Why not the pessimistic rank (``better + ties + 1``): it scores
  a model below a random tie-break whenever it ties, e.g. popularity on items
  with equal train counts.  Why average the gain rather than apply the cut-off to
  the mid rank: a model that ties everything would still get Recall@k = 1 for
  every k above half the catalogue, where the expectation is k / n.
  With no ties (the usual case for learned float scores) all three agree.
- A target whose own score is ``-inf`` or NaN (it was excluded, or the model
  produced garbage) gets rank ``+inf`` and 0 ties: a miss at every cut-off.
  NaN candidates neither outrank nor tie a target.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import torch

MISS = float("inf")


class TargetRanks(NamedTuple):
    """Per-row rank of the target and the number of other candidates tied with it."""

    ranks: torch.Tensor  # float (B,): mid rank of the tied block, inf for an unrankable target
    ties: torch.Tensor  # float (B,): other candidates with exactly the target's score (0 where unrankable)


def rank_targets(scores: torch.Tensor, targets: torch.Tensor) -> TargetRanks:
    """Mid rank of each row's target among that row's finite-scored candidates, and its tie count.

    :param scores: float (B, n_items); excluded candidates are ``-inf``.
    :param targets: long (B,) item indices in ``[0, n_items)``.
    """
    if scores.dim() != 2:
        raise ValueError(f"scores must be (B, n_items), got shape {tuple(scores.shape)}")
    scores = scores.detach().float()
    targets = targets.detach().to(device=scores.device, dtype=torch.long).view(-1)
    if targets.numel() != scores.shape[0]:
        raise ValueError(f"{targets.numel()} targets for {scores.shape[0]} score rows")
    if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= scores.shape[1]):
        raise ValueError(f"target item index outside [0, {scores.shape[1]})")
    target_scores = scores.gather(1, targets.unsqueeze(1))  # (B, 1)
    # Comparisons with NaN are False, so NaN candidates never push the target down nor tie with it.
    better = (scores > target_scores).sum(dim=1).float()
    ties = (scores == target_scores).sum(dim=1).float() - 1.0  # minus the target itself
    own = target_scores.squeeze(1)
    unrankable = torch.isnan(own) | (own == float("-inf"))
    ranks = torch.where(unrankable, torch.full_like(better, MISS), better + 1.0 + ties / 2.0)
    return TargetRanks(ranks, torch.where(unrankable, torch.zeros_like(ties), ties.clamp(min=0.0)))


def apply_candidate_mask(scores: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """A copy of ``scores`` with ``-inf`` wherever ``mask`` is False (``None``: all allowed)."""
    scores = scores.detach().float()
    if mask is None:
        return scores
    mask = mask.to(device=scores.device, dtype=torch.bool)
    if mask.shape != scores.shape:
        raise ValueError(f"candidate mask shape {tuple(mask.shape)} != scores shape {tuple(scores.shape)}")
    return scores.masked_fill(~mask, float("-inf"))


# Per-sample gains at cut-off k, each in [0, 1], from mid ranks and tie counts (``ties`` None: no ties).
# The metric plugins average them and ``crs compare`` resamples them, so both use these definitions.
def expected_gain(position_gain: Callable[[torch.Tensor], torch.Tensor], ranks: torch.Tensor, k: int,
                  ties: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of ``position_gain(r)`` (0 beyond ``k``) over the tied block's positions r (see the module doc).

    The block of a mid rank ``m`` with ``t`` ties is ``m - t/2 .. m + t/2``; the mean over it is a
    difference of cumulative sums of the gain over positions 1..k, divided by ``t + 1``.
    """
    ranks = torch.as_tensor(ranks).to(torch.float64)
    ties = torch.zeros_like(ranks) if ties is None else torch.as_tensor(ties).to(ranks)
    positions = torch.arange(1, k + 1, dtype=torch.float64, device=ranks.device)
    cumulative = torch.cat([torch.zeros(1, dtype=torch.float64, device=ranks.device),
                            torch.cumsum(position_gain(positions), 0)])  # cumulative[x] = sum of gains 1..x
    ranked = torch.isfinite(ranks)
    first = torch.where(ranked, torch.round(ranks - ties / 2.0), torch.full_like(ranks, k + 1.0))
    last = torch.where(ranked, torch.round(ranks + ties / 2.0), torch.full_like(ranks, k + 1.0))
    top = last.clamp(max=k).long()
    below = (first - 1.0).clamp(min=0.0, max=k).long()
    total = (cumulative[top] - cumulative[below]).clamp(min=0.0)  # 0 when the block starts below k
    averaged = total / (torch.where(ranked, ties, torch.zeros_like(ties)) + 1.0)
    # Rows without ties take the gain of their rank directly: exact, where a difference of sums is not.
    finite = torch.where(ranked, ranks, torch.full_like(ranks, k + 1.0))
    direct = torch.where(finite <= k, position_gain(finite), torch.zeros_like(finite))
    return torch.where(ranked & (ties > 0), averaged, direct)


def recall_gain(ranks: torch.Tensor, k: int, ties: torch.Tensor | None = None) -> torch.Tensor:
    """Recall@k with one relevant item (= hit rate): 1 if rank <= k (expected over ties)."""
    return expected_gain(torch.ones_like, ranks, k, ties)


def mrr_gain(ranks: torch.Tensor, k: int, ties: torch.Tensor | None = None) -> torch.Tensor:
    """MRR@k: 1 / rank if rank <= k (expected over ties)."""
    return expected_gain(torch.reciprocal, ranks, k, ties)


def ndcg_gain(ranks: torch.Tensor, k: int, ties: torch.Tensor | None = None) -> torch.Tensor:
    """NDCG@k with one relevant item (ideal DCG = 1): 1 / log2(rank + 1) if rank <= k (expected over ties)."""
    return expected_gain(lambda r: 1.0 / torch.log2(r + 1.0), ranks, k, ties)


GAINS = {"recall": recall_gain, "mrr": mrr_gain, "ndcg": ndcg_gain}
