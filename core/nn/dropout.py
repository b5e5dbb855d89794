"""Dropout whose CPU mask costs a quarter of the random numbers ``nn.Dropout`` draws.

On CPU, ``torch.nn.functional.dropout`` draws one Bernoulli sample per element from the Mersenne
Twister generator. That draw, not the multiplication, is the cost: on the KGSF decoder's
activations it took about twice as long as a linear layer of the same width, and dropout was
about a sixth of the demo's conversation-stage time (cProfile of ``crs-run examples/kgsf.yaml``).
:class:`Dropout` draws one 64-bit random word per four elements instead and reads it as four 16-bit
uniforms: an element is kept when its uniform is at least ``round(p * 65536)``. The drop
probability is therefore ``p`` rounded to a multiple of 1/65536 (0.1 becomes 0.100006), and the
kept elements are scaled by ``1 / (1 - p)`` of that rounded ``p``, so the expected activation is
unchanged exactly. The random numbers come from torch's default generator, which
``crs.training.seeding`` seeds and checkpoints restore, so runs and resumes stay reproducible.

Off the CPU (CUDA's Philox generator is fast) and for ``p`` of 0 or 1 it is ``F.dropout``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_LEVELS = 1 << 16  # uniforms per 16-bit lane


def dropout_mask(shape: torch.Size, p: float, device: torch.device) -> tuple[torch.Tensor, float]:
    """(bool keep-mask of `shape`, scale for kept elements) for drop probability `p` (0 < p < 1)."""
    threshold = round(p * _LEVELS)
    numel = 1
    for size in shape:
        numel *= size
    # The whole int64 range: a bare random_() leaves the sign bit 0, which would bias every fourth lane.
    words = torch.empty((numel + 3) // 4, dtype=torch.int64, device=device).random_(-(1 << 63), None)
    # The lanes read as signed int16 (-32768..32767): compare against the threshold shifted the same way.
    lanes = words.view(torch.int16)[:numel].view(shape)
    keep = lanes >= threshold - (_LEVELS // 2)
    return keep, _LEVELS / (_LEVELS - threshold)


class Dropout(nn.Module):
    """``nn.Dropout(p)`` with the cheaper CPU mask described in the module docstring."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability must be between 0 and 1, got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if x.device.type != "cpu" or self.p == 1.0 or round(self.p * _LEVELS) in (0, _LEVELS):
            return F.dropout(x, self.p, True)
        keep, scale = dropout_mask(x.shape, self.p, x.device)
        return torch.where(keep, x * scale, x.new_zeros(()))

    def extra_repr(self) -> str:
        return f"p={self.p}"
