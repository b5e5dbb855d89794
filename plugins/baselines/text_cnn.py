"""TextCNN baseline (Kim 2014; KGSF Sec. 5.1.2): a CNN over the context text as the user vector.

Token embeddings of batch.context_tokens -> 1-D convolutions of several widths (ReLU)
-> max-pool over time -> dropout -> a linear layer over items.  Trained with softmax
cross-entropy (loss.rec) like the KGSF recommender.  ``embedding: <name>`` reads the
token embeddings from the pipeline's ``shared:`` module of that name (e.g. the one the
generator uses) instead of an embedding of its own.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import nn

from crs.errors import ConfigError
from crs.interfaces import BuildDeps, Port, Recommender
from crs.nn import rec_cross_entropy
from crs.nn.embedding import use_token_embedding


class TextCNNRecommender(Recommender):
    """`text_cnn`: inputs tokens/mask (+ optional target) -> scores (B, n_items), loss.rec."""

    @dataclass
    class Config:
        embedding_dim: int = 128
        filters: int = 128  # per width
        widths: list[int] = field(default_factory=lambda: [2, 3, 4])
        dropout: float = 0.1
        embedding: Optional[str] = None  # name of a `shared:` token embedding (dim = embedding_dim); None = own

    def __init__(self, config: Config, deps: BuildDeps):
        super().__init__(config, deps)
        vocab = deps.require("vocab")
        items = deps.require("items")
        for key in ("embedding_dim", "filters"):
            if getattr(config, key) <= 0:
                raise ConfigError(f"{self.path}.{key}", f"must be positive, got {getattr(config, key)}")
        if not config.widths or any(w <= 0 for w in config.widths):
            raise ConfigError(f"{self.path}.widths", f"need positive filter widths, got {config.widths}",
                              "e.g. widths: [2, 3, 4]")
        if not 0.0 <= config.dropout < 1.0:
            raise ConfigError(f"{self.path}.dropout", f"must be in [0, 1), got {config.dropout}")
        self.n_items = len(items)
        self.max_width = max(config.widths)
        if config.embedding is None:
            self.embeddings = nn.Embedding(len(vocab), config.embedding_dim, padding_idx=0)
        else:  # a SharedRef: the pipeline owns the matrix
            self.embeddings = use_token_embedding(deps, config.embedding, config.embedding_dim)
        self.convs = nn.ModuleList(nn.Conv1d(config.embedding_dim, config.filters, w) for w in config.widths)
        self.dropout = nn.Dropout(config.dropout)
        self.output = nn.Linear(config.filters * len(config.widths), self.n_items)

    def input_ports(self) -> dict[str, Port]:
        return {
            "tokens": Port("batch.context_tokens", doc="long (B, L)"),
            "mask": Port("batch.context_tokens_mask", doc="bool (B, L)"),
            "target": Port("batch.target_item", optional=True),
        }

    def output_ports(self) -> dict[str, Port]:
        return {"scores": Port("scores", self.n_items), "loss": Port("loss.rec")}

    def encode(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The context vector (B, filters * len(widths))."""
        if tokens.shape[1] < self.max_width:  # shorter than the widest filter: pad on the right
            pad = self.max_width - tokens.shape[1]
            tokens = nn.functional.pad(tokens, (0, pad))
            mask = nn.functional.pad(mask, (0, pad))
        x = (self.embeddings(tokens) * mask.unsqueeze(-1)).transpose(1, 2)  # (B, E, L)
        # ReLU outputs are >= 0, so padded windows cannot win the max unless nothing else is there
        pooled = [torch.relu(conv(x)).amax(dim=-1) for conv in self.convs]
        return self.dropout(torch.cat(pooled, dim=-1))

    def forward(self, inputs: dict) -> dict:
        scores = self.output(self.encode(inputs["tokens"], inputs["mask"].bool()))
        out = {"scores": scores}
        loss = rec_cross_entropy(scores, inputs.get("target"))
        if loss is not None:
            out["loss"] = loss
        return out
