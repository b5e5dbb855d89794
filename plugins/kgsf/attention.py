"""Self-attentive pooling (KGSF Eq. 6), reusable by any component.

    alpha = softmax_i( b^T tanh(W_alpha v_i) ),   pooled = sum_i alpha_i v_i

over the unmasked rows of a padded (B, L, dim) tensor.  A row whose positions are
all masked (e.g. a context that mentions no entity) pools to the zero vector, not NaN.
"""
from __future__ import annotations

import torch
from torch import nn


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
