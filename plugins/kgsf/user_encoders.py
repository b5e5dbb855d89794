"""KGSF user encoders: self-attentive pooling of mentioned nodes (Eq. 6) and the gate (Eq. 7).

A typical KGSF wiring pools word nodes and entity nodes separately, then gates them::

    user_entity: {type: self_attention_pool}                                  # entity view
    user_word:   {type: self_attention_pool, inputs: {nodes: word_nodes,
                  index: batch.context_words, mask: batch.context_words_mask},
                  outputs: {pooled: user_word}}                               # word view
    user:        {type: gate}                                                 # user_word + user_entity -> user
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from crs.interfaces import BuildDeps, Port, UserEncoder
from crs.nn import SelfAttentivePool, gather_nodes

from .graph_common import check_positive


class SelfAttentionPoolEncoder(UserEncoder):
    """`self_attention_pool`: node representations at the mentioned indices, pooled by Eq. 6.

    Ports (rename with YAML ``inputs:`` / ``outputs:``): nodes=entity_nodes,
    index=batch.context_entities, mask=batch.context_entities_mask -> pooled=user_entity.
    """

    @dataclass
    class Config:
        dim: int = 128
        hidden: int = 0  # attention hidden size; 0 = dim

    def __init__(self, config: Config, deps: BuildDeps):
        super().__init__(config, deps)
        check_positive(config.dim, f"{self.path}.dim", "dim")
        self.pool = SelfAttentivePool(config.dim, config.hidden or config.dim)

    def input_ports(self) -> dict[str, Port]:
        return {
            "nodes": Port("entity_nodes", self.config.dim, doc="node representations (N, dim)"),
            "index": Port("batch.context_entities", doc="long (B, L) node indices, 0 = pad"),
            "mask": Port("batch.context_entities_mask", doc="bool (B, L)"),
        }

    def output_ports(self) -> dict[str, Port]:
        return {"pooled": Port("user_entity", self.config.dim,
                               doc="pooled preference (B, dim); zero when nothing was mentioned")}

    def forward(self, inputs: dict) -> dict:
        states = gather_nodes(inputs["nodes"], inputs["index"])
        return {"pooled": self.pool(states, inputs["mask"])}


class GateUserEncoder(UserEncoder):
    """`gate` (Eq. 7): user = beta * a + (1 - beta) * b, beta = sigmoid(W [a; b] + c).

    Ports: a=user_word, b=user_entity -> user.  The paper leaves the shape of beta open;
    ``scalar_gate: false`` gives one gate per dimension, ``true`` one gate per sample.
    """

    @dataclass
    class Config:
        dim: int = 128
        scalar_gate: bool = False

    def __init__(self, config: Config, deps: BuildDeps):
        super().__init__(config, deps)
        check_positive(config.dim, f"{self.path}.dim", "dim")
        self.gate = nn.Linear(2 * config.dim, 1 if config.scalar_gate else config.dim)

    def input_ports(self) -> dict[str, Port]:
        return {"a": Port("user_word", self.config.dim), "b": Port("user_entity", self.config.dim)}

    def output_ports(self) -> dict[str, Port]:
        return {"user": Port("user", self.config.dim, doc="user preference p_u (B, dim)")}

    def forward(self, inputs: dict) -> dict:
        a, b = inputs["a"], inputs["b"]
        beta = torch.sigmoid(self.gate(torch.cat([a, b], dim=-1)))
        return {"user": beta * a + (1.0 - beta) * b}
