"""KGSF's MIM fusion objective (Eq. 4-6): align word-graph and entity-graph spaces.

For each sample, a *super token* summarises the context words with self-attentive
pooling (Eq. 6): v~ = pool(word nodes at batch.context_words).  Every entity node e
is scored against it with g(e, w~) = sigmoid(n_e^T T v~) (Eq. 5).  Positives are the
entities mentioned in the context plus the target item's node; negatives are all other
entity nodes (``negatives: 0``) or that many uniformly sampled nodes per sample.
Eq. 4's bound E_P[g] - E_N[g] becomes a binary cross-entropy that averages positives
and negatives *separately*, so the many negatives do not drown the few positives:

    loss.mim = mean_b [ mean_{e in P_b} -log g(e) + mean_{e in N_b} -log(1 - g(e)) ]

Samples with no context word or no positive entity do not count.  The pad node 0 is
never a positive or a negative.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from crs.errors import ConfigError
from crs.interfaces import BuildDeps, FusionObjective, Port
from crs.nn import SelfAttentivePool, gather_nodes

from .graph_common import check_positive


class MutualInformationObjective(FusionObjective):
    """`mim`: outputs loss.mim from word_nodes, entity_nodes and the batch's context words/entities."""

    @dataclass
    class Config:
        word_dim: int = 128
        entity_dim: int = 128
        negatives: int = 0  # 0 = every other entity node; k > 0 = k sampled per sample

    def __init__(self, config: Config, deps: BuildDeps):
        super().__init__(config, deps)
        check_positive(config.word_dim, f"{self.path}.word_dim", "word_dim")
        check_positive(config.entity_dim, f"{self.path}.entity_dim", "entity_dim")
        if config.negatives < 0:
            raise ConfigError(f"{self.path}.negatives", f"must be >= 0, got {config.negatives}",
                              "use 0 for all entity nodes or a positive sample count")
        self.super_token = SelfAttentivePool(config.word_dim)
        self.transform = nn.Linear(config.word_dim, config.entity_dim, bias=False)  # T
        nn.init.xavier_uniform_(self.transform.weight)
        # without an item index (e.g. a pretraining-only pipeline) only context entities are positives
        items = deps.items
        nodes = (torch.zeros(0, dtype=torch.long) if items is None
                 else torch.as_tensor(items.entity_nodes).long().clone())
        self.register_buffer("item_nodes", nodes, persistent=False)

    def input_ports(self) -> dict[str, Port]:
        return {
            "word_nodes": Port("word_nodes", self.config.word_dim),
            "entity_nodes": Port("entity_nodes", self.config.entity_dim),
            "words": Port("batch.context_words"),
            "words_mask": Port("batch.context_words_mask"),
            "entities": Port("batch.context_entities"),
            "entities_mask": Port("batch.context_entities_mask"),
            "target": Port("batch.target_item", optional=True, doc="its entity node counts as a positive"),
        }

    def output_ports(self) -> dict[str, Port]:
        return {"loss": Port("loss.mim", doc="MIM binary cross-entropy (Eq. 4-5)")}

    def super_tokens(self, word_nodes: torch.Tensor, words: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """v~ per sample (B, word_dim), Eq. 6."""
        return self.super_token(gather_nodes(word_nodes, words), mask)

    def positives(self, inputs: dict, num_nodes: int) -> torch.Tensor:
        """Bool (B, num_nodes): context entities and the target item's node; pad node never."""
        entities, mask = inputs["entities"], inputs["entities_mask"].bool()
        positive = torch.zeros(entities.shape[0], num_nodes, dtype=torch.bool, device=entities.device)
        positive.scatter_(1, entities.long() * mask, mask)  # masked slots write False into column 0
        target = inputs.get("target")
        if target is not None and len(self.item_nodes):
            has = target >= 0
            rows = torch.nonzero(has).squeeze(-1)
            positive[rows, self.item_nodes[target[has].long()]] = True
        positive[:, 0] = False
        return positive

    def forward(self, inputs: dict) -> dict:
        entity_nodes = inputs["entity_nodes"]
        num_nodes = entity_nodes.shape[0]
        words_mask = inputs["words_mask"].bool()
        summary = self.transform(self.super_tokens(inputs["word_nodes"], inputs["words"], words_mask))  # (B, dE)
        positive = self.positives(inputs, num_nodes)
        if self.config.negatives:
            loss_per_sample, pos_count = self._sampled_loss(summary, entity_nodes, positive)
        else:
            logits = summary @ entity_nodes.t()  # (B, N)
            pos_count = positive.sum(1)
            negative = ~positive
            negative[:, 0] = False
            pos_term = (F.softplus(-logits) * positive).sum(1) / pos_count.clamp(min=1)
            neg_term = (F.softplus(logits) * negative).sum(1) / negative.sum(1).clamp(min=1)
            loss_per_sample = pos_term + neg_term
        counted = (pos_count > 0) & words_mask.any(1)
        if not bool(counted.any()):
            return {"loss": summary.sum() * 0.0 + entity_nodes.sum() * 0.0}
        return {"loss": loss_per_sample[counted].mean()}

    def _sampled_loss(self, summary: torch.Tensor, entity_nodes: torch.Tensor, positive: torch.Tensor):
        """Positives in full (gathered per sample), negatives as k uniform draws from nodes 1..N-1."""
        batch, num_nodes = positive.shape
        pos_count = positive.sum(1)
        rows, cols = torch.nonzero(positive, as_tuple=True)
        pos_logits = (summary[rows] * entity_nodes[cols]).sum(-1)
        pos_term = torch.zeros(batch, device=summary.device, dtype=summary.dtype).index_add(
            0, rows, F.softplus(-pos_logits)) / pos_count.clamp(min=1)
        draws = torch.randint(1, max(num_nodes, 2), (batch, self.config.negatives), device=summary.device)
        valid = ~positive.gather(1, draws.clamp(max=num_nodes - 1))  # a draw that hits a positive is dropped
        neg_logits = torch.einsum("bd,bkd->bk", summary, entity_nodes[draws.clamp(max=num_nodes - 1)])
        neg_term = (F.softplus(neg_logits) * valid).sum(1) / valid.sum(1).clamp(min=1)
        return pos_term + neg_term, pos_count
