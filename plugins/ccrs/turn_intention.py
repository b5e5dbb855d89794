"""CCRS's turn encoder and fine-grained intention encoder (Li et al. 2022, Eq. 7-8).

Type ``turn_intention`` (user encoder).  Over the mentioned entities' states H_u:

    mu^o = Attn(O_u),  o_i = Emb_t(t_i)                                      (Eq. 7)
    mu^r = Attn(H_u)
    p_u  = 1/2 (mu^r + mu^o) H_u                                             (Eq. 8)

Attn is self-attentive pooling's weights, softmax(w2 tanh(W1 x)) over the unmasked
entities (:meth:`crs.nn.SelfAttentivePool.weights`, the same function KGSF's
``self_attention_pool`` uses), each of the two with weights of its own.  t_i is the
0-based index of the context turn that first mentions entity i
(``batch.context_entity_turns``, UCCR's ``context_entities_pos`` convention), clipped
to ``max_turns - 1``.  ``turn_attention: false`` drops mu^o: p_u = mu^r H_u, which is
exactly ``self_attention_pool`` (the "w/o TE" ablation).

``states`` is either per-context states (B, E, dim), as ``user_relation_attention``
writes them, or a node table (N, dim), e.g. ``rgcn``'s ``entity_nodes``, which is then
gathered at ``batch.context_entities`` -- so turn attention also composes with R-GCN.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from crs.errors import ConfigError, check_positive_ints
from crs.interfaces import BuildDeps, Port, UserEncoder
from crs.nn import SelfAttentivePool, gather_nodes


class TurnIntentionEncoder(UserEncoder):
    """`turn_intention`: the user preference p_u from entity states and the turns that mentioned them."""

    @dataclass
    class Config:
        dim: int = 128
        hidden: int = 0  # attention hidden size of both Attn; 0 = dim
        max_turns: int = 64  # turn embeddings; later turns share the last one (ReDial: <= 60 merged turns)
        turn_attention: bool = True  # false: no turn term (w/o TE), the same as self_attention_pool

    # the contract's generated inputs are 2-D, so it feeds a node table (the other accepted form)
    contract_node: ClassVar[dict] = {"inputs": {"states": "entity_nodes"}}

    def __init__(self, config: Config, deps: BuildDeps):
        super().__init__(config, deps)
        check_positive_ints(config, ("dim", "max_turns"), self.path)
        if config.hidden < 0:
            raise ConfigError(f"{self.path}.hidden", f"must be 0 (= dim) or more, got {config.hidden}")
        hidden = config.hidden or config.dim
        self.pool = SelfAttentivePool(config.dim, hidden)  # mu^r: the entities' self-importance
        if config.turn_attention:
            self.turn_embeddings = nn.Embedding(config.max_turns, config.dim)
            nn.init.xavier_uniform_(self.turn_embeddings.weight)
            self.turn_pool = SelfAttentivePool(config.dim, hidden)  # mu^o: the turns' importance
        else:
            self.turn_embeddings = self.turn_pool = None

    def input_ports(self) -> dict[str, Port]:
        ports = {
            "states": Port("context_entity_states", self.config.dim,
                           doc="entity states H_u (B, E, dim), or a node table (N, dim) gathered at `index`"),
            "index": Port("batch.context_entities", doc="long (B, E) entity-node ids, 0 = pad"),
            "mask": Port("batch.context_entities_mask", doc="bool (B, E)"),
        }
        if self.config.turn_attention:
            ports["turns"] = Port("batch.context_entity_turns", doc="long (B, E) turn of first mention, 0-based")
        return ports

    def output_ports(self) -> dict[str, Port]:
        return {"user": Port("user", self.config.dim,
                             doc="user preference p_u (B, dim); zero when nothing was mentioned")}

    def weights(self, inputs: dict) -> torch.Tensor:
        """The attention over the mentioned entities (B, E): 1/2 (mu^r + mu^o), or mu^r without turns."""
        states, mask = self._states(inputs), self._mask(inputs)
        alpha = self.pool.weights(states, mask)
        if self.turn_pool is None:
            return alpha
        turns = inputs["turns"].long().clamp(0, self.config.max_turns - 1)
        return 0.5 * (alpha + self.turn_pool.weights(self.turn_embeddings(turns), mask))

    def forward(self, inputs: dict) -> dict:
        states = self._states(inputs)
        if states.shape[1] == 0:  # no entity position in the whole batch
            return {"user": states.new_zeros(states.shape[0], states.shape[2])}
        return {"user": torch.bmm(self.weights(inputs).unsqueeze(1), states).squeeze(1)}

    def _states(self, inputs: dict) -> torch.Tensor:
        states = inputs["states"]
        return gather_nodes(states, inputs["index"]) if states.dim() == 2 else states

    @staticmethod
    def _mask(inputs: dict) -> torch.Tensor:
        mask = inputs.get("mask")
        return inputs["index"] != 0 if mask is None else mask.bool()
