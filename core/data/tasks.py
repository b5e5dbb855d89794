"""Per-user tasks for user-level adaptation (meta-learning, few-shot evaluation).

A *task* is one seeker: their conversations, split into a support part (what a
model may adapt on) and a query part (what it is scored on).  :func:`user_tasks`
groups any list of samples (plain, or expanded one per target item for
recommendation) into tasks:

* conversations of a user are ordered by conversation id (natural order: digit runs
  compare as numbers, so ``"c9" < "c10"``); support = the first ``floor(n/2)``,
  query = the rest.  With ``seed`` set, support is a random ``floor(n/2)`` of them
  instead, drawn by a hash of (seed, task key): the same for the same seed and
  re-drawn for another (meta-training draws anew each visit); each half keeps id order;
* a user with one conversation (and every task of ``unit="conversation"``) follows
  `single`: ``query_only`` keeps all its samples as query (scored unadapted);
  ``turn_split`` puts the samples of the first ``floor(m/2)`` of its m answered
  turns in support and the rest in query (within-dialogue adaptation, for corpora
  without user ids such as INSPIRED);
* samples of unknown users (``user_index`` 0) cannot be grouped: each of their
  conversations is a task of its own, ``unit`` "conversation".
"""
from __future__ import annotations

import hashlib
import random
import re
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

from ..errors import check_choice

__all__ = ["Task", "UNITS", "SINGLE_RULES", "TaskUnit", "SingleRule", "user_tasks", "conversation_order",
           "support_samples"]

TaskUnit = Literal["user", "conversation"]  # config annotations use these, so `crs components` shows the values
SingleRule = Literal["query_only", "turn_split"]
UNITS = typing.get_args(TaskUnit)
SINGLE_RULES = typing.get_args(SingleRule)
_DIGITS = re.compile(r"(\d+)")


@dataclass
class Task:
    """One adaptation task: support and query samples of one user (or one conversation)."""

    key: str  # "user:<user_index>" or "conversation:<conv_id>"
    unit: str  # "user" | "conversation"
    user_index: int  # 0 = unknown user
    conversations: list[str]  # conversation ids in task order (support ones first)
    support: list[Any] = field(default_factory=list)
    query: list[Any] = field(default_factory=list)

    @property
    def single(self) -> bool:
        """True when the task has one conversation (its split followed the `single` rule)."""
        return len(self.conversations) == 1


def conversation_order(conv_id: str) -> list:
    """Sort key: the id with its digit runs as numbers (``"c9"`` before ``"c10"``)."""
    parts = _DIGITS.split(str(conv_id))
    return [int(part) if i % 2 else part for i, part in enumerate(parts)]


def _shuffle_seed(seed: int, key: str) -> int:
    """A stable per-task seed (blake2b, the same on every machine and Python run)."""
    return int.from_bytes(hashlib.blake2b(f"{seed}:{key}".encode("utf-8"), digest_size=8).digest(), "big")


def user_tasks(samples: Sequence[Any], *, unit: str = "user", single: str = "query_only",
               seed: int | None = None) -> list[Task]:
    """Group `samples` into tasks (rules in the module docstring).

    :param samples: :class:`crs.data.samples.Sample` s (anything with ``conv_id``, ``user_index``
        and ``turn_index``); their order within a conversation is kept.
    :param unit: ``user`` (group by ``user_index``) or ``conversation`` (every conversation is a task).
    :param single: how a one-conversation task is split: ``query_only`` or ``turn_split``.
    :param seed: None: support = the first half of the conversations in id order (evaluation);
        an int: a random half per task, seeded by (seed, task key) (training).
    :returns: tasks ordered by user index, then conversation tasks in conversation order.
    """
    check_choice(unit, UNITS, "user_tasks.unit")
    check_choice(single, SINGLE_RULES, "user_tasks.single")
    by_conv: dict[str, list[Any]] = {}
    owner: dict[str, int] = {}
    for sample in samples:
        by_conv.setdefault(sample.conv_id, []).append(sample)
        owner.setdefault(sample.conv_id, int(sample.user_index))
    groups: dict[tuple[int, str], list[str]] = {}  # (0 users / 1 conversations, key) -> conversation ids
    for conv_id, user in owner.items():
        if unit == "user" and user > 0:
            groups.setdefault((0, f"user:{user}"), []).append(conv_id)
        else:
            groups.setdefault((1, f"conversation:{conv_id}"), []).append(conv_id)
    tasks = []
    for (kind, key), conv_ids in groups.items():
        conv_ids = sorted(conv_ids, key=conversation_order)
        if seed is not None:  # a random half as support; each half stays in id order
            drawn = set(random.Random(_shuffle_seed(seed, key)).sample(conv_ids, len(conv_ids) // 2))
            conv_ids = [c for c in conv_ids if c in drawn] + [c for c in conv_ids if c not in drawn]
        task = Task(key=key, unit=UNITS[kind], user_index=owner[conv_ids[0]], conversations=conv_ids)
        if len(conv_ids) == 1:
            task.support, task.query = _split_single(by_conv[conv_ids[0]], single)
        else:
            half = len(conv_ids) // 2
            task.support = [s for c in conv_ids[:half] for s in by_conv[c]]
            task.query = [s for c in conv_ids[half:] for s in by_conv[c]]
        tasks.append(task)
    # user tasks by user index, then conversation tasks in conversation order
    tasks.sort(key=lambda t: (0, t.user_index, []) if t.unit == "user"
               else (1, 0, conversation_order(t.conversations[0])))
    return tasks


def _split_single(samples: list[Any], single: str) -> tuple[list[Any], list[Any]]:
    """Support and query of a one-conversation task; `turn_split` cuts between answered turns, so the
    samples of one turn (one per target item) are never split."""
    if single == "query_only":
        return [], list(samples)
    turns = sorted({int(s.turn_index) for s in samples})
    support_turns = set(turns[:len(turns) // 2])
    return ([s for s in samples if int(s.turn_index) in support_turns],
            [s for s in samples if int(s.turn_index) not in support_turns])


def support_samples(samples: Sequence[Any]) -> list[Any]:
    """The support samples of every user of `samples`, split as evaluation splits them.

    For ``samples.test_support_to_train`` (the paper's baseline convention in CCRS:
    models that cannot adapt are trained on train plus each test user's support
    conversations, then scored on the same query samples).  The split is
    :func:`user_tasks` without a seed: each user's first ``floor(n/2)`` conversations
    in id order; users with one conversation and unknown users give none (the
    ``query_only`` rule), so nothing of a conversation that is scored is ever trained on.
    The `user_adapt` protocol groups *recommendation* samples, so a conversation
    without a recommended item counts here but not there (then the two halves can differ
    by that conversation); the corpus report counts what was added.
    """
    return [s for task in user_tasks(samples, unit="user", single="query_only") if task.unit == "user"
            for s in task.support]
