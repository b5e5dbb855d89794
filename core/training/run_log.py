"""Where training metrics go: ``metrics.jsonl``, TensorBoard (when installed), progress bars.

Each metrics record is one JSON line ``{"stage", "epoch", "step", "split", "scope", <key>: value, ...}``
(``scope`` is ``"step"`` for values of one optimizer step, ``"epoch"`` for epoch means
and validation results; ``epoch`` is 1-based, ``step`` counts optimizer steps in the stage)
appended to ``run_dir/metrics.jsonl`` and flushed at once, so the file can be
tailed while a run trains.  A resumed run first truncates the file to the length
recorded in its checkpoint (:meth:`MetricsLog.truncate`), dropping the lines of
the epoch that was cut short, so that an interrupted-then-resumed run leaves the
same file as an uninterrupted one.
"""
from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any, Iterable, Iterator, TypeVar

from tqdm.auto import tqdm

__all__ = ["MetricsLog", "progress_bar", "METRICS_FILE"]

METRICS_FILE = "metrics.jsonl"
T = TypeVar("T")


def progress_bar(items: Iterable[T], *, enabled: bool, total: int | None = None, desc: str = "") -> Iterator[T]:
    """A tqdm bar over `items`, shown only when `enabled` and stderr is a terminal.

    Off when not a TTY so log files and CI output are not filled with carriage returns.
    """
    show = enabled and sys.stderr.isatty()
    return tqdm(items, total=total, desc=desc, disable=not show, leave=False, dynamic_ncols=True)


def _jsonable(value: Any) -> Any:
    """Plain floats for tensors/NumPy scalars; NaN and inf as strings (JSON has no literal for them)."""
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class MetricsLog:
    """Appends metric records to ``metrics.jsonl`` and, when available, to TensorBoard."""

    def __init__(self, run_dir: Path, *, fresh: bool, tensorboard: bool = True):
        self.path = Path(run_dir) / METRICS_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if fresh:
            self.path.write_text("", encoding="utf-8")
        self._writer = _tensorboard_writer(Path(run_dir) / "tensorboard") if tensorboard else None

    def write(self, stage: str, epoch: int, step: int, split: str, values: dict[str, Any], *,
              scope: str = "step") -> None:
        """Append one record; `values` are metric key -> number."""
        record = {"stage": stage, "epoch": epoch, "step": step, "split": split, "scope": scope}
        record.update({key: _jsonable(value) for key, value in values.items()})
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        if self._writer is not None:
            for key, value in values.items():
                value = _jsonable(value)
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    tag = f"{stage}/{split}/{key}" if scope == "step" else f"{stage}/{split}_{scope}/{key}"
                    self._writer.add_scalar(tag, value, step)

    def size(self) -> int:
        """Current length in bytes (saved in checkpoints, for :meth:`truncate` on resume)."""
        return self.path.stat().st_size if self.path.exists() else 0

    def truncate(self, size: int) -> None:
        """Drop everything written after the file was `size` bytes long."""
        if self.path.exists() and self.path.stat().st_size > size:
            with self.path.open("r+b") as handle:
                handle.truncate(size)
                handle.flush()
                os.fsync(handle.fileno())

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _tensorboard_writer(folder: Path) -> Any:
    """A SummaryWriter, or None when tensorboard is not installed (an optional extra)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # ImportError, or a broken tensorboard install: TensorBoard is optional
        return None
    return SummaryWriter(log_dir=str(folder))
