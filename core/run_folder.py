"""One writer per run folder, and no run silently replaced.

A run folder (``run_dir``) belongs to one process at a time: ``crs run`` and ``crs eval``
hold :class:`RunLock` on it while they work.  The lock is ``RUN_DIR/.crs.lock``, an
``fcntl.flock`` on a file that names its holder (pid, host, command, start time):

- a second process gets a ConfigError naming the holder's pid, at once, before it loads
  any data;
- the kernel drops a flock when its process dies, so the lock of a run killed with
  ``kill -9`` is simply taken over by the next run (its file still names the dead pid);
- a finished run deletes the file, so a finished run folder holds no lock.

Where ``flock`` does not exist (Windows) or the file system refuses it, the file itself
is the lock: created exclusively, and taken over when the pid it names is no longer
running on this host.

:func:`claim` is what the runner uses: it creates the folder if needed, takes the lock and,
when the command fails before the run saved anything worth keeping (no ``checkpoint.pt``),
removes the folders it created, so a run that fails at config or load time leaves nothing
behind.  :func:`refuse_existing_run` and :func:`clear_run` implement ``--overwrite``.
"""
from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import shutil
import socket
import sys
from pathlib import Path
from typing import Any, Iterator

from .errors import ConfigError

__all__ = ["LOCK_FILE", "RUN_FILES", "CONFIG_FILE", "CHECKPOINT_FILE", "BEST_FILE", "METRICS_FILE", "HISTORY_FILE",
           "REPORT_NAME", "RANKINGS_NAME", "GENERATIONS_NAME", "CURVES_NAME", "RunLock", "claim", "holds_run",
           "refuse_existing_run", "clear_run"]

LOCK_FILE = ".crs.lock"
# The names of the files a run writes, defined here (a module without torch) for every module that reads or
# writes them: the trainer, the checkpoint and report writers, crs.serving and this module.
CONFIG_FILE = "config.yaml"  # the resolved config
CHECKPOINT_FILE = "checkpoint.pt"  # crs.training.checkpoint
BEST_FILE = "best.pt"  # the best-on-valid model of the latest stage with early stopping
METRICS_FILE = "metrics.jsonl"  # crs.training.run_log
HISTORY_FILE = "history.json"  # what Trainer.fit returns
REPORT_NAME = "report.json"  # crs.evaluation.report
RANKINGS_NAME = "rankings.jsonl"
GENERATIONS_NAME = "generations.jsonl"
CURVES_NAME = "curves.png"  # crs.plots, drawn when a run ends
# Everything a run (and `crs eval` under it) writes into its folder; --overwrite removes these and nothing else.
RUN_FILES = (CONFIG_FILE, CHECKPOINT_FILE, BEST_FILE, METRICS_FILE, HISTORY_FILE, REPORT_NAME, RANKINGS_NAME,
             GENERATIONS_NAME, CURVES_NAME)
RUN_FOLDERS = ("tensorboard", "eval")
STALE_EMPTY_LOCK_S = 60  # pid lock files only: an empty one this old was left by a crash between create and write
log = logging.getLogger("crs.run")

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


class RunLock:
    """An exclusive lock on a run folder; :meth:`acquire` it, :meth:`release` it (or use ``with``)."""

    def __init__(self, folder: str | os.PathLike, *, command: str | None = None):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self.command = command if command is not None else _this_command()
        self._fd: int | None = None

    # ------------------------------------------------------------ public
    def acquire(self) -> "RunLock":
        """Take the lock, or raise a ConfigError naming the process that holds it.  The folder must exist."""
        if self._fd is not None:
            return self
        try:
            self._fd = self._acquire_flock() if fcntl is not None else self._acquire_pid_file()
        except _FlockUnsupported as err:
            log.debug("flock unavailable on %s (%s); using a pid lock file", self.path, err)
            self._fd = self._acquire_pid_file()
        self._write_holder()
        return self

    def release(self) -> None:
        """Drop the lock and delete its file (a finished run leaves no lock behind)."""
        if self._fd is None:
            return
        # Unlink first, then unlock: a process that opened the old file meanwhile sees, after its flock,
        # that the path no longer names that file, and starts over (see _acquire_flock).
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()

    # ---------------------------------------------------------- internals
    def _acquire_flock(self) -> int:
        while True:
            fd = self._open(os.O_RDWR | os.O_CREAT)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise self._busy(_read_holder(self.path)) from None
            except OSError as err:  # e.g. ENOLCK on a network file system
                os.close(fd)
                raise _FlockUnsupported(str(err)) from err
            try:
                same_file = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same_file = False
            if same_file:
                self._note_takeover(_read_holder(self.path))
                return fd
            os.close(fd)  # the holder released (and deleted) it between our open and flock: try again

    def _acquire_pid_file(self) -> int:
        for _ in range(3):
            try:
                return self._open(os.O_RDWR | os.O_CREAT | os.O_EXCL)
            except FileExistsError:
                holder = _read_holder(self.path)
                if _alive(holder) or (not holder and _age_s(self.path) < STALE_EMPTY_LOCK_S):
                    raise self._busy(holder) from None
                self._note_takeover(holder)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path)
        raise self._busy(_read_holder(self.path))

    def _open(self, flags: int) -> int:
        try:
            return os.open(self.path, flags, 0o644)
        except FileExistsError:
            raise
        except OSError as err:
            raise ConfigError("run_dir", f"cannot write into the run folder {self.folder} "
                                         f"({err.strerror or err})",
                              "choose a folder you can write to (--run-dir DIR)") from err

    def _write_holder(self) -> None:
        assert self._fd is not None
        record = {"pid": os.getpid(), "host": socket.gethostname(), "command": self.command,
                  "since": datetime.datetime.now().isoformat(timespec="seconds")}
        os.ftruncate(self._fd, 0)
        os.lseek(self._fd, 0, os.SEEK_SET)
        os.write(self._fd, (json.dumps(record) + "\n").encode("utf-8"))
        os.fsync(self._fd)

    def _note_takeover(self, holder: dict[str, Any]) -> None:
        if holder.get("pid") is not None and holder.get("pid") != os.getpid():
            log.info("%s: took over the lock of pid %s, which is no longer running", self.folder, holder["pid"])

    def _busy(self, holder: dict[str, Any]) -> ConfigError:
        pid = holder.get("pid")
        who = f"pid {pid}" if pid is not None else "a process whose pid could not be read"
        if holder.get("host") and holder.get("host") != socket.gethostname():
            who += f" on host {holder['host']}"
        details = ", ".join(str(part) for part in (f"`{holder['command']}`" if holder.get("command") else None,
                                                    f"since {holder['since']}" if holder.get("since") else None)
                            if part)
        stop = f"stop it (kill {pid}), " if pid is not None else ""
        return ConfigError(
            "run_dir", f"{self.folder} is in use by another crs process: {who}"
                       f"{f' ({details})' if details else ''}; two processes writing one run folder would "
                       f"mix their files (lock: {self.path})",
            f"wait for it to finish, {stop}or give this command another folder (--run-dir DIR)")


class _FlockUnsupported(Exception):
    """flock failed for another reason than a holder (the file system does not support it)."""


def _age_s(path: Path) -> float:
    try:
        return datetime.datetime.now().timestamp() - path.stat().st_mtime
    except OSError:
        return 0.0


def _this_command() -> str:
    name = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
    return " ".join([name, *sys.argv[1:]])[:300]


def _read_holder(path: Path) -> dict[str, Any]:
    """The holder record of a lock file; {} when it is missing, empty or unreadable."""
    try:
        record = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _alive(holder: dict[str, Any]) -> bool:
    """Whether the holder's pid runs on this host (a pid on another host is assumed alive)."""
    if holder.get("pid") is None:
        return False
    if holder.get("host") not in (None, socket.gethostname()):
        return True
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError, ValueError):  # PermissionError: alive, owned by another user
        return True
    return True


# ------------------------------------------------------------------ run folders
def holds_run(folder: str | os.PathLike) -> str | None:
    """What `folder` holds that a new run would replace: "finished", "unfinished", or None."""
    folder = Path(folder)
    if (folder / REPORT_NAME).exists():
        return "finished"
    if (folder / CHECKPOINT_FILE).exists():
        return "unfinished"
    return None


def refuse_existing_run(folder: str | os.PathLike, *, resume: bool, overwrite: bool) -> None:
    """A ConfigError when a fresh run (neither `resume` nor `overwrite`) would replace the run in `folder`."""
    held = holds_run(folder)
    if held is None or resume or overwrite:
        return
    if held == "finished":
        raise ConfigError("run_dir", f"{folder} already holds a finished run (report.json); a new run there "
                                     "would replace it",
                          "add --overwrite to replace it, or give this run another folder (--run-dir DIR, "
                          "or run_dir=...); `crs eval` evaluates the finished run again without training")
    raise ConfigError("run_dir", f"{folder} already holds a run that has not finished (checkpoint.pt, "
                                 "no report.json)",
                      "add --resume to continue it, --overwrite to start it over, or give this run another folder "
                      "(--run-dir DIR)")


def clear_run(folder: str | os.PathLike) -> list[str]:
    """Delete the files and folders a run writes (:data:`RUN_FILES`, :data:`RUN_FOLDERS`) from `folder`.

    Anything else in the folder is left alone.  Returns the names removed.
    """
    folder = Path(folder)
    removed = []
    for name in RUN_FILES:
        with contextlib.suppress(FileNotFoundError):
            (folder / name).unlink()
            removed.append(name)
    for name in RUN_FOLDERS:
        if (folder / name).is_dir():
            shutil.rmtree(folder / name)
            removed.append(name + "/")
    for leftover in folder.glob(".*.tmp"):  # half-written files of a killed run (crs.io)
        with contextlib.suppress(FileNotFoundError):
            leftover.unlink()
    return removed


@contextlib.contextmanager
def claim(folder: str | os.PathLike, *, create: bool = True) -> Iterator[RunLock]:
    """Hold the lock on `folder` for the block (creating the folder first when `create`, else it must exist).

    When the block raises and `folder` was created here and holds no ``checkpoint.pt``,
    the folders created here are removed again: a run that failed before training saved
    anything leaves no folder behind.
    """
    folder = Path(folder)
    created = _missing_ancestors(folder) if create else []
    try:
        if create:
            folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError("run_dir", f"cannot create the run folder {folder} ({err.strerror or err})",
                          "choose a folder you can write to (--run-dir DIR)") from err
    lock = RunLock(folder)
    try:
        lock.acquire()
    except BaseException:
        _remove_created(created)
        raise
    try:
        yield lock
    except BaseException:
        lock.release()
        if not (folder / CHECKPOINT_FILE).exists():
            _remove_created(created)
        raise
    lock.release()


def _missing_ancestors(folder: Path) -> list[Path]:
    """`folder` and its ancestors that do not exist yet, deepest first."""
    missing = []
    for path in [folder, *folder.parents]:
        if path.exists():
            break
        missing.append(path)
    return missing


def _remove_created(created: list[Path]) -> None:
    if not created:
        return
    shutil.rmtree(created[0], ignore_errors=True)  # only this process wrote into a folder it created
    for parent in created[1:]:
        with contextlib.suppress(OSError):
            parent.rmdir()  # only while empty: another process may have started using it
