"""Popularity baseline (KGSF Sec. 5.1.2): rank items by how often train recommended them.

scores_i = log(1 + train_count_i) for every sample; no trainable parameters and no
loss, so it can be evaluated without a training stage.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

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
        self.register_buffer("popularity", torch.log1p(counts.clamp(min=0)), persistent=False)

    def input_ports(self) -> dict[str, Port]:
        return {"like": Port("batch.user_index", doc="long (B,); only its batch size is used")}

    def output_ports(self) -> dict[str, Port]:
        return {"scores": Port("scores", self.n_items, doc="log(1 + train count), same for every sample")}

    def forward(self, inputs: dict) -> dict:
        batch = inputs["like"].shape[0]
        return {"scores": self.popularity.unsqueeze(0).expand(batch, -1).clone()}
