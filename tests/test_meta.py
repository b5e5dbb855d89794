"""crs.training.meta: parameter names and selection, functional inner steps, first and second order.

The toy model v * (W x) and its task family y = a_t * u.x are shared with tests/test_maml_strategy.py,
where the real ``maml`` strategy, run by the Trainer, proves MAML beats pooled training on them.
"""
from __future__ import annotations

import types
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from torch import nn

from crs.config.spec import OptimizerSpec, ScheduleSpec, StageSpec
from crs.errors import ConfigError
from crs.interfaces import BuildDeps, ModelComponent, Port
from crs.pipeline.model import PipelineModel
from crs.pipeline.wiring import BATCH_KEYS, wire
from crs.training import meta

D = 4  # input size
INNER_LR = 0.1
SUPPORT = QUERY = 10  # points per task side


# ------------------------------------------------------------------ the model: v * (W x)
class Features(ModelComponent):
    """W x: the representation MAML should learn (outer-only)."""

    def __init__(self, config: Any, deps: BuildDeps, dtype: torch.dtype = torch.float32):
        super().__init__(config, deps)
        self.W = nn.Linear(D, 1, bias=False, dtype=dtype)

    def input_ports(self) -> dict[str, Port]:
        return {"x": Port("batch.x")}

    def output_ports(self) -> dict[str, Port]:
        return {"h": Port("features", 1)}

    def forward(self, inputs: dict[str, Any]) -> dict[str, Any]:
        return {"h": self.W(inputs["x"]).squeeze(-1)}


class Head(ModelComponent):
    """v * h and its squared error: v is what each task adapts."""

    def __init__(self, config: Any, deps: BuildDeps, dtype: torch.dtype = torch.float32):
        super().__init__(config, deps)
        self.v = nn.Parameter(torch.ones((), dtype=dtype))

    def input_ports(self) -> dict[str, Port]:
        return {"h": Port("features", 1), "y": Port("batch.y", optional=True)}

    def output_ports(self) -> dict[str, Port]:
        return {"prediction": Port("prediction"), "loss": Port("loss.mse")}

    def forward(self, inputs: dict[str, Any]) -> dict[str, Any]:
        prediction = self.v * inputs["h"]
        out = {"prediction": prediction}
        if "y" in inputs:
            out["loss"] = ((prediction - inputs["y"]) ** 2).mean()
        return out


def make_model(seed: int = 0, dtype: torch.dtype = torch.float32) -> PipelineModel:
    torch.manual_seed(seed)
    deps = BuildDeps(path="model")
    slots = {"features": Features(None, deps, dtype), "head": Head(None, deps, dtype)}
    return PipelineModel(slots, wire(slots, {}, BATCH_KEYS | {"batch.x", "batch.y"}))


# ------------------------------------------------------------------ the task family
U = torch.nn.functional.normalize(torch.randn(D, generator=torch.Generator().manual_seed(5)), dim=0)


@dataclass
class Point:
    task: int
    x: list[float]
    y: float


def task_points(tasks: int, seed: int, first_task: int = 0) -> list[Point]:
    gen = torch.Generator().manual_seed(seed)
    points = []
    for t in range(tasks):
        a = float(torch.empty(()).uniform_(-2, 2, generator=gen))
        x = torch.randn(SUPPORT + QUERY, D, generator=gen)
        points += [Point(first_task + t, row.tolist(), a * float(row @ U)) for row in x]
    return points


def collate(points: list[Point], dtype: torch.dtype = torch.float32) -> dict:
    return {"batch.x": torch.tensor([p.x for p in points], dtype=dtype),
            "batch.y": torch.tensor([p.y for p in points], dtype=dtype)}


def split_tasks(points: list[Point]) -> list[tuple[list[Point], list[Point]]]:
    by_task: dict[int, list[Point]] = {}
    for p in points:
        by_task.setdefault(p.task, []).append(p)
    return [(pts[:SUPPORT], pts[SUPPORT:]) for _, pts in sorted(by_task.items())]


# ----------------------------------------------------------------------------- tests
def test_second_order_meta_gradient_matches_finite_differences():
    model = make_model(seed=2, dtype=torch.float64)
    points = task_points(1, seed=3)
    support, query = (collate(part, torch.float64) for part in split_tasks(points)[0])
    params = meta.named_parameters(model)

    def meta_loss(p: dict) -> torch.Tensor:
        loss_s = meta.functional_compute(model, p, support, ["loss.mse"])["loss.mse"]
        fast = meta.inner_update(loss_s, p, INNER_LR, first_order=False)
        return meta.functional_compute(model, fast, query, ["loss.mse"])["loss.mse"]

    grads = torch.autograd.grad(meta_loss(params), list(params.values()))
    eps = 1e-6
    for (name, param), grad in zip(params.items(), grads):
        for index in range(param.numel()):
            bump = torch.zeros_like(param).view(-1)
            bump[index] = eps
            bump = bump.view_as(param)
            up = meta_loss({**params, name: (param + bump).detach().requires_grad_(True)})
            down = meta_loss({**params, name: (param - bump).detach().requires_grad_(True)})
            numeric = float((up - down).detach()) / (2 * eps)
            assert float(grad.reshape(-1)[index]) == pytest.approx(numeric, rel=1e-5, abs=1e-8), name


def test_first_order_gradient_is_the_query_gradient_at_the_fast_weights():
    model = make_model(seed=4)
    support, query = (collate(part) for part in split_tasks(task_points(1, seed=5))[0])
    params = meta.named_parameters(model)
    loss_s = meta.functional_compute(model, params, support, ["loss.mse"])["loss.mse"]
    fast = meta.inner_update(loss_s, params, INNER_LR, first_order=True)
    first_order = torch.autograd.grad(meta.functional_compute(model, fast, query, ["loss.mse"])["loss.mse"],
                                      list(params.values()))
    phi = {name: tensor.detach().requires_grad_(True) for name, tensor in fast.items()}
    at_phi = torch.autograd.grad(meta.functional_compute(model, phi, query, ["loss.mse"])["loss.mse"],
                                 list(phi.values()))
    for a, b in zip(first_order, at_phi):
        torch.testing.assert_close(a, b)
    # and it differs from the second-order gradient (the Hessian term is not zero here)
    second = torch.autograd.grad(
        meta.functional_compute(model, meta.inner_update(loss_s, params, INNER_LR, first_order=False), query,
                                ["loss.mse"])["loss.mse"], list(params.values()))
    assert not torch.allclose(second[0], first_order[0])


def test_inner_update_leaves_outer_only_and_unused_parameters_alone():
    model = make_model(seed=6)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    support = collate(split_tasks(task_points(1, seed=7))[0][0])
    inner = meta.select_params(meta.named_parameters(model), ["*"], ["features.*"])
    assert list(inner) == ["head.v"]
    loss = meta.functional_compute(model, inner, support, ["loss.mse"])["loss.mse"]
    fast = meta.inner_update(loss, inner, INNER_LR, first_order=False)
    assert list(fast) == ["head.v"] and not torch.equal(fast["head.v"], inner["head.v"])
    # a parameter the loss does not reach keeps its value (allow_unused), one without grad too
    frozen = torch.zeros(3)
    extra = meta.inner_update(loss, {**inner, "features.W.weight": model.slots["features"].W.weight.detach(),
                                     "unrelated": torch.zeros(3, requires_grad=True), "frozen": frozen},
                              INNER_LR, first_order=True)
    assert torch.equal(extra["unrelated"], torch.zeros(3)) and extra["frozen"] is frozen
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # the model never changes
    with torch.no_grad(), pytest.raises(ConfigError, match="enable_grad"):
        meta.inner_update(loss, inner, INNER_LR, first_order=True)


def test_names_map_between_public_and_model_names():
    model = make_model()
    assert list(meta.named_parameters(model)) == ["features.W.weight", "head.v"]
    tensor = torch.ones(1, D)
    assert meta.to_model_names(model, {"features.W.weight": tensor}) == {"slots.features.W.weight": tensor}
    assert meta.to_model_names(model, {"slots.head.v": tensor}) == {"slots.head.v": tensor}  # own names pass
    assert meta.public_name("shared.tokens.weight") == "shared.tokens.weight"
    with pytest.raises(ConfigError, match="Did you mean 'head.v'"):
        meta.to_model_names(model, {"head.w": tensor}, path="strategy.inner")


def test_the_name_map_is_built_once_per_model(monkeypatch):
    model, other = make_model(), make_model(seed=1)
    walks: list = []
    walk = nn.Module.named_parameters
    monkeypatch.setattr(nn.Module, "named_parameters", lambda self, *a, **k: walks.append(self) or walk(self, *a, **k))
    params = {"head.v": torch.ones(1, D)}
    for _ in range(3):  # as on every functional forward of an adaptation
        assert meta.to_model_names(model, params) == {"slots.head.v": params["head.v"]}
    assert meta.to_model_names(other, params) == {"slots.head.v": params["head.v"]}
    assert [m for m in walks if m is model or m is other] == [model, other]  # once per model, not per call


def test_select_params_globs_and_typos():
    named = {"generator.encoder.layer.0.w": 1, "generator.decoder.w": 2, "style.styles": 3, "user.emb": 4}
    assert list(meta.select_params(named, ["generator.encoder.*", "style.styles"])) == [
        "generator.encoder.layer.0.w", "style.styles"]
    assert list(meta.select_params(named, ["*"], ["user.*", "generator.decoder.*"])) == [
        "generator.encoder.layer.0.w", "style.styles"]
    with pytest.raises(ConfigError, match="stages.1.strategy.inner") as err:
        meta.select_params(named, ["generator.encodr.*"], path="stages.1.strategy")
    assert "matches no parameter" in str(err.value)
    with pytest.raises(ConfigError, match="outer_only"):
        meta.select_params(named, ["*"], ["users.*"], path="p")
    with pytest.raises(ConfigError, match="no parameter is left"):
        meta.select_params(named, ["user.*"], ["user.*"], path="p")


def test_epoch_loop_loss_with_params_runs_functionally(tmp_path):
    """EpochLoop.loss(batch, params=...) computes with the given tensors and leaves the model as it was."""
    from crs.training.loop import EpochLoop
    from crs.training.stage import StagePlan

    model = make_model(seed=8)
    stage = StageSpec(name="s", objectives={"mse": 1.0}, train=["*"], epochs=1, batch_size=4,
                      optimizer=OptimizerSpec(type="sgd", lr=0.1), schedule=ScheduleSpec(type="constant"))
    pipeline = types.SimpleNamespace(model=model)
    plan = StagePlan(0, stage, "stages.0", {"loss.mse": 1.0}, list(model.parameters()), [])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loop = EpochLoop(pipeline=pipeline, plan=plan, parameters=list(model.parameters()), optimizer=optimizer,
                     scheduler=None, epoch=0, global_step=0, run_seed=0, metrics=None, progress=False)
    batch = collate(task_points(1, seed=9))
    own, _ = loop.loss(batch)
    same, _ = loop.loss(batch, params=meta.named_parameters(model))
    zero, parts = loop.loss(batch, params={"head.v": torch.zeros(())})
    assert torch.equal(own, same)
    assert float(zero.detach()) == pytest.approx(float((batch["batch.y"] ** 2).mean()))  # prediction 0 everywhere
    assert parts["loss.mse"] == pytest.approx(float(zero.detach())) and float(model.slots["head"].v.detach()) == 1.0
