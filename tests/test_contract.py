"""The component contract: every registered model component builds against the tiny world of
crs.testing and passes check_component, from its defaults or from its declared `contract_node`.

The list is read from the default registry when the tests are collected, so a plugin that
registers a new model component is checked here without anyone writing a test for it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pytest

from crs.hookspecs import hookimpl
from crs.interfaces import MODEL_KINDS, Port, Recommender
from crs.plugin_manager import get_plugin_manager
from crs.registry import Registry
from crs.testing import check_contract

DEFAULT_REGISTRY = Registry.from_plugin_manager(get_plugin_manager())
MODEL_COMPONENTS = [(kind, name) for kind in MODEL_KINDS for name in DEFAULT_REGISTRY.names(kind)]


@pytest.mark.parametrize("kind,name", MODEL_COMPONENTS, ids=[f"{k}:{n}" for k, n in MODEL_COMPONENTS])
def test_registered_model_component_passes_the_contract(kind, name):
    component, outputs = check_contract(DEFAULT_REGISTRY, name)
    assert component.kind == kind and outputs


def test_the_contract_covers_the_built_in_model_components():
    # guards the parametrization above against silently collecting nothing
    names = {name for _, name in MODEL_COMPONENTS}
    assert {"rgcn", "gcn", "self_attention_pool", "gate", "dot_product", "mim", "kgsf_decoder"} <= names


class _NeedsGraph(Recommender):
    """Scores items by a learned bias; refuses to build without a graph name, as graph encoders do."""

    @dataclass
    class Config:
        graph: str = ""

    def __init__(self, config, deps):
        super().__init__(config, deps)
        import torch

        if config.graph not in deps.graphs:
            raise ValueError(f"no graph named '{config.graph}'")
        self.n_items = len(deps.items)
        self.bias = torch.nn.Parameter(torch.zeros(self.n_items))

    def input_ports(self):
        return {"target": Port("batch.target_item")}

    def output_ports(self):
        return {"scores": Port("scores", self.n_items), "loss": Port("loss.rec")}

    def forward(self, inputs):
        import torch.nn.functional as F

        scores = self.bias.expand(len(inputs["target"]), -1)
        return {"scores": scores, "loss": F.cross_entropy(scores, inputs["target"])}


class _WithExample(_NeedsGraph):
    contract_node: ClassVar[dict] = {"graph": "entity_kg"}


class _Plugin:
    @hookimpl
    def crs_register_recommenders(self, register):
        register("needs_graph", _NeedsGraph)
        register("with_example", _WithExample)


def test_a_component_without_working_defaults_fails_and_says_how_to_declare_an_example(register_plugin):
    registry = register_plugin(_Plugin(), "contract_fake")
    with pytest.raises(AssertionError) as info:
        check_contract(registry, "needs_graph")
    message = str(info.value)
    assert "recommender 'needs_graph' (plugin contract_fake" in message and "no graph named ''" in message
    assert "declares no contract_node" in message and "contract_node: ClassVar[dict]" in message
    component, outputs = check_contract(registry, "with_example")  # the declared example builds it
    assert component.config.graph == "entity_kg" and outputs["scores"].shape == (3, 5)
    assert component.bias.grad is not None  # the loss backpropagated
