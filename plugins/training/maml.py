"""The ``maml`` training strategy: model-agnostic meta-learning over per-user tasks, for any pipeline.

CCRS (Algorithm 1, §2.4) trains its recommender and its generator this way; nothing
here is specific to CCRS, so ``kgsf-maml`` trains KGSF with it from YAML alone.

One epoch:

1. group the stage's train samples into tasks (:func:`crs.data.tasks.user_tasks`): one
   seeker's conversations, support and query drawn as two random halves of them
   (``split: random``), re-drawn on every visit and seeded by (run seed, stage, epoch,
   user), so the draws need no state and ``--resume`` stays bitwise;
2. shuffle the tasks (seeded the same way) and cut them into meta-batches of
   ``meta_batch_users`` tasks;
3. per meta-batch, :func:`crs.training.meta.maml_step`: for each task the support loss
   ``L1`` at θ (via ``torch.func.functional_call``, chunked at the stage's batch size),
   ``inner_steps`` SGD steps ``φ = θ_in − inner_lr · ∇L1`` over the *inner* parameters
   (second order unless ``first_order``), then ``L_query(φ) + L1`` (``outer_loss:
   support_and_query``, Algorithm 1) or ``L_query(φ)`` (``query``, Eq. 14) backpropagated
   to every trained parameter; one optimizer step per meta-batch through the stage's loop
   (its grad_clip, precision and ``accumulate``).

Inner parameters are the stage's trained parameters whose ``<slot>.<param>`` name
matches an ``inner`` glob and no ``outer_only`` glob; outer-only parameters are
trained by the outer step only (frozen slots by neither).

Users with one conversation cannot be halved by conversation: ``single: skip`` leaves
them out (the meta-training tasks then look like the meta-test's, earlier
conversations of a user against later ones); ``single: turn_split`` splits the
conversation by its answered turns.  ``task_unit: conversation`` makes every
conversation a task split by turns (corpora without user ids, e.g. INSPIRED:
"within-dialogue adaptation, not user customisation").  A corpus that gives no task
at all for the chosen unit is refused before any stage trains (:meth:`check_samples`).
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any, Literal

from crs.data.tasks import Task, TaskUnit, user_tasks
from crs.errors import ConfigError
from crs.interfaces import TrainingStrategy

SingleUser = Literal["skip", "turn_split"]
OuterLoss = Literal["support_and_query", "query"]
Split = Literal["random", "ordered"]


@dataclass
class MAMLConfig:
    inner_lr: float = 0.006  # β, the inner SGD step (CCRS: 0.006 rec, 3e-4 dial)
    inner_steps: int = 1  # SGD steps on the support per task
    first_order: bool = False  # true: drop the second-order term (FOMAML): cheaper; false: full MAML
    meta_batch_users: int = 32  # tasks per outer (optimizer) step; the paper is silent
    inner: list[str] = field(default_factory=lambda: ["*"])  # fnmatch globs over <slot>.<param>: adapted per task
    outer_only: list[str] = field(default_factory=list)  # never adapted, trained by the outer step only
    outer_loss: OuterLoss = "support_and_query"  # support_and_query: Algorithm 1; query: Eq. 14
    split: Split = "random"  # random: halves re-drawn each epoch; ordered: first half of the ids is support
    task_unit: TaskUnit = "user"  # conversation: every conversation is a task, split by its turns
    single: SingleUser = "skip"  # a user with one conversation (task_unit user): leave out, or split by turns


class MAMLStrategy(TrainingStrategy):
    """MAML over per-user support/query tasks; first or second order; inner and outer-only parameters by glob."""

    Config = MAMLConfig

    def __init__(self, config: MAMLConfig, deps: Any):
        super().__init__(config, deps)
        from crs.training.optim import check_number  # finite, in range, NaN refused; the stage numbers' check

        cfg = config
        check_number(cfg.inner_lr, f"{self.path}.inner_lr", strict=True,
                     example="CCRS uses 0.006 (rec) and 3e-4 (conv)")
        check_number(cfg.inner_steps, f"{self.path}.inner_steps", minimum=1,
                     example="use 1 (the paper), or the `plain` strategy for no inner step")
        check_number(cfg.meta_batch_users, f"{self.path}.meta_batch_users", minimum=1,
                     example="tasks per outer step, e.g. 32")
        if not cfg.inner:
            raise ConfigError(f"{self.path}.inner", "no parameter pattern is given",
                              "list globs over <slot>.<param>, e.g. ['*'] or ['generator.encoder.*']")

    # ------------------------------------------------------------- tasks
    def tasks(self, samples: list, seed: int | None) -> list[Task]:
        """The tasks MAML trains on: support and query both non-empty (module docstring for the rules).

        ``seed`` draws the halves (``split: random``); None gives the ordered split, whose
        task count is the same (only which conversations go where changes).
        """
        cfg = self.config
        turn_split = cfg.task_unit == "conversation" or cfg.single == "turn_split"
        drawn = user_tasks(samples, unit=cfg.task_unit, single="turn_split" if turn_split else "query_only",
                           seed=seed if cfg.split == "random" else None)
        return [task for task in drawn if task.support and task.query]

    def check_samples(self, samples: list, path: str) -> None:
        """Refuse a stage whose train samples give MAML no task to learn from, with the counts and the fix."""
        if not samples:
            return
        conversations: dict[str, int] = {}
        for sample in samples:
            conversations.setdefault(sample.conv_id, int(sample.user_index))
        users: dict[int, int] = {}
        for user in conversations.values():
            if user > 0:
                users[user] = users.get(user, 0) + 1
        fix = ("use task_unit: conversation (every conversation is a task, split by its turns: within-dialogue "
               "adaptation, not user customisation), or a strategy/protocol without adaptation (plain, crslab)")
        where = f"{path}.task_unit"
        if self.config.task_unit == "user":
            unknown = sum(1 for user in conversations.values() if user <= 0)
            if not users:
                raise ConfigError(where, f"maml with task_unit: user needs user ids, but none of the "
                                  f"{len(conversations)} train conversations has one ({unknown} without a user id)",
                                  fix)
            several = sum(1 for count in users.values() if count >= 2)
            if not several:
                raise ConfigError(where, f"maml with task_unit: user splits each user's conversations into support "
                                  f"and query, which needs at least 2 conversations per user; the "
                                  f"{len(conversations)} train conversations belong to {len(users)} users, "
                                  f"none with 2 or more ({unknown} conversations without a user id)", fix)
        if not self.tasks(samples, None):
            raise ConfigError(where, f"no task of the {len(conversations)} train conversations has both support "
                              "and query samples (a conversation split by turns needs 2 answered turns)", fix)

    def steps_per_epoch(self, plan: Any) -> int:
        """Optimizer steps per epoch: one per meta-batch (per ``accumulate`` meta-batches)."""
        meta_batches = math.ceil(len(self.tasks(plan.samples, None)) / int(self.config.meta_batch_users))
        return math.ceil(meta_batches / plan.accumulate)

    # ------------------------------------------------------------- epoch
    def train_epoch(self, loop: Any) -> dict[str, float]:
        """One epoch of meta-batches through `loop` (a crs.training.EpochLoop); returns the mean logged parts."""
        from crs.training import meta

        cfg = self.config
        path = f"{loop.plan.path}.strategy"
        inner = self.inner_parameters(loop.model, loop.plan, path)
        tasks = self.tasks(loop.samples, loop.seed)  # halves drawn by (seed, stage, epoch) and the task's key
        random.Random(loop.seed).shuffle(tasks)
        size = int(loop.stage.batch_size)
        per_step = int(cfg.meta_batch_users)
        for start in range(0, len(tasks), per_step):
            chunk = [(self._chunks(loop, task.support, size), self._chunks(loop, task.query, size))
                     for task in tasks[start:start + per_step]]
            meta.maml_step(loop, chunk, inner, lr=float(cfg.inner_lr), steps=int(cfg.inner_steps),
                           first_order=bool(cfg.first_order), support_in_outer=cfg.outer_loss == "support_and_query",
                           path=path)
        return loop.mean_parts()

    def inner_parameters(self, model: Any, plan: Any, path: str) -> dict:
        """The stage's trained parameters that `inner` selects and `outer_only` does not.

        Patterns are checked against every parameter of the model (a typo is an error even
        when it names a slot this stage does not train); the selection keeps trained ones.
        """
        from crs.training import meta

        chosen = meta.select_params(meta.named_parameters(model), self.config.inner, self.config.outer_only,
                                    path=path)
        inner = {name: param for name, param in chosen.items() if name in plan.named_parameters}
        if not inner:
            raise ConfigError(f"{path}.inner", f"none of the parameters `inner` selects is trained in this stage "
                              f"(train: {list(plan.spec.train)})",
                              "adapt parameters of a trained slot, or list the slot under `train:`")
        return inner

    @staticmethod
    def _chunks(loop: Any, samples: list, size: int) -> list[dict]:
        """A task side as collated batches of at most the stage's batch size, in task order."""
        return list(loop.pipeline.batches(samples, size, shuffle=False, seed=0))
