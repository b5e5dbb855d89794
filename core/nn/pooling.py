"""Pooling over padded sets: self-attentive pooling (KGSF Eq. 6, C2-CRS Eq. 2) and node gathering.

    alpha = softmax_i( b^T tanh(W_alpha v_i) ),   pooled = sum_i alpha_i v_i

over the unmasked rows of a padded (B, L, dim) tensor.  A row whose positions are
all masked (e.g. a context that mentions no entity) pools to the zero vector, not NaN.
Several papers pool this way (KGSF's user and MIM super-token, C2-CRS's context,
entity and review views), so it lives here rather than in one paper's plugin.
"""
from __future__ import annotations

import torch
from torch import nn


def gather_nodes(nodes: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows of `nodes` (N, d) at `index` (B, L) -> (B, L, d), e.g. the graph nodes a context mentions."""
    return nodes.index_select(0, index.reshape(-1)).view(*index.shape, nodes.shape[-1])


class SelfAttentivePool(nn.Module):
    """Masked self-attentive pooling: (B, L, dim) + bool mask (B, L) -> (B, dim)."""

    def __init__(self, dim: int, hidden: int | None = None):
        super().__init__()
        hidden = hidden or dim
        self.project = nn.Linear(dim, hidden, bias=False)  # W_alpha
        self.score = nn.Linear(hidden, 1, bias=False)  # b
        nn.init.xavier_uniform_(self.project.weight)
        nn.init.xavier_uniform_(self.score.weight)

    def weights(self, states: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Attention weights alpha (B, L); zero on masked positions and on all-masked rows."""
        logits = self.score(torch.tanh(self.project(states))).squeeze(-1)
        if mask is None:
            return torch.softmax(logits, dim=-1)
        mask = mask.bool()
        # a finite fill keeps all-masked rows NaN-free; they are zeroed just below
        logits = logits.masked_fill(~mask, torch.finfo(logits.dtype).min)
        alpha = torch.softmax(logits, dim=-1) * mask
        return alpha

    def forward(self, states: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if states.shape[1] == 0:  # no positions at all
            return states.new_zeros(states.shape[0], states.shape[2])
        alpha = self.weights(states, mask)
        return torch.bmm(alpha.unsqueeze(1), states).squeeze(1)


def masked_mean(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of (B, L, d) `states` over the positions where `mask` (B, L) is true -> (B, d).

    Sentence encoders (MiniLM, MESE's item encoder) pool token states this way; padding never
    changes the result, and a row with no real position pools to zero rather than NaN.
    """
    weights = mask.to(states.dtype).unsqueeze(-1)
    return (states * weights).sum(1) / weights.sum(1).clamp(min=1.0)
