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
rng                :func:`crs.training.seeding.capture_rng_state`
history            the history so far ({stage: [epoch records]})
metrics_size       length of metrics.jsonl when the checkpoint was written
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
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError, DataError
from ..io import atomic_torch_save

__all__ = ["FORMAT", "CHECKPOINT_FILE", "BEST_FILE", "comparable_config", "config_differences",
           "save_checkpoint", "load_checkpoint", "check_same_config", "save_best", "load_best"]

FORMAT = 2
READABLE_FORMATS = (1, 2)  # 1: the best model state inline in early_stopping.best_state
CHECKPOINT_FILE = "checkpoint.pt"
BEST_FILE = "best.pt"
# Keys a resumed run may change: where the run lives, and options read only by the final
# test evaluation (validation during training never generates and never caps samples).
IGNORED_CONFIG_KEYS = ("run_dir", "evaluation.split", "evaluation.generate", "evaluation.max_gen_tokens",
                       "evaluation.max_samples")


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
        "resume with the original config, or start this config in a new run_dir (e.g. --run-dir runs/new), "
        "or run without --resume to start over in this run_dir (its checkpoint is overwritten)",
    )


def save_checkpoint(run_dir: Path, state: dict[str, Any]) -> Path:
    """Write `state` (see the module table) to ``run_dir/checkpoint.pt`` atomically."""
    return atomic_torch_save({"format": FORMAT, **state}, Path(run_dir) / CHECKPOINT_FILE)


def load_checkpoint(run_dir: Path) -> dict[str, Any] | None:
    """The checkpoint in `run_dir`, or None when there is none.  A damaged file raises DataError."""
    path = Path(run_dir) / CHECKPOINT_FILE
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling errors come in many types
        raise DataError(str(path), f"the checkpoint cannot be read ({type(err).__name__}: {err})",
                        "delete it to start over, or point --run-dir at another run") from err
    if not isinstance(state, dict) or state.get("format") not in READABLE_FORMATS:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise DataError(str(path), f"not a crs training checkpoint of format {FORMAT} (found {found!r})",
                        "resume it with the crs version that wrote it, or start a new run_dir")
    return state


def save_best(run_dir: Path, *, stage: str, stage_index: int, epoch: int, metric: str, value: float,
              model: dict[str, torch.Tensor]) -> Path:
    """Write the best-on-valid `model` state of stage `stage_index` (reached at 1-based `epoch`) to best.pt."""
    return atomic_torch_save({"format": FORMAT, "stage": stage, "stage_index": stage_index, "epoch": epoch,
                              "metric": metric, "value": value, "model": model}, Path(run_dir) / BEST_FILE)


def load_best(run_dir: Path, *, stage: str, stage_index: int, epoch: int) -> dict[str, torch.Tensor]:
    """The model state in best.pt, after checking it is epoch `epoch` of stage `stage_index`; else a DataError."""
    path = Path(run_dir) / BEST_FILE
    fix = "the run folder was changed outside this run; start the run over (without --resume) or in a new run_dir"
    if not path.exists():
        raise DataError(str(path), f"missing: the checkpoint says it holds the best model of stage '{stage}' "
                        f"(epoch {epoch})", fix)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling errors come in many types
        raise DataError(str(path), f"cannot be read ({type(err).__name__}: {err})", fix) from err
    found = (state.get("stage_index"), state.get("epoch")) if isinstance(state, dict) else None
    if found != (stage_index, epoch) or "model" not in state:
        raise DataError(str(path), f"holds (stage index, epoch) {found}, but the checkpoint expects the best "
                        f"model of stage '{stage}' ({stage_index}, {epoch})", fix)
    return state["model"]
