"""The trainer: runs a pipeline's stages in order, validates, stops early, checkpoints, resumes.

Usage::

    history = Trainer(pipeline, run_dir, resume=False, progress=True).fit()

What lands in `run_dir`: ``checkpoint.pt`` (full state after every epoch, see
:mod:`crs.training.checkpoint`), ``best.pt`` (the best-on-valid model of the
latest stage with early stopping; the checkpoint refers to it rather than
holding a second model), ``metrics.jsonl`` (see :mod:`crs.training.run_log`),
``history.json`` (what :meth:`Trainer.fit` returns) and ``tensorboard/`` when
tensorboard is installed.

Per stage, the trainer builds the optimizer over
:attr:`crs.training.stage.StagePlan.named_parameters` (parameter groups, see
:mod:`crs.training.optim`), sizes the schedule with the strategy's
``steps_per_epoch(plan)``, runs each epoch's ``strategy.train_epoch(loop)`` under
the stage's autocast (:mod:`crs.training.precision`; the model is already on
``device``), and calls the lifecycle callbacks (:mod:`crs.training.callbacks`):
``on_train_start`` once the stage's freezing is in place (also when a stage is
resumed), ``on_train_end`` after its best state is restored, and one
``on_eval_start`` / ``on_eval_end`` pair (``split="valid"``) around each validation: the
valid-loss pass and, for early stopping on a report metric, the evaluation it runs.

Reproducibility: the run is seeded once from ``spec.seed``; each epoch's batch
order comes from (seed, stage, epoch) alone; every RNG state is saved with the
checkpoint.  A run killed at any point and resumed with ``resume=True`` ends
with bit-for-bit the same parameters, history and metrics file as an
uninterrupted run.

Without ``early_stopping`` a stage keeps the parameters of its last epoch;
with it, the best-on-valid state is restored when the stage ends (so the final
model, and therefore the test report, uses the epoch selected on validation).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError
from ..io import atomic_write_json
from ..run_folder import HISTORY_FILE
from . import distributed
from .callbacks import evaluation_hooks, notify
from .checkpoint import (
    CHECKPOINT_FILE,
    check_same_config,
    comparable_config,
    load_best,
    load_checkpoint,
    save_best,
    save_checkpoint,
)
from .early_stopping import EarlyStopper, cpu_state_dict, is_loss_metric
from .loop import EpochLoop, weighted_objective
from .optim import build_optimizer, build_scheduler, norm_parameter_ids
from .precision import Precision, resolve_device
from .run_log import MetricsLog, epoch_line
from .seeding import capture_rng_state, restore_rng_state, seed_everything
from .stage import StagePlan, batch_length, check_stage, plan_stage, train_only

__all__ = ["Trainer", "HISTORY_FILE"]

log = logging.getLogger("crs.training")


class Trainer:
    """Trains ``pipeline.model`` through ``pipeline.spec.stages``.

    :param pipeline: a built pipeline (see the pipeline API: ``spec``, ``resolved``, ``model``,
        ``samples``, ``task_samples``, ``batches``, ``build``, ``device``).
    :param run_dir: folder for checkpoints, metrics and history (created if missing).
    :param resume: continue from ``run_dir/checkpoint.pt``; starts fresh (with a warning) when absent.
    :param checkpoint: with `resume`, that checkpoint as the caller already read and checked it
        (:func:`crs.training.checkpoint.check_resumable`, as ``crs run --resume`` does before building
        the pipeline), so it is not read, hashed and compared with the config a second time.
    :param progress: show tqdm bars (only ever on a terminal).
    :param log_every: write step metrics every this many optimizer steps.
    :param tensorboard: also log to TensorBoard when it is installed.
    """

    def __init__(self, pipeline: Any, run_dir: str | Path, *, resume: bool = False, progress: bool = True,
                 log_every: int = 50, tensorboard: bool = True, checkpoint: dict[str, Any] | None = None):
        self.pipeline = pipeline
        self.model = pipeline.model
        self.spec = pipeline.spec
        self.run_dir = Path(run_dir)
        self.resume = resume
        self._checked_checkpoint = checkpoint
        self.progress = progress
        self.log_every = log_every
        self.tensorboard = tensorboard
        self.history: dict[str, list[dict[str, Any]]] = {}
        # Wall-clock per stage for this process only (kept out of history so resumed runs stay bitwise equal).
        self.timings: dict[str, dict[str, float]] = {}
        self._config = comparable_config(getattr(pipeline, "resolved", {}))
        self._metrics: MetricsLog | None = None
        # A built pipeline's device was checked by the builder; any other object with the pipeline API gets
        # the check here, so that a bad device is a config error, not a CUDA traceback.
        device = getattr(pipeline, "device", None)
        self.device = device if device is not None else resolve_device(getattr(self.spec, "device", "cpu"))
        # Under torchrun: this process's rank; rank 0 alone writes (crs.training.distributed).
        self._dist = distributed.current()

    # ------------------------------------------------------------------ run
    def fit(self) -> dict[str, list[dict[str, Any]]]:
        """Run every stage (or what is left of them); return ``{stage name: [epoch records]}``.

        An epoch record is ``{"epoch": n (1-based), "train": {loss key: mean}, "valid": {metric: value}}``
        (``valid`` only when the stage validated).
        """
        self._check_stage_names()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        seed_everything(distributed.rank_seed(int(self.spec.seed), self._dist.rank))  # the run seed in one process
        checkpoint = self._load_for_resume()
        self._metrics = MetricsLog(self.run_dir, fresh=checkpoint is None, tensorboard=self.tensorboard) \
            if self._dist.main else distributed.SilentMetricsLog()
        try:
            if checkpoint is None:
                return self._run_from(0, None)
            self._metrics.truncate(int(checkpoint["metrics_size"]))
            self.history = checkpoint["history"]
            self.model.load_state_dict(checkpoint["model"])
            if checkpoint["done"]:
                restore_rng_state(self._own_rng(checkpoint))
                log.warning("the run in %s had already finished; its final state is loaded", self.run_dir)
                self._write_history()
                return self.history
            if checkpoint["stage_done"]:
                # Captured at the end of the stage, before the next stage was set up: restore here too.
                restore_rng_state(self._own_rng(checkpoint))
                return self._run_from(checkpoint["stage_index"] + 1, None)
            return self._run_from(checkpoint["stage_index"], checkpoint)
        finally:
            self._metrics.close()

    def _run_from(self, first_stage: int, resume_state: dict[str, Any] | None) -> dict[str, list[dict[str, Any]]]:
        stages = list(self.spec.stages)
        for index in range(first_stage, len(stages)):
            self._run_stage(index, stages[index], resume_state if index == first_stage else None)
        self._save(stage_index=max(len(stages) - 1, 0), epoch=-1, stage_done=True, done=True)
        self._write_history()
        return self.history

    def _load_for_resume(self) -> dict[str, Any] | None:
        if not self.resume:
            if (self.run_dir / CHECKPOINT_FILE).exists():
                log.warning("%s already holds a run; starting over and overwriting it (`crs run --resume` "
                            "would continue it instead)", self.run_dir)
            return None
        if self._checked_checkpoint is not None:
            checkpoint, self._checked_checkpoint = self._checked_checkpoint, None  # used once: not held after fit
            return checkpoint
        checkpoint = load_checkpoint(self.run_dir)
        if checkpoint is None:
            log.warning("no checkpoint in %s to resume from; starting a fresh run there", self.run_dir)
            return None
        check_same_config(checkpoint["config"], self._config, self.run_dir)
        return checkpoint

    def _check_stage_names(self) -> None:
        seen: dict[str, int] = {}
        for index, stage in enumerate(self.spec.stages):
            if stage.name in seen:
                raise ConfigError(f"stages.{index}.name", f"stage name '{stage.name}' is also used by stage "
                                  f"{seen[stage.name]}", "give every stage its own name (history is keyed by it)")
            seen[stage.name] = index
            check_stage(stage, index)  # every stage before the first trains (NaN/inf included)
        for index, stage in enumerate(self.spec.stages):
            # e.g. maml on a corpus without user ids: refused now, not after the earlier stages trained
            if int(stage.epochs) > 0:
                path = f"stages.{index}.strategy"
                strategy = self.pipeline.build("training_strategy", stage.strategy, path)
                distributed.check_strategy(strategy, stage.strategy, path)  # under torchrun: can it be sharded?
                strategy.check_samples(list(self.pipeline.task_samples("train", stage.task)), path)

    # ---------------------------------------------------------------- stage
    def _run_stage(self, index: int, stage: Any, resume_state: dict[str, Any] | None) -> None:
        plan = plan_stage(self.pipeline, stage, index)
        strategy = self.pipeline.build("training_strategy", stage.strategy, f"{plan.path}.strategy")
        precision = Precision(stage.precision, self.device, f"{plan.path}.precision")
        valid_samples = self._valid_samples(plan)
        stopper = self._early_stopper(plan, valid_samples)
        protocol = self._valid_protocol() if stopper is not None and stopper.needs_evaluation else None
        records = self.history.setdefault(str(stage.name), [])
        with train_only(self.model, plan.parameters) as trainable, distributed.training_replica(self.model) as replica:
            # checked=True: check_stage checked the optimizer's numbers (and the schedule's) before any stage trained
            optimizer = build_optimizer(stage.optimizer, plan.named_parameters, f"{plan.path}.optimizer",
                                        norm_ids=norm_parameter_ids(self.model), checked=True)
            steps_per_epoch = int(strategy.steps_per_epoch(plan))
            scheduler = build_scheduler(stage.schedule, optimizer, steps_per_epoch * int(stage.epochs),
                                        f"{plan.path}.schedule", steps_per_epoch=steps_per_epoch)
            first_epoch, global_step = 0, 0
            # Before the RNG restore below: whatever a hook draws, the resumed run continues from the saved state.
            notify(self.model, "on_train_start", stage=plan, pipeline=self.pipeline)
            if resume_state is not None:
                optimizer.load_state_dict(resume_state["optimizer"])
                scheduler.load_state_dict(resume_state["scheduler"])
                if precision.scaler is not None and resume_state.get("scaler") is not None:
                    precision.scaler.load_state_dict(resume_state["scaler"])
                if stopper is not None and resume_state["early_stopping"] is not None:
                    stopper.load_state_dict(resume_state["early_stopping"])
                first_epoch, global_step = resume_state["epoch"] + 1, resume_state["global_step"]
                # Restored after the stage set-up, exactly where it was captured in the original run.
                restore_rng_state(self._own_rng(resume_state))
            ended = False
            for epoch in range(first_epoch, int(stage.epochs)):
                self.model.train()
                loop = EpochLoop(pipeline=self.pipeline, plan=plan, parameters=trainable, optimizer=optimizer,
                                 scheduler=scheduler, epoch=epoch, global_step=global_step,
                                 run_seed=int(self.spec.seed), metrics=self._metrics, log_every=self.log_every,
                                 progress=self.progress, precision=precision, forward=replica)
                started = epoch_started = time.perf_counter()
                try:
                    with precision.autocast():
                        train_means = strategy.train_epoch(loop) or loop.mean_parts()
                    loop.finish()  # the step of a last, partial accumulation group
                finally:
                    loop.close()
                timing = self.timings.setdefault(str(stage.name), {"epochs": 0, "train_s": 0.0, "samples": 0,
                                                                   "valid_s": 0.0})
                timing["epochs"] += 1
                timing["train_s"] += time.perf_counter() - started
                timing["samples"] += len(loop.samples)
                global_step = loop.global_step
                record: dict[str, Any] = {"epoch": epoch + 1, "train": dict(train_means)}
                self._metrics.write(stage.name, epoch + 1, global_step, "train", record["train"], scope="epoch")
                if valid_samples:
                    started = time.perf_counter()
                    record["valid"] = self._validate_on_main(plan, valid_samples, protocol, stopper)
                    if stopper is not None and stopper.is_sum:  # show the compared sum next to its parts
                        record["valid"][stopper.metric] = stopper.value_of(record["valid"])
                    timing["valid_s"] += time.perf_counter() - started
                    self._metrics.write(stage.name, epoch + 1, global_step, "valid", record["valid"], scope="epoch")
                records.append(record)
                best = stopper is not None and stopper.update(record["valid"], epoch + 1)
                if best:
                    self._save_best(plan, stopper)
                log.info(epoch_line(str(stage.name), epoch + 1, int(stage.epochs), record["train"],
                                    record.get("valid"), stopper.metric if stopper is not None else None, best,
                                    time.perf_counter() - epoch_started))
                stop = stopper is not None and stopper.stopped
                stage_done = stop or epoch == int(stage.epochs) - 1
                if stop:  # said before the restore below, in the order things happen
                    log.info("stage '%s': early stop after epoch %d (no better %s for %d epochs)", stage.name,
                             epoch + 1, stopper.metric, stopper.patience)
                if stage_done:
                    if stopper is not None and self._restore_best(plan, stopper):
                        log.info("stage '%s': restored the best epoch (%s, %s = %.6g)", stage.name,
                                 stopper.best_epoch, stopper.metric, stopper.best)
                        # for plots (crs.plots marks it): which epoch's state the stage ended with
                        self._metrics.write(stage.name, int(stopper.best_epoch), global_step, "valid",
                                            {stopper.metric: stopper.best}, scope="restored")
                    # Before the checkpoint: a resumed run must not see (or miss) what the hook did.
                    notify(self.model, "on_train_end", stage=plan, pipeline=self.pipeline)
                    ended = True
                    distributed.check_replicas_agree(self.model, f"stage '{stage.name}'")  # under torchrun
                self._save(stage_index=index, epoch=epoch, stage_done=stage_done, optimizer=optimizer,
                           scheduler=scheduler, global_step=global_step, stopper=stopper, scaler=precision.scaler)
                self._write_history()
                if stop:
                    break
            if not ended:  # a stage of 0 epochs
                notify(self.model, "on_train_end", stage=plan, pipeline=self.pipeline)

    # ----------------------------------------------------------- validation
    def _valid_samples(self, plan: StagePlan) -> list:
        """The stage's valid samples, or [] when it does not validate or there is no valid split."""
        if not plan.spec.validate:
            return []
        splits = getattr(self.pipeline, "samples", {}) or {}
        if not splits.get("valid"):
            return []
        return list(self.pipeline.task_samples("valid", plan.spec.task))

    def _early_stopper(self, plan: StagePlan, valid_samples: list) -> EarlyStopper | None:
        if plan.spec.early_stopping is None:
            return None
        stopper = EarlyStopper(plan.spec.early_stopping, f"{plan.path}.early_stopping")
        if not valid_samples:
            why = ("the stage sets validate: false" if not plan.spec.validate
                   else f"there are no valid samples for task '{plan.spec.task}'")
            raise ConfigError(f"{plan.path}.early_stopping", f"early stopping needs validation, but {why}",
                              "set validate: true and make sure a valid split exists (samples.valid_fraction > 0), "
                              "or remove early_stopping")
        for position, name in enumerate(stopper.metrics):
            if is_loss_metric(name) and name != "loss" and name not in plan.objectives:
                # Caught here rather than after the first epoch's validation.
                where = f"{plan.path}.early_stopping.metric" + (f".{position}" if stopper.is_sum else "")
                raise ConfigError(where, f"'{name}' is not one of the stage's objectives",
                                  f"use 'loss' (the weighted total) or one of: {', '.join(plan.objectives)}")
        return stopper

    def _valid_protocol(self) -> Any:
        """The first evaluation protocol, built once per stage for metric-based early stopping."""
        protocols = list(self.spec.evaluation.protocols)
        if not protocols:
            raise ConfigError("evaluation.protocols", "early stopping on a report metric needs an evaluation protocol",
                              "list one under evaluation.protocols, or stop early on metric: loss")
        return self.pipeline.build("evaluation_protocol", protocols[0], "evaluation.protocols.0")

    def _validate_on_main(self, plan: StagePlan, valid_samples: list, protocol: Any,
                          stopper: EarlyStopper | None) -> dict[str, float]:
        """:meth:`_validate`; under torchrun on rank 0 alone (every sample once, the single-process figures) and
        broadcast, so every rank's early stopping takes rank 0's decision.  The other ranks run the evaluation
        hooks meanwhile, so that state a hook keeps stays the same on every rank."""
        if self._dist.main:
            metrics = self._validate(plan, valid_samples, protocol, stopper)
        else:
            metrics = None
            self.model.eval()
            try:
                with torch.no_grad(), evaluation_hooks(self.model, "valid", self.pipeline):
                    pass
            finally:
                self.model.train()
        return distributed.broadcast_object(metrics)

    def _validate(self, plan: StagePlan, valid_samples: list, protocol: Any,
                  stopper: EarlyStopper | None = None) -> dict[str, float]:
        """Mean valid losses (``loss`` = weighted total) and, with `protocol`, its report metrics.

        One ``on_eval_start`` / ``on_eval_end`` pair covers both passes (the evaluation is told not to add its own).
        """
        self.model.eval()
        try:
            sums: dict[str, float] = {}
            count = 0
            with torch.no_grad(), evaluation_hooks(self.model, "valid", self.pipeline):
                for batch in self.pipeline.batches(valid_samples, int(plan.spec.batch_size), shuffle=False,
                                                   seed=int(self.spec.seed)):
                    _, parts = weighted_objective(self.model.compute(batch, plan.wanted), plan.objectives, plan.path)
                    size = batch_length(batch)
                    for key, value in parts.items():
                        sums[key] = sums.get(key, 0.0) + value * size
                    count += size
                metrics = {key: total / max(count, 1) for key, total in sums.items()}
                if protocol is not None and stopper is not None:
                    from ..evaluation import evaluate  # lazily: evaluation imports metrics plugins

                    # only the parts of the evaluation the early-stopping metrics read
                    results = evaluate(self.pipeline, "valid", protocols=[protocol], generate=False,
                                       tasks=stopper.evaluation_tasks, hooks=False)
                    report = results.get(protocol.id, {})
                    metrics.update({key: float(value) for key, value in report.items()
                                    if isinstance(value, (int, float)) and not isinstance(value, bool)})
        finally:
            self.model.train()
        return metrics

    # ---------------------------------------------------------- checkpoints
    def _save(self, *, stage_index: int, epoch: int, stage_done: bool, done: bool = False, optimizer: Any = None,
              scheduler: Any = None, global_step: int = 0, stopper: EarlyStopper | None = None,
              scaler: Any = None) -> None:
        assert self._metrics is not None
        rng = distributed.gather_objects(capture_rng_state())  # every rank's streams, for --resume (one: [own])
        if not self._dist.main:
            return
        save_checkpoint(self.run_dir, {
            "config": self._config,
            "stage_index": stage_index,
            "epoch": epoch,
            "stage_done": stage_done,
            "done": done,
            "model": self.model.state_dict(),
            "optimizer": None if stage_done else optimizer.state_dict(),
            "scheduler": None if stage_done else scheduler.state_dict(),
            "scaler": None if (stage_done or scaler is None) else scaler.state_dict(),
            "global_step": global_step,
            "early_stopping": None if (stage_done or stopper is None) else stopper.state_dict(),
            "rng": rng[0],
            "history": self.history,
            "metrics_size": self._metrics.size(),
            **({"rng_by_rank": rng} if len(rng) > 1 else {}),  # torchrun: rank r resumes from rng_by_rank[r]
        })

    def _own_rng(self, checkpoint: dict[str, Any]) -> dict[str, Any]:
        """This rank's saved RNG state: ``rng`` in one process (and on rank 0); under torchrun ``rng_by_rank``.

        A run resumed with more processes than it was saved with seeds the extra ranks' streams afresh.
        """
        by_rank = checkpoint.get("rng_by_rank")
        if self._dist.rank == 0:
            return checkpoint["rng"]
        if by_rank and self._dist.rank < len(by_rank):
            return by_rank[self._dist.rank]
        seed_everything(distributed.rank_seed(int(self.spec.seed), self._dist.rank))
        return capture_rng_state()

    def _write_history(self) -> None:
        if self._dist.main:  # under torchrun, rank 0 alone writes
            atomic_write_json(self.run_dir / HISTORY_FILE, self.history)

    def _save_best(self, plan: StagePlan, stopper: EarlyStopper) -> None:
        if not self._dist.main:  # rank 0 writes; the others read it back in _restore_best
            return
        save_best(self.run_dir, stage=plan.name, stage_index=plan.index, epoch=int(stopper.best_epoch),
                  metric=stopper.metric, value=float(stopper.best), model=cpu_state_dict(self.model))

    def _restore_best(self, plan: StagePlan, stopper: EarlyStopper) -> bool:
        """Load the stage's best state (from best.pt); False when no epoch was ever best (e.g. all NaN)."""
        if stopper.best_epoch is None:
            return False
        state = stopper.legacy_best_state
        if state is None:
            distributed.barrier()  # under torchrun: rank 0 has written best.pt before anyone reads it
            state = load_best(self.run_dir, stage=plan.name, stage_index=plan.index, epoch=int(stopper.best_epoch))
        self.model.load_state_dict(state)
        return True
