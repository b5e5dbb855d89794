"""`c2crs_context`: C2-CRS's Transformer context encoder (Eq. 1-2) with mention states at item positions.

F = Transformer(s_1..s_n) over the dialogue history's tokens (Eq. 1), e_C = self-attentive
pooling of F (Eq. 2; the code's ``SelfAttentionSeq``), and the *mentions*: the positions of
item placeholder tokens (``@<item>``) in the history, each with its state F_j and the entity
node of its item.  The fine contrastive objective compares F_j with the item's graph node and
its review (spec §2).

Mentions are read off the token ids through a token -> entity-node table built from the
pipeline vocabulary and item index, *after* the same ``keep_last`` truncation the encoder
applies, so a mention's state and node always belong to the same kept position.  A context
with more than ``max_mentions`` mentions keeps its last ones (the most recent, as
``keep_last`` keeps the most recent tokens).

The token embedding is the pipeline's ``shared:`` one when ``embedding:`` names it (C2-CRS ties
the context encoder, the review encoder and the decoder to one matrix), else the encoder's own.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch

from crs.errors import check_positive_ints
from crs.interfaces import BuildDeps, ContextEncoder, Port
from crs.nn import SelfAttentivePool, TransformerEncoder, check_transformer_config, keep_last
from crs.nn.embedding import use_token_embedding


def token_encoder(config: Any, deps: BuildDeps, max_len: int) -> TransformerEncoder:
    """A Transformer encoder over the pipeline vocabulary, on the shared embedding `config.embedding` if named."""
    vocab = deps.require("vocab")
    embedding = len(vocab) if config.embedding is None else use_token_embedding(deps, config.embedding, config.dim)
    return TransformerEncoder(embedding, config.dim, config.heads, config.layers, config.ffn_dim, config.dropout,
                              max_len, config.attention_dropout)


def item_token_nodes(deps: BuildDeps) -> torch.Tensor:
    """Long (vocab size,): the entity-graph node of each item placeholder token, 0 for every other token."""
    vocab, items = deps.require("vocab"), deps.require("items")
    table = torch.zeros(len(vocab), dtype=torch.long)
    nodes = torch.as_tensor(items.entity_nodes).long()
    for item, token in enumerate(items.tokens):
        token_id = vocab.index.get(token)
        if token_id is not None:
            table[token_id] = nodes[item]
    return table


def gather_mentions(tokens: torch.Tensor, mask: torch.Tensor, states: torch.Tensor, token_nodes: torch.Tensor,
                    max_mentions: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """States, nodes and mask of each row's last `max_mentions` item tokens, left-aligned, in text order.

    `tokens`/`mask`/`states` are the (already truncated) encoder inputs and outputs; a padded
    mention slot has a zero state and node 0.
    """
    nodes = token_nodes[tokens] * mask
    is_mention = nodes > 0
    positions = torch.arange(tokens.shape[1], device=tokens.device).expand_as(tokens)
    width = max(1, min(max_mentions, int(is_mention.sum(1).max()) if tokens.numel() else 0))
    # keep_last zeroes dropped entries, so carry position + 1 and undo it
    kept, mention_mask = keep_last(positions + 1, is_mention, width)
    index = (kept - 1).clamp(min=0)
    mention_states = states.gather(1, index.unsqueeze(-1).expand(-1, -1, states.shape[-1]))
    mention_states = mention_states * mention_mask.unsqueeze(-1)
    mention_nodes = nodes.gather(1, index) * mention_mask
    return mention_states, mention_nodes, mention_mask


class C2CRSContextEncoder(ContextEncoder):
    """`c2crs_context`: context states, the pooled user view e_C, and the states at item mentions.

    Ports (local name -> default key): tokens=batch.context_tokens, tokens_mask=batch.context_tokens_mask
    -> states=context_states (B, L, dim), states_mask=context_states_mask (B, L), user=user_context
    (B, dim), mention_states (B, M, dim), mention_nodes (B, M) entity-graph node ids (0 = pad),
    mention_mask (B, M); M <= max_mentions (at least 1).
    """

    @dataclass
    class Config:
        dim: int = 300
        heads: int = 2
        layers: int = 2
        ffn_dim: int = 300
        dropout: float = 0.1
        attention_dropout: float = 0.0
        max_len: int = 256  # context tokens kept (the last ones)
        max_mentions: int = 32  # item mentions kept per context (the last ones)
        # name of a `shared:` token embedding the review encoder and decoder also use; None = own one
        embedding: Optional[str] = None

    def __init__(self, config: Config, deps: BuildDeps):
        super().__init__(config, deps)
        check_transformer_config(config, self.path)
        check_positive_ints(config, ("max_len", "max_mentions"), self.path)
        self.encoder = token_encoder(config, deps, config.max_len)
        self.pool = SelfAttentivePool(config.dim)
        self.register_buffer("token_nodes", item_token_nodes(deps), persistent=False)

    def input_ports(self) -> dict[str, Port]:
        return {"tokens": Port("batch.context_tokens", doc="context token ids (B, L)"),
                "tokens_mask": Port("batch.context_tokens_mask", doc="bool (B, L)")}

    def output_ports(self) -> dict[str, Port]:
        dim = self.config.dim
        return {
            "states": Port("context_states", dim, doc="Transformer states F (B, L', dim), L' <= max_len"),
            "states_mask": Port("context_states_mask", doc="bool (B, L')"),
            "user": Port("user_context", dim, doc="e_C: self-attentive pooling of F (B, dim) (Eq. 2)"),
            "mention_states": Port("mention_states", dim, doc="F at item tokens (B, M, dim), last M mentions"),
            "mention_nodes": Port("mention_nodes", doc="entity node of each mention (B, M), 0 = pad"),
            "mention_mask": Port("mention_mask", doc="bool (B, M)"),
        }

    def forward(self, inputs: dict[str, Any]) -> dict[str, Any]:
        tokens = inputs["tokens"]
        mask = inputs["tokens_mask"].bool()
        if tokens.shape[1] > self.config.max_len:  # truncate here so mentions see exactly the kept tokens
            tokens, mask = keep_last(tokens, mask, self.config.max_len)
        states, mask = self.encoder(tokens, mask)
        mention_states, mention_nodes, mention_mask = gather_mentions(
            tokens, mask, states, self.token_nodes, self.config.max_mentions)
        return {"states": states, "states_mask": mask, "user": self.pool(states, mask),
                "mention_states": mention_states, "mention_nodes": mention_nodes, "mention_mask": mention_mask}
