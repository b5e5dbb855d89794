"""Atomic file writes: a reader (or a resumed run) never sees a half-written file.

Every writer goes through the same recipe: write to a temporary file in the
*same folder* as the target (so the final rename never crosses a filesystem),
flush and fsync it, then ``os.replace`` it over the target, which POSIX and
Windows both perform atomically.  If anything fails before the rename the
temporary file is removed and the previous target, if any, is left untouched.
A process killed with SIGKILL mid-write can leave a hidden ``.<name>.*.tmp``
file behind, never a truncated target.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Iterator

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_write_json", "atomic_torch_save", "atomic_writer"]


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike, mode: str = "wb", *, encoding: str | None = None) -> Iterator[IO]:
    """Open a temporary file next to `path`; on clean exit it replaces `path` atomically.

    ``mode`` is ``"wb"`` or ``"w"`` (text, ``encoding`` defaults to UTF-8).  On an
    exception inside the block the temporary file is deleted and `path` is unchanged.
    The parent folder is created if missing.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_writer mode must be 'wb' or 'w', not {mode!r}")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        text_encoding = (encoding or "utf-8") if mode == "w" else None
        with os.fdopen(fd, mode, encoding=text_encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        # BaseException too: a KeyboardInterrupt mid-write must not leave the temp file around.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    _fsync_folder(target.parent)


def _fsync_folder(folder: Path) -> None:
    """Persist the rename itself (the folder entry); best effort, not possible on every OS."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically; returns the path."""
    with atomic_writer(path, "wb") as handle:
        handle.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str, *, encoding: str = "utf-8") -> Path:
    """Write `text` to `path` atomically; returns the path."""
    with atomic_writer(path, "w", encoding=encoding) as handle:
        handle.write(text)
    return Path(path)


def atomic_write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 2,
                      default: Callable[[Any], Any] | None = None, sort_keys: bool = False) -> Path:
    """Serialise `obj` as JSON and write it atomically (UTF-8, trailing newline).

    The object is serialised *before* the file is touched, so an unserialisable
    value raises without creating anything.  ``default`` is passed to ``json.dumps``.
    """
    text = json.dumps(obj, indent=indent, default=default, sort_keys=sort_keys, ensure_ascii=False) + "\n"
    return atomic_write_text(path, text)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj)`` to `path` atomically; returns the path.

    torch is imported here, not at module level, so that JSON-only users of this
    module stay light.
    """
    import torch

    with atomic_writer(path, "wb") as handle:
        torch.save(obj, handle)
    return Path(path)
