"""Lifecycle hooks around evaluation: a recommender that serves scores from a faiss index it builds itself."""
from __future__ import annotations

from typing import Any

import pytest
import torch
from adapt_toys import make_pipeline, user_samples
from torch import nn

from crs.evaluation import evaluate
from crs.interfaces import BuildDeps, Component, Port, Recommender
from crs.pipeline.model import PipelineModel
from crs.pipeline.wiring import wire
from crs.testing import make_tiny_deps

DIM, TOP_K = 4, 3


class FaissRecommender(Recommender):
    """Training: full dot-product scores and cross-entropy.  Evaluation: the TOP_K items a faiss
    inner-product index returns for the user vector, -inf for the rest (as a two-stage recommender)."""

    def __init__(self, config: Any, deps: BuildDeps):
        super().__init__(config, deps)
        self.item_vectors = nn.Parameter(torch.randn(len(deps.items), DIM))
        self.query = nn.Parameter(torch.randn(DIM))
        self.index: Any = None
        self.built_for: tuple | None = None
        self.builds = self.searches = 0
        self.events: list[tuple[str, str]] = []

    def input_ports(self) -> dict[str, Port]:
        return {"items": Port("batch.context_items"), "items_mask": Port("batch.context_items_mask"),
                "target": Port("batch.target_item", optional=True)}

    def output_ports(self) -> dict[str, Port]:
        return {"scores": Port("scores"), "loss": Port("loss.rec")}

    # ---------------------------------------------------------------- lifecycle
    def on_eval_start(self, **context: Any) -> None:
        self.events.append(("start", context["split"]))
        assert not context["pipeline"].model.training  # the model is already in eval mode
        self._build()

    def on_eval_end(self, **context: Any) -> None:
        self.events.append(("end", context["split"]))
        self.index = None  # its vectors go stale once training moves the parameters

    def _build(self) -> None:
        import faiss

        index = faiss.IndexFlatIP(DIM)
        index.add(self.item_vectors.detach().float().contiguous().numpy())
        self.index, self.built_for = index, self._version_of_items()
        self.builds += 1

    def _version_of_items(self) -> tuple:
        return id(self.item_vectors), self.item_vectors._version

    # ------------------------------------------------------------------ forward
    def user(self, inputs: dict[str, Any]) -> torch.Tensor:
        mask = inputs["items_mask"].float()
        context = ((self.item_vectors[inputs["items"]] * mask.unsqueeze(-1)).sum(1)
                   / mask.sum(1, keepdim=True).clamp(min=1))
        return context + self.query

    def forward(self, inputs: dict[str, Any]) -> dict[str, Any]:
        user = self.user(inputs)
        if self.training or self.index is None:
            scores = user @ self.item_vectors.T
            out = {"scores": scores}
            target = inputs.get("target")
            if target is not None and (target >= 0).all():
                out["loss"] = nn.functional.cross_entropy(scores, target)
            return out
        if self.built_for != self._version_of_items():  # parameters moved since the build (or were swapped)
            self._build()
        values, indices = self.index.search(user.detach().float().contiguous().numpy(), TOP_K)
        self.searches += 1
        scores = torch.full((user.shape[0], len(self.item_vectors)), float("-inf"))
        scores.scatter_(1, torch.from_numpy(indices).long(), torch.from_numpy(values))
        return {"scores": scores}


def setup():
    torch.manual_seed(0)
    deps = make_tiny_deps()
    slots = {"recommender": FaissRecommender(None, deps)}
    model = PipelineModel(slots, wire(slots, {}))
    return make_pipeline(model, deps, user_samples(deps.vocab), batch_size=4), slots["recommender"]


def brute_force_top(rec: FaissRecommender, pipeline) -> list[list[str]]:
    """The TOP_K items by exact dot product, per scored sample, in evaluation order."""
    tops = []
    samples = [s.for_item(i) for s in pipeline.samples["test"] for i in dict.fromkeys(s.target_items)]
    with torch.no_grad():
        for batch in pipeline.batches(samples, 4, shuffle=False, seed=0):
            scores = rec.user({"items": batch["batch.context_items"], "items_mask": batch["batch.context_items_mask"]})
            top = (scores @ rec.item_vectors.T).topk(TOP_K, dim=1).indices
            tops += [[pipeline.items.ids[i] for i in row] for row in top.tolist()]
    return tops


def test_evaluation_builds_the_index_at_start_and_scores_from_it():
    pipeline, rec = setup()
    results = evaluate(pipeline, "test")
    assert rec.events == [("start", "test"), ("end", "test")] and rec.index is None
    assert rec.builds == 1 and rec.searches == 8  # 30 scored samples in batches of 4
    tops = [r["top"] for r in results.rankings["crslab-v1"]]
    assert all(len(top) == TOP_K for top in tops)  # only what the index returned is ranked
    assert tops == brute_force_top(rec, pipeline)
    assert pipeline.model.training  # restored


def test_the_index_is_rebuilt_after_the_parameters_change():
    pipeline, rec = setup()
    first = [r["top"] for r in evaluate(pipeline, "test").rankings["crslab-v1"]]
    optimizer = torch.optim.SGD(pipeline.model.parameters(), lr=5.0)
    batch = next(pipeline.batches([s.for_item(s.target_items[0]) for s in pipeline.samples["test"]], 8,
                                  shuffle=False, seed=0))
    pipeline.model.compute(batch, ["loss.rec"])["loss.rec"].backward()  # training mode: exact scores
    optimizer.step()
    second = [r["top"] for r in evaluate(pipeline, "test").rankings["crslab-v1"]]
    assert rec.builds == 2 and second == brute_force_top(rec, pipeline) and second != first
    # a change in the middle of an evaluation (no lifecycle event) is noticed too
    pipeline.model.eval()
    rec.on_eval_start(split="test", pipeline=pipeline)
    with torch.no_grad():
        rec.item_vectors.mul_(-1)
        pipeline.model.compute(batch, ["scores"])
    assert rec.builds == 4


def test_components_have_no_op_hooks_and_notify_calls_every_slot():
    from crs.training.callbacks import EVENTS, notify

    pipeline, rec = setup()
    for event in EVENTS:
        assert getattr(Component, event)(rec, stage=None, split="x", pipeline=None) is None
    pipeline.model.eval()
    notify(pipeline.model, "on_eval_start", split="valid", pipeline=pipeline)
    assert rec.events == [("start", "valid")] and rec.builds == 1
    with pytest.raises(ValueError, match="unknown lifecycle event"):
        notify(pipeline.model, "on_eval_begin")
