"""Tiny real pipelines for the functional-forward, adaptation and lifecycle tests.

A real :class:`crs.pipeline.model.PipelineModel` and :class:`crs.pipeline.builder.Pipeline`
(real wiring, collation, registry-built metrics and protocols) around three toy slots:

- ``graph`` (``ToyGraph``): batch-independent item vectors, a stand-in for a graph
  encoder; counts its runs so tests can see the cache at work;
- ``rec`` (``ToyRec``): scores = (mean of the context items' vectors + a learned query) . item vectors;
- ``generator`` (``ToyGen``): a unigram language model over the vocabulary (``loss.gen``,
  ``nll_sum``/``nll_count``); greedy decoding repeats its most likely token.
  ``ToyTextGen`` writes text instead and names the recommender's top item in it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from crs.config.spec import EvaluationSpec, PipelineSpec
from crs.data.samples import Sample
from crs.interfaces import BuildDeps, ExternalEncoder, Generator, Port, Recommender
from crs.pipeline.builder import Pipeline
from crs.pipeline.model import PipelineModel
from crs.pipeline.wiring import wire
from crs.testing import make_tiny_deps

DIM = 4


class ToyGraph(ExternalEncoder):
    def __init__(self, config: Any, deps: BuildDeps):
        super().__init__(config, deps)
        self.table = nn.Parameter(torch.randn(len(deps.items), DIM))
        self.runs = 0

    def output_ports(self) -> dict[str, Port]:
        return {"nodes": Port("item_nodes", DIM)}

    def forward(self, inputs: dict[str, Any]) -> dict[str, Any]:
        self.runs += 1
        return {"nodes": torch.tanh(self.table)}


class ToyRec(Recommender):
    def __init__(self, config: Any, deps: BuildDeps):
        super().__init__(config, deps)
        self.query = nn.Parameter(torch.randn(DIM) * 0.3)

    def input_ports(self) -> dict[str, Port]:
        return {"nodes": Port("item_nodes", DIM), "items": Port("batch.context_items"),
                "items_mask": Port("batch.context_items_mask"), "target": Port("batch.target_item", optional=True)}

    def output_ports(self) -> dict[str, Port]:
        return {"scores": Port("scores"), "loss": Port("loss.rec")}

    def forward(self, inputs: dict[str, Any]) -> dict[str, Any]:
        nodes, mask = inputs["nodes"], inputs["items_mask"].float()
        context = (nodes[inputs["items"]] * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        scores = (context + self.query) @ nodes.T
        out = {"scores": scores}
        target = inputs.get("target")
        if target is not None and (target >= 0).any():
            keep = target >= 0
            out["loss"] = nn.functional.cross_entropy(scores[keep], target[keep])
        return out


class ToyGen(Generator):
    def __init__(self, config: Any, deps: BuildDeps):
        super().__init__(config, deps)
        self.vocab, self.items = deps.vocab, deps.items
        self.logits = nn.Parameter(torch.zeros(len(deps.vocab)))

    def input_ports(self) -> dict[str, Port]:
        return {"context": Port("batch.context_tokens"), "response": Port("batch.response_tokens", optional=True),
                "response_mask": Port("batch.response_tokens_mask", optional=True)}

    def output_ports(self) -> dict[str, Port]:
        return {"loss": Port("loss.gen"), "nll_sum": Port("nll_sum"), "nll_count": Port("nll_count")}

    def forward(self, inputs: dict[str, Any]) -> dict[str, Any]:
        targets = inputs["response"][:, 1:]
        mask = inputs["response_mask"][:, 1:].float()
        nll = -torch.log_softmax(self.logits, -1)[targets] * mask
        return {"loss": nll.sum() / mask.sum(), "nll_sum": nll.sum(), "nll_count": mask.sum()}

    def generate(self, inputs: dict[str, Any], max_len: int) -> torch.Tensor:
        best = int(self.logits.argmax())
        return torch.full((inputs["context"].shape[0], max_len), best, dtype=torch.long)


class ToyTextGen(ToyGen):
    """Writes text, naming the recommender's best item (read through ``inputs["recommend"]``)."""

    ppl_unit = "subtoken"

    def generate_text(self, inputs: dict[str, Any], max_len: int) -> list[str]:
        self.asked = inputs["recommend"](2)  # (B, 2)
        ids = self.items.ids
        return [f"You might LIKE @{ids[int(row[0])]}!" for row in self.asked]


def make_model(*, text: bool = False, generator: bool = True, seed: int = 0) -> tuple[PipelineModel, BuildDeps]:
    torch.manual_seed(seed)
    deps = make_tiny_deps()
    slots = {"graph": ToyGraph(None, deps), "rec": ToyRec(None, deps)}
    if generator:
        slots["generator"] = (ToyTextGen if text else ToyGen)(None, deps)
    return PipelineModel(slots, wire(slots, {})), deps


def sample(conv: str, turn: int, user: int, context_items: list[int], targets: list[int], response: str,
           vocab: Any) -> Sample:
    return Sample(conv_id=conv, turn_index=turn, user_index=user, context_text=[f"{conv} turn {turn - 1}"],
                  context_tokens=vocab.encode("i like a movie"), context_entities=[], context_words=[],
                  context_items=list(context_items), target_items=list(targets),
                  response_tokens=[vocab.bos, *vocab.encode(response), vocab.eos], response_text=response)


def user_samples(vocab: Any) -> list[Sample]:
    """Users 1 (4 conversations, ids out of order), 2 (3) and 3 (1), and two conversations of unknown users (0).

    User 1 always gets item 0 recommended, user 2 item 3: adapting on earlier conversations pays off.
    """
    rows = []
    for conv, user, target in (("100", 1, 0), ("20", 1, 0), ("3", 1, 0), ("41", 1, 0),
                               ("7", 2, 3), ("8", 2, 3), ("9", 2, 3), ("50", 3, 1), ("60", 0, 2), ("61", 0, 4)):
        rows.append(sample(conv, 1, user, [], [target], "hi you", vocab))
        rows.append(sample(conv, 3, user, [(target + 1) % 5], [target, (target + 2) % 5], "try a movie", vocab))
    return rows


def make_pipeline(model: PipelineModel, deps: BuildDeps, samples: list[Sample], *, protocols: list | None = None,
                  metrics: list | None = None, batch_size: int = 3) -> Pipeline:
    from crs.plugin_manager import get_plugin_manager
    from crs.registry import Registry

    evaluation = EvaluationSpec(batch_size=batch_size, max_gen_tokens=4,
                                protocols=protocols or [{"type": "crslab"}],
                                metrics=metrics or [{"type": "recall", "ks": [1, 3]}, {"type": "mrr", "ks": [5]},
                                                    {"type": "f1"}, {"type": "ppl"}])
    spec = PipelineSpec(data={"type": "toy"}, model={}, stages=[], evaluation=evaluation)
    registry = Registry.from_plugin_manager(get_plugin_manager())
    return Pipeline(spec=spec, resolved={}, registry=registry, corpus=None, vocab=deps.vocab, items=deps.items,
                    graphs={}, item_texts={}, users={}, samples={"test": samples, "valid": samples}, model=model)


@dataclass
class Snapshot:
    """Every parameter and buffer of a model, copied, to show that something left it unchanged."""

    values: dict[str, torch.Tensor]

    @classmethod
    def of(cls, model: nn.Module) -> "Snapshot":
        return cls({k: v.detach().clone() for k, v in model.state_dict().items()})

    def same_as(self, model: nn.Module) -> bool:
        now = model.state_dict()
        return now.keys() == self.values.keys() and all(torch.equal(now[k], v) for k, v in self.values.items())
