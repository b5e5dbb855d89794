"""A batch field declared by a plugin's featurizer reaches that plugin's model component (issue 7, item 12d).

The plugin is registered through ``crs.testing``'s ``register_plugin`` fixture, as a
third-party plugin would be, next to the built-in demo, metrics and training plugins; the pipeline is built
from a YAML config the way ``crs run`` builds it.
"""
from __future__ import annotations

import types
from dataclasses import dataclass

import pytest
import torch
import yaml

import crs.plugins.demo
import crs.plugins.metrics
import crs.plugins.training
from crs.config.loader import load_config
from crs.data.fields import Featurizer, Field
from crs.errors import WiringError
from crs.hookspecs import hookimpl
from crs.interfaces import BuildDeps, Port, Recommender
from crs.pipeline import build_pipeline

DEMO = {"type": "demo", "n_items": 30, "n_people": 12, "n_users": 6, "n_train": 24, "n_valid": 6, "n_test": 6}


class TurnFeatures(Featurizer):
    """`turn_features`: the answered turn's index modulo `modulo`, and the word count of each context turn."""

    @dataclass
    class Config:
        modulo: int = 2

    def fields(self) -> list[Field]:
        return [Field("turn_mod", "value", "turn index modulo `modulo`", "(B,)", default=int, annotation="int"),
                Field("turn_lengths", "pad", "words per context turn", "(B, C)")]

    def featurize(self, sample, conversation) -> dict:
        assert conversation.id == sample.conv_id  # the featurizer sees the sample's own conversation
        return {"turn_mod": sample.turn_index % self.config.modulo,
                "turn_lengths": [len(turn["text"].split()) for turn in sample.context_turns]}


class FieldReader(Recommender):
    """`field_reader`: scores every item by `batch.<field>` and records what its forward received."""

    received: list[dict] = []

    @dataclass
    class Config:
        field: str = "turn_mod"

    def __init__(self, config, deps: BuildDeps):
        super().__init__(config, deps)
        self.n_items = len(deps.require("items"))
        self.bias = torch.nn.Parameter(torch.zeros(1))

    def input_ports(self) -> dict[str, Port]:
        return {"value": Port(f"batch.{self.config.field}"), "lengths": Port("batch.turn_lengths", optional=True),
                "lengths_mask": Port("batch.turn_lengths_mask", optional=True)}

    def output_ports(self) -> dict[str, Port]:
        return {"scores": Port("scores", self.n_items)}

    def forward(self, inputs: dict) -> dict:
        FieldReader.received.append(inputs)
        value = inputs["value"].float()
        return {"scores": value[:, None].expand(-1, self.n_items) + self.bias}


def _plugin() -> types.ModuleType:
    module = types.ModuleType("fake_featurizer_plugin")
    module.crs_register_featurizers = hookimpl(lambda register: register("turn_features", TurnFeatures))
    module.crs_register_recommenders = hookimpl(lambda register: register("field_reader", FieldReader))
    return module


@pytest.fixture
def registry(register_plugin):
    """The fake plugin next to the built-ins a run needs (demo data, metrics and protocols, strategies)."""
    for builtin in (crs.plugins.demo, crs.plugins.metrics, crs.plugins.training):
        register_plugin(builtin)
    return register_plugin(_plugin())


def _pipeline(tmp_path, registry, featurizers, field="turn_mod"):
    config = {"name": "featurizer-test", "run_dir": str(tmp_path / "run"), "data": DEMO,
              "model": {"recommender": {"type": "field_reader", "field": field}},
              "stages": [{"name": "rec", "task": "rec", "objectives": {}}],
              "samples": {"featurizers": featurizers}}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    spec, resolved = load_config(str(path), registry=registry)
    return build_pipeline(spec, registry, resolved)


def test_featurizer_field_reaches_the_plugins_component(tmp_path, registry):
    FieldReader.received.clear()
    pipeline = _pipeline(tmp_path, registry, [{"type": "turn_features", "modulo": 3}])
    assert [f.name for f in pipeline.fields] == ["turn_mod", "turn_lengths"]
    samples = pipeline.task_samples("train", "conv")[:6]
    assert len(samples) == 6 and all(set(s.features) == {"turn_mod", "turn_lengths"} for s in samples)
    batch = next(pipeline.batches(samples, 6, shuffle=False, seed=0))
    scores = pipeline.model.compute(batch, ["scores"])["scores"]
    (inputs,) = FieldReader.received
    expected = [s.turn_index % 3 for s in samples]
    assert inputs["value"].tolist() == expected and scores[:, 0].tolist() == expected
    assert set(expected) != {expected[0]}  # the values differ per sample: not a constant default
    lengths = [[len(t["text"].split()) for t in s.context_turns] for s in samples]
    width = max(map(len, lengths))
    assert inputs["lengths"].tolist() == [row + [0] * (width - len(row)) for row in lengths]
    assert inputs["lengths_mask"].sum(1).tolist() == [len(row) for row in lengths]


def test_reading_an_undeclared_batch_field_fails_the_wiring_check(tmp_path, registry):
    # the featurizer is not listed under samples.featurizers, so batch.turn_mod does not exist
    with pytest.raises(WiringError) as info:
        _pipeline(tmp_path, registry, [])
    text = str(info.value)
    assert "model.recommender.inputs.value" in text
    assert "slot 'recommender' reads 'batch.turn_mod', which no slot provides and is no batch field" in text
    assert "fix:" in text
    # a misspelt field of a listed featurizer is caught too, with the declared field suggested
    with pytest.raises(WiringError, match=r"reads 'batch.turn_modd'.*Did you mean 'batch.turn_mod'\?"):
        _pipeline(tmp_path, registry, [{"type": "turn_features"}], field="turn_modd")
