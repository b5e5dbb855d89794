"""The `mean_entity` recommender: the mean of the context entities' embeddings, scored against items."""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn
from torch.nn import functional as F

from crs.interfaces import BuildDeps, Port, Recommender


class MeanEntityRecommender(Recommender):
    """Scores items by the dot product of the mean context-entity embedding with item embeddings.

    Entities and items share one embedding table over the entity graph (an item is
    its entity node), so no other slot is needed.  A dialogue that mentions no
    entity yet gets a zero user vector and all-zero scores.
    """

    @dataclass
    class Config:
        dim: int = 32  # embedding size
        graph: str = "entity_kg"  # knowledge name of the entity graph

    def __init__(self, config: Config, deps: BuildDeps):
        super().__init__(config, deps)
        graph = deps.graph(config.graph)
        items = deps.require("items")
        self.n_items = len(items)
        self.embeddings = nn.Embedding(graph.num_nodes, config.dim, padding_idx=0)
        # A buffer, so the item -> node map moves with .to(device) and is saved in checkpoints.
        self.register_buffer("item_nodes", items.entity_nodes.clone().long(), persistent=False)

    def input_ports(self) -> dict[str, Port]:
        return {
            "entities": Port("batch.context_entities", doc="entity-graph node ids mentioned so far"),
            "mask": Port("batch.context_entities_mask"),
            "target": Port("batch.target_item", optional=True, doc="item to recommend; -1 = none"),
        }

    def output_ports(self) -> dict[str, Port]:
        return {
            "scores": Port("scores", dim=self.n_items),
            "loss": Port("loss.rec", optional=True, doc="cross-entropy over all items"),
        }

    def forward(self, inputs: dict) -> dict:
        mask = inputs["mask"].unsqueeze(-1).to(self.embeddings.weight.dtype)
        summed = (self.embeddings(inputs["entities"]) * mask).sum(dim=1)
        user = summed / mask.sum(dim=1).clamp(min=1.0)  # empty context -> zero vector, not NaN
        scores = user @ self.embeddings(self.item_nodes).T
        out = {"scores": scores}
        target = inputs.get("target")
        if target is not None:
            valid = target >= 0
            # With no valid target the loss is a zero that still has a graph, so stages can sum it.
            out["loss"] = F.cross_entropy(scores[valid], target[valid]) if valid.any() else scores.sum() * 0.0
        return out
