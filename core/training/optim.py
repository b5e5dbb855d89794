"""Optimizers and per-batch learning-rate schedules for a training stage.

Both are built from the stage's ``optimizer:`` / ``schedule:`` nodes
(:class:`crs.config.spec.OptimizerSpec`, :class:`crs.config.spec.ScheduleSpec`).
Schedules are ``LambdaLR`` multipliers stepped once per optimizer step; every
schedule honours ``warmup_steps`` (linear ramp from 0), after which:

- ``constant``: factor 1;
- ``linear``: linear decay to 0 at the stage's last step;
- ``cosine``: half-cosine decay to 0 at the stage's last step;
- ``warmup_linear``: the same as ``linear`` (the name reads better with a warmup).
"""
from __future__ import annotations

import math
from typing import Any, Iterable

import torch

from ..errors import ConfigError, UnknownComponentError

__all__ = ["OPTIMIZERS", "SCHEDULES", "build_optimizer", "build_scheduler", "LRFactor"]

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "linear", "cosine", "warmup_linear")


def build_optimizer(spec: Any, parameters: Iterable[torch.nn.Parameter], path: str) -> torch.optim.Optimizer:
    """The optimizer named by `spec.type` over `parameters`; `path` is the YAML path of the node."""
    params = list(parameters)
    kind = str(spec.type).lower()
    if kind not in OPTIMIZERS:
        raise UnknownComponentError(f"{path}.type", "optimizer", spec.type, OPTIMIZERS)
    if not spec.lr > 0:
        raise ConfigError(f"{path}.lr", f"the learning rate must be positive, got {spec.lr}", "e.g. lr: 0.001")
    if spec.weight_decay < 0:
        raise ConfigError(f"{path}.weight_decay", f"must be >= 0, got {spec.weight_decay}")
    if kind == "adam":
        return torch.optim.Adam(params, lr=spec.lr, weight_decay=spec.weight_decay)
    if kind == "adamw":
        return torch.optim.AdamW(params, lr=spec.lr, weight_decay=spec.weight_decay)
    return torch.optim.SGD(params, lr=spec.lr, weight_decay=spec.weight_decay, momentum=spec.momentum)


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


def build_scheduler(spec: Any, optimizer: torch.optim.Optimizer, total_steps: int,
                    path: str) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step schedule over `total_steps` optimizer steps; `path` is the YAML path of the node."""
    kind = str(spec.type).lower()
    if kind not in SCHEDULES:
        raise UnknownComponentError(f"{path}.type", "learning-rate schedule", spec.type, SCHEDULES)
    if spec.warmup_steps < 0:
        raise ConfigError(f"{path}.warmup_steps", f"must be >= 0, got {spec.warmup_steps}")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, LRFactor(kind, spec.warmup_steps, total_steps))
