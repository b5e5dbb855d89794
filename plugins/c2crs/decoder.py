"""C2-CRS's reply decoder: KG and review attention, review fusion at the output, instance-weighted loss.

Type ``c2crs_decoder`` (generator kind), built on core's Transformer generator
(:class:`crs.nn.seq2seq.TransformerGenerator`).  It has no encoder of its own: the decoder
attends to the ``context_states`` of C2-CRS's context encoder (spec section 6.1; the
conversation stage keeps that encoder and the KG encoder frozen), and it reads the
pipeline's one token matrix through ``embedding: <shared name>``, the same matrix as the
context and review encoders.  Each decoder layer runs (spec section 1, official code)

    self-attention over the reply prefix
    -> cross-attention to the context states F
    -> cross-attention to the context entities: Linear(entity_dim -> dim) of entity_nodes[batch.context_entities]
    -> cross-attention to the context items' reviews: Linear(review_dim -> dim) of review_states
    -> feed-forward,

each residual + LayerNorm.  The output layer is the official ``hs_copy2``: with
``review_fusion: true`` the last decoder state h attends (dot product, softmax over the
sample's reviews) to the projected review states r_k, and

    h~ = W_f [h ; sum_k softmax_k(h . r_k) r_k]     (2 dim -> dim),    logits = h~ E^T

with E the shared token matrix; a sample without any review gets a zero review summary.
``review_fusion: false`` (the "w/o UD" ablation, without a review encoder) drops both the
review attention sub-layer and the fusion: logits = h E^T.

The released model has no KGSF copy mechanism (the paper text mentions one); this decoder
has none either.  KGSF's copy mixture lives in the kgsf plugin, which a plugin may not
import, and moving it to core for an option the official run does not use is left undone.

Instance weighting (Eq. 11-12 as released): the training loss is
``sum_t alpha(y_t) * nll_t / #targets`` with

    alpha(w) = max(gamma, beta / f_w)  if f_w > beta  else 1,

f_w the count of token w in the train texts (``Vocabulary.counts``, counted when the
vocabulary is built), so frequent words ("i", "the", "movie") weigh less.  ``nll_sum`` and
``nll_count`` stay unweighted: perplexity is a property of the model, not of the loss.
The paper's beta 1500 is for the whole ReDial train split; scale it with the share of
train one uses (spec: 1500 x 0.344 ~ 520 for ours).

Ports besides the plain generator's (tokens, tokens_mask, response, response_mask,
vocab_bias; outputs loss.gen, nll_sum, nll_count, logits):

==================  ============================  ===============================================
context_states      context_states                (B, L, dim) context encoder states; mask: ..._mask
entity_nodes        entity_nodes                  (N_e, entity_dim) entity-graph node embeddings
context_entities    batch.context_entities        (B, E) entity-node ids; mask: ..._mask
review_states       review_states                 optional, (B, I, review_dim) one vector per context item
review_mask         review_mask                   optional, (B, I) bool, True = the item has text
==================  ============================  ===============================================
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from crs.errors import ConfigError, check_positive_ints
from crs.interfaces import BuildDeps, Port
from crs.nn import Memory
from crs.nn.seq2seq import TransformerGenerator


def instance_weights(counts: torch.Tensor, beta: float, gamma: float) -> torch.Tensor:
    """alpha(w) for token counts f_w: max(gamma, beta / f_w) where f_w > beta, else 1 (C2-CRS Eq. 11-12, as coded)."""
    counts = counts.to(torch.float64)
    frequent = counts > beta
    damped = torch.clamp(beta / counts.clamp(min=1.0), min=gamma)
    return torch.where(frequent, damped, torch.ones_like(counts)).to(torch.float32)


class C2CRSDecoder(TransformerGenerator):
    """Transformer decoder over context states, context entities and reviews; review fusion; weighted loss."""

    @dataclass
    class Config(TransformerGenerator.Config):
        dim: int = 300
        heads: int = 2
        layers: int = 2
        ffn_dim: int = 300
        context_states: bool = True  # attend to the context encoder's states (false: an own encoder, as `transformer`)
        entity_graph: str = "entity_kg"  # knowledge name of the entity graph (node count check)
        entity_dim: int = 128  # dim of the incoming entity node embeddings
        review_dim: int = 300  # dim of the incoming review states
        review_fusion: bool = True  # false: no review attention and no fusion (the "w/o UD" ablation)
        weighting: bool = True  # instance-weighted loss; false: the plain mean NLL ("w/o weighting")
        beta: float = 1500.0  # tokens counted more than beta times in train are down-weighted
        gamma: float = 0.02  # the smallest weight (TG-ReDial: 0.1)

    def __init__(self, config: Any, deps: BuildDeps):
        super().__init__(config, deps)
        check_positive_ints(config, ("entity_dim", "review_dim"), self.path)
        if not config.beta > 0:
            raise ConfigError(f"{self.path}.beta", f"must be positive, got {config.beta}",
                              "set beta to the train count above which a token is down-weighted (paper: 1500)")
        if not 0 < config.gamma <= 1:
            raise ConfigError(f"{self.path}.gamma", f"must be in (0, 1], got {config.gamma}",
                              "set gamma to the smallest token weight (paper: 0.02)")
        self.num_entity_nodes = deps.graph(config.entity_graph, "entity_graph").num_nodes
        dim = config.dim
        self.entity_proj = nn.Linear(config.entity_dim, dim)
        self.review_proj = nn.Linear(config.review_dim, dim) if config.review_fusion else None
        self.fusion = nn.Linear(2 * dim, dim) if config.review_fusion else None  # W_f of hs_copy2
        vocab = deps.require("vocab")
        counts = torch.tensor(vocab.counts, dtype=torch.float64)
        # data, not parameters: rebuilt from the vocabulary, never read from a checkpoint
        self.register_buffer("token_weights", instance_weights(counts, config.beta, config.gamma), persistent=False)

    @classmethod
    def contract_inputs(cls, deps: BuildDeps, batch: dict) -> dict[str, Any]:
        """For crs.testing's component contract: context states (B, L, 300) as the context encoder writes them."""
        tokens = batch["batch.context_tokens"]
        return {"context_states": torch.randn(*tokens.shape, cls.Config.dim), "context_states_mask": tokens != 0}

    # ----------------------------------------------------------------- ports
    def input_ports(self) -> dict[str, Port]:
        ports = super().input_ports()
        ports.update({
            "entity_nodes": Port("entity_nodes", self.config.entity_dim, doc="entity-graph node embeddings"),
            "context_entities": Port("batch.context_entities", doc="entity-node ids of the context"),
            "context_entities_mask": Port("batch.context_entities_mask"),
        })
        if self.config.review_fusion:
            ports.update({
                "review_states": Port("review_states", self.config.review_dim, optional=True,
                                      doc="review vector of each context item (B, I, review_dim)"),
                "review_mask": Port("review_mask", optional=True, doc="bool (B, I): the item has text"),
            })
        return ports

    # ------------------------------------------------------ generator hooks
    def memory_sources(self) -> tuple[str, ...]:
        return ("encoder", "entities", "reviews") if self.config.review_fusion else ("encoder", "entities")

    def encode(self, inputs: dict[str, Any]) -> dict[str, Memory]:
        memories = super().encode(inputs)
        memories["entities"] = self._entity_memory(inputs)
        if self.config.review_fusion:
            memories["reviews"] = self._review_memory(inputs, memories["encoder"][0])
        return memories

    def _entity_memory(self, inputs: dict[str, Any]) -> Memory:
        nodes, index = inputs["entity_nodes"], inputs["context_entities"]
        mask = inputs.get("context_entities_mask")
        mask = index != 0 if mask is None else mask.bool()
        if nodes.size(0) != self.num_entity_nodes:
            raise ConfigError(f"{self.path}.inputs.entity_nodes",
                              f"got {nodes.size(0)} node embeddings, but the graph has {self.num_entity_nodes} nodes",
                              "feed the node embeddings of the graph named in `entity_graph`")
        return self.entity_proj(nodes[index]) * mask.unsqueeze(-1), mask

    def _review_memory(self, inputs: dict[str, Any], context: torch.Tensor) -> Memory:
        """Projected review states (B, I, dim), zero where masked; an empty memory when no review port is fed."""
        states = inputs.get("review_states")
        if states is None:  # no review encoder in the pipeline: nothing to attend to, a zero review summary
            empty = context.new_zeros(context.size(0), 0, self.config.dim)
            return empty, torch.zeros(context.size(0), 0, dtype=torch.bool, device=context.device)
        mask = inputs.get("review_mask")
        mask = torch.ones(states.shape[:2], dtype=torch.bool, device=states.device) if mask is None else mask.bool()
        return self.review_proj(states) * mask.unsqueeze(-1), mask

    def fuse_reviews(self, hidden: torch.Tensor, memories: dict[str, Memory]) -> torch.Tensor:
        """hs_copy2: h~ = W_f [h ; sum_k softmax_k(h . r_k) r_k] (B, T, dim); h unchanged without fusion."""
        if self.fusion is None:
            return hidden
        reviews = memories["reviews"][0]
        attention = self.review_attention(hidden, memories)
        summary = attention @ reviews if reviews.size(1) else torch.zeros_like(hidden)
        return self.fusion(torch.cat([hidden, summary], dim=-1))

    def review_attention(self, hidden: torch.Tensor, memories: dict[str, Memory]) -> torch.Tensor:
        """softmax_k(h . r_k) over each sample's reviews (B, T, I); all zero for a sample without any review."""
        reviews, mask = memories["reviews"]
        has_review = mask.any(dim=1)[:, None, None]  # (B, 1, 1)
        # masked reviews get -inf; a row with none gets finite scores (a defined softmax) and is zeroed after
        allowed = mask.unsqueeze(1) | ~has_review
        scores = (hidden @ reviews.transpose(1, 2)).masked_fill(~allowed, float("-inf"))
        return torch.softmax(scores, dim=-1) * has_review

    def token_log_probs(self, hidden: torch.Tensor, memories: dict[str, Memory],
                        inputs: dict[str, Any]) -> torch.Tensor:
        # the fused state goes through the one logits hook (vocab_logits), as every path to a token does
        return self.vocab_log_probs(self.fuse_reviews(hidden, memories), inputs)

    def target_weights(self, targets: torch.Tensor, inputs: dict[str, Any]) -> torch.Tensor | None:
        return self.token_weights[targets] if self.config.weighting else None
