"""Optimizers (with parameter groups) and per-step learning-rate schedules for a training stage.

Both are built from the stage's ``optimizer:`` / ``schedule:`` nodes
(:class:`crs.config.spec.OptimizerSpec`, :class:`crs.config.spec.ScheduleSpec`).

Parameter names are those of :attr:`crs.training.stage.StagePlan.named_parameters`:
``<slot>.<param>`` (e.g. ``recommender.item_bias``, ``generator.layers.0.norm1.weight``)
and ``shared.<name>.<param>`` for shared modules.  ``optimizer.groups`` gives some of
them their own ``lr`` / ``weight_decay``::

    optimizer:
      type: adamw
      lr: 0.001
      weight_decay: 0.01
      groups:
        - {params: ["shared.*"], lr: 0.0001}        # a pretrained LM moves slowly
        - {params: ["recommender.*"], weight_decay: 0.0}

Globs are :func:`fnmatch.fnmatchcase` patterns (``*`` also matches dots); each
parameter goes to the first group with a matching glob, the rest to the default
group (the optimizer's own ``lr`` / ``weight_decay``).  A glob that matches no
trainable parameter of the stage is a config error (a typo would otherwise go
unnoticed).  ``no_decay`` lists parameters that never decay, in any group; left
unset it means biases and the weights of normalisation layers (LayerNorm,
BatchNorm, GroupNorm, RMSNorm, recognised by module type and by a ``norm`` in the
name), the usual AdamW recipe.  ``no_decay: []`` decays everything.  With
``weight_decay: 0`` and no groups there is exactly one parameter group, in the
order the stage lists its parameters, as before groups existed.

Schedules are ``LambdaLR`` multipliers stepped once per optimizer step; every
schedule honours a warmup (``warmup_steps``, or ``warmup_epochs`` converted with
the optimizer steps per epoch and rounded up; linear ramp from 0), after which:

- ``constant``: factor 1;
- ``linear``: linear decay to 0 at the stage's last step;
- ``cosine``: half-cosine decay to 0 at the stage's last step;
- ``warmup_linear``: the same as ``linear`` (the name reads better with a warmup).
"""
from __future__ import annotations

import math
from fnmatch import fnmatchcase
from typing import Any, Iterable, Mapping

import torch
from torch import nn

from ..errors import ConfigError, UnknownComponentError

__all__ = ["OPTIMIZERS", "SCHEDULES", "DEFAULT_NO_DECAY", "build_optimizer", "parameter_groups",
           "norm_parameter_ids", "warmup_steps", "build_scheduler", "LRFactor", "check_number", "check_optimizer",
           "check_schedule"]

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "linear", "cosine", "warmup_linear")
# Name globs of the default no_decay (module types are checked too, see norm_parameter_ids).
DEFAULT_NO_DECAY = ("*.bias", "*norm*.weight", "*Norm*.weight")
_NORM_TYPES = tuple(t for t in (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._NormBase,
                                getattr(nn, "RMSNorm", None)) if t is not None)
_NAMES_SHOWN = 8


def check_number(value: Any, path: str, *, minimum: float = 0.0, strict: bool = False, example: str = "") -> float:
    """`value` as a float if it is a finite number >= `minimum` (> with `strict`); else a ConfigError at `path`.

    NaN and infinities are refused explicitly: ``x < 0`` is False for NaN, so a plain range
    check lets ``lr: .nan`` or ``grad_clip: .nan`` through, and training then goes on silently
    with NaN parameters (or, for ``inf``, none of the clipping that was asked for).
    """
    rule = "positive number" if strict and minimum == 0 else f"number {'>' if strict else '>='} {minimum:g}"
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (value <= minimum if strict else value < minimum):
        raise ConfigError(path, f"must be a finite {rule}, got {value!r}", example)
    return float(value)


def check_optimizer(spec: Any, path: str) -> None:
    """Every number of an ``optimizer:`` node (and its groups) finite and in range; ConfigErrors name the key.

    The trainer checks every stage's optimizer before the first stage trains
    (:func:`crs.training.stage.check_stage`), so nothing after it checks these numbers again.
    """
    check_number(spec.lr, f"{path}.lr", strict=True, example="e.g. lr: 0.001")
    check_number(spec.weight_decay, f"{path}.weight_decay", example="e.g. weight_decay: 0.01, or 0 for none")
    check_number(spec.momentum, f"{path}.momentum", example="e.g. momentum: 0.9 (sgd only), or 0 for none")
    check_number(spec.eps, f"{path}.eps", strict=True, example="e.g. eps: 1.0e-8 (the default)")
    for index, group in enumerate(spec.groups or []):
        if group.lr is not None:
            check_number(group.lr, f"{path}.groups.{index}.lr", strict=True,
                         example="e.g. lr: 0.0001, or leave lr out to use the optimizer's")
        if group.weight_decay is not None:
            check_number(group.weight_decay, f"{path}.groups.{index}.weight_decay",
                         example="e.g. weight_decay: 0.0, or leave it out to use the optimizer's")


def check_schedule(spec: Any, path: str) -> None:
    """A ``schedule:`` node's warmup: finite numbers >= 0, and not both ``warmup_steps`` and ``warmup_epochs``."""
    check_number(spec.warmup_steps, f"{path}.warmup_steps", example="e.g. warmup_steps: 100")
    epochs = check_number(spec.warmup_epochs, f"{path}.warmup_epochs", example="e.g. warmup_epochs: 0.5")
    if epochs > 0 and spec.warmup_steps > 0:
        raise ConfigError(f"{path}.warmup_epochs", f"both warmup_steps ({spec.warmup_steps}) and warmup_epochs "
                          f"({spec.warmup_epochs}) are set", "keep one of the two")


def norm_parameter_ids(model: nn.Module) -> set[int]:
    """ids of the parameters owned directly by normalisation layers of `model` (the default no_decay)."""
    return {id(param) for module in model.modules() if isinstance(module, _NORM_TYPES)
            for param in module.parameters(recurse=False)}


def build_optimizer(spec: Any, parameters: Mapping[str, nn.Parameter] | Iterable[nn.Parameter], path: str, *,
                    norm_ids: Iterable[int] = (), checked: bool = False) -> torch.optim.Optimizer:
    """The optimizer named by `spec.type`; `path` is the YAML path of the node.

    :param parameters: name -> parameter (see the module doc for the names); a plain iterable
        is named ``0``, ``1``, ... (enough when `spec` has no groups).
    :param norm_ids: ids of normalisation-layer parameters (:func:`norm_parameter_ids`), for the default no_decay.
    :param checked: the caller already ran :func:`check_optimizer` on `spec` (the trainer does, for every
        stage before the first trains); otherwise it runs here.
    """
    kind = str(spec.type).lower()
    if kind not in OPTIMIZERS:
        raise UnknownComponentError(f"{path}.type", "optimizer", spec.type, OPTIMIZERS)
    if not checked:
        check_optimizer(spec, path)
    named = (dict(parameters) if isinstance(parameters, Mapping)
             else {str(i): p for i, p in enumerate(parameters)})
    groups = parameter_groups(spec, named, path, norm_ids=norm_ids)
    if kind == "adam":
        return torch.optim.Adam(groups, lr=spec.lr, weight_decay=spec.weight_decay, eps=spec.eps)
    if kind == "adamw":
        return torch.optim.AdamW(groups, lr=spec.lr, weight_decay=spec.weight_decay, eps=spec.eps)
    return torch.optim.SGD(groups, lr=spec.lr, weight_decay=spec.weight_decay, momentum=spec.momentum)


def parameter_groups(spec: Any, named: Mapping[str, nn.Parameter], path: str, *,
                     norm_ids: Iterable[int] = ()) -> list[dict[str, Any]]:
    """Torch param-group dicts for `named` under `spec.groups` / `spec.no_decay` (see the module doc).

    Each dict carries ``params``, ``lr``, ``weight_decay`` and ``name`` (``default`` or
    ``groups.<i>``, with ``/no_decay`` for its non-decaying part).  Empty groups are
    left out; the default group comes first, so ``param_groups[0]`` is the stage's own
    learning rate whenever some parameter is left to the default.
    """
    norm_ids = set(norm_ids)
    owner = _assign_groups(list(spec.groups or []), list(named), f"{path}.groups")
    if spec.no_decay is None:
        def decays(name: str, param: nn.Parameter) -> bool:
            return id(param) not in norm_ids and not any(fnmatchcase(name, glob) for glob in DEFAULT_NO_DECAY)
    else:
        globs = [str(glob) for glob in spec.no_decay]

        def decays(name: str, param: nn.Parameter) -> bool:
            return not any(fnmatchcase(name, glob) for glob in globs)

    buckets: dict[tuple[int, bool], dict[str, Any]] = {}
    sources = [(-1, "default", spec.lr, spec.weight_decay)]
    for index, group in enumerate(spec.groups or []):
        lr = spec.lr if group.lr is None else group.lr
        decay = spec.weight_decay if group.weight_decay is None else group.weight_decay
        sources.append((index, f"groups.{index}", lr, decay))
    for index, label, lr, decay in sources:
        for name, param in named.items():
            if owner[name] != index:
                continue
            # A non-decaying parameter shares its group's bucket when the group does not decay anyway,
            # so that weight_decay: 0 without groups keeps one param group in the stage's order.
            split = decay > 0 and not decays(name, param)
            bucket = buckets.setdefault((index, split), {
                "params": [], "lr": lr, "weight_decay": 0.0 if split else decay,
                "name": f"{label}/no_decay" if split else label})
            bucket["params"].append(param)
    return list(buckets.values())


def _assign_groups(groups: list[Any], names: list[str], path: str) -> dict[str, int]:
    """name -> index of the first group with a matching glob (-1: the default group); checks every glob.

    The groups' numbers are :func:`check_optimizer`'s.
    """
    owner = {name: -1 for name in names}
    shown = ", ".join(names[:_NAMES_SHOWN]) + (f", ... ({len(names)} in all)" if len(names) > _NAMES_SHOWN else "")
    for index, group in enumerate(groups):
        here = f"{path}.{index}"
        globs = [str(glob) for glob in (group.params or [])]
        if not globs:
            raise ConfigError(f"{here}.params", "the group lists no parameter globs",
                              f"e.g. params: [\"recommender.*\"]; this stage's parameters: {shown}")
        for position, glob in enumerate(globs):
            if not any(fnmatchcase(name, glob) for name in names):
                raise ConfigError(f"{here}.params.{position}",
                                  f"'{glob}' matches no trainable parameter of this stage",
                                  f"parameters are named <slot>.<param> or shared.<name>.<param> and globs are "
                                  f"case-sensitive (* also matches dots); this stage's: {shown}")
        taken = [name for name in names if owner[name] == -1 and any(fnmatchcase(name, g) for g in globs)]
        if not taken:
            raise ConfigError(f"{here}.params", "every parameter it matches already belongs to an earlier group "
                              "(each parameter goes to the first group that matches it)",
                              "remove this group, or narrow the globs of the earlier groups")
        for name in taken:
            owner[name] = index
    return owner


def warmup_steps(spec: Any, steps_per_epoch: int) -> int:
    """Warmup length in optimizer steps from `warmup_steps` or `warmup_epochs` (:func:`check_schedule` refuses both)."""
    if spec.warmup_epochs > 0:
        return math.ceil(spec.warmup_epochs * max(int(steps_per_epoch), 0))
    return int(spec.warmup_steps)


class LRFactor:
    """The learning-rate multiplier at a given step (a class, not a closure, so it is picklable)."""

    def __init__(self, kind: str, warmup_steps: int, total_steps: int):
        self.kind, self.warmup_steps, self.total_steps = kind, int(warmup_steps), max(int(total_steps), 1)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / (self.warmup_steps + 1)
        if self.kind == "constant":
            return 1.0
        decay_steps = max(self.total_steps - self.warmup_steps, 1)
        # Clamped: a strategy that takes more steps than planned trains on at the final rate.
        progress = min(max((step - self.warmup_steps) / decay_steps, 0.0), 1.0)
        if self.kind == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return 1.0 - progress  # linear, warmup_linear


def build_scheduler(spec: Any, optimizer: torch.optim.Optimizer, total_steps: int, path: str, *,
                    steps_per_epoch: int = 0) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step schedule over `total_steps` optimizer steps; `path` is the YAML path of the node.

    `steps_per_epoch` converts ``warmup_epochs`` to steps.  The warmup numbers are :func:`check_schedule`'s,
    which the trainer runs for every stage before the first trains.
    """
    kind = str(spec.type).lower()
    if kind not in SCHEDULES:
        raise UnknownComponentError(f"{path}.type", "learning-rate schedule", spec.type, SCHEDULES)
    warmup = warmup_steps(spec, steps_per_epoch)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, LRFactor(kind, warmup, total_steps))
