"""Early stopping on a validation metric (or the sum of several).

``patience`` counts epochs without improvement; the stage stops once that many
have passed in a row.  ``patience: 0`` never stops early but still keeps (and
finally restores) the best state.

``metric`` is one name or a list of names whose values are summed, e.g.
``metric: [rec.recall@10, rec.recall@50]``; the sum is recorded in the epoch's
validation metrics under :attr:`EarlyStopper.metric` (``rec.recall@10+rec.recall@50``)
so the history and metrics.jsonl show what was compared.

The tracker holds numbers only.  The best model state lives in ``best.pt``, written
by the trainer whenever :meth:`EarlyStopper.update` reports an improvement, and the
checkpoint refers to it (:meth:`EarlyStopper.state_dict`) instead of carrying a second
full copy of the model every epoch.
"""
from __future__ import annotations

import math
from typing import Any

import torch

from ..errors import ConfigError, UnknownComponentError
from .checkpoint import BEST_FILE

__all__ = ["EarlyStopper", "check_metric_list", "cpu_state_dict", "is_loss_metric"]

MODES = ("min", "max")


def cpu_state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of `module`'s state (GPU memory is not spent on a second model)."""
    return {key: value.detach().to("cpu", copy=True) for key, value in module.state_dict().items()}


def is_loss_metric(name: str) -> bool:
    """True for the valid losses the trainer computes itself (``loss``, ``loss.<name>``)."""
    return name == "loss" or name.startswith("loss.")


def metric_names(metric: Any) -> list[str]:
    """An ``early_stopping.metric`` value (one name or a list of them) as a list of names."""
    return [str(metric)] if isinstance(metric, str) else [str(name) for name in metric]


def check_metric_list(metric: Any, path: str) -> None:
    """A ConfigError at ``<path>.metric`` when `metric` is an empty list or names a metric twice.

    The trainer runs it for every stage before the first one trains
    (:func:`crs.training.stage.check_stage`), so :class:`EarlyStopper` does not check again.
    """
    names = metric_names(metric)
    if not names:
        raise ConfigError(f"{path}.metric", "the list of metrics is empty",
                          "name a metric (metric: loss) or several to sum (metric: [rec.recall@10, rec.mrr@10])")
    for position, name in enumerate(names):
        if names.index(name) != position:
            raise ConfigError(f"{path}.metric.{position}", f"'{name}' is listed twice",
                              "list each metric once (the values are summed)")


class EarlyStopper:
    """Tracks the best value of the validation metric (or metric sum) and the epoch that reached it.

    The metric list is expected to have passed :func:`check_metric_list`.
    """

    def __init__(self, spec: Any, path: str):
        self.metrics: list[str] = metric_names(spec.metric)
        self.mode = str(spec.mode).lower()
        self.patience = int(spec.patience)
        self.path = path
        #: The name the value is known by: the metric itself, or the names joined with "+" for a sum.
        self.metric = "+".join(self.metrics)
        if self.mode not in MODES:
            raise UnknownComponentError(f"{path}.mode", "early-stopping mode", spec.mode, MODES)
        if self.patience < 0:
            raise ConfigError(f"{path}.patience", f"must be >= 0 (0 = never stop, keep the best), got {self.patience}")
        self.best: float | None = None
        self.best_epoch: int | None = None  # 1-based, as in the history
        self.bad_epochs = 0
        self.stopped = False
        # Only set when resuming a checkpoint of format 1, which carried the best state inline.
        self.legacy_best_state: dict[str, torch.Tensor] | None = None

    @property
    def is_sum(self) -> bool:
        return len(self.metrics) > 1

    @property
    def needs_evaluation(self) -> bool:
        """True when some metric comes from the evaluator rather than from the valid losses."""
        return not all(is_loss_metric(name) for name in self.metrics)

    @property
    def evaluation_tasks(self) -> tuple[str, ...]:
        """The evaluator tasks the report metrics need (``rec`` for ``rec.*``, ``conv`` for the rest)."""
        wanted = {"rec" if name.startswith("rec.") else "conv" for name in self.metrics if not is_loss_metric(name)}
        return tuple(task for task in ("rec", "conv") if task in wanted)

    def value_of(self, metrics: dict[str, Any]) -> float:
        """The tracked value in `metrics`: the metric, or the sum of the metrics."""
        missing = [name for name in self.metrics if name not in metrics]
        if missing:
            have = ", ".join(sorted(metrics)) or "(none)"
            what = f"'{missing[0]}'" if len(missing) == 1 else "the metrics " + ", ".join(f"'{m}'" for m in missing)
            raise ConfigError(f"{self.path}.metric", f"validation produced no {what}", f"use one of: {have}")
        return float(sum(float(metrics[name]) for name in self.metrics))

    def improved(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.best is None:
            return True
        return value < self.best if self.mode == "min" else value > self.best

    def update(self, metrics: dict[str, Any], epoch: int) -> bool:
        """Record epoch `epoch`'s validation metrics; True when it is the new best (save its state then)."""
        value = self.value_of(metrics)
        if self.improved(value):
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
            self.legacy_best_state = None
            return True
        self.bad_epochs += 1
        if self.patience > 0 and self.bad_epochs >= self.patience:
            self.stopped = True
        return False

    def state_dict(self) -> dict[str, Any]:
        """Plain values only; ``best_file`` names the file that holds the best epoch's model."""
        return {"best": self.best, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs,
                "stopped": self.stopped, "best_file": BEST_FILE}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch = state["best"], state["best_epoch"]
        self.bad_epochs, self.stopped = state["bad_epochs"], state["stopped"]
        self.legacy_best_state = state.get("best_state")  # format-1 checkpoints
