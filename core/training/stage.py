"""Turning one ``stages.<i>`` entry into what the loop needs: objectives, parameters, freezing.

Parameter names (:attr:`StagePlan.named_parameters`, optimizer groups) are the
model's ``named_parameters()`` names with the leading ``slots.`` dropped:
``<slot>.<param>`` for a slot's own parameters, ``shared.<name>.<param>`` for a
shared module's.

Everything a user can get wrong in a stage is checked here, before the first
batch, and reported with the YAML path of the offending key: what needs no pipeline
(:func:`check_stage`: numbers, early-stopping metric lists) for every stage before the
first one trains, the rest (:func:`plan_stage`: objectives, slots, samples) when the stage starts.
"""
from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
from torch import nn

from ..errors import ConfigError, UnknownComponentError
from .early_stopping import check_metric_list
from .optim import check_number, check_optimizer, check_schedule

__all__ = ["StagePlan", "plan_stage", "check_stage", "check_stage_numbers", "resolve_objectives",
           "resolve_parameters", "public_name", "parameter_names", "train_only", "trained_by_stages", "LOSS_PREFIX",
           "SLOTS_PREFIX"]

LOSS_PREFIX = "loss."
SLOTS_PREFIX = "slots."
SHARED_PREFIX = "shared."  # `train: [shared.<name>]` names a module of the pipeline's `shared:` section
log = logging.getLogger("crs.training")


@dataclass
class StagePlan:
    """A validated stage: what it optimises and which parameters it may change."""

    index: int
    spec: Any  # the StageSpec
    path: str  # "stages.<i>"
    objectives: dict[str, float]  # loss key ("loss.<name>") -> weight
    parameters: list[nn.Parameter]  # parameters of the slots in `train:` (deduplicated)
    samples: list  # train samples for the stage's task
    # name -> parameter for the trainable ones among `parameters` (requires_grad), in the same order;
    # names are "<slot>.<param>" / "shared.<name>.<param>" (see the module doc).
    named_parameters: dict[str, nn.Parameter] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.spec.name)

    @property
    def wanted(self) -> list[str]:
        """State keys the model must compute for this stage: its losses."""
        return list(self.objectives)

    @property
    def accumulate(self) -> int:
        """Batches per optimizer step (``stages.<i>.accumulate``)."""
        return int(getattr(self.spec, "accumulate", 1))

    def batches_per_epoch(self) -> int:
        return math.ceil(len(self.samples) / self.spec.batch_size)

    def steps_per_epoch(self) -> int:
        """Optimizer steps of one plain epoch: one per `accumulate` batches, the last partial group included."""
        return math.ceil(self.batches_per_epoch() / self.accumulate)


def resolve_objectives(objectives: dict[str, float], provided: set[str], path: str) -> dict[str, float]:
    """Loss key -> weight; names may omit the ``loss.`` prefix.  Unknown names raise a ConfigError.

    Suggestions come as the stage wrote its names: ``rec`` for ``objectives: {recc: 1.0}``,
    ``loss.rec`` only when the names are written with the prefix.
    """
    short = sorted(key.removeprefix(LOSS_PREFIX) for key in provided)  # how objectives are usually written
    if not objectives:
        raise ConfigError(f"{path}.objectives", "the stage has no objectives, so it would train nothing",
                          f"give loss names and weights, e.g. objectives: {{rec: 1.0}}; this model provides: "
                          f"{', '.join(short) or '(no losses)'}")
    resolved: dict[str, float] = {}
    for name, weight in objectives.items():
        key = name if str(name).startswith(LOSS_PREFIX) else f"{LOSS_PREFIX}{name}"
        if key not in provided:
            prefixed = str(name).startswith(LOSS_PREFIX)
            raise UnknownComponentError(f"{path}.objectives.{name}", "objective (no slot outputs it)", str(name),
                                        sorted(provided) if prefixed else short)
        if key in resolved:
            raise ConfigError(f"{path}.objectives.{name}", f"'{key}' is listed twice (with and without 'loss.')",
                              "keep one of the two entries")
        if not isinstance(weight, (int, float)) or not math.isfinite(weight):
            raise ConfigError(f"{path}.objectives.{name}", f"the weight must be a finite number, got {weight!r}")
        resolved[key] = float(weight)
    return resolved


def resolve_parameters(model: Any, train: list[str], path: str) -> list[nn.Parameter]:
    """The parameters of the slots named in `train` (``*`` = all); unknown slot names raise.

    ``shared.<name>`` names a module of the pipeline's ``shared:`` section: naming a slot
    trains only that slot's own parameters, so a shared module is trained where listed.
    """
    slot_names = list(model.slots.keys()) + [f"shared.{name}" for name in getattr(model, "shared", {})]
    names = [str(name) for name in (train or [])]
    if not names:
        raise ConfigError(f"{path}.train", "no slot is listed, so the stage would train nothing",
                          f"list slots to train (or '*' for all): {', '.join(slot_names)}")
    for name in names:
        if name != "*" and name not in slot_names:
            raise UnknownComponentError(f"{path}.train", "slot", name, slot_names)
    unique: dict[int, nn.Parameter] = {}
    for param in model.slot_parameters(names):
        unique.setdefault(id(param), param)
    return list(unique.values())


def public_name(model_name: str) -> str:
    """``slots.rec.weight`` -> ``rec.weight``; any other name (``shared.x.w``) is kept."""
    return model_name[len(SLOTS_PREFIX):] if model_name.startswith(SLOTS_PREFIX) else model_name


def parameter_names(model: nn.Module) -> dict[int, str]:
    """id(parameter) -> its name: ``named_parameters()`` without the leading ``slots.`` (:func:`public_name`)."""
    names: dict[int, str] = {}
    for name, param in model.named_parameters():
        names.setdefault(id(param), public_name(name))
    return names


def check_stage(stage: Any, index: int) -> None:
    """Everything about stage `index` that needs no pipeline, or a ConfigError naming its key.

    The trainer runs it for every stage before the first one trains: its numbers
    (:func:`check_stage_numbers`) and its early-stopping metric list (not empty, no name twice).
    """
    check_stage_numbers(stage, index)
    if stage.early_stopping is not None:
        check_metric_list(stage.early_stopping.metric, f"stages.{index}.early_stopping")


def check_stage_numbers(stage: Any, index: int) -> None:
    """Every number of stage `index` finite and in range, or a ConfigError naming its key.

    Needs no pipeline, so the trainer checks all stages before the first one trains: a NaN
    ``grad_clip`` in stage 2 must not cost stage 1's training first (and must never be
    accepted: ``x < 0`` is False for NaN, and clipping to NaN turns every parameter into NaN).
    """
    path = f"stages.{index}"
    if int(stage.epochs) < 0:
        raise ConfigError(f"{path}.epochs", f"must be >= 0, got {stage.epochs}")
    if int(stage.batch_size) < 1:
        raise ConfigError(f"{path}.batch_size", f"must be >= 1, got {stage.batch_size}")
    check_number(stage.grad_clip, f"{path}.grad_clip", example="the largest global gradient norm, e.g. "
                 "grad_clip: 1.0; 0 turns clipping off")
    if int(stage.accumulate) < 1:
        raise ConfigError(f"{path}.accumulate", f"must be >= 1 (batches per optimizer step), got {stage.accumulate}",
                          "use 1 for a step after every batch")
    for name, weight in dict(stage.objectives or {}).items():
        if not isinstance(weight, (int, float)) or isinstance(weight, bool) or not math.isfinite(weight):
            raise ConfigError(f"{path}.objectives.{name}", f"the weight must be a finite number, got {weight!r}",
                              "a loss weight, e.g. 1.0")
    check_optimizer(stage.optimizer, f"{path}.optimizer")
    check_schedule(stage.schedule, f"{path}.schedule")


def plan_stage(pipeline: Any, stage: Any, index: int) -> StagePlan:
    """Validate stage `index` against `pipeline` and collect its objectives, parameters and samples.

    Its numbers are :func:`check_stage`'s, which the trainer runs for every stage before the first trains.
    """
    path = f"stages.{index}"
    objectives = resolve_objectives(dict(stage.objectives), set(pipeline.model.loss_keys()), path)
    parameters = resolve_parameters(pipeline.model, list(stage.train), path)
    if not any(p.requires_grad for p in parameters):
        raise ConfigError(f"{path}.train", f"the slots {list(stage.train)} have no trainable parameters",
                          "list slots that own parameters")
    samples = list(pipeline.task_samples("train", stage.task))
    if not samples and int(stage.epochs) > 0:
        raise ConfigError(f"{path}.task", f"the train split has no samples for task '{stage.task}'",
                          "check the data, or use another task (rec, conv, all)")
    warn_untouched_slots(pipeline.model, list(stage.train), objectives, path, str(stage.name))
    names = parameter_names(pipeline.model)
    named = {names[id(p)]: p for p in parameters if p.requires_grad}
    return StagePlan(index, stage, path, objectives, parameters, samples, named)


def untouched_slots(model: Any, train: list[str], objectives: dict[str, float]) -> list[str]:
    """Names in `train` whose outputs no objective depends on, so their parameters get no gradient.

    A slot counts as used when the objectives' execution plan runs it; a ``shared.<name>``
    module when a slot of that plan holds it.  ``*`` (train everything) is never flagged.
    """
    if "*" in train:
        return []
    wiring = getattr(model, "wiring", None)
    if wiring is None:
        return []
    planned = set(wiring.plan(objectives))
    from ..shared import borrowed

    borrowed_by_plan = {name for slot in planned for name in borrowed(model.slots[slot])}
    unused = []
    for name in train:
        if name.startswith(SHARED_PREFIX):
            if name[len(SHARED_PREFIX):] not in borrowed_by_plan:
                unused.append(name)
        elif name in model.slots and name not in planned:
            unused.append(name)
    return unused


def warn_untouched_slots(model: Any, train: list[str], objectives: dict[str, float], path: str, stage: str) -> None:
    """Log a warning for trained slots no objective of the stage uses (see :func:`untouched_slots`)."""
    unused = untouched_slots(model, train, objectives)
    if unused:
        losses = ", ".join(key.removeprefix(LOSS_PREFIX) for key in objectives)
        its, it = ("their", "them") if len(unused) > 1 else ("its", "it")
        log.warning("%s.train: stage '%s' trains %s, but none of its objectives (%s) uses %s outputs, "
                    "so the stage does not change %s; drop %s from `train:` or add an objective that needs %s",
                    path, stage, ", ".join(unused), losses, its, it, it, it)


def trained_by_stages(model: Any, stages: Any, slot: str) -> bool:
    """Whether the weights of model slot `slot` come from training rather than from initialisation.

    True when some stage with ``epochs > 0`` lists a module holding one of the slot's
    parameters in ``train:`` (the slot, ``*``, or a shared module it uses), when the
    component says its weights are ``pretrained``, or when it has no parameters at all
    (nothing to learn: its outputs are what they are meant to be).  The evaluator withholds
    figures, such as perplexity, that would otherwise describe freshly initialised weights.
    """
    component = model.slots[slot]
    if getattr(component, "pretrained", False):
        return True
    own = {id(p) for p in component.parameters()}
    if not own:
        return True
    for stage in stages or []:
        if int(getattr(stage, "epochs", 0)) <= 0:
            continue
        try:
            trained = model.slot_parameters([str(name) for name in (stage.train or [])])
        except ConfigError:  # an unknown slot name: plan_stage refuses that stage before it trains
            continue
        if any(id(p) in own for p in trained):
            return True
    return False


@contextlib.contextmanager
def train_only(model: nn.Module, parameters: list[nn.Parameter]) -> Iterator[list[nn.Parameter]]:
    """Freeze every parameter of `model` not in `parameters` for the block; restore the flags after.

    Yields the parameters that are actually trainable (those in `parameters`
    that did not already have ``requires_grad=False``, e.g. a frozen embedding).
    """
    keep = {id(p) for p in parameters}
    saved = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for param, _ in saved:
            if id(param) not in keep:
                param.requires_grad_(False)
        yield [p for p in parameters if p.requires_grad]
    finally:
        for param, flag in saved:
            param.requires_grad_(flag)


def batch_length(batch: dict) -> int:
    """Number of samples in a collated batch (for sample-weighted means)."""
    samples = batch.get("batch.samples")
    if samples is not None:
        return len(samples)
    for value in batch.values():
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            return int(value.shape[0])
        if isinstance(value, list):
            return len(value)
    return 1
