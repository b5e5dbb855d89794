"""Early stopping on a validation metric, keeping the best model state.

``patience`` counts epochs without improvement; the stage stops once that many
have passed in a row.  ``patience: 0`` never stops early but still keeps (and
finally restores) the best state.  The whole tracker state, best model
included, is saved in checkpoints so a resumed stage decides exactly as an
uninterrupted one would.
"""
from __future__ import annotations

import math
from typing import Any

import torch

from ..errors import ConfigError, UnknownComponentError

__all__ = ["EarlyStopper", "cpu_state_dict"]

MODES = ("min", "max")


def cpu_state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of `module`'s state (GPU memory is not spent on a second model)."""
    return {key: value.detach().to("cpu", copy=True) for key, value in module.state_dict().items()}


class EarlyStopper:
    """Tracks the best value of one validation metric and the model state that reached it."""

    def __init__(self, spec: Any, path: str):
        self.metric = str(spec.metric)
        self.mode = str(spec.mode).lower()
        self.patience = int(spec.patience)
        self.path = path
        if self.mode not in MODES:
            raise UnknownComponentError(f"{path}.mode", "early-stopping mode", spec.mode, MODES)
        if self.patience < 0:
            raise ConfigError(f"{path}.patience", f"must be >= 0 (0 = never stop, keep the best), got {self.patience}")
        self.best: float | None = None
        self.best_epoch: int | None = None  # 1-based, as in the history
        self.bad_epochs = 0
        self.stopped = False
        self.best_state: dict[str, torch.Tensor] | None = None

    @property
    def needs_evaluation(self) -> bool:
        """True when the metric comes from the evaluator rather than from the valid losses."""
        return not (self.metric == "loss" or self.metric.startswith("loss."))

    def value_of(self, metrics: dict[str, Any]) -> float:
        if self.metric not in metrics:
            have = ", ".join(sorted(metrics)) or "(none)"
            raise ConfigError(f"{self.path}.metric", f"validation produced no metric '{self.metric}'",
                              f"use one of: {have}")
        return float(metrics[self.metric])

    def improved(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.best is None:
            return True
        return value < self.best if self.mode == "min" else value > self.best

    def update(self, metrics: dict[str, Any], epoch: int, model: torch.nn.Module) -> bool:
        """Record epoch `epoch`'s validation metrics; True when it is the new best (its state is kept)."""
        value = self.value_of(metrics)
        if self.improved(value):
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
            self.best_state = cpu_state_dict(model)
            return True
        self.bad_epochs += 1
        if self.patience > 0 and self.bad_epochs >= self.patience:
            self.stopped = True
        return False

    def restore_best(self, model: torch.nn.Module) -> bool:
        """Load the best state into `model`; False when no epoch was ever best (e.g. all NaN)."""
        if self.best_state is None:
            return False
        model.load_state_dict(self.best_state)
        return True

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs,
                "stopped": self.stopped, "best_state": self.best_state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch = state["best"], state["best_epoch"]
        self.bad_epochs, self.stopped = state["bad_epochs"], state["stopped"]
        self.best_state = state["best_state"]
