"""`token_embedding`: one (vocab, dim) token matrix that several slots use (kind ``shared_module``).

Declared once under the pipeline's ``shared:`` section and named by the slots that
use it (the ``embedding:`` key of the ``transformer`` generator and the ``text_cnn``
recommender; C2-CRS ties its context encoder, review encoder and decoder to one
matrix this way).  A component reads it with :func:`use_token_embedding`.  It behaves like an
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
from ..shared import SharedModule, SharedRef
from .transformer import init_token_embedding_


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
        init_token_embedding_(self.weight, self.padding_idx)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token ids (...) -> vectors (..., dim); the padding row gets no gradient, as in nn.Embedding."""
        return F.embedding(tokens, self.weight, padding_idx=self.padding_idx)


def use_token_embedding(deps: BuildDeps, name: str, dim: int, key: str = "embedding") -> SharedRef:
    """The `shared:` token embedding `name` for the component built at ``deps.path``.

    Returns a :class:`crs.shared.SharedRef` (hold it as an attribute; the pipeline owns
    the matrix).  Any shared module with ``weight`` (vocab, dim) and ``embedding_dim``
    qualifies, not only :class:`TokenEmbedding`.

    :param dim: the width the component needs.
    :param key: the component's config key that named it (for the error path).
    :raises ConfigError: at ``<path>.<key>``: unknown name (did-you-mean, declared names),
        not a token embedding, a different dim, or rows that do not match the vocabulary.
    """
    embedding = deps.shared_module(name, key)
    where = f"{deps.path}.{key}"
    weight = getattr(embedding, "weight", None)
    if not hasattr(embedding, "embedding_dim") or not torch.is_tensor(weight) or weight.dim() != 2:
        raise ConfigError(where, f"shared module '{name}' ({type(embedding.module).__name__}) is not a token "
                                 f"embedding: it needs `weight` (vocab, dim) and `embedding_dim`",
                          f"point `{key}` at a module of `type: token_embedding` under `shared:`")
    if embedding.embedding_dim != dim:
        raise ConfigError(where, f"shared embedding '{name}' has dim {embedding.embedding_dim}, "
                                 f"but this component needs dim {dim}",
                          f"set shared.{name}.dim: {dim}, or make this component's dim {embedding.embedding_dim}")
    vocab = deps.vocab
    if vocab is not None and weight.shape[0] != len(vocab):
        raise ConfigError(where, f"shared embedding '{name}' has {weight.shape[0]} rows, but the pipeline "
                                 f"vocabulary has {len(vocab)} tokens",
                          "use a token embedding built over this pipeline's vocabulary")
    return embedding
