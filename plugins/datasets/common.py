"""Helpers the dataset and knowledge-source components share: where files are, and id mapping."""
from __future__ import annotations

import os
from pathlib import Path

from crs.data.readers import require_file
from crs.data.shared_folder import in_shared_folder


def resolve_root(root: str) -> Path:
    """The folder a component's relative file names are read from.

    Relative roots are taken from the working directory (the repository root when
    running ``crs-run``).  The defaults point at the repository's sibling
    ``../shared/data/...``; a root starting with ``../shared/data`` is read from the
    shared data folder (:func:`crs.data.shared_folder.in_shared_folder`: ``CRS_SHARED_DATA``
    when set), so the same configs run wherever the shared data lives.
    """
    path = Path(os.path.expanduser(root))
    if path.is_absolute():
        return path
    return in_shared_folder(path) or Path.cwd() / path


def data_file(root: Path, name: str, config_key: str) -> Path:
    """`name` under `root` (absolute names are kept), which must exist (``.gz`` sibling accepted)."""
    path = Path(os.path.expanduser(name))
    return require_file(path if path.is_absolute() else root / path, config_key)


def config_file(name: str, config_key: str) -> Path:
    """A file named directly by a config value (same resolution as :func:`resolve_root`), which must exist."""
    return require_file(resolve_root(name), config_key)


def clean_name(name: str) -> str:
    """Collapse the double spaces ReDial's movie names carry ("Headhunter  (2009)")."""
    return " ".join(str(name).split())
