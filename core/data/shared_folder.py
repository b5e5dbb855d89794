"""The shared data folder the real corpora are read from, and one clear error when it is absent.

The built-in readers of real corpora (``redial``, ``inspired`` and their knowledge sources)
default to roots under ``../shared/data`` (relative to the working directory); when
``CRS_SHARED_DATA`` is set (``~`` expanded), such a root is read from that folder instead.
The rule is :func:`in_shared_folder`, which the readers resolve their roots with
(``crs.plugins.datasets.common.resolve_root``).  Without the folder, the first reader would
fail on the first file it opens, naming a path the user never wrote.
:func:`check_shared_data` runs before anything loads and names what to change instead:
``data.root`` (and the other keys that read from the folder), ``CRS_SHARED_DATA``, and
``crs data download``.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from ..errors import DataError

__all__ = ["SHARED_ENV", "SHARED_DEFAULT", "shared_folder", "below_shared_folder", "in_shared_folder",
           "check_shared_data"]

SHARED_ENV = "CRS_SHARED_DATA"
SHARED_DEFAULT = "../shared/data"
_PREFIX = Path(SHARED_DEFAULT).parts
_KEYS_SHOWN = 4


def shared_folder() -> Path:
    """``$CRS_SHARED_DATA`` when set, else ``../shared/data`` from the working directory."""
    configured = os.environ.get(SHARED_ENV)
    return Path(os.path.expanduser(configured)) if configured else Path.cwd() / SHARED_DEFAULT


def below_shared_folder(path: str | Path) -> tuple[str, ...] | None:
    """The parts of `path` below ``../shared/data`` when it starts there (``()`` for the folder itself), else None."""
    parts = Path(path).parts
    return parts[len(_PREFIX):] if parts[:len(_PREFIX)] == _PREFIX else None


def in_shared_folder(path: str | Path) -> Path | None:
    """Where a path under ``../shared/data`` is read from (:func:`shared_folder` joined with the rest), else None."""
    below = below_shared_folder(path)
    return None if below is None else shared_folder().joinpath(*below)


def check_shared_data(spec: Any, registry: Any) -> None:
    """A DataError when a component of `spec` reads from the shared folder and that folder (or the
    corpus folder inside it) does not exist; nothing when no component reads from it.

    Every component node is checked with its defaults filled in from the component's ``Config``
    (so ``data: inspired`` counts even though its ``root`` is a default).
    """
    uses = _shared_values(spec, registry)
    if not uses:
        return
    folder = shared_folder()
    env = os.environ.get(SHARED_ENV)
    where = f"{SHARED_ENV}={env}" if env else f"{SHARED_DEFAULT} from the working directory {Path.cwd()}"
    corpora = sorted({parts[0] for _, _, parts in uses if parts})
    corpus = corpora[0] if corpora else "CORPUS"
    keys = [key for key, _, _ in uses]
    named = ", ".join(f"{key} ({value})" for key, value, _ in uses[:_KEYS_SHOWN])
    named += f" and {len(uses) - _KEYS_SHOWN} more" if len(uses) > _KEYS_SHOWN else ""
    key_hint = "data.root" if "data.root" in keys else keys[0]
    fix = (f"if the data is on this machine, point {SHARED_ENV} at the folder that holds {corpus}/ "
           f"(export {SHARED_ENV}=/path/to/data); to fetch it, run `crs data download {corpus} --dest DIR/{corpus}` "
           f"and export {SHARED_ENV}=DIR; or set {key_hint} (and the other keys above) to folders holding the files")
    if not folder.is_dir():
        raise DataError(_shown(folder), f"the shared data folder ({where}) does not exist, and the config reads "
                                        f"from it: {named}", fix)
    absent = [name for name in corpora if not (folder / name).is_dir()]
    if absent:
        present = sorted(p.name for p in folder.iterdir() if p.is_dir())
        raise DataError(_shown(folder / absent[0]), f"no such folder in the shared data folder ({where}, which "
                                                    f"holds: {', '.join(present) or 'nothing'}), and the config "
                                                    f"reads from it: {named}", fix)


def _shown(path: Path) -> str:
    return os.path.normpath(str(path))


def _shared_values(spec: Any, registry: Any) -> list[tuple[str, str, tuple[str, ...]]]:
    """(config key, value, parts below the shared folder) of every string value under ``../shared/data``."""
    from ..config.loader import component_nodes

    found = []
    for kinds, node, path in component_nodes(spec):
        if not isinstance(node, dict):
            continue
        for key, value in _effective_values(kinds, node, path, registry).items():
            below = below_shared_folder(value) if isinstance(value, str) else None
            if below is not None:
                found.append((f"{path}.{key}", value, below))
    return found


def _effective_values(kinds: Any, node: dict, path: str, registry: Any) -> dict[str, Any]:
    """The node's config with its component's defaults filled in (just the node when it does not check)."""
    try:
        config = registry.check_node(kinds, node, path).config
    except Exception:  # an unknown type or a bad value: validation, which ran before, reports those
        return dict(node)
    return {field.name: getattr(config, field.name) for field in dataclasses.fields(config)}
