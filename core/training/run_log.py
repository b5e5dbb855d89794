"""Where training metrics go: ``metrics.jsonl``, TensorBoard (when installed), progress bars, the console.

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

import contextlib
import json
import logging
import math
import os
import sys
from pathlib import Path
from typing import Any, Iterable, Iterator, TypeVar

from tqdm.auto import tqdm

from ..run_folder import METRICS_FILE

__all__ = ["MetricsLog", "progress_bar", "METRICS_FILE", "setup_console", "console", "epoch_line"]

T = TypeVar("T")


def progress_bar(items: Iterable[T], *, enabled: bool, total: int | None = None, desc: str = "") -> Iterator[T]:
    """A tqdm bar over `items`, shown only when `enabled` and stderr is a terminal.

    Off when not a TTY so log files and CI output are not filled with carriage returns.
    """
    show = enabled and sys.stderr.isatty()
    return tqdm(items, total=total, desc=desc, disable=not show, leave=False, dynamic_ncols=True)


class _ConsoleHandler(logging.Handler):
    """INFO and below to stdout as they are, warnings and errors to stderr as ``warning: ...``.

    The stream is looked up at every record (so a redirected or captured sys.stdout is
    honoured) and flushed at once, stdout before anything goes to stderr: in a log file
    that collects both (``> run.log 2>&1``) the lines stay in the order they happened.
    """

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            if record.levelno >= logging.WARNING:
                sys.stdout.flush()
                sys.stderr.write(f"{record.levelname.lower()}: {text}\n")
                sys.stderr.flush()
            else:
                sys.stdout.write(text + "\n")
                sys.stdout.flush()
        except Exception:  # a closed stream must not end the run
            self.handleError(record)


def setup_console(debug: bool | None = None) -> None:
    """Send the ``crs`` loggers (core and the built-in plugins) to the console, replacing an earlier set-up.

    INFO shows the run's progress; ``debug`` (default: ``CRS_DEBUG`` is set) adds DEBUG records
    such as the pipeline's build timings.
    """
    if debug is None:
        debug = os.environ.get("CRS_DEBUG", "") not in ("", "0")
    logger = logging.getLogger("crs")
    for handler in [h for h in logger.handlers if isinstance(h, _ConsoleHandler)]:
        logger.removeHandler(handler)
    handler = _ConsoleHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if debug else logging.INFO)


@contextlib.contextmanager
def console(debug: bool | None = None) -> Iterator[None]:
    """:func:`setup_console` for the block only (how `crs run` and `crs eval` use it): afterwards the
    ``crs`` logger has its earlier handlers and level again, so a program calling the runner keeps its own."""
    logger = logging.getLogger("crs")
    level, handlers = logger.level, list(logger.handlers)
    setup_console(debug)
    try:
        yield
    finally:
        for handler in [h for h in logger.handlers if h not in handlers]:
            logger.removeHandler(handler)
        for handler in [h for h in handlers if h not in logger.handlers]:
            logger.addHandler(handler)
        logger.setLevel(level)


def epoch_line(stage: str, epoch: int, epochs: int, train: dict[str, Any], valid: dict[str, Any] | None,
               metric: str | None, best: bool, seconds: float) -> str:
    """One console line for a finished epoch: ``rec 3/12  loss.rec 3.52  valid rec.recall@10 0.6912*  11.2s``.

    :param train: the epoch's mean training losses (``loss`` = the weighted total, ``loss.<name>`` its parts);
        the total is shown only when there are several parts.
    :param valid: the validation results, or None when the stage does not validate.
    :param metric: the validation value to show (the early-stopping metric); None shows the valid ``loss``.
    :param best: mark the value as the best so far (``*``).
    """
    parts = [key for key in train if key != "loss"]
    if "loss" in train and len([key for key in parts if key.startswith("loss.")]) != 1:
        parts.insert(0, "loss")
    fields = [f"{stage} {epoch}/{epochs}", *(f"{key} {_loss_text(train[key])}" for key in parts)]
    if valid:
        shown = metric if metric is not None and metric in valid else ("loss" if "loss" in valid else None)
        if shown is not None:
            value = valid[shown]
            text = _loss_text(value) if shown == "loss" or shown.startswith("loss.") else _metric_text(value)
            fields.append(f"valid {shown} {text}{'*' if best else ''}")
    fields.append(f"{seconds:.1f}s")
    return "  ".join(fields)


def _loss_text(value: Any) -> str:
    value = _jsonable(value)  # NaN and inf come back as text
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return str(value)
    # three significant digits with trailing zeros (6.80, not 6.8); one decimal from 100 up (no exponent)
    return f"{value:#.3g}".rstrip(".") if abs(value) < 100 else f"{value:.1f}"


def _metric_text(value: Any) -> str:
    value = _jsonable(value)
    return f"{value:.4f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


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
