"""KGSF recommender (Eq. 8-9): item scores are dot products of the user preference with item nodes.

    scores_i = p_u^T n_i (+ b_i),   loss.rec = cross-entropy(softmax(scores), target)

Item i's representation n_i is the entity-graph node ``deps.items.entity_nodes[i]``
of the node matrix on port ``entity_nodes`` (e.g. an R-GCN output).  Eq. 9 in the paper
is printed as a per-item binary loss, but the model is trained with softmax
cross-entropy over all items (KGSF's released code); that is what ``loss.rec`` is.
KGSF's code also adds a learned per-item bias; ``item_bias: true`` turns it on.
``bias_init: popularity`` starts that bias at the log of each item's smoothed share of
training recommendations, so an untrained model ranks like the popularity baseline and
training only has to learn what the context adds (on small corpora such as INSPIRED the
bias otherwise stays near zero while the node embeddings overfit within an epoch or two).
``bias_trainable: false`` keeps the bias fixed at its initial value (a buffer, not a
parameter), so that the popularity prior survives training and only the dot product learns.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from crs.interfaces import BuildDeps, Port, Recommender
from crs.nn import rec_cross_entropy

from .graph_common import check_positive

BiasInit = Literal["zero", "popularity"]


class DotProductRecommender(Recommender):
    """`dot_product`: inputs user (B, dim), entity_nodes (N, dim), optional target; outputs scores, loss.rec."""

    @dataclass
    class Config:
        dim: int = 128
        item_bias: bool = False
        bias_init: BiasInit = "zero"  # popularity: the log of smoothed training frequencies
        bias_trainable: bool = True  # false: the bias stays at its initial value

    def __init__(self, config: Config, deps: BuildDeps):
        super().__init__(config, deps)
        check_positive(config.dim, f"{self.path}.dim", "dim")
        items = deps.require("items")
        self.n_items = len(items)
        self.register_buffer("item_nodes", torch.as_tensor(items.entity_nodes, dtype=torch.long).clone(),
                             persistent=False)
        bias = self._initial_bias(items) if config.item_bias else None
        if bias is not None and config.bias_trainable:
            self.bias = nn.Parameter(bias)
        else:  # a buffer (or None) still travels with .to(device) and the checkpoint
            self.register_buffer("bias", bias)

    def _initial_bias(self, items) -> torch.Tensor:
        if self.config.bias_init == "zero":
            return torch.zeros(self.n_items)
        counts = torch.as_tensor(items.train_counts, dtype=torch.float) + 1.0  # add-one smoothing
        return (counts / counts.sum()).log()

    def input_ports(self) -> dict[str, Port]:
        return {
            "user": Port("user", self.config.dim, doc="user preference (B, dim)"),
            "entity_nodes": Port("entity_nodes", self.config.dim, doc="entity-graph nodes (N, dim)"),
            "target": Port("batch.target_item", optional=True, doc="long (B,), -1 = none"),
        }

    def output_ports(self) -> dict[str, Port]:
        return {
            "scores": Port("scores", self.n_items, doc="item scores (B, n_items)"),
            "loss": Port("loss.rec", doc="cross-entropy over items"),
        }

    def forward(self, inputs: dict) -> dict:
        item_vectors = inputs["entity_nodes"].index_select(0, self.item_nodes)
        scores = inputs["user"] @ item_vectors.t()
        if self.bias is not None:
            scores = scores + self.bias
        out = {"scores": scores}
        loss = rec_cross_entropy(scores, inputs.get("target"))
        if loss is not None:
            out["loss"] = loss
        return out
