"""Popularity baseline (KGSF Sec. 5.1.2): rank items by how often train recommended them.

scores_i = log(1 + train_count_i) for every sample; no trainable parameters and no
loss, so it can be evaluated without a training stage.

With no train recommendation at all (an empty train split) every item would score 0:
a ranking of ties fitted on no data.  That is refused when the component is built (a
DataError), before anything is trained or evaluated.  Items with equal counts tie, and
ties never favour the target (:mod:`crs.evaluation.ranking`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from crs.errors import DataError
from crs.interfaces import BuildDeps, Port, Recommender


class PopularityRecommender(Recommender):
    """`popularity`: outputs scores (B, n_items); reads only the batch size from batch.user_index."""

    @dataclass
    class Config:
        pass

    def __init__(self, config: Config, deps: BuildDeps):
        super().__init__(config, deps)
        items = deps.require("items")
        self.n_items = len(items)
        counts = torch.as_tensor(items.train_counts, dtype=torch.float32).clone()
        if not bool((counts > 0).any()):
            raise DataError("train split", f"the popularity baseline ({deps.path}) ranks items by how often train "
                            f"recommends them, but no train sample recommends any of the {self.n_items} items; "
                            "it would rank every item alike, fitted on no data",
                            "check the train data (data.* paths and filters, samples.max_train_conversations), "
                            "or use a recommender that does not learn from train recommendations")
        self.register_buffer("popularity", torch.log1p(counts.clamp(min=0)), persistent=False)

    def input_ports(self) -> dict[str, Port]:
        return {"like": Port("batch.user_index", doc="long (B,); only its batch size is used")}

    def output_ports(self) -> dict[str, Port]:
        return {"scores": Port("scores", self.n_items, doc="log(1 + train count), same for every sample")}

    def forward(self, inputs: dict) -> dict:
        batch = inputs["like"].shape[0]
        return {"scores": self.popularity.unsqueeze(0).expand(batch, -1).clone()}
