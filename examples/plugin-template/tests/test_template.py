"""Tests for the template plugin, using the fixtures crs.testing provides to plugin authors."""
import crs_plugin_template
import torch
from crs_plugin_template.mean_entity import MeanEntityRecommender

from crs.testing import check_component


def test_registers_mean_entity(register_plugin):
    registry = register_plugin(crs_plugin_template, "template")
    info = registry.get("mean_entity")
    assert (info.kind, info.plugin, info.cls) == ("recommender", "template", MeanEntityRecommender)


def test_ports_and_loss(tiny_deps, tiny_batch):
    model, out = check_component(MeanEntityRecommender, {"dim": 8}, tiny_deps, tiny_batch)
    assert out["scores"].shape == (3, len(tiny_deps.items))
    assert out["loss"].item() > 0
    assert model.embeddings.weight.grad is not None  # check_component ran backward


def test_scores_are_mean_entity_dot_items(tiny_deps, tiny_batch):
    model, out = check_component(MeanEntityRecommender, {"dim": 4}, tiny_deps, tiny_batch)
    emb = model.embeddings.weight.detach()
    ents = tiny_batch["batch.context_entities"][0][tiny_batch["batch.context_entities_mask"][0]]
    expected = emb[ents].mean(0) @ emb[tiny_deps.items.entity_nodes].T
    assert torch.allclose(out["scores"][0].detach(), expected, atol=1e-6)
    assert torch.all(out["scores"][2] == 0)  # the third sample mentions no entity


def test_builds_from_yaml_node_with_renamed_port(register_plugin, tiny_deps):
    registry = register_plugin(crs_plugin_template, "template")
    node = {"type": "mean_entity", "dim": 16, "inputs": {"target": "batch.other_target"}}
    model = registry.build("recommender", node, "model.rec", tiny_deps)
    assert model.config.dim == 16 and model.path == "model.rec"
    assert model.port_renames["inputs"] == {"target": "batch.other_target"}
