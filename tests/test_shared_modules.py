"""Modules shared between slots (`shared:`): one token embedding read by a recommender and a generator."""
from dataclasses import dataclass

import pytest
import torch

from crs.config.loader import load_config
from crs.errors import ConfigError, UnknownComponentError
from crs.interfaces import ExternalEncoder, Port
from crs.nn.embedding import TokenEmbedding
from crs.pipeline.model import PipelineModel
from crs.pipeline.wiring import wire
from crs.plugin_manager import get_plugin_manager
from crs.registry import Registry
from crs.shared import SharedRef, borrowed, build_shared
from crs.testing import make_tiny_batch, make_tiny_deps
from crs.training.stage import resolve_parameters

GEN = {"type": "transformer", "dim": 16, "heads": 2, "layers": 1, "ffn_dim": 32, "dropout": 0.0}
REC = {"type": "text_cnn", "embedding_dim": 16, "filters": 8, "widths": [2], "dropout": 0.0}


@pytest.fixture(scope="module")
def registry():
    return Registry.from_plugin_manager(get_plugin_manager(load_entry_points=False))


def build_model(registry, model_nodes, shared_nodes=None):
    """What the pipeline builder does with `shared:` and `model:`, on the tiny world."""
    deps = make_tiny_deps()
    shared = build_shared(shared_nodes or {}, registry, deps)
    slots = {}
    for name, node in model_nodes.items():
        slot_deps = make_tiny_deps()
        slot_deps.shared = shared
        slots[name] = registry.build(["recommender", "generator", "external_encoder"], node, f"model.{name}",
                                     slot_deps)
    renames = {name: getattr(slot, "port_renames", {}) for name, slot in slots.items()}
    return PipelineModel(slots, wire(slots, renames), shared), deps


@pytest.fixture
def shared_model(registry):
    torch.manual_seed(0)
    model, deps = build_model(registry, {"recommender": {**REC, "embedding": "tokens"},
                                         "generator": {**GEN, "embedding": "tokens"}},
                              {"tokens": {"type": "token_embedding", "dim": 16}})
    return model, deps


def test_two_slots_hold_one_parameter(shared_model):
    model, deps = shared_model
    tokens = model.shared["tokens"]
    assert isinstance(tokens, TokenEmbedding) and tokens.weight.shape == (len(deps.vocab), 16)
    rec, gen = model.slots["recommender"], model.slots["generator"]
    assert isinstance(rec.embeddings, SharedRef) and isinstance(gen.embedding, SharedRef)
    assert rec.embeddings.weight is tokens.weight and gen.embedding.weight is tokens.weight
    assert gen.encoder.embedding.weight is tokens.weight and gen.decoder.embedding.weight is tokens.weight
    assert borrowed(rec) == {"tokens": tokens} and borrowed(gen) == {"tokens": tokens}
    # owned once: one name in named_parameters and one key in the state dict
    names = [n for n, p in model.named_parameters() if p is tokens.weight]
    assert names == ["shared.tokens.weight"]
    assert [k for k, v in model.state_dict().items() if v.data_ptr() == tokens.weight.data_ptr()] == names
    assert not any("embedding" in n for n, _ in rec.named_parameters())


def test_gradients_from_both_slots_reach_the_shared_weight(shared_model):
    model, deps = shared_model
    model.train()
    weight = model.shared["tokens"].weight
    batch = make_tiny_batch(deps)
    grads = {}
    for loss in ("loss.rec", "loss.gen"):
        model.zero_grad()
        model(batch, [loss])[loss].backward()
        grads[loss] = weight.grad.clone()
        assert grads[loss].abs().sum() > 0, loss
    model.zero_grad()
    state = model(batch, ["loss.rec", "loss.gen"])
    (state["loss.rec"] + state["loss.gen"]).backward()
    assert torch.allclose(weight.grad, grads["loss.rec"] + grads["loss.gen"], atol=1e-6)
    # and a step on the shared module changes what both slots compute
    before = model.eval()(batch, ["scores"])["scores"].clone()
    with torch.no_grad():
        weight.add_(0.5)
    assert not torch.allclose(model(batch, ["scores"])["scores"], before)


def test_state_dict_round_trip(registry, shared_model):
    model, deps = shared_model
    torch.manual_seed(1)
    fresh, _ = build_model(registry, {"recommender": {**REC, "embedding": "tokens"},
                                      "generator": {**GEN, "embedding": "tokens"}},
                           {"tokens": {"type": "token_embedding", "dim": 16}})
    assert not torch.equal(fresh.shared["tokens"].weight, model.shared["tokens"].weight)
    fresh.load_state_dict(model.state_dict())
    assert torch.equal(fresh.slots["generator"].embedding.weight, model.shared["tokens"].weight)


def test_stage_train_lists_name_shared_modules_explicitly(shared_model):
    model, _ = shared_model
    weight = model.shared["tokens"].weight
    ids = lambda params: {id(p) for p in params}  # noqa: E731
    generator_only = resolve_parameters(model, ["generator"], "stages.0")
    assert id(weight) not in ids(generator_only)
    assert ids(generator_only) == ids(model.slots["generator"].parameters())
    with_shared = resolve_parameters(model, ["shared.tokens", "generator"], "stages.0")
    assert ids(with_shared) == ids(generator_only) | {id(weight)}
    assert id(weight) in ids(resolve_parameters(model, ["*"], "stages.0"))
    with pytest.raises(UnknownComponentError, match="shared.tokens"):
        resolve_parameters(model, ["shared.tokns"], "stages.0")


def test_without_shared_the_slots_own_their_embeddings(registry):
    model, _ = build_model(registry, {"recommender": REC, "generator": GEN})
    assert len(model.shared) == 0
    gen = model.slots["generator"]
    assert isinstance(gen.embedding, torch.nn.Embedding)
    assert any(n == "slots.generator.embedding.weight" for n, _ in model.named_parameters())


# ------------------------------------------------------------------ errors
def test_unknown_shared_name_suggests_and_lists(registry):
    with pytest.raises(ConfigError) as info:
        build_model(registry, {"generator": {**GEN, "embedding": "tokenz"}},
                    {"tokens": {"type": "token_embedding", "dim": 16}, "words": {"type": "token_embedding", "dim": 16}})
    err = info.value
    assert err.path == "model.generator.embedding"
    assert "Did you mean 'tokens'" in str(err) and "tokens, words" in str(err)


def test_no_shared_section_says_how_to_declare_one(registry):
    with pytest.raises(ConfigError, match=r"no `shared:` section.*shared: \{tokens: \{type: token_embedding"):
        build_model(registry, {"generator": {**GEN, "embedding": "tokens"}})


@pytest.mark.parametrize("slot,node", [("generator", {**GEN, "embedding": "tokens"}),
                                       ("recommender", {**REC, "embedding": "tokens"})])
def test_dim_mismatch_names_both_fixes(registry, slot, node):
    with pytest.raises(ConfigError) as info:
        build_model(registry, {slot: node}, {"tokens": {"type": "token_embedding", "dim": 32}})
    assert info.value.path == f"model.{slot}.embedding"
    assert "has dim 32" in str(info.value) and "needs dim 16" in str(info.value)
    assert "shared.tokens.dim: 16" in str(info.value)


class MeanToken(ExternalEncoder):
    """A batch-independent slot that borrows the shared embedding: mean token vector."""

    @dataclass
    class Config:
        embedding: str = "tokens"

    def __init__(self, config, deps):
        super().__init__(config, deps)
        self.tokens = deps.shared_module(config.embedding, "embedding")

    def output_ports(self):
        return {"mean": Port("mean_token")}

    def forward(self, inputs):
        return {"mean": self.tokens.weight.mean(0)}


def test_cache_of_a_batch_independent_slot_follows_its_shared_module():
    registry = Registry.from_plugin_manager(get_plugin_manager(load_entry_points=False))
    registry.add("external_encoder", "mean_token", MeanToken, "test")
    model, deps = build_model(registry, {"mean": {"type": "mean_token"}},
                              {"tokens": {"type": "token_embedding", "dim": 4}})
    model.eval()
    batch = make_tiny_batch(deps)
    with torch.no_grad():
        first = model(batch, ["mean_token"])["mean_token"]
        assert model(batch, ["mean_token"])["mean_token"] is first  # cached while nothing changes
        model.shared["tokens"].weight.add_(1.0)  # e.g. an optimizer step on shared.tokens
        again = model(batch, ["mean_token"])["mean_token"]
    assert torch.allclose(again, first + 1.0)


def test_not_a_token_embedding():
    registry = Registry.from_plugin_manager(get_plugin_manager(load_entry_points=False))
    from crs.shared import SharedModule

    class Scale(SharedModule):
        @dataclass
        class Config:
            pass

    registry.add("shared_module", "scale", Scale, "test")
    with pytest.raises(ConfigError, match="is not a token embedding") as info:
        build_model(registry, {"generator": {**GEN, "embedding": "s"}}, {"s": {"type": "scale"}})
    assert "type: token_embedding" in info.value.fix


def test_bad_shared_names_and_types(registry):
    with pytest.raises(ConfigError, match="not a valid shared-module name"):
        build_model(registry, {}, {"to.kens": {"type": "token_embedding"}})
    with pytest.raises(ConfigError) as info:  # a model component is not a shared module
        build_model(registry, {}, {"tokens": {"type": "transformer"}})
    assert info.value.path == "shared.tokens.type" and "shared_module" in str(info.value)


# ------------------------------------------------------------------ YAML, end to end
def test_yaml_shared_section_builds_and_trains(registry, tmp_path):
    from crs.pipeline import build_pipeline
    from crs.training.stage import plan_stage

    overrides = ["preset=baseline", "data=demo", f"run_dir={tmp_path}", "samples.max_train_conversations=30",
                 "shared.tokens.type=token_embedding", "shared.tokens.dim=32",
                 "model.recommender.embedding_dim=32", "model.recommender.embedding=tokens",
                 "model.generator.dim=32", "model.generator.ffn_dim=64", "model.generator.embedding=tokens",
                 "stages.1.train=[shared.tokens,generator]"]
    spec, resolved = load_config(None, overrides, registry=registry)
    assert spec.shared == {"tokens": {"type": "token_embedding", "dim": 32}}
    pipeline = build_pipeline(spec, registry, resolved)
    model = pipeline.model
    weight = model.shared["tokens"].weight
    assert model.slots["recommender"].embeddings.weight is weight is model.slots["generator"].embedding.weight
    rec_stage, conv_stage = (plan_stage(pipeline, stage, i) for i, stage in enumerate(spec.stages))
    assert id(weight) not in {id(p) for p in rec_stage.parameters}  # baseline's rec stage: train [recommender]
    assert id(weight) in {id(p) for p in conv_stage.parameters}
    samples = pipeline.task_samples("train", "conv")[:4]
    state = model(next(pipeline.batches(samples, 4, shuffle=False, seed=0)), ["loss.gen"])
    state["loss.gen"].backward()
    assert weight.grad is not None and weight.grad.abs().sum() > 0


def test_yaml_unknown_shared_type_fails_before_data_loads(registry, tmp_path):
    with pytest.raises(UnknownComponentError) as info:
        load_config(None, ["preset=baseline", "data=demo", f"run_dir={tmp_path}",
                           "shared.tokens.type=token_embeding"], registry=registry)
    assert "shared.tokens.type" in str(info.value) and "token_embedding" in str(info.value)
