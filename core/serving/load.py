"""Rebuild a trained pipeline from its run directory: ``load_pipeline(run_dir) -> Pipeline``.

A finished ``crs run`` leaves everything needed in its run directory:

- ``config.yaml``: the resolved config (every key, no preset left to expand), which
  is validated against the registry again, so a component that disappeared or
  changed its config keys since training is a config error pointing at the line;
- ``checkpoint.pt``: read through :func:`crs.training.checkpoint.load_checkpoint`;
  only its keys ``done`` (True once every stage finished) and ``model`` (then the
  final model, with each stage's best-on-valid state already restored) are used.

The data, vocabulary, item index and knowledge graphs are rebuilt from the config,
as the run built them (same seed), so sample indices line up with the trained
embeddings.  Items a ``crs items add`` stored in ``items_extra.jsonl`` are appended to the
item index after them (crs.data.extra_items).  The returned pipeline's model is in eval mode.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Iterable

from ..errors import ConfigError, DataError, did_you_mean
from ..run_folder import CONFIG_FILE, RUN_FILES

__all__ = ["CONFIG_FILE", "load_pipeline"]

_SHOWN_KEYS = 5  # state-dict keys listed per kind of mismatch; more are counted


def load_pipeline(run_dir: str | Path, overrides: Iterable[str] = (), *, registry: Any = None) -> Any:
    """The pipeline a finished run trained, with its final model state loaded.

    :param run_dir: the folder ``crs run`` wrote (holds ``config.yaml`` and ``checkpoint.pt``).
    :param overrides: ``key=value`` strings applied on top of the saved config, as on the
        ``crs run`` command line.  Anything that changes the model's parameters makes the
        state check fail; ``preset=`` is refused (the saved config is already complete).
    :param registry: a :class:`crs.registry.Registry`; default: built-in plus installed plugins.
    :returns: a :class:`crs.pipeline.Pipeline` whose ``spec.run_dir`` is `run_dir`.
    :raises DataError: no such folder, no ``config.yaml``, no or an unreadable checkpoint, an
        unfinished run, or a saved state that does not fit the rebuilt model.
    :raises ConfigError: the saved config (or an override) no longer validates.
    """
    import yaml

    from ..config.loader import load_config
    from ..data.extra_items import EXTRA_ITEMS_FILE, read_items_file
    from ..pipeline import build_pipeline
    from ..training.checkpoint import CHECKPOINT_FILE, load_checkpoint
    from ..training.seeding import seed_everything

    run_dir = check_run_dir(Path(run_dir))
    overrides = list(overrides)
    for text in overrides:
        if text.partition("=")[0].strip() == "preset":
            raise ConfigError("preset", f"override '{text}': a run's saved config is complete, so a preset "
                                        "cannot be layered under it", "drop the preset= override",
                              source="command line")
    config_path = run_dir / CONFIG_FILE
    if not config_path.is_file():
        raise DataError(str(config_path), "not found, so this folder holds no crs run (every `crs run` "
                                          "writes its resolved config there first)",
                        "pass the run_dir of a `crs run` (e.g. runs/kgsf-demo)")
    checkpoint_path = run_dir / CHECKPOINT_FILE
    # Read before the (slow) data loading, so that an unusable run fails at once.
    checkpoint = load_checkpoint(run_dir)
    if checkpoint is None:
        raise DataError(str(checkpoint_path), "not found: the run never finished an epoch, so there is no "
                                              "trained model to load",
                        "train it first: run the `crs run ...` command that created this folder again")
    if checkpoint.get("done") is not True:
        raise DataError(str(checkpoint_path), "the run has not finished: this checkpoint is from the middle of "
                                              "training, not the final model",
                        "finish it by running the same `crs run ...` command again with --resume "
                        f"(e.g. `crs run RUN.yaml --run-dir {run_dir} --resume`), then load it")
    state = checkpoint.get("model")
    if not isinstance(state, dict):
        raise DataError(str(checkpoint_path), "holds no model state (key 'model')",
                        "retrain the run with this crs version")

    # `preset=null`: config.yaml still names the preset it came from (informational), and
    # expanding it again would bring back slots or stages the run deleted (`~model.generator`)
    # and pick up registry.yaml edits made since training.  The saved config is complete.
    if registry is None:
        from ..plugin_manager import get_plugin_manager
        from ..registry import Registry

        registry = Registry.from_plugin_manager(get_plugin_manager())
    spec, resolved = load_config(str(config_path), ["preset=null", *overrides], registry=registry)
    saved_preset = yaml.safe_load(config_path.read_text(encoding="utf-8")).get("preset")  # a mapping: loaded above
    spec = dataclasses.replace(spec, run_dir=str(run_dir), preset=saved_preset)
    resolved.update(run_dir=str(run_dir), preset=saved_preset)

    extra_path = run_dir / EXTRA_ITEMS_FILE  # `crs items add`: items recommendable without retraining
    extra = read_items_file(extra_path) if extra_path.is_file() else []
    seed_everything(spec.seed)  # as `crs run` did before building: the same RNG draws while loading data
    pipeline = build_pipeline(spec, registry, resolved, extra_items=extra, extra_items_file=str(extra_path))
    try:
        load_model_state(pipeline.model, state, checkpoint_path)
    except DataError as err:
        if not extra:
            raise
        raise DataError(str(checkpoint_path), f"{err.problem}\n  The run holds {len(extra)} added items "
                        f"({extra_path}), and this model's parameters depend on the number of items, so it cannot "
                        "take new items without retraining",
                        f"remove {extra_path} (or retrain with the items in the data); only models whose "
                        "parameters do not depend on the catalogue (e.g. MESE) can take added items") from None
    pipeline.model.eval()
    return pipeline


def load_model_state(model: Any, state: dict, source: Path) -> None:
    """``model.load_state_dict(state)``, or a DataError naming the keys that do not fit."""
    import torch

    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    reshaped = [f"{k} (saved {list(state[k].shape)}, built {list(expected[k].shape)})" for k in expected
                if k in state and torch.is_tensor(state[k]) and state[k].shape != expected[k].shape]
    problems = [f"{label}: {_listed(keys)}" for label, keys in
                (("missing from the checkpoint", missing), ("in the checkpoint but not in the model", unexpected),
                 ("of another shape", reshaped)) if keys]
    if problems:
        raise DataError(str(source), "the saved model does not fit the model its config.yaml builds:\n    "
                        + "\n    ".join(problems),
                        "the config, an override or a component changed since training: restore the run's "
                        "config.yaml, drop overrides that change model slots, or install the plugin versions "
                        "that trained it (`crs plugins` lists them); otherwise train again")
    model.load_state_dict(state)


def _listed(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOWN_KEYS])
    return shown + (f" and {len(keys) - _SHOWN_KEYS} more" if len(keys) > _SHOWN_KEYS else "")


def check_run_dir(run_dir: Path) -> Path:
    """`run_dir` if it is a folder; otherwise a DataError saying what was passed instead."""
    if run_dir.is_dir():
        return run_dir
    if run_dir.is_file():
        hint = f"pass the folder that holds it: {run_dir.parent}" if run_dir.name in RUN_FILES else \
            "pass the folder a `crs run` wrote (its run_dir), not a file"
        raise DataError(str(run_dir), "is a file, not a run directory", hint)
    parent = run_dir.parent
    siblings = sorted(p.name for p in parent.iterdir() if p.is_dir()) if parent.is_dir() else []
    raise DataError(str(run_dir), f"no such run directory.{did_you_mean(run_dir.name, siblings)}",
                    "pass the run_dir of a finished `crs run` (printed in its last line, e.g. runs/kgsf-demo)")
