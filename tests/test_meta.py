"""crs.training.meta: parameter names and selection, functional inner steps, and MAML through the trainer.

The proof of fit: on a synthetic family of tasks y = a_t * u.x (a_t ~ U[-2, 2]) and a model
v * (W x) with W outer-only and v adapted, a MAML strategy written against the public API
(EpochLoop.loss(params=...), crs.training.meta) and run by the real Trainer learns a W
that one inner step of v can exploit; pooled training cannot (E[a_t] = 0, so the pooled
optimum predicts 0 for every task).
"""
from __future__ import annotations

import random
import types
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from torch import nn

from crs.config.spec import OptimizerSpec, ScheduleSpec, StageSpec
from crs.errors import ConfigError
from crs.interfaces import BuildDeps, EmptyConfig, ModelComponent, Port, TrainingStrategy
from crs.pipeline.model import PipelineModel
from crs.pipeline.wiring import BATCH_KEYS, wire
from crs.plugins.training.plain import PlainStrategy
from crs.training import Trainer, meta

D = 4  # input size
INNER_LR = 0.1
SUPPORT = QUERY = 10  # points per task side
TASKS_PER_STEP = 2


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


class ToyMAML(TrainingStrategy):
    """MAML over the stage's tasks, TASKS_PER_STEP per outer step, `head.*` adapted, `features.*` outer-only."""

    Config = EmptyConfig
    first_order = False

    def steps_per_epoch(self, plan: Any) -> int:
        return -(-len(split_tasks(plan.samples)) // TASKS_PER_STEP)

    def train_epoch(self, loop: Any) -> dict[str, float]:
        tasks = split_tasks(loop.samples)
        random.Random(loop.seed).shuffle(tasks)  # seeded per epoch by the loop: resumable
        inner = meta.select_params(meta.named_parameters(loop.model), ["*"], ["features.*"], path="strategy")
        for start in range(0, len(tasks), TASKS_PER_STEP):
            chunk = [(collate(s), collate(q)) for s, q in tasks[start:start + TASKS_PER_STEP]]
            meta.maml_step(loop, chunk, inner, lr=INNER_LR, first_order=self.first_order)
        return loop.mean_parts()


class ToyPipeline:
    """The pipeline API the trainer uses, over a real PipelineModel."""

    def __init__(self, stage: StageSpec, strategy: TrainingStrategy, train: list[Point]):
        self.model = make_model(seed=1)
        self.spec = types.SimpleNamespace(stages=[stage], seed=3, evaluation=types.SimpleNamespace(protocols=[]))
        self.resolved = {"name": "maml-toy"}
        self.samples = {"train": train, "valid": []}
        self._strategy = strategy

    def task_samples(self, split: str, task: str) -> list[Point]:
        return list(self.samples[split])

    def batches(self, samples: list[Point], batch_size: int, *, shuffle: bool, seed: int):
        order = list(samples)
        if shuffle:
            random.Random(seed).shuffle(order)
        for start in range(0, len(order), batch_size):
            yield collate(order[start:start + batch_size])

    def build(self, kind: str, node: dict, path: str) -> Any:
        assert kind == "training_strategy"
        return self._strategy


def train(strategy: TrainingStrategy, train_points: list[Point], tmp_path, *, epochs: int, batch_size: int):
    stage = StageSpec(name="meta", objectives={"mse": 1.0}, train=["*"], epochs=epochs, batch_size=batch_size,
                      optimizer=OptimizerSpec(type="adam", lr=0.03), schedule=ScheduleSpec(type="constant"),
                      validate=False)
    pipeline = ToyPipeline(stage, strategy, train_points)
    Trainer(pipeline, tmp_path, progress=False, tensorboard=False).fit()
    return pipeline.model


def query_mse(model: PipelineModel, tasks: list[tuple[list[Point], list[Point]]], adapt_steps: int) -> float:
    """Mean query MSE after `adapt_steps` inner steps of `head.*` on each task's support."""
    inner = meta.select_params(meta.named_parameters(model), ["head.*"])
    errors = []
    with torch.enable_grad():
        for support, query in tasks:
            fast, _ = meta.adapt(lambda p: meta.functional_compute(model, p, collate(support),
                                                                   ["loss.mse"])["loss.mse"],
                                 inner, steps=adapt_steps, lr=INNER_LR, first_order=True)
            errors.append(float(meta.functional_compute(model, fast, collate(query),
                                                        ["loss.mse"])["loss.mse"].detach()))
    return sum(errors) / len(errors)


# ----------------------------------------------------------------------------- tests
TRAIN_POINTS = task_points(100, seed=11)  # 100 tasks / 2 per step * 8 epochs = 400 outer steps
TEST_TASKS = split_tasks(task_points(60, seed=12, first_task=1000))


@pytest.fixture(scope="module")
def pooled_query_mse(tmp_path_factory) -> float:
    """The pooled-trained model's query MSE after the same one adaptation step."""
    pooled = train(PlainStrategy(EmptyConfig(), BuildDeps(path="s")), TRAIN_POINTS, tmp_path_factory.mktemp("pooled"),
                   epochs=4, batch_size=20)  # 2000 points / 20 = 100 steps per epoch: 400 steps too
    return query_mse(pooled, TEST_TASKS, 1)


@pytest.mark.parametrize("first_order", [False, True])
def test_maml_beats_pooled_training_on_a_task_family(tmp_path, first_order, pooled_query_mse):
    strategy = ToyMAML(EmptyConfig(), BuildDeps(path="stages.0.strategy"))
    strategy.first_order = first_order
    before = make_model(seed=1)
    maml = train(strategy, TRAIN_POINTS, tmp_path, epochs=8, batch_size=SUPPORT + QUERY)
    maml_adapted, maml_unadapted = query_mse(maml, TEST_TASKS, 1), query_mse(maml, TEST_TASKS, 0)
    pooled_adapted = pooled_query_mse
    print(f"query MSE ({'first' if first_order else 'second'} order): MAML {maml_adapted:.3f}, "
          f"MAML unadapted {maml_unadapted:.3f}, pooled + 1 step {pooled_adapted:.3f}")
    assert maml_adapted <= 0.5 * pooled_adapted
    assert maml_adapted <= 0.5 * maml_unadapted
    # outer training moved W (both parts learn), and the inner steps never touched the model
    assert not torch.equal(maml.slots["features"].W.weight, before.slots["features"].W.weight)


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
