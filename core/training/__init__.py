"""Training: staged training with checkpoints, resume, early stopping and metric logs.

- :class:`Trainer` (``trainer.py``): ``Trainer(pipeline, run_dir, resume=False, progress=True).fit()``;
- :class:`EpochLoop` (``loop.py``): what a training strategy gets for one epoch;
- ``stage.py`` (objectives, parameters, freezing), ``optim.py`` (optimizers, parameter groups, LR schedules),
  ``precision.py`` (device check, autocast, fp16 gradient scaler), ``early_stopping.py``, ``checkpoint.py``,
  ``run_log.py`` (metrics.jsonl, TensorBoard, progress), ``seeding.py`` (seeds and RNG state capture),
  ``callbacks.py`` (lifecycle hooks), ``distributed.py`` (torchrun: DDP, sharded batches, rank-0 writes).

Training strategies themselves are components (``crs.plugins.training`` ships ``plain``).
"""
from .loop import EpochLoop
from .seeding import seed_everything
from .trainer import Trainer

__all__ = ["EpochLoop", "Trainer", "seed_everything"]
