"""Lifecycle callbacks: work a component does once per phase, not once per batch.

A model component (or a shared module) may define any of these methods; the
trainer and the evaluator call them on every slot that has one, in slot order:

=====================  ==========================================  ===========================
method                 when                                        keyword arguments
=====================  ==========================================  ===========================
``on_train_start``     a stage starts (after freezing, before      ``stage`` (StagePlan),
                       the first epoch; also when resumed)         ``pipeline``
``on_train_end``       a stage ends (best state restored)          ``stage``, ``pipeline``
``on_eval_start``      before an evaluation or validation pass     ``split``, ``pipeline``
                       (the model is already in eval mode)
``on_eval_end``        after it                                    ``split``, ``pipeline``
=====================  ==========================================  ===========================

Typical uses: build a faiss index over item vectors in ``on_eval_start`` and drop it
in ``on_train_start`` (its vectors go stale once parameters move); refresh a cache.
Hooks take keyword arguments only and may ignore the ones they do not need
(declare ``**context``).  They must not change parameters: evaluation stays a
read-only view of the model, so a resumed run sees the same state.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterable, Iterator

__all__ = ["EVENTS", "notify", "evaluation_hooks"]

EVENTS = ("on_train_start", "on_train_end", "on_eval_start", "on_eval_end")


def _components(model: Any) -> Iterable[Any]:
    """Each slot, then each shared module, once (a module shared by two slots is called once)."""
    seen: set[int] = set()
    groups = [getattr(model, "slots", {}), getattr(model, "shared", {})]
    for group in groups:
        for module in dict(group).values():
            if id(module) not in seen:
                seen.add(id(module))
                yield module


def notify(model: Any, event: str, **context: Any) -> None:
    """Call ``event(**context)`` on every component of `model` (a PipelineModel) that defines it."""
    if event not in EVENTS:
        raise ValueError(f"unknown lifecycle event {event!r}; events are: {', '.join(EVENTS)}")
    for component in _components(model):
        hook = getattr(component, event, None)
        if callable(hook):
            hook(**context)


@contextlib.contextmanager
def evaluation_hooks(model: Any, split: str, pipeline: Any) -> Iterator[None]:
    """``on_eval_start`` before the block and ``on_eval_end`` after it (also when it raises).

    One bracket per evaluation: the evaluator uses it, and the trainer puts one around a whole
    validation (its valid-loss pass and, for early stopping on a report metric, the evaluation
    it runs with ``evaluate(..., hooks=False)``), so a hook sees one start/end pair per epoch.
    """
    try:
        notify(model, "on_eval_start", split=split, pipeline=pipeline)
        yield
    finally:
        notify(model, "on_eval_end", split=split, pipeline=pipeline)
