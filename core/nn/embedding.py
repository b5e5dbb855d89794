"""`token_embedding`: one (vocab, dim) token matrix that several slots use (kind ``shared_module``).

Declared once under the pipeline's ``shared:`` section and named by the slots that
use it (the ``transformer`` generator's ``embedding:`` key; C2-CRS ties its context
encoder, review encoder and decoder to one matrix this way).  It behaves like an
``nn.Embedding`` for its users: ``weight`` (vocab, dim), ``embedding_dim``,
``num_embeddings``, ``padding_idx`` and a call on token ids.  Rows follow the
pipeline vocabulary, and the initialisation is the generators' own (normal with std
dim^-0.5, padding row zero), so a slot switching from its own embedding to a shared
one starts from the same distribution.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..interfaces import BuildDeps
from ..shared import SharedModule


class TokenEmbedding(SharedModule):
    """A token embedding over the pipeline vocabulary, shared by the slots that name it."""

    @dataclass
    class Config:
        dim: int = 128

    def __init__(self, config: Any, deps: BuildDeps):
        super().__init__(config, deps)
        if int(config.dim) < 1:
            raise ConfigError(f"{self.path}.dim", f"must be a positive integer, got {config.dim}")
        vocab = deps.require("vocab")
        self.num_embeddings, self.embedding_dim, self.padding_idx = len(vocab), int(config.dim), vocab.pad
        self.weight = nn.Parameter(torch.empty(self.num_embeddings, self.embedding_dim))
        nn.init.normal_(self.weight, mean=0.0, std=self.embedding_dim ** -0.5)
        with torch.no_grad():
            self.weight[self.padding_idx].zero_()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token ids (...) -> vectors (..., dim); the padding row gets no gradient, as in nn.Embedding."""
        return F.embedding(tokens, self.weight, padding_idx=self.padding_idx)
