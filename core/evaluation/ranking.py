"""Ranking arithmetic shared by the recommendation metrics and the evaluator.

Conventions (every rec metric and report relies on them):

- ``scores`` is a float tensor (B, n_items); a candidate the protocol excludes
  holds ``-inf`` and is never ranked.
- The rank of the target is ``1 + (number of candidates with a strictly greater
  score)``.  Ties are therefore resolved in the target's favour: a model that
  gives every item the same score ranks every target first.  This is the
  optimistic convention of ``torch.topk``-free evaluators; it is stated here so
  that reports can be compared with toolkits that break ties by index.
- A target whose own score is ``-inf`` or NaN (it was excluded, or the model
  produced garbage) gets rank ``+inf``: a miss at every cut-off.
"""
from __future__ import annotations

import torch

MISS = float("inf")


def target_ranks(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """1-based rank of each row's target among that row's finite-scored candidates.

    :param scores: float (B, n_items); excluded candidates are ``-inf``.
    :param targets: long (B,) item indices in ``[0, n_items)``.
    :returns: float (B,) ranks, ``inf`` where the target itself is excluded.
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
    # NaN > x is False, so NaN candidates never push the target down.
    ranks = (scores > target_scores).sum(dim=1).float() + 1.0
    own = target_scores.squeeze(1)
    unrankable = torch.isnan(own) | (own == float("-inf"))
    return torch.where(unrankable, torch.full_like(ranks, MISS), ranks)


def apply_candidate_mask(scores: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """A copy of ``scores`` with ``-inf`` wherever ``mask`` is False (``None``: all allowed)."""
    scores = scores.detach().float()
    if mask is None:
        return scores
    mask = mask.to(device=scores.device, dtype=torch.bool)
    if mask.shape != scores.shape:
        raise ValueError(f"candidate mask shape {tuple(mask.shape)} != scores shape {tuple(scores.shape)}")
    return scores.masked_fill(~mask, float("-inf"))


# Per-sample gains of a 1-based rank (``inf`` = not ranked) at cut-off k, each in [0, 1]; the
# metric plugins average them and ``crs compare`` resamples them, so both use these definitions.
def recall_gain(ranks: torch.Tensor, k: int) -> torch.Tensor:
    """Recall@k with one relevant item (= hit rate): 1 if rank <= k."""
    return (ranks <= k).to(ranks.dtype)


def mrr_gain(ranks: torch.Tensor, k: int) -> torch.Tensor:
    """MRR@k: 1 / rank if rank <= k."""
    return torch.where(ranks <= k, 1.0 / ranks, torch.zeros_like(ranks))


def ndcg_gain(ranks: torch.Tensor, k: int) -> torch.Tensor:
    """NDCG@k with one relevant item (ideal DCG = 1): 1 / log2(rank + 1) if rank <= k."""
    return torch.where(ranks <= k, 1.0 / torch.log2(ranks + 1.0), torch.zeros_like(ranks))


GAINS = {"recall": recall_gain, "mrr": mrr_gain, "ndcg": ndcg_gain}
