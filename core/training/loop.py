"""The toolbox a training strategy gets for one epoch of one stage.

A :class:`crs.interfaces.TrainingStrategy` receives an :class:`EpochLoop` and
decides how the epoch's batches turn into updates.  The plain strategy does
``for batch in loop.batches(): total, parts = loop.loss(batch); loop.step(total);
loop.log_step(parts)``; a MAML strategy can instead draw per-user sample sets,
adapt a copy of the parameters with ``loop.loss`` and its own inner updates, and
call ``loop.step`` for the outer update.

Shuffling is seeded from (run seed, stage index, epoch[, salt]) and never from
the global RNG, so an epoch sees the same batch order whether or not the run was
interrupted and resumed before it.

Gradient accumulation (``stages.<i>.accumulate: N``) happens inside :meth:`EpochLoop.step`:
each loss is scaled by 1/N before its backward pass and the optimizer (and
scheduler) step comes every N calls, so strategies need not know about it.  The
trainer calls :meth:`EpochLoop.finish` after the epoch, which steps a last,
partial group too (its gradient rescaled to the mean over its batches).  Mixed
precision is the trainer's: it runs the strategy's epoch under autocast, and
``step`` runs the backward pass outside it (with the fp16 gradient scaler, if any).

A strategy that does not take one optimizer step per batch overrides
:meth:`crs.interfaces.TrainingStrategy.steps_per_epoch`, which the trainer uses to
size the learning-rate schedule.  A strategy must keep no state across epochs
outside the model/optimizer, or resuming would lose it.
"""
from __future__ import annotations

import contextlib
import math
from typing import Any, Iterator

import torch

from ..data.batching import padded_size
from ..errors import ConfigError
from . import distributed
from .precision import Precision
from .run_log import MetricsLog, progress_bar
from .seeding import derived_seed
from .stage import StagePlan

__all__ = ["EpochLoop"]


class EpochLoop:
    """One epoch of a stage: model, optimizer, scheduler, batches, weighted loss, step, logging.

    Attributes a strategy may use: ``pipeline``, ``model``, ``optimizer``,
    ``scheduler``, ``samples`` (the stage's train samples), ``objectives``
    (loss key -> weight), ``wanted`` (state keys to compute), ``parameters``
    (the trainable parameters), ``stage`` (the StageSpec), ``stage_index``,
    ``epoch`` (0-based), ``seed`` (this epoch's shuffle seed), ``global_step``
    (optimizer steps taken so far in the stage), ``accumulate`` (batches per
    optimizer step), ``precision`` (a :class:`crs.training.precision.Precision`, or
    None for fp32) and ``scaler`` (its fp16 GradScaler, or None).
    """

    def __init__(self, *, pipeline: Any, plan: StagePlan, parameters: list[torch.nn.Parameter],
                 optimizer: torch.optim.Optimizer, scheduler: Any, epoch: int, global_step: int,
                 run_seed: int, metrics: MetricsLog | None, log_every: int = 50, progress: bool = True,
                 precision: Precision | None = None, forward: torch.nn.Module | None = None):
        self.pipeline = pipeline
        self.model = pipeline.model
        self.plan = plan
        self.stage = plan.spec
        self.stage_index = plan.index
        self.samples = plan.samples
        self.objectives = dict(plan.objectives)
        self.wanted = list(plan.wanted)
        self.parameters = parameters
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.epoch = epoch
        self.global_step = global_step
        self.seed = derived_seed(run_seed, plan.index, epoch)
        self.grad_clip = float(self.stage.grad_clip)
        self.accumulate = plan.accumulate
        self.precision = precision
        self.scaler = precision.scaler if precision is not None else None
        self._metrics = metrics
        self._log_every = max(int(log_every), 1)
        self._progress = progress
        self._bar: Any = None
        self._sums: dict[str, float] = {}  # epoch sums of the logged parts
        self._count = 0
        self._pending = 0  # backward passes since the last optimizer step
        self._stepped = False  # an optimizer step happened since the last log_step
        self._step_sums: dict[str, float] = {}  # logged parts of the batches of the current optimizer step
        self._step_count = 0
        # Under torchrun (crs.training.distributed): the DDP replica the training forward goes through,
        # and this rank's shard of the global batch batches() handed out last, by id of the collated batch.
        self._forward = forward if forward is not None else self.model
        self._dist = distributed.current()
        self._shard: tuple[int, distributed.Shard] | None = None  # (id of the batch, its shard)

    # ------------------------------------------------------------------ data
    def batches(self, samples: list | None = None, *, batch_size: int | None = None,
                salt: int | None = None) -> Iterator[dict]:
        """This epoch's shuffled batches of `samples` (default: the stage's train samples).

        ``salt`` gives a different but still reproducible order, for strategies
        that draw several sample sets in one epoch (e.g. one per user).  Only the
        default call shows a progress bar.
        """
        chosen = self.samples if samples is None else samples
        size = int(batch_size or self.stage.batch_size)
        seed = self.seed if salt is None else derived_seed(self.seed, salt)
        group = bool(getattr(self.stage, "group_by_length", False))
        if self._dist.active:
            iterator = self._sharded_batches(chosen, size, seed, group)
        else:
            iterator = self.pipeline.batches(chosen, size, shuffle=True, seed=seed, group_by_length=group)
        if samples is not None or salt is not None:
            return iterator
        desc = f"{self.stage.name} {self.epoch + 1}/{self.stage.epochs}"
        self._bar = progress_bar(iterator, enabled=self._progress, total=math.ceil(len(chosen) / size), desc=desc)
        return iter(self._bar)

    def _sharded_batches(self, samples: list, size: int, seed: int, group_by_length: bool) -> Iterator[dict]:
        """This rank's shard of each global batch one process would draw (crs.training.distributed)."""
        dist = self._dist
        size_of = (lambda sample: padded_size(sample, self.pipeline.fields)) if group_by_length else None
        for shard in distributed.shard_batches(samples, size, shuffle=True, seed=seed, rank=dist.rank,
                                               world_size=dist.world_size, size_of=size_of):
            for batch in self.pipeline.batches(shard.samples, len(shard.samples), shuffle=False, seed=0):
                self._shard = (id(batch), shard)  # one batch at a time: the previous one is done with
                yield batch

    # ------------------------------------------------------------------ loss
    def loss(self, state_or_batch: dict, params: dict[str, torch.Tensor] | None = None
             ) -> tuple[torch.Tensor, dict[str, float]]:
        """The stage's weighted objective and its parts.

        Given a batch, runs ``model.compute(batch, wanted)`` first; given a state
        that already holds every wanted loss, uses it as is.  Returns ``(total,
        parts)`` where ``parts`` maps each loss key (unweighted) and ``"loss"``
        (the weighted total) to a float.

        With ``params`` (``{"<slot>.<param>": tensor}``, see :mod:`crs.training.meta`)
        the model always runs, functionally, with those tensors in place of its own
        parameters: a MAML inner or query pass.  The model's parameters are untouched.
        """
        state = state_or_batch
        if self._dist.active:
            return self._sharded_loss(state_or_batch, params)
        if params is not None:
            from .meta import functional_compute  # meta imports this module

            state = functional_compute(self.model, params, state_or_batch, self.wanted)
        elif not all(key in state for key in self.wanted):
            state = self.model.compute(state_or_batch, self.wanted)
        return weighted_objective(state, self.objectives, self.plan.path)

    def _sharded_loss(self, batch: dict, params: dict[str, torch.Tensor] | None
                      ) -> tuple[torch.Tensor, dict[str, float]]:
        """Under torchrun: the forward through the DDP replica, the loss scaled so that DDP's gradient average
        is the global batch's mean gradient, and the parts as the global batch's sample-weighted means."""
        held, self._shard = self._shard, None
        shard = held[1] if held is not None and held[0] == id(batch) else None
        if params is not None or shard is None:  # check_strategy lets only strategies that batch plainly through
            raise RuntimeError("under torchrun, EpochLoop.loss takes the batches of loop.batches() and no fast "
                               "weights (crs.training.distributed)")
        total, parts = weighted_objective(self._forward(batch, self.wanted), self.objectives, self.plan.path)
        return total * shard.loss_scale, distributed.all_reduce_weighted_means(parts, shard.weight)

    def step(self, total: torch.Tensor | None) -> None:
        """Backward; every ``accumulate`` calls: clip the gradient norm, optimizer and scheduler step, zero grads.

        With ``accumulate: 1`` (the default) every call steps.  ``total=None`` skips the
        backward pass and steps at once, for strategies that set ``.grad`` themselves
        (e.g. a first-order MAML outer update): their gradients are used as they are,
        without accumulation or fp16 loss scaling.
        """
        if total is None:
            if self._pending:
                raise RuntimeError("EpochLoop.step(None) called while step(loss) gradients are still being "
                                   "accumulated; a strategy uses one of the two")
            self._apply(0)
            return
        self.backward(total)
        self.end_batch()

    def backward(self, total: torch.Tensor) -> None:
        """The backward half of :meth:`step`: finite check, 1/``accumulate`` and fp16 loss scaling, backward.

        For a strategy whose one batch needs several backward passes (MAML: one per task, so
        that one task's graph is in memory at a time): call it once per part with that part's
        share of the batch loss, then :meth:`end_batch`.  Gradients add up in ``.grad``.
        """
        if not torch.isfinite(total.detach()).all():
            raise ConfigError(f"{self.plan.path}.optimizer.lr",
                              f"the loss became {total.item()} at epoch {self.epoch + 1}, "
                              f"step {self.global_step + 1}",
                              "lower the learning rate, set grad_clip (e.g. 1.0) or add a warmup")
        loss = total / self.accumulate if self.accumulate > 1 else total
        if self.scaler is not None:
            loss = self.scaler.scale(loss)
        with self.precision.no_autocast() if self.precision is not None else contextlib.nullcontext():
            loss.backward()

    def end_batch(self) -> None:
        """One batch's gradients are in (:meth:`backward`): step when ``accumulate`` batches are."""
        self._pending += 1
        if self._pending >= self.accumulate:
            self._apply(self._pending)

    def finish(self) -> None:
        """Step a last, partial accumulation group, if any (the trainer calls this after each epoch)."""
        if self._pending:
            self._apply(self._pending)
            self._log_if_stepped()

    def _apply(self, batches: int) -> None:
        """The optimizer step over the gradients of `batches` backward passes (0: gradients set by hand)."""
        if 0 < batches < self.accumulate:
            # The losses were scaled by 1/accumulate; make this shorter group's gradient a mean over its batches too.
            factor = self.accumulate / batches
            for param in self.parameters:
                if param.grad is not None:
                    param.grad.mul_(factor)
        scaled = self.scaler is not None and batches > 0
        if scaled and self.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)  # clip the true gradient, not the scaled one
        if self.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.parameters, self.grad_clip)
        if scaled:
            self.scaler.step(self.optimizer)  # skipped when the scaled gradients overflowed
            self.scaler.update()
        else:
            self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.global_step += 1
        self._pending = 0
        self._stepped = True

    # --------------------------------------------------------------- logging
    def log_step(self, parts: dict[str, float]) -> None:
        """Add one batch's `parts` to the epoch means; every ``log_every`` optimizer steps write them to the log.

        Call it after :meth:`step`.  The logged values are the means over the batches of
        the optimizer step just taken (one batch without accumulation); ``lr`` is the
        first parameter group's (the stage's own ``lr`` when the default group has parameters).
        """
        for key, value in parts.items():
            self._sums[key] = self._sums.get(key, 0.0) + float(value)
            self._step_sums[key] = self._step_sums.get(key, 0.0) + float(value)
        self._count += 1
        self._step_count += 1
        self._log_if_stepped()

    def _log_if_stepped(self) -> None:
        if not self._stepped:
            return  # still accumulating: the parts are logged with the step that uses them
        if self._step_count and self.global_step % self._log_every == 0:
            values = {key: total / self._step_count for key, total in self._step_sums.items()}
            shown = dict(values)
            values["lr"] = self.optimizer.param_groups[0]["lr"]
            if self._metrics is not None:
                self._metrics.write(self.stage.name, self.epoch + 1, self.global_step, "train", values)
            if self._bar is not None and hasattr(self._bar, "set_postfix"):
                self._bar.set_postfix({key: f"{value:.4g}" for key, value in shown.items()}, refresh=False)
        self._step_sums, self._step_count, self._stepped = {}, 0, False

    def mean_parts(self) -> dict[str, float]:
        """Mean of every logged part over this epoch's :meth:`log_step` calls."""
        return {key: total / max(self._count, 1) for key, total in self._sums.items()}

    def close(self) -> None:
        if self._bar is not None and hasattr(self._bar, "close"):
            self._bar.close()
        self._bar = None


def weighted_objective(state: dict, objectives: dict[str, float], path: str) -> tuple[torch.Tensor, dict[str, float]]:
    """``sum(weight * state[key])`` over `objectives`, plus each part as a float."""
    total: torch.Tensor | None = None
    parts: dict[str, float] = {}
    for key, weight in objectives.items():
        if key not in state:
            raise ConfigError(f"{path}.objectives", f"the model did not output '{key}' for this batch",
                              "check that the stage's task gives the inputs this loss needs (e.g. targets)")
        value = state[key]
        if value.dim() > 0:  # a per-sample loss vector: average it like a reduced loss
            value = value.mean()
        parts[key] = float(value.detach())
        term = value * weight
        total = term if total is None else total + term
    assert total is not None  # resolve_objectives rejects empty objectives
    parts["loss"] = float(total.detach())
    return total, parts

