"""Losses several recommenders share.  (Token losses for generators are in :mod:`crs.nn.decoding`.)"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def rec_cross_entropy(scores: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor | None:
    """Softmax cross-entropy over items: mean over samples whose target is >= 0 (-1 = no target).

    Returns None without targets (inference), and a zero that still has a gradient
    path when no sample of the batch has a target, so that the stage's backward
    stays valid for every batch.
    """
    if target is None:
        return None
    target = target.long()
    if not bool((target >= 0).any()):
        return scores.sum() * 0.0
    return F.cross_entropy(scores, target, ignore_index=-1)
