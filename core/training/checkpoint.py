"""The run checkpoint: everything needed to continue a run exactly where it stopped.

``run_dir/checkpoint.pt`` is rewritten atomically after every epoch and holds

=================  ==============================================================
key                meaning
=================  ==============================================================
format             checkpoint layout version (:data:`FORMAT`)
config             the resolved config without ``run_dir`` and test-only evaluation keys
stage_index        the stage the epoch belonged to
epoch              the last completed epoch of that stage (0-based)
stage_done         True when that stage finished (its best state already restored)
done               True when every stage finished (``model`` is the final state)
model              model state
optimizer          optimizer state of the current stage (None once the stage is done)
scheduler          scheduler state of the current stage (None once the stage is done)
scaler             fp16 GradScaler state of the current stage, or None
global_step        optimizer steps taken in the current stage
early_stopping     :meth:`EarlyStopper.state_dict` of the current stage, or None: the
                   best value and epoch so far and ``best_file``, the file holding that
                   epoch's model
rng                :func:`crs.training.seeding.capture_rng_state` (rank 0's under torchrun)
rng_by_rank        under torchrun only: every rank's RNG state, in rank order
                   (:mod:`crs.training.distributed`)
history            the history so far ({stage: [epoch records]})
metrics_size       length of metrics.jsonl when the checkpoint was written
checksum           :func:`crs.training.checksum.state_checksum` of everything above
=================  ==============================================================

``run_dir/best.pt`` (:func:`save_best`) holds the best-on-valid model of the latest
stage with early stopping, with ``stage``, ``stage_index``, ``epoch`` (1-based),
``metric`` and ``value``; it is rewritten when that stage's metric improves.  The
checkpoint only refers to it, so it does not carry a second full model every epoch;
a resumed stage reads it back when the stage ends (:func:`load_best` checks that it
holds the epoch the checkpoint expects).  Format 1 checkpoints, which kept the best
state inline under ``early_stopping.best_state``, still load and resume.

Checkpoints hold only tensors and plain Python values and are read with
``torch.load(weights_only=True)``: loading a checkpoint never runs code from it.

Both files carry a ``checksum`` of their content (format 3), recomputed on every load: a
checkpoint that was damaged or edited after it was written is a DataError, never a run that
continues, or a report computed, from wrong weights.  Formats 1 and 2 predate the checksum
and load unverified, with a warning.  :func:`with_checksum` re-seals a state that a test or
a repair script changed on purpose.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError, DataError
from ..io import atomic_torch_save
from ..run_folder import BEST_FILE, CHECKPOINT_FILE
from .checksum import state_checksum

__all__ = ["FORMAT", "CHECKPOINT_FILE", "BEST_FILE", "comparable_config", "config_differences",
           "save_checkpoint", "load_checkpoint", "check_same_config", "save_best", "load_best",
           "check_resumable", "with_checksum"]

FORMAT = 3
# 1: the best model state inline in early_stopping.best_state; 2: best.pt, no checksum; 3: checksums
READABLE_FORMATS = (1, 2, 3)
FIRST_CHECKSUM_FORMAT = 3
CHECKSUM_KEY = "checksum"
# Keys a resumed run may change: where the run lives, options read only by the final test
# evaluation (validation during training never generates and never caps samples), and
# `corpus`, a name derived from `data` (which is compared) for the default run_dir.
IGNORED_CONFIG_KEYS = ("run_dir", "corpus", "evaluation.split", "evaluation.generate",
                       "evaluation.max_gen_tokens", "evaluation.max_samples")
# What to do about a checkpoint file that cannot be used.
_START_OVER = ("start the run over with --overwrite (instead of --resume), or train in a new folder "
               "(--run-dir DIR); a copy of the file from before the damage can also be put back")
log = logging.getLogger("crs.training")


def comparable_config(resolved: Any) -> Any:
    """`resolved` as plain JSON values, without the keys a resumed run may change (:data:`IGNORED_CONFIG_KEYS`)."""
    plain = json.loads(json.dumps(resolved if resolved is not None else {}, default=str, sort_keys=True))
    for dotted in IGNORED_CONFIG_KEYS:
        *parents, last = dotted.split(".")
        node = plain
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(last, None)
    return plain


def config_differences(old: Any, new: Any, path: str = "") -> list[str]:
    """Human-readable differences between two plain configs, one per differing dotted key."""
    if isinstance(old, dict) and isinstance(new, dict):
        found: list[str] = []
        for key in sorted(set(old) | set(new), key=str):
            sub = f"{path}.{key}" if path else str(key)
            if key not in new:
                found.append(f"{sub}: {json.dumps(old[key])} -> (removed)")
            elif key not in old:
                found.append(f"{sub}: (absent) -> {json.dumps(new[key])}")
            else:
                found.extend(config_differences(old[key], new[key], sub))
        return found
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        found = []
        for position, (a, b) in enumerate(zip(old, new)):
            found.extend(config_differences(a, b, f"{path}.{position}" if path else str(position)))
        return found
    return [] if old == new else [f"{path or '(root)'}: {json.dumps(old)} -> {json.dumps(new)}"]


def check_same_config(saved: Any, current: Any, run_dir: Path) -> None:
    """Raise a ConfigError when a resumed run's config differs from the checkpoint's."""
    differences = config_differences(saved, current)
    if not differences:
        return
    more = f"\n    ... and {len(differences) - 8} more" if len(differences) > 8 else ""
    shown = "\n    ".join(differences[:8]) + more
    first_key = differences[0].split(":", 1)[0]
    raise ConfigError(
        first_key if first_key != "(root)" else "",
        f"cannot resume: the checkpoint in {run_dir} was written with a different config "
        f"(checkpoint -> now):\n    {shown}",
        "resume with the original config, or train this config in a new run_dir (--run-dir runs/NEW), "
        "or start over in this run_dir with --overwrite instead of --resume (its run is replaced)",
    )


def with_checksum(state: dict[str, Any]) -> dict[str, Any]:
    """`state` with its ``checksum`` (re)computed over every other key, as the writers store it."""
    content = {key: value for key, value in state.items() if key != CHECKSUM_KEY}
    return {**content, CHECKSUM_KEY: state_checksum(content)}


def save_checkpoint(run_dir: Path, state: dict[str, Any]) -> Path:
    """Write `state` (see the module table) with its checksum to ``run_dir/checkpoint.pt`` atomically."""
    return atomic_torch_save(with_checksum({"format": FORMAT, **state}), Path(run_dir) / CHECKPOINT_FILE)


def load_checkpoint(run_dir: Path) -> dict[str, Any] | None:
    """The checkpoint in `run_dir` (checksum verified), or None when there is none.

    :raises DataError: the file cannot be read, is not a crs checkpoint, or its content does not
        match its checksum.
    """
    path = Path(run_dir) / CHECKPOINT_FILE
    if not path.exists():
        return None
    return _read_verified(path, "the checkpoint")


def save_best(run_dir: Path, *, stage: str, stage_index: int, epoch: int, metric: str, value: float,
              model: dict[str, torch.Tensor]) -> Path:
    """Write the best-on-valid `model` state of stage `stage_index` (reached at 1-based `epoch`) to best.pt."""
    return atomic_torch_save(with_checksum({"format": FORMAT, "stage": stage, "stage_index": stage_index,
                                            "epoch": epoch, "metric": metric, "value": value, "model": model}),
                             Path(run_dir) / BEST_FILE)


def load_best(run_dir: Path, *, stage: str, stage_index: int, epoch: int) -> dict[str, torch.Tensor]:
    """The model state in best.pt, after checking its checksum and that it is epoch `epoch` of stage
    `stage_index`; else a DataError."""
    path = Path(run_dir) / BEST_FILE
    fix = "the run folder was changed outside this run; start the run over (--overwrite, without --resume) " \
          "or in a new run_dir (--run-dir DIR)"
    if not path.exists():
        raise DataError(str(path), f"missing: the checkpoint says it holds the best model of stage '{stage}' "
                        f"(epoch {epoch})", fix)
    state = _read_verified(path, "the best model file")
    found = (state.get("stage_index"), state.get("epoch"))
    if found != (stage_index, epoch) or "model" not in state:
        raise DataError(str(path), f"holds (stage index, epoch) {found}, but the checkpoint expects the best "
                        f"model of stage '{stage}' ({stage_index}, {epoch})", fix)
    return state["model"]


def check_resumable(run_dir: Path, config: Any) -> dict[str, Any] | None:
    """Everything ``--resume`` will read from `run_dir`, checked before anything there is written.

    Loads and verifies the checkpoint, compares its config with `config` (:func:`comparable_config`
    of the new run) and, when the checkpoint's unfinished stage refers to best.pt, verifies that
    file too.  Returns the checkpoint, or None when there is none.

    :raises DataError: a damaged, edited or missing file.
    :raises ConfigError: the run was trained with another config.
    """
    checkpoint = load_checkpoint(run_dir)
    if checkpoint is None:
        return None
    check_same_config(checkpoint.get("config"), config, Path(run_dir))
    stopper = checkpoint.get("early_stopping")
    if not checkpoint.get("stage_done") and isinstance(stopper, dict) and stopper.get("best_file") \
            and stopper.get("best_epoch") is not None:
        index = int(checkpoint["stage_index"])
        stages = (checkpoint.get("config") or {}).get("stages") or []
        name = stages[index].get("name", index) if index < len(stages) and isinstance(stages[index], dict) else index
        load_best(run_dir, stage=str(name), stage_index=index, epoch=int(stopper["best_epoch"]))
    return checkpoint


def _read_verified(path: Path, what: str) -> dict[str, Any]:
    """``torch.load`` of `path` as a dict, its checksum verified (formats that carry one); else a DataError."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling errors come in many types
        raise DataError(str(path), f"{what} cannot be read ({type(err).__name__}: {' '.join(str(err).split())})",
                        _START_OVER) from err
    if not isinstance(state, dict):
        raise DataError(str(path), f"not a crs checkpoint: it holds a {type(state).__name__}, not a dict", _START_OVER)
    found_format = state.get("format")
    if found_format not in READABLE_FORMATS:
        raise DataError(str(path), f"not a crs training checkpoint of format {FORMAT} (found {found_format!r})",
                        "resume it with the crs version that wrote it, or start a new run_dir")
    if found_format < FIRST_CHECKSUM_FORMAT:
        log.warning("%s: written before checkpoints carried checksums (format %s); used unverified",
                    path, found_format)
        return state
    stored = state.pop(CHECKSUM_KEY, None)
    if stored is None:
        raise DataError(str(path), f"{what} has no checksum, though its format ({found_format}) always stores "
                        "one: the file was edited or damaged after crs wrote it, so it is not used", _START_OVER)
    actual = state_checksum(state)
    if stored != actual:
        raise DataError(str(path), f"{what} does not match its checksum (stored {str(stored)[:23]}..., content "
                        f"{actual[:23]}...): the file was damaged or changed after crs wrote it, so it is not "
                        "used", _START_OVER)
    return state
