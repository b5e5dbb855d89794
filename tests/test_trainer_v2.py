"""Trainer v2: parameter groups, warmup in epochs, gradient accumulation, early stopping on metric sums,
devices and mixed precision, lifecycle callbacks, and checkpoints without a second model copy.

Uses the fake pipeline of tests/test_training.py.
"""
from __future__ import annotations

import functools
import json
import math
import sys
import types
from pathlib import Path

import pytest
import torch
from torch import nn

from crs.config.spec import EarlyStoppingSpec, OptimizerSpec, ParamGroupSpec, PipelineSpec, ScheduleSpec
from crs.errors import ConfigError, DataError
from crs.interfaces import BuildDeps
from crs.plugins.training.plain import PlainStrategy
from crs.training import Trainer
from crs.training.checkpoint import load_checkpoint, with_checksum
from crs.training.early_stopping import EarlyStopper
from crs.training.optim import build_optimizer, norm_parameter_ids, parameter_groups
from crs.training.precision import Precision, resolve_device
from crs.training.stage import check_stage, plan_stage

TESTS_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS_DIR))  # the shared fake pipeline, whatever pytest's import mode
from test_training import N_CLASSES, ToyModel, ToyPipeline, make_stage, parameters_of  # noqa: E402

CUDA = torch.cuda.is_available()


class SimulatedKill(Exception):
    """Stands for the process dying at a given batch."""


def step_lines(run_dir: Path) -> list[dict]:
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [line for line in lines if line["scope"] == "step"]


def same_parameters(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)


# ------------------------------------------------------------ parameter groups
class NormModel(ToyModel):
    """ToyModel plus a slot with a LayerNorm whose name does not say 'norm', and a shared module."""

    def __init__(self) -> None:
        super().__init__()
        self.slots["post"] = nn.Sequential(nn.Linear(N_CLASSES, N_CLASSES), nn.LayerNorm(N_CLASSES))
        self.shared = nn.ModuleDict({"tokens": nn.Embedding(5, 2)})

    def slot_parameters(self, names: list[str]) -> list[nn.Parameter]:
        return list(self.parameters()) if "*" in names else super().slot_parameters(names)


def norm_pipeline(**stage_overrides) -> ToyPipeline:
    pipeline = ToyPipeline([make_stage(train=["*"], **stage_overrides)])
    pipeline.model = NormModel()
    return pipeline


def test_named_parameters_drop_the_slots_prefix_keep_shared_and_skip_frozen() -> None:
    pipeline = norm_pipeline()
    pipeline.model.slots["aux"].bias.requires_grad_(False)
    plan = plan_stage(pipeline, pipeline.spec.stages[0], 0)
    names = list(plan.named_parameters)
    assert names[:2] == ["encoder.0.weight", "encoder.0.bias"]
    assert "post.1.weight" in names and "shared.tokens.weight" in names
    assert "aux.weight" in names and "aux.bias" not in names  # frozen before the stage: not trainable
    assert all(plan.named_parameters[name] is param for name, param in pipeline.model.slots["rec"].named_parameters(
        prefix="rec"))
    assert [id(p) for p in plan.named_parameters.values()] == [id(p) for p in plan.parameters if p.requires_grad]


def test_without_weight_decay_or_groups_there_is_one_group_in_stage_order() -> None:
    pipeline = norm_pipeline()
    plan = plan_stage(pipeline, pipeline.spec.stages[0], 0)
    groups = parameter_groups(OptimizerSpec(type="adam"), plan.named_parameters, "o")
    assert len(groups) == 1 and groups[0]["weight_decay"] == 0.0
    assert [id(p) for p in groups[0]["params"]] == [id(p) for p in plan.named_parameters.values()]


def test_default_no_decay_spares_biases_and_layernorm_weights_found_by_type() -> None:
    pipeline = norm_pipeline()
    plan = plan_stage(pipeline, pipeline.spec.stages[0], 0)
    spec = OptimizerSpec(type="adamw", lr=0.01, weight_decay=0.1)
    optimizer = build_optimizer(spec, plan.named_parameters, "o", norm_ids=norm_parameter_ids(pipeline.model))
    by_name = {name: group for group in optimizer.param_groups for name, p in plan.named_parameters.items()
               if any(p is q for q in group["params"])}
    assert by_name["post.1.weight"]["weight_decay"] == 0.0  # a LayerNorm weight named "1", found by its type
    assert by_name["encoder.0.bias"]["weight_decay"] == 0.0 and by_name["post.1.bias"]["weight_decay"] == 0.0
    assert by_name["encoder.0.weight"]["weight_decay"] == 0.1 and by_name["shared.tokens.weight"]["weight_decay"] == 0.1
    assert optimizer.param_groups[0]["name"] == "default" and optimizer.param_groups[0]["weight_decay"] == 0.1
    # An explicit list replaces the default: [] decays everything.
    spec = OptimizerSpec(type="adamw", weight_decay=0.1, no_decay=[])
    everything = parameter_groups(spec, plan.named_parameters, "o", norm_ids=norm_parameter_ids(pipeline.model))
    assert len(everything) == 1 and everything[0]["weight_decay"] == 0.1


def test_groups_first_match_wins_and_the_rest_use_the_optimizer_settings() -> None:
    pipeline = norm_pipeline()
    plan = plan_stage(pipeline, pipeline.spec.stages[0], 0)
    spec = OptimizerSpec(type="adam", lr=0.01, weight_decay=0.05, eps=1e-6, no_decay=["*.bias"], groups=[
        ParamGroupSpec(params=["encoder.*", "shared.*"], lr=0.001),
        ParamGroupSpec(params=["*.weight"], weight_decay=0.0),  # encoder weights already went to group 0
    ])
    optimizer = build_optimizer(spec, plan.named_parameters, "o")
    settings = {}
    for group in optimizer.param_groups:
        assert group["eps"] == 1e-6
        for name, param in plan.named_parameters.items():
            if any(param is p for p in group["params"]):
                settings[name] = (group["name"], group["lr"], group["weight_decay"])
    assert settings["encoder.0.weight"] == ("groups.0", 0.001, 0.05)
    assert settings["encoder.0.bias"] == ("groups.0/no_decay", 0.001, 0.0)
    assert settings["shared.tokens.weight"] == ("groups.0", 0.001, 0.05)
    assert settings["rec.weight"] == ("groups.1", 0.01, 0.0) and settings["post.1.weight"] == ("groups.1", 0.01, 0.0)
    assert settings["rec.bias"] == ("default/no_decay", 0.01, 0.0)  # "*.weight" does not match it
    assert optimizer.param_groups[0]["name"] == "default/no_decay"  # the default group first
    assert set(settings) == set(plan.named_parameters)


def test_a_group_lr_is_what_the_trainer_uses(tmp_path: Path) -> None:
    slow = ParamGroupSpec(params=["encoder.*"], lr=1e-7)
    pipeline = ToyPipeline([make_stage(epochs=1, optimizer=OptimizerSpec(type="sgd", lr=0.5, groups=[slow]))])
    before = parameters_of(pipeline.model)
    Trainer(pipeline, tmp_path, progress=False).fit()
    after = parameters_of(pipeline.model)
    moved = {key: (after[key] - before[key]).abs().max().item() for key in before}
    assert moved["slots.encoder.0.weight"] < 1e-5 and moved["slots.rec.weight"] > 1e-2


@pytest.mark.parametrize("groups, path, words", [
    ([ParamGroupSpec(params=["encoder.*"]), ParamGroupSpec(params=["recommender.*"])],
     "stages.0.optimizer.groups.1.params.0", ["'recommender.*' matches no trainable", "encoder.0.weight", "rec.bias"]),
    ([ParamGroupSpec(params=["*"]), ParamGroupSpec(params=["rec.*"])],
     "stages.0.optimizer.groups.1.params", ["earlier group"]),
    ([ParamGroupSpec(params=[])], "stages.0.optimizer.groups.0.params", ["no parameter globs"]),
    ([ParamGroupSpec(params=["rec.*"], lr=-1.0)], "stages.0.optimizer.groups.0.lr", ["positive"]),
])
def test_bad_groups_are_config_errors_naming_the_key(tmp_path: Path, groups, path: str, words) -> None:
    stage = make_stage(train=["encoder", "rec"], optimizer=OptimizerSpec(type="adam", groups=groups))
    with pytest.raises(ConfigError) as caught:
        Trainer(ToyPipeline([stage]), tmp_path, progress=False).fit()
    assert caught.value.path == path
    for word in words:
        assert word in str(caught.value)


def test_each_optimizer_and_schedule_number_is_checked_once(tmp_path: Path, monkeypatch) -> None:
    from crs.training import optim

    paths: list[str] = []
    check = optim.check_number
    monkeypatch.setattr(optim, "check_number", lambda value, path, **kw: paths.append(path) or check(value, path, **kw))
    groups = [ParamGroupSpec(params=["rec.*"], lr=1e-3)]
    stage = make_stage(epochs=1, optimizer=OptimizerSpec(type="adam", groups=groups),
                       schedule=ScheduleSpec(type="linear", warmup_epochs=0.5))
    Trainer(ToyPipeline([stage, make_stage("second", epochs=1)]), tmp_path, progress=False).fit()
    assert "stages.0.optimizer.groups.0.lr" in paths and "stages.1.schedule.warmup_epochs" in paths
    assert len(paths) == len(set(paths))  # each key once: before the first stage trains, not again when it starts


def test_group_keys_load_from_yaml_shaped_dicts() -> None:
    from crs.config.validate import from_dict

    data = {"data": {"type": "d"}, "model": {}, "stages": [{
        "name": "a", "accumulate": 2, "precision": "bf16",
        "optimizer": {"type": "adamw", "eps": "1e-6", "no_decay": ["*.bias"],
                      "groups": [{"params": ["shared.*"], "lr": 1e-4}]},
        "schedule": {"type": "linear", "warmup_epochs": 0.5},
        "early_stopping": {"metric": ["rec.recall@10", "rec.recall@50"], "mode": "max"}}]}
    stage = from_dict(PipelineSpec, data).stages[0]
    assert stage.optimizer.groups[0].params == ["shared.*"] and stage.optimizer.groups[0].lr == 1e-4
    assert stage.optimizer.eps == 1e-6 and stage.schedule.warmup_epochs == 0.5
    assert stage.early_stopping.metric == ["rec.recall@10", "rec.recall@50"] and stage.accumulate == 2
    with pytest.raises(ConfigError) as caught:
        from_dict(PipelineSpec, {**data, "stages": [{"name": "a", "optimizer": {"groups": [{"param": ["x"]}]}}]})
    assert caught.value.path == "stages.0.optimizer.groups.0.param" and "params" in str(caught.value)


# ---------------------------------------------------------------- warmup epochs
def test_warmup_epochs_are_converted_with_the_optimizer_steps_per_epoch(tmp_path: Path) -> None:
    # 64 samples / 8 = 8 batches, accumulate 2: 4 optimizer steps per epoch; 0.5 epochs = 2 warmup steps.
    stage = make_stage(epochs=2, batch_size=8, accumulate=2,
                       schedule=ScheduleSpec(type="linear", warmup_epochs=0.5))
    Trainer(ToyPipeline([stage], n_train=64), tmp_path, progress=False, log_every=1).fit()
    lrs = [line["lr"] for line in step_lines(tmp_path)]
    # LambdaLR logs the factor of the next step: warmup (1/3, 2/3), then linear decay over the 6 remaining steps.
    expected = [0.01 * f for f in (2 / 3, 1.0, 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6, 0.0)]
    assert lrs == pytest.approx(expected)


def test_warmup_steps_and_epochs_together_are_an_error(tmp_path: Path) -> None:
    stage = make_stage(schedule=ScheduleSpec(type="linear", warmup_steps=3, warmup_epochs=1.0))
    with pytest.raises(ConfigError) as caught:
        Trainer(ToyPipeline([stage]), tmp_path, progress=False).fit()
    assert caught.value.path == "stages.0.schedule.warmup_epochs" and "keep one" in str(caught.value)


# ------------------------------------------------------- gradient accumulation
def aux_stage(**overrides):
    """A dropout-free stage (the aux slot is one Linear), so batch splits are the only difference between runs."""
    settings = dict(objectives={"aux": 1.0}, train=["aux"], epochs=2, validate=False,
                    optimizer=OptimizerSpec(type="sgd", lr=0.05), schedule=ScheduleSpec(type="linear"))
    settings.update(overrides)
    return make_stage("aux", **settings)


def test_accumulating_two_half_batches_matches_one_full_batch_even_for_a_partial_last_group(tmp_path: Path) -> None:
    # 40 samples: batches of 16 are 16+16+8; batches of 8 accumulated by 2 are (8+8)+(8+8)+(8).
    full = ToyPipeline([aux_stage(batch_size=16)], n_train=40, valid=False)
    Trainer(full, tmp_path / "full", progress=False, log_every=1).fit()
    halves = ToyPipeline([aux_stage(batch_size=8, accumulate=2)], n_train=40, valid=False)
    Trainer(halves, tmp_path / "halves", progress=False, log_every=1).fit()

    expected, got = parameters_of(full.model), parameters_of(halves.model)
    initial = parameters_of(ToyPipeline([aux_stage()]).model)
    assert (got["slots.aux.weight"] - initial["slots.aux.weight"]).abs().max() > 1e-2  # it did train
    assert all(torch.allclose(got[key], expected[key], atol=1e-6) for key in expected)
    assert halves.train_batches_served == 10
    # 3 optimizer steps per epoch, each logged once, and the schedule ends exactly at the last step.
    lines, full_lines = step_lines(tmp_path / "halves"), step_lines(tmp_path / "full")
    assert [line["step"] for line in lines] == [1, 2, 3, 4, 5, 6] and lines[-1]["lr"] == 0.0
    assert [line["lr"] for line in lines] == pytest.approx([line["lr"] for line in full_lines])
    # The logged loss of a step is the mean over its batches: the loss of the equivalent full batch.
    assert [line["loss"] for line in lines] == pytest.approx([line["loss"] for line in full_lines], rel=1e-5)


def test_default_steps_per_epoch_counts_accumulation() -> None:
    pipeline = ToyPipeline([make_stage(batch_size=8, accumulate=2)], n_train=40)
    plan = plan_stage(pipeline, pipeline.spec.stages[0], 0)
    assert plan.batches_per_epoch() == 5 and plan.steps_per_epoch() == 3
    assert PlainStrategy(PlainStrategy.Config(), BuildDeps(path="s")).steps_per_epoch(plan) == 3


def test_accumulate_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        Trainer(ToyPipeline([make_stage(accumulate=0)]), tmp_path, progress=False).fit()
    assert caught.value.path == "stages.0.accumulate"


# -------------------------------------------------- early stopping on a sum
def _fake_evaluate(monkeypatch, rows: list[dict[str, float]], calls: list) -> None:
    def evaluate(pipeline, split, *, protocols=None, generate=True, max_samples=0, progress=False, tasks=None,
                 hooks=True):
        calls.append(tuple(tasks))
        return {"toy-v1": dict(rows[len(calls) - 1])}

    monkeypatch.setitem(sys.modules, "crs.evaluation", types.SimpleNamespace(evaluate=evaluate))


def test_early_stopping_on_the_sum_of_two_metrics(tmp_path: Path, monkeypatch) -> None:
    # recall@10 alone peaks at epoch 1, recall@50 alone at epoch 3; the sum peaks at epoch 2.
    rows = [{"rec.recall@10": 0.5, "rec.recall@50": 0.1}, {"rec.recall@10": 0.4, "rec.recall@50": 0.5},
            {"rec.recall@10": 0.1, "rec.recall@50": 0.6}, {"rec.recall@10": 0.1, "rec.recall@50": 0.1}]
    calls: list = []
    _fake_evaluate(monkeypatch, rows, calls)
    stopping = EarlyStoppingSpec(metric=["rec.recall@10", "rec.recall@50"], mode="max", patience=2)
    pipeline = ToyPipeline([make_stage(epochs=6, early_stopping=stopping)])
    history = Trainer(pipeline, tmp_path / "run", progress=False).fit()

    assert len(history["rec"]) == 4 and calls == [("rec",)] * 4  # stopped after two epochs without a better sum
    assert [r["valid"]["rec.recall@10+rec.recall@50"] for r in history["rec"]] == pytest.approx([0.6, 0.9, 0.7, 0.2])
    best = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    assert best["epoch"] == 2 and best["metric"] == "rec.recall@10+rec.recall@50"
    assert best["value"] == pytest.approx(0.9)
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    valid_lines = [line for line in lines if line["split"] == "valid" and line["scope"] == "epoch"]
    assert [line["rec.recall@10+rec.recall@50"] for line in valid_lines] == pytest.approx([0.6, 0.9, 0.7, 0.2])
    # and the epoch restored at the end, by the sum (crs.plots marks it)
    assert [(line["epoch"], line["rec.recall@10+rec.recall@50"]) for line in lines
            if line["scope"] == "restored"] == [(2, pytest.approx(0.9))]
    reference = ToyPipeline([make_stage(epochs=2)])
    Trainer(reference, tmp_path / "two_epochs", progress=False).fit()
    assert same_parameters(parameters_of(pipeline.model), parameters_of(reference.model))


def test_unknown_metric_names_in_a_sum_are_clear_errors(tmp_path: Path, monkeypatch) -> None:
    stage = make_stage(early_stopping=EarlyStoppingSpec(metric=["loss", "loss.nope"]))
    with pytest.raises(ConfigError) as caught:
        Trainer(ToyPipeline([stage]), tmp_path / "a", progress=False).fit()
    assert caught.value.path == "stages.0.early_stopping.metric.1" and "loss.rec" in str(caught.value)

    _fake_evaluate(monkeypatch, [{"rec.recall@10": 0.5}], [])
    stage = make_stage(early_stopping=EarlyStoppingSpec(metric=["rec.recall@10", "rec.recal@50"], mode="max"))
    with pytest.raises(ConfigError) as caught:
        Trainer(ToyPipeline([stage]), tmp_path / "b", progress=False).fit()
    assert caught.value.path == "stages.0.early_stopping.metric"
    assert "no 'rec.recal@50'" in str(caught.value) and "rec.recall@10" in caught.value.fix

    for metric, words in (([], "empty"), (["loss", "loss"], "twice")):
        with pytest.raises(ConfigError, match=words):
            check_stage(make_stage(early_stopping=EarlyStoppingSpec(metric=metric)), 0)


@pytest.mark.parametrize("metric, path, words", [([], "stages.1.early_stopping.metric", "empty"),
                                                 (["loss", "loss"], "stages.1.early_stopping.metric.1", "twice")])
def test_a_bad_metric_list_in_a_later_stage_is_refused_before_the_first_stage_trains(tmp_path: Path, metric, path,
                                                                                    words) -> None:
    stages = [make_stage("first"), make_stage("second", early_stopping=EarlyStoppingSpec(metric=metric))]
    with pytest.raises(ConfigError, match=words) as caught:
        Trainer(ToyPipeline(stages), tmp_path, progress=False).fit()
    assert caught.value.path == path
    assert not (tmp_path / "checkpoint.pt").exists()  # "first" did not train


def test_a_sum_across_tasks_asks_the_evaluator_for_both() -> None:
    stopper = EarlyStopper(EarlyStoppingSpec(metric=["gen.bleu@2", "loss", "rec.mrr@10"]), "p")
    assert stopper.needs_evaluation and stopper.evaluation_tasks == ("rec", "conv")
    assert not EarlyStopper(EarlyStoppingSpec(metric=["loss", "loss.rec"]), "p").needs_evaluation


def test_resume_with_a_summed_loss_metric_is_bitwise_identical(tmp_path: Path) -> None:
    def stages():
        stopping = EarlyStoppingSpec(metric=["loss.rec", "loss.aux"], mode="min", patience=0)
        return [make_stage(objectives={"rec": 1.0, "aux": 0.5}, epochs=4, early_stopping=stopping,
                           optimizer=OptimizerSpec(type="sgd", lr=2.0))]

    whole = ToyPipeline(stages(), n_train=32)
    Trainer(whole, tmp_path / "whole", progress=False).fit()

    killed = ToyPipeline(stages(), n_train=32)

    def die(count: int) -> None:
        if count == 6:  # 2 batches per epoch: the second batch of epoch 3
            raise SimulatedKill()

    killed.on_train_batch = die
    with pytest.raises(SimulatedKill):
        Trainer(killed, tmp_path / "resumed", progress=False).fit()
    resumed = ToyPipeline(stages(), n_train=32)
    Trainer(resumed, tmp_path / "resumed", resume=True, progress=False).fit()
    assert same_parameters(parameters_of(resumed.model), parameters_of(whole.model))
    for name in ("history.json", "metrics.jsonl"):
        assert (tmp_path / "resumed" / name).read_text() == (tmp_path / "whole" / name).read_text()


# ----------------------------------------------------------- device, precision
def test_unknown_device_string_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as caught:
        resolve_device("gpu")
    assert caught.value.path == "device" and "cuda:N" in caught.value.fix
    assert "\n" not in caught.value.problem  # one paragraph, not torch's list of every backend
    with pytest.raises(ConfigError, match="not supported"):
        resolve_device("meta")


@pytest.mark.skipif(CUDA, reason="checks the error on a machine without CUDA")
@pytest.mark.parametrize("name", ["cuda", "cuda:1"])
def test_cuda_without_a_gpu_is_a_config_error(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError) as caught:
        resolve_device(name)
    assert caught.value.path == "device" and "device: cpu" in caught.value.fix
    pipeline = ToyPipeline([make_stage()])
    pipeline.spec.device = name
    with pytest.raises(ConfigError, match="config key 'device'"):
        Trainer(pipeline, tmp_path, progress=False)


def test_the_trainer_uses_the_device_the_builder_checked(tmp_path: Path, monkeypatch) -> None:
    import crs.training.trainer as trainer_module

    checked: list = []
    monkeypatch.setattr(trainer_module, "resolve_device", lambda *args, **kwargs: checked.append(args))
    pipeline = ToyPipeline([make_stage()])
    pipeline.device = torch.device("cpu")  # as a built pipeline has it
    assert Trainer(pipeline, tmp_path, progress=False).device == torch.device("cpu") and checked == []
    del pipeline.device  # without it (an object with the rest of the pipeline API), the trainer checks spec.device
    Trainer(pipeline, tmp_path, progress=False)
    assert checked == [("cpu",)]


@pytest.mark.skipif(CUDA, reason="checks the error on a machine without CUDA")
def test_build_pipeline_checks_the_device_before_loading_data() -> None:
    from crs.pipeline import build_pipeline

    spec = PipelineSpec(data={"type": "never_built"}, model={}, stages=[], device="cuda")
    with pytest.raises(ConfigError, match="config key 'device'"):
        build_pipeline(spec, registry=None, resolved={})  # None: the registry must not be reached


def test_unknown_precision_names_the_stage_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        Trainer(ToyPipeline([make_stage(precision="fp8")]), tmp_path, progress=False).fit()
    assert caught.value.path == "stages.0.precision" and "bf16" in str(caught.value)


def test_a_misspelt_precision_fails_at_config_check_with_did_you_mean() -> None:
    from crs.config.validate import from_dict

    data = {"data": {"type": "d"}, "model": {}, "stages": [{"name": "a", "precision": "bf61"}]}
    with pytest.raises(ConfigError) as caught:
        from_dict(PipelineSpec, data)
    assert caught.value.path == "stages.0.precision" and "Did you mean 'bf16'?" in str(caught.value)


def test_bf16_on_cpu_autocasts_the_forward_but_not_the_backward(tmp_path: Path) -> None:
    pipeline = ToyPipeline([make_stage(epochs=2, precision="bf16")])
    model, seen = pipeline.model, {"forward": set(), "backward": set()}
    original = model.compute

    def compute(batch, wanted):
        state = original(batch, wanted)
        if model.training:
            seen["forward"].add(state["scores"].dtype)
        return state

    model.compute = compute
    model.slots["rec"].weight.register_hook(lambda grad: seen["backward"].add(torch.is_autocast_enabled("cpu")))
    history = Trainer(pipeline, tmp_path, progress=False).fit()
    losses = [record["train"]["loss"] for record in history["rec"]]
    assert seen["forward"] == {torch.bfloat16} and seen["backward"] == {False}
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]
    assert 0.0 <= losses[-1] < math.log(N_CLASSES)  # a cross-entropy: never negative, better than guessing
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert not torch.is_autocast_enabled("cpu")  # nothing leaks out of the trainer


def test_fp16_scaler_state_is_checkpointed_and_resume_is_bitwise_identical(tmp_path: Path, monkeypatch) -> None:
    # A scaler that grows every step overflows now and then: its state matters for what the next steps do.
    monkeypatch.setattr(torch.amp, "GradScaler", functools.partial(torch.amp.GradScaler, init_scale=2.0 ** 12,
                                                                   growth_interval=1))

    def stages():
        return [make_stage(epochs=3, precision="fp16", grad_clip=1.0)]

    whole = ToyPipeline(stages(), n_train=48)
    Trainer(whole, tmp_path / "whole", progress=False, log_every=1).fit()
    killed = ToyPipeline(stages(), n_train=48)

    def die(count: int) -> None:
        if count == 8:  # second batch of epoch 3: after epoch 2's checkpoint
            raise SimulatedKill()

    killed.on_train_batch = die
    with pytest.raises(SimulatedKill):
        Trainer(killed, tmp_path / "resumed", progress=False, log_every=1).fit()
    scaler = load_checkpoint(tmp_path / "resumed")["scaler"]
    assert scaler["scale"] != 2.0 ** 12 and scaler["growth_interval"] == 1
    resumed = ToyPipeline(stages(), n_train=48)
    Trainer(resumed, tmp_path / "resumed", resume=True, progress=False, log_every=1).fit()
    assert same_parameters(parameters_of(resumed.model), parameters_of(whole.model))
    for name in ("history.json", "metrics.jsonl"):
        assert (tmp_path / "resumed" / name).read_text() == (tmp_path / "whole" / name).read_text()
    assert load_checkpoint(tmp_path / "whole")["scaler"] is None  # the stage is done: nothing left to resume


def test_precision_fp32_is_a_no_op_and_fp16_has_a_scaler() -> None:
    fp32 = Precision("fp32", "cpu", "p")
    assert not fp32.enabled and fp32.scaler is None
    with fp32.autocast():
        assert not torch.is_autocast_enabled("cpu")
    fp16 = Precision("FP16", "cpu", "p")
    assert fp16.dtype == torch.float16 and fp16.scaler is not None


# -------------------------------------------------------- lifecycle callbacks
def record_events(model, events: list) -> None:
    for slot in ("encoder", "aux"):
        module = model.slots[slot]
        for event in ("on_train_start", "on_train_end", "on_eval_start", "on_eval_end"):
            def hook(*, _slot=slot, _event=event, **context):
                detail = context["stage"].name if "stage" in context else context["split"]
                frozen = not model.slots["aux"].weight.requires_grad
                events.append((_slot, _event, detail, frozen, model.training))
            setattr(module, event, hook)


def test_callbacks_run_per_stage_and_around_loss_validation(tmp_path: Path) -> None:
    stages = [make_stage("first", epochs=2, train=["encoder", "rec"]),
              make_stage("second", epochs=1, objectives={"aux": 1.0}, train=["aux"], validate=False)]
    pipeline = ToyPipeline(stages)
    events: list = []
    record_events(pipeline.model, events)
    Trainer(pipeline, tmp_path, progress=False).fit()
    encoder_events = [event[1:] for event in events if event[0] == "encoder"]
    assert encoder_events == [
        ("on_train_start", "first", True, True),  # after freezing: aux is not trained in "first"
        ("on_eval_start", "valid", True, False), ("on_eval_end", "valid", True, False),  # eval mode
        ("on_eval_start", "valid", True, False), ("on_eval_end", "valid", True, False),
        ("on_train_end", "first", True, True),
        ("on_train_start", "second", False, True),
        ("on_train_end", "second", False, True),
    ]
    assert [event[1:] for event in events if event[0] == "aux"] == encoder_events


def test_a_resumed_stage_gets_on_train_start_again(tmp_path: Path) -> None:
    pipeline = ToyPipeline([make_stage("only", epochs=2)])

    def die(count: int) -> None:
        if count == 8:  # epoch 2 (6 batches per epoch)
            raise SimulatedKill()

    pipeline.on_train_batch = die
    with pytest.raises(SimulatedKill):
        Trainer(pipeline, tmp_path, progress=False).fit()
    resumed, events = ToyPipeline([make_stage("only", epochs=2)]), []
    record_events(resumed.model, events)
    Trainer(resumed, tmp_path, resume=True, progress=False).fit()
    assert [event[1] for event in events if event[0] == "encoder"] == [
        "on_train_start", "on_eval_start", "on_eval_end", "on_train_end"]


def test_a_validation_with_report_metrics_is_one_eval_bracket_per_epoch(tmp_path: Path) -> None:
    # A real pipeline and the real evaluator, which computes the early-stopping metric: its hooks and the trainer's
    # valid-loss pass share one on_eval_start / on_eval_end pair per epoch.
    from adapt_toys import make_model, make_pipeline, user_samples

    model, deps = make_model(generator=False)
    samples = user_samples(deps.vocab)
    pipeline = make_pipeline(model, deps, samples, batch_size=4)
    pipeline.samples["train"] = samples
    stopping = EarlyStoppingSpec(metric="rec.recall@1", mode="max", patience=1)
    pipeline.spec.stages = [make_stage(epochs=4, batch_size=4, early_stopping=stopping)]
    events: list = []
    for event in ("on_eval_start", "on_eval_end"):
        setattr(model.slots["rec"], event,
                lambda *, _event=event, **context: events.append((_event, context["split"], model.training)))
    history = Trainer(pipeline, tmp_path, progress=False, tensorboard=False).fit()
    epochs = len(history["rec"])
    assert epochs >= 2 and all("rec.recall@1" in record["valid"] for record in history["rec"])
    assert events == [("on_eval_start", "valid", False), ("on_eval_end", "valid", False)] * epochs
    assert model.training  # restored after every validation


def test_a_checkpoint_the_caller_checked_is_not_read_again(tmp_path: Path, monkeypatch) -> None:
    from crs.training import checkpoint as checkpoint_module

    whole = ToyPipeline([make_stage(epochs=3)])
    Trainer(whole, tmp_path / "whole", progress=False).fit()
    killed = ToyPipeline([make_stage(epochs=3)])

    def die(count: int) -> None:
        if count == 8:  # epoch 2 (6 batches per epoch)
            raise SimulatedKill()

    killed.on_train_batch = die
    with pytest.raises(SimulatedKill):
        Trainer(killed, tmp_path / "resumed", progress=False).fit()
    resumed = ToyPipeline([make_stage(epochs=3)])
    checked = checkpoint_module.check_resumable(tmp_path / "resumed",
                                                checkpoint_module.comparable_config(resumed.resolved))
    read, reads = checkpoint_module._read_verified, []
    monkeypatch.setattr(checkpoint_module, "_read_verified",
                        lambda path, what: reads.append(path.name) or read(path, what))
    Trainer(resumed, tmp_path / "resumed", resume=True, progress=False, checkpoint=checked).fit()
    assert reads == []  # neither read nor hashed a second time
    assert same_parameters(parameters_of(resumed.model), parameters_of(whole.model))
    for name in ("history.json", "metrics.jsonl"):
        assert (tmp_path / "resumed" / name).read_text() == (tmp_path / "whole" / name).read_text()


# ----------------------------------------------------------------- checkpoints
def best_at_epoch_one(run_dir: Path, monkeypatch, *, kill: bool) -> ToyPipeline:
    """A 3-epoch stage whose valid metric is best at epoch 1; with `kill`, dies in epoch 2 (after its checkpoint)."""
    pipeline = ToyPipeline([make_stage(epochs=3, early_stopping=EarlyStoppingSpec(metric="rec.recall@10", mode="max",
                                                                                  patience=0))])
    _fake_evaluate(monkeypatch, [{"rec.recall@10": value} for value in (0.9, 0.1, 0.1)], [])
    if kill:
        def die(count: int) -> None:
            if count == 8:  # 6 batches per epoch
                raise SimulatedKill()

        pipeline.on_train_batch = die
        with pytest.raises(SimulatedKill):
            Trainer(pipeline, run_dir, progress=False).fit()
    else:
        Trainer(pipeline, run_dir, progress=False).fit()
    return pipeline


def resume_after_epoch_one(run_dir: Path, monkeypatch) -> ToyPipeline:
    resumed = ToyPipeline([make_stage(epochs=3, early_stopping=EarlyStoppingSpec(metric="rec.recall@10", mode="max",
                                                                                 patience=0))])
    _fake_evaluate(monkeypatch, [{"rec.recall@10": 0.1}] * 2, [])  # epochs 2 and 3 never beat epoch 1
    Trainer(resumed, run_dir, resume=True, progress=False).fit()
    return resumed


def test_resume_reads_a_format_1_checkpoint_with_the_best_state_inline(tmp_path: Path, monkeypatch) -> None:
    whole = best_at_epoch_one(tmp_path / "whole", monkeypatch, kill=False)
    run = tmp_path / "old"
    best_at_epoch_one(run, monkeypatch, kill=True)
    # Rewrite the checkpoint the way format 1 stored it: the best model inline, and no best.pt to fall back on.
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    state["format"] = 1
    del state["scaler"]
    state["early_stopping"].pop("best_file")
    state["early_stopping"]["best_state"] = torch.load(run / "best.pt", weights_only=True)["model"]
    torch.save(state, run / "checkpoint.pt")
    (run / "best.pt").unlink()
    resumed = resume_after_epoch_one(run, monkeypatch)
    assert same_parameters(parameters_of(resumed.model), parameters_of(whole.model))


def test_the_best_state_comes_back_from_best_pt_and_a_wrong_best_pt_is_a_data_error(tmp_path: Path,
                                                                                     monkeypatch) -> None:
    whole = best_at_epoch_one(tmp_path / "whole", monkeypatch, kill=False)
    best_at_epoch_one(tmp_path / "good", monkeypatch, kill=True)
    resumed = resume_after_epoch_one(tmp_path / "good", monkeypatch)
    assert same_parameters(parameters_of(resumed.model), parameters_of(whole.model))

    best_at_epoch_one(tmp_path / "bad", monkeypatch, kill=True)
    best = torch.load(tmp_path / "bad" / "best.pt", weights_only=True)
    best["epoch"] = 2
    torch.save(with_checksum(best), tmp_path / "bad" / "best.pt")  # a wrong epoch, not a damaged file
    with pytest.raises(DataError) as caught:
        resume_after_epoch_one(tmp_path / "bad", monkeypatch)
    assert "best.pt" in str(caught.value) and "(0, 1)" in str(caught.value) and "without --resume" in str(caught.value)
