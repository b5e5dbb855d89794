"""The ``plain`` training strategy: one ``loop.step`` per batch.

For every batch of the epoch (shuffled reproducibly by the loop): compute the
stage's weighted objective, step, log.  The loop turns that into an optimizer
step every ``accumulate`` batches (one per batch by default) and the base
class's ``steps_per_epoch`` counts those steps for the schedule.  This is the standard
staged training the KGSF, C2-CRS and MESE papers use; MAML-style strategies
live next to it as separate components.
"""
from __future__ import annotations

from typing import Any

from crs.interfaces import EmptyConfig, TrainingStrategy


class PlainStrategy(TrainingStrategy):
    """Mini-batch training over the stage's samples; no options."""

    Config = EmptyConfig
    distributed = True  # its batches come from loop.batches(): torchrun can shard them (crs.training.distributed)

    def train_epoch(self, loop: Any) -> dict[str, float]:
        """Run one epoch through `loop` (a crs.training.EpochLoop); return the mean of each loss part."""
        for batch in loop.batches():
            total, parts = loop.loss(batch)
            loop.step(total)
            loop.log_step(parts)
        return loop.mean_parts()
