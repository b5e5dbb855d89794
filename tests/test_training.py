"""Trainer behaviour on a tiny fake pipeline (only the pipeline API the trainer uses).

`ToyPipeline` and `make_stage` are also imported by tests/test_checkpoint.py.
"""
from __future__ import annotations

import json
import math
import random
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

from crs.config.spec import EarlyStoppingSpec, OptimizerSpec, ScheduleSpec, StageSpec
from crs.errors import ConfigError
from crs.interfaces import BuildDeps, EmptyConfig, TrainingStrategy
from crs.plugins.training.plain import PlainStrategy
from crs.training import Trainer
from crs.training.optim import LRFactor, build_optimizer

N_FEATURES, N_CLASSES = 4, 3


# --------------------------------------------------------------- fake pipeline
@dataclass
class ToySample:
    x: list[float]
    label: int
    target: float


class ToyModel(nn.Module):
    """PipelineModel-like: three slots; `rec` needs `encoder`; `aux` is independent."""

    def __init__(self) -> None:
        super().__init__()
        self.slots = nn.ModuleDict({
            "encoder": nn.Sequential(nn.Linear(N_FEATURES, 16), nn.ReLU(), nn.Dropout(0.2)),
            "rec": nn.Linear(16, N_CLASSES),
            "aux": nn.Linear(N_FEATURES, 1),
        })
        self.ran: list[str] = []  # slots run, in order, for the "only needed slots run" check

    def loss_keys(self) -> set[str]:
        return {"loss.rec", "loss.aux"}

    def slot_parameters(self, names: list[str]) -> list[nn.Parameter]:
        chosen = list(self.slots) if "*" in names else names
        return [p for name in chosen for p in self.slots[name].parameters()]

    def compute(self, batch: dict, wanted) -> dict:
        state = dict(batch)
        wanted = set(wanted)
        if wanted & {"loss.rec", "scores"}:
            self.ran += ["encoder", "rec"]
            state["scores"] = self.slots["rec"](self.slots["encoder"](batch["batch.x"]))
            state["loss.rec"] = nn.functional.cross_entropy(state["scores"], batch["batch.label"])
        if "loss.aux" in wanted:
            self.ran.append("aux")
            prediction = self.slots["aux"](batch["batch.x"]).squeeze(-1)
            state["loss.aux"] = nn.functional.mse_loss(prediction, batch["batch.target"])
        return state


def toy_samples(count: int, seed: int) -> list[ToySample]:
    """A learnable problem: labels from a fixed random linear teacher."""
    gen = torch.Generator().manual_seed(seed)
    teacher = torch.randn(N_FEATURES, N_CLASSES, generator=torch.Generator().manual_seed(99))
    x = torch.randn(count, N_FEATURES, generator=gen)
    labels = (x @ teacher).argmax(-1)
    targets = x.sum(-1)
    return [ToySample(x[i].tolist(), int(labels[i]), float(targets[i])) for i in range(count)]


class ToyPipeline:
    """The pipeline API subset the trainer uses: spec, resolved, model, samples, task_samples, batches, build."""

    def __init__(self, stages: list[StageSpec], *, seed: int = 7, n_train: int = 96, n_valid: int = 32,
                 valid: bool = True, resolved: dict | None = None):
        torch.manual_seed(1234)  # the model init is part of the "pipeline build", same in every process
        self.model = ToyModel()
        self.spec = types.SimpleNamespace(stages=stages, seed=seed,
                                          evaluation=types.SimpleNamespace(protocols=[{"type": "toy_protocol"}]))
        self.resolved = resolved if resolved is not None else {"name": "toy", "seed": seed, "run_dir": "x",
                                                               "lr": [s.optimizer.lr for s in stages]}
        self.samples = {"train": toy_samples(n_train, 1), "valid": toy_samples(n_valid, 2) if valid else []}
        self.train_batches_served = 0
        self.on_train_batch = None  # callable(count) hook, used to simulate kills

    def task_samples(self, split: str, task: str) -> list[ToySample]:
        return list(self.samples[split])

    def batches(self, samples, batch_size, *, shuffle: bool, seed: int, group_by_length=False):
        order = list(range(len(samples)))
        if shuffle:
            random.Random(seed).shuffle(order)
        for start in range(0, len(order), batch_size):
            chunk = [samples[i] for i in order[start:start + batch_size]]
            if shuffle:
                self.train_batches_served += 1
                if self.on_train_batch is not None:
                    self.on_train_batch(self.train_batches_served)
            yield {"batch.x": torch.tensor([s.x for s in chunk]),
                   "batch.label": torch.tensor([s.label for s in chunk]),
                   "batch.target": torch.tensor([s.target for s in chunk]),
                   "batch.samples": chunk}

    def build(self, kind: str, node: dict, path: str):
        if kind == "training_strategy" and node.get("type") == "plain":
            return PlainStrategy(PlainStrategy.Config(), BuildDeps(path=path))
        if kind == "evaluation_protocol":
            return types.SimpleNamespace(id="toy-v1", node=node)
        raise AssertionError(f"unexpected build({kind}, {node})")


def make_stage(name: str = "rec", **overrides) -> StageSpec:
    settings = dict(objectives={"rec": 1.0}, epochs=3, batch_size=16,
                    optimizer=OptimizerSpec(type="adam", lr=0.01), schedule=ScheduleSpec(type="constant"))
    settings.update(overrides)
    return StageSpec(name=name, **settings)


def parameters_of(model: nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.detach().clone() for key, value in model.state_dict().items()}


# ----------------------------------------------------------------------- tests
def test_loss_decreases_and_history_and_metrics_are_written(tmp_path: Path) -> None:
    pipeline = ToyPipeline([make_stage(epochs=6, optimizer=OptimizerSpec(type="adam", lr=0.02))])
    history = Trainer(pipeline, tmp_path, progress=False, log_every=2).fit()

    records = history["rec"]
    assert [r["epoch"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert records[-1]["train"]["loss.rec"] < 0.7 * records[0]["train"]["loss.rec"]
    assert records[-1]["valid"]["loss"] < records[0]["valid"]["loss"]
    # against a floor too (a loss running off to minus infinity also falls): a cross-entropy is >= 0,
    # and log(N_CLASSES) is what a model that cannot tell the classes apart scores
    for final in (records[-1]["train"]["loss.rec"], records[-1]["valid"]["loss"]):
        assert math.isfinite(final) and 0.0 <= final < 0.7 * math.log(N_CLASSES)
    assert json.loads((tmp_path / "history.json").read_text()) == history

    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    step_lines = [line for line in lines if line["scope"] == "step"]
    epoch_lines = [line for line in lines if line["scope"] == "epoch"]
    assert step_lines and all(line["step"] % 2 == 0 and "loss.rec" in line and "lr" in line for line in step_lines)
    assert {(line["split"], line["epoch"]) for line in epoch_lines} == {
        (split, epoch) for split in ("train", "valid") for epoch in range(1, 7)}
    assert all({"stage", "epoch", "step", "split"} <= set(line) for line in lines)


def test_untrained_slots_stay_frozen_and_unneeded_slots_do_not_run(tmp_path: Path) -> None:
    pipeline = ToyPipeline([make_stage(train=["rec"], epochs=2)])
    model = pipeline.model
    before = parameters_of(model)
    model.slots["encoder"][0].bias.requires_grad_(False)  # a flag the trainer must put back as it was
    seen_flags = []
    original_compute = model.compute

    def spying_compute(batch, wanted):
        seen_flags.append({name: all(p.requires_grad for p in slot.parameters()) for name, slot in model.slots.items()})
        return original_compute(batch, wanted)

    model.compute = spying_compute
    Trainer(pipeline, tmp_path, progress=False).fit()

    after = parameters_of(model)
    for key in before:
        changed = not torch.equal(before[key], after[key])
        assert changed == key.startswith("slots.rec."), key
    assert "aux" not in model.ran  # loss.aux is not an objective of the stage
    assert seen_flags and all(flags == {"encoder": False, "rec": True, "aux": False} for flags in seen_flags)
    assert model.slots["encoder"][0].weight.requires_grad and model.slots["aux"].weight.requires_grad
    assert not model.slots["encoder"][0].bias.requires_grad


def test_objective_weights_and_prefix_optional(tmp_path: Path) -> None:
    pipeline = ToyPipeline([make_stage(objectives={"loss.rec": 1.0, "aux": 0.5}, epochs=1)])
    record = Trainer(pipeline, tmp_path, progress=False).fit()["rec"][0]
    valid = record["valid"]
    assert valid["loss"] == pytest.approx(valid["loss.rec"] + 0.5 * valid["loss.aux"], rel=1e-6)
    assert record["train"]["loss"] == pytest.approx(record["train"]["loss.rec"] + 0.5 * record["train"]["loss.aux"],
                                                    rel=1e-5)


def _install_fake_evaluate(monkeypatch, values: list[float]) -> list[object]:
    """Replace crs.evaluation with a module whose evaluate() returns `values` in turn."""
    calls: list[object] = []

    def evaluate(pipeline, split, *, protocols=None, generate=True, max_samples=0, progress=False, tasks=None,
                 hooks=True):
        assert split == "valid" and generate is False and len(protocols) == 1
        assert tuple(tasks) == ("rec",)  # a rec metric needs no conversation pass
        calls.append(protocols[0])
        return {"toy-v1": {"rec.recall@10": values[len(calls) - 1]}}

    monkeypatch.setitem(sys.modules, "crs.evaluation", types.SimpleNamespace(evaluate=evaluate))
    return calls


def test_early_stopping_stops_and_restores_best_state(tmp_path: Path, monkeypatch) -> None:
    calls = _install_fake_evaluate(monkeypatch, [0.1, 0.5, 0.3, 0.2, 0.9, 0.9])
    stopping = EarlyStoppingSpec(metric="rec.recall@10", mode="max", patience=2)
    pipeline = ToyPipeline([make_stage(epochs=6, early_stopping=stopping)])
    history = Trainer(pipeline, tmp_path / "stopped", progress=False).fit()

    assert [r["valid"]["rec.recall@10"] for r in history["rec"]] == [0.1, 0.5, 0.3, 0.2]  # stopped after 4
    assert len(calls) == 4 and calls[0].id == "toy-v1"
    best = torch.load(tmp_path / "stopped" / "best.pt", weights_only=True)
    assert best["epoch"] == 2 and best["value"] == 0.5
    # metrics.jsonl names the restored epoch (crs.plots marks it on the curves)
    records = [json.loads(line) for line in (tmp_path / "stopped" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["rec.recall@10"]) for r in records if r["scope"] == "restored"] == [(2, 0.5)]

    # The restored state is exactly the state after epoch 2 of the same run.
    reference = ToyPipeline([make_stage(epochs=2)])
    Trainer(reference, tmp_path / "two_epochs", progress=False).fit()
    final, expected = parameters_of(pipeline.model), parameters_of(reference.model)
    assert all(torch.equal(final[key], expected[key]) for key in expected)
    assert all(torch.equal(final[key], best["model"][key]) for key in expected)


def test_patience_zero_never_stops_but_restores_best(tmp_path: Path, monkeypatch) -> None:
    _install_fake_evaluate(monkeypatch, [0.1, 0.7, 0.3, 0.2])
    stopping = EarlyStoppingSpec(metric="rec.recall@10", mode="max", patience=0)
    pipeline = ToyPipeline([make_stage(epochs=4, early_stopping=stopping)])
    history = Trainer(pipeline, tmp_path, progress=False).fit()
    assert len(history["rec"]) == 4
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    assert best["epoch"] == 2
    final = parameters_of(pipeline.model)
    assert all(torch.equal(final[key], best["model"][key]) for key in final)


def test_early_stopping_on_valid_loss_keeps_the_lowest_loss_epoch(tmp_path: Path) -> None:
    # A huge SGD step makes the valid loss jump around; the final state must be the best epoch's.
    stage = make_stage(epochs=5, optimizer=OptimizerSpec(type="sgd", lr=5.0),
                       early_stopping=EarlyStoppingSpec(metric="loss", mode="min", patience=0))
    pipeline = ToyPipeline([stage])
    history = Trainer(pipeline, tmp_path, progress=False).fit()
    losses = [r["valid"]["loss"] for r in history["rec"]]
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    assert best["value"] == pytest.approx(min(losses)) and best["epoch"] == losses.index(min(losses)) + 1


@pytest.mark.parametrize("stage, path, words", [
    (make_stage(objectives={"rek": 1.0}), "stages.0.objectives.rek", ["Did you mean 'rec'", "aux, rec"]),
    (make_stage(train=["encodr"]), "stages.0.train", ["Did you mean 'encoder'", "aux"]),
    (make_stage(optimizer=OptimizerSpec(type="adamm")), "stages.0.optimizer.type", ["adamw", "sgd"]),
    (make_stage(schedule=ScheduleSpec(type="cosin")), "stages.0.schedule.type", ["cosine"]),
    (make_stage(early_stopping=EarlyStoppingSpec(mode="best")), "stages.0.early_stopping.mode", ["min", "max"]),
    (make_stage(validate=False, early_stopping=EarlyStoppingSpec()), "stages.0.early_stopping", ["validate"]),
    (make_stage(objectives={}), "stages.0.objectives", ["provides: aux, rec"]),
    (make_stage(early_stopping=EarlyStoppingSpec(metric="loss.aux")), "stages.0.early_stopping.metric", ["loss.rec"]),
])
def test_stage_config_errors_name_the_yaml_path(tmp_path: Path, stage: StageSpec, path: str, words) -> None:
    with pytest.raises(ConfigError) as caught:
        Trainer(ToyPipeline([stage]), tmp_path, progress=False).fit()
    assert caught.value.path.startswith(path)
    for word in words:
        assert word in str(caught.value)


def test_duplicate_stage_names_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="stages.1.name"):
        Trainer(ToyPipeline([make_stage("a"), make_stage("a")]), tmp_path, progress=False).fit()


def test_stages_run_in_order_each_with_its_objectives(tmp_path: Path) -> None:
    pipeline = ToyPipeline([make_stage("aux_stage", objectives={"aux": 1.0}, train=["aux"], epochs=1),
                            make_stage("rec_stage", objectives={"rec": 1.0}, epochs=1)], valid=False)
    history = Trainer(pipeline, tmp_path, progress=False).fit()
    assert list(history) == ["aux_stage", "rec_stage"]
    assert set(history["aux_stage"][0]["train"]) == {"loss", "loss.aux"}
    assert "valid" not in history["rec_stage"][0]  # no valid split: no validation
    assert pipeline.model.ran.index("aux") < pipeline.model.ran.index("rec")


def test_learning_rate_schedules() -> None:
    linear = LRFactor("linear", warmup_steps=0, total_steps=10)
    assert [linear(s) for s in (0, 5, 10, 20)] == [1.0, 0.5, 0.0, 0.0]
    warm = LRFactor("warmup_linear", warmup_steps=3, total_steps=13)
    assert [warm(s) for s in (0, 1, 2)] == [0.25, 0.5, 0.75] and warm(3) == 1.0 and warm(8) == 0.5
    cosine = LRFactor("cosine", warmup_steps=0, total_steps=4)
    assert cosine(0) == 1.0 and cosine(2) == pytest.approx(0.5) and cosine(4) == pytest.approx(0.0)
    assert LRFactor("constant", warmup_steps=0, total_steps=4)(100) == 1.0


def test_linear_schedule_is_stepped_per_batch(tmp_path: Path) -> None:
    stage = make_stage(epochs=2, schedule=ScheduleSpec(type="linear"))
    pipeline = ToyPipeline([stage], n_train=64)  # 4 batches per epoch, 8 steps in all
    Trainer(pipeline, tmp_path, progress=False, log_every=1).fit()
    lrs = [json.loads(line)["lr"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()
           if json.loads(line)["scope"] == "step"]
    assert lrs == pytest.approx([0.01 * (1 - k / 8) for k in range(1, 9)])


def test_sgd_with_momentum_and_grad_clip(tmp_path: Path) -> None:
    optimizer = build_optimizer(OptimizerSpec(type="sgd", lr=0.1, momentum=0.9), [nn.Parameter(torch.ones(2))], "x")
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.param_groups[0]["momentum"] == 0.9
    stage = make_stage(epochs=1, grad_clip=1e-3, optimizer=OptimizerSpec(type="sgd", lr=1.0))
    pipeline = ToyPipeline([stage], n_train=16)  # one batch: the update is at most lr * clip
    before = torch.cat([p.detach().flatten().clone() for p in pipeline.model.parameters()])
    Trainer(pipeline, tmp_path, progress=False).fit()
    after = torch.cat([p.detach().flatten() for p in pipeline.model.parameters()])
    assert 0 < (after - before).norm() <= 1e-3 + 1e-7


class ManualGradStrategy(TrainingStrategy):
    """A strategy in the MAML mould: its own sample subsets (salted order), gradients set by hand, step(None)."""

    def __init__(self) -> None:
        super().__init__(EmptyConfig(), BuildDeps(path="stages.0.strategy"))
        self.orders: list[list[int]] = []

    def steps_per_epoch(self, plan) -> int:
        return 2  # two outer updates per epoch, whatever the number of batches

    def train_epoch(self, loop) -> dict[str, float]:
        half = loop.samples[: len(loop.samples) // 2]
        for salt in (1, 2):
            batches = list(loop.batches(half, batch_size=len(half), salt=salt))
            self.orders.append([half.index(s) for s in batches[0]["batch.samples"]])
            total, parts = loop.loss(loop.model.compute(batches[0], loop.wanted))  # a state works too
            grads = torch.autograd.grad(total, loop.parameters)
            for param, grad in zip(loop.parameters, grads):
                param.grad = grad
            loop.step(None)
            loop.log_step(parts)
        return {}  # empty: the trainer falls back to the loop's means


def test_custom_strategy_can_draw_salted_batches_and_set_gradients(tmp_path: Path) -> None:
    runs = []
    for attempt in range(2):
        strategy = ManualGradStrategy()
        pipeline = ToyPipeline([make_stage(epochs=2, train=["encoder", "rec"], schedule=ScheduleSpec(type="linear"))])
        pipeline.build = lambda kind, node, path, strategy=strategy: strategy
        before = parameters_of(pipeline.model)
        history = Trainer(pipeline, tmp_path / str(attempt), progress=False, log_every=1).fit()
        runs.append((strategy.orders, parameters_of(pipeline.model)))
        assert set(history["rec"][0]["train"]) == {"loss", "loss.rec"}
        assert any(not torch.equal(before[k], runs[-1][1][k]) for k in before)
        # The schedule is sized by the strategy's steps_per_epoch: 2 x 2 epochs = 4 steps, so it ends at 0.
        lrs = [json.loads(line)["lr"] for line in (tmp_path / str(attempt) / "metrics.jsonl").read_text().splitlines()
               if json.loads(line)["scope"] == "step"]
        assert lrs == pytest.approx([0.01 * (1 - k / 4) for k in range(1, 5)])
    orders = runs[0][0]
    assert len(orders) == 4 and orders[0] != orders[1] and orders[0] != orders[2]  # salt and epoch change it
    assert orders == runs[1][0]  # ...reproducibly
    assert all(torch.equal(runs[0][1][k], runs[1][1][k]) for k in runs[0][1])
