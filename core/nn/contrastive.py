"""Contrastive objectives over representation views: projection heads, NT-Xent, masked InfoNCE over units.

C2-CRS (Zhou et al., WSDM 2022, §4.2) aligns several views of one user (dialogue context,
knowledge graph, reviews) with these, coarse to fine; any two views of anything can be aligned the
same way (e.g. KGSF's word and entity user vectors), so they live in core.  Everything follows the
official code (``crslab/model/utils/modules/info_nce_loss.py``) where it departs from the paper;
the departures are listed here, once.

Projection head (SimCLR)
    g(x) = W2 ReLU(W1 x + b1) + b2, d -> d -> out (128); losses compare ``normalize(g(x))``
    by cosine, divided by a temperature tau (0.07).

NT-Xent (:func:`nt_xent`, the *coarse* loss of one view pair)
    Z = [z_a; z_b] (2B rows).  Row i's positive is the same sample in the other view; its
    negatives are the other 2B - 2 rows of *both* views; cross-entropy over [positive,
    negatives] / tau, mean over all 2B anchors.  Eq. 4 of the paper sums the view pairs; the code
    averages them (the caller does).  Duplicate samples (one rec sample per target item of one
    turn) stay mutual negatives, as in the code.  ``keep`` drops samples before the loss
    (C2-CRS's ``skip_empty``: a sample with no entity or no review pools to the zero vector,
    which the code keeps as a constant projected vector).

Masked InfoNCE over units (:func:`masked_info_nce`, the *fine* loss of one view pair)
    A unit u = (entity e_u, sample s_u, vector z_u); the pair's units P are both views'.
    Units whose entity occurs once in P are dropped (no positive).  For each anchor u and
    **each** p != u with e_p = e_u -- in either view -- one row: logits over every v != u in
    P, l_v = m_uv * cos(z_u, z_v) / tau, target p; the anchor's other same-entity units stay
    in the row as negatives (the code's ``split_multi_positives``).  So an anchor with k
    positives gives k rows.  ``same_sample=True`` is the code: m_uv = 1[s_u = s_v], i.e.
    logits between units of different samples are *set to 0, not removed* (they still add
    exp(0) to every denominator and carry no gradient); ``same_sample=False`` is the paper's
    wording, m = 1 (every unit of the batch is a negative).  Mean cross-entropy over rows; a
    zero (with a gradient path) when there is no row.

    The official code has one bug here we do not replicate: for the (context, review) pair it
    passes the context units' *entity ids* where their sample ids belong, so that pair's mask
    compares entity ids with sample ids.  Callers pass real sample ids for every pair.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ProjectionHead", "nt_xent", "masked_info_nce", "fine_pair_rows"]


class ProjectionHead(nn.Module):
    """SimCLR's two-layer head, ``in_dim -> in_dim -> out_dim`` with a ReLU between (C2-CRS: six of them)."""

    def __init__(self, in_dim: int, out_dim: int = 128):
        super().__init__()
        self.hidden = nn.Linear(in_dim, in_dim)
        self.out = nn.Linear(in_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(F.relu(self.hidden(x)))


def _zero(*tensors: torch.Tensor) -> torch.Tensor:
    """A scalar zero that still has a gradient path to `tensors` (a stage's backward stays valid)."""
    return sum(t.sum() * 0.0 for t in tensors)


def nt_xent(a: torch.Tensor, b: torch.Tensor, temperature: float, keep: torch.Tensor | None = None) -> torch.Tensor:
    """SimCLR's NT-Xent between two views (B, D) of the same B samples (see the module docstring).

    `a` and `b` are projected vectors; they are L2-normalised here.  ``keep`` (bool (B,))
    drops samples from both views first.  Fewer than one kept sample gives a zero with a
    gradient path; one kept sample gives exactly 0 (its positive is its only candidate).
    """
    if keep is not None:
        a, b = a[keep], b[keep]
    n = a.shape[0]
    if n == 0:
        return _zero(a, b)
    z = F.normalize(torch.cat([a, b], dim=0), dim=-1)  # (2n, D)
    logits = z @ z.t() / temperature
    self_pair = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_pair, float("-inf"))  # a row is never its own candidate
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)  # same sample, other view
    return F.cross_entropy(logits, target)


def fine_pair_rows(entity: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The (anchor, positive) rows of :func:`masked_info_nce`: every ordered pair u != p of units with e_u = e_p.

    Units whose entity occurs once give no row, so they are dropped in effect (they are also
    removed as negatives by the caller, as in the code).  Returns two long tensors (R,).
    """
    same = entity.unsqueeze(0) == entity.unsqueeze(1)
    same.fill_diagonal_(False)
    anchors, positives = torch.nonzero(same, as_tuple=True)
    return anchors, positives


def masked_info_nce(z: torch.Tensor, entity: torch.Tensor, sample: torch.Tensor, temperature: float,
                    same_sample: bool = True) -> torch.Tensor:
    """The fine-grained masked InfoNCE over the units of one view pair (see the module docstring).

    :param z: (U, D) projected unit vectors of both views, concatenated (normalised here).
    :param entity: long (U,) entity id of each unit.
    :param sample: long (U,) batch position (sample) of each unit.
    :param same_sample: True (official code): logits between units of different samples are 0;
        False (paper): all units are compared.
    :returns: mean cross-entropy over the (anchor, positive) rows; a zero with a gradient path
        when no entity occurs twice.
    """
    inverse = torch.unique(entity, return_inverse=True)[1]
    keep = torch.bincount(inverse)[inverse] >= 2  # singletons: neither anchor nor negative (the code drops them)
    z, entity, sample = z[keep], entity[keep], sample[keep]
    if z.shape[0] < 2:
        return _zero(z)
    z = F.normalize(z, dim=-1)
    logits = z @ z.t() / temperature
    if same_sample:
        logits = logits * (sample.unsqueeze(0) == sample.unsqueeze(1)).to(logits.dtype)  # set to 0, not removed
    self_pair = torch.eye(z.shape[0], dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_pair, float("-inf"))
    anchors, positives = fine_pair_rows(entity)
    # every row of one anchor shares its denominator: one log-sum-exp per anchor, then one term per row
    log_norm = torch.logsumexp(logits, dim=1)
    return (log_norm[anchors] - logits[anchors, positives]).mean()
