"""Line-oriented reading of data files (plain or gzip) with errors that name file and line.

Every dataset and knowledge loader reads through these helpers so that a broken
record always surfaces as a :class:`crs.errors.DataError` ``file:line: problem``
with a fix, or -- when the user asked for ``on_error: skip`` -- is counted in a
:class:`SkipLog` that ends up in the corpus report.

A parse function signals a bad record by raising :class:`RecordError`; the reader
attaches the file and line number.
"""
from __future__ import annotations

import gzip
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, TextIO, TypeVar

from ..errors import DataError, clip

T = TypeVar("T")
OnError = Literal["raise", "skip"]  # the annotation of every `on_error` config key (checked with the config)
_GZIP_MAGIC = b"\x1f\x8b"
_MAX_LOGGED = 20  # skipped lines quoted in the report; the count is always complete


class RecordError(Exception):
    """Raised by a parse function for a malformed record; the reader adds file and line."""

    def __init__(self, problem: str, fix: str = ""):
        super().__init__(problem)
        self.problem, self.fix = problem, fix


@dataclass
class SkipLog:
    """Malformed records skipped under ``on_error: skip``: a total and the first few reasons."""

    count: int = 0
    by_file: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)

    def add(self, file: Path | str, line: int | None, problem: str) -> None:
        self.count += 1
        self.by_file[str(file)] = self.by_file.get(str(file), 0) + 1
        if len(self.examples) < _MAX_LOGGED:
            self.examples.append(f"{file}:{line}: {problem}")

    def as_report(self) -> dict[str, Any]:
        return {"skipped": self.count, "skipped_by_file": dict(self.by_file), "skipped_examples": list(self.examples)}


def resolve_existing(path: Path | str) -> Path | None:
    """`path` if it exists, else its gzip / plain sibling (``x.jsonl`` <-> ``x.jsonl.gz``), else None.

    Downloads keep the source file names (no ``.gz``) while the staged shared copies
    are gzip-compressed; accepting either lets the same config read both.
    """
    path = Path(path)
    if path.exists():
        return path
    sibling = path.with_name(path.name[:-3]) if path.name.endswith(".gz") else path.with_name(path.name + ".gz")
    return sibling if sibling.exists() else None


def require_file(path: Path | str, config_key: str = "") -> Path:
    """The existing file at `path` (or its .gz sibling); DataError naming the config key otherwise."""
    found = resolve_existing(path)
    if found is None or not found.is_file():
        where = f"set `{config_key}` to an existing file, or " if config_key else ""
        raise DataError(str(path), "file not found",
                        f"{where}fetch the corpus with `crs data download <name>` (see PROVENANCE.md for sources)")
    return found


def open_text(path: Path | str) -> TextIO:
    """Open a UTF-8 text file, transparently gunzipping it (detected by magic bytes, not name)."""
    path = Path(path)
    try:
        with open(path, "rb") as raw:
            magic = raw.read(2)
        if magic == _GZIP_MAGIC:
            return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
        return open(path, encoding="utf-8")
    except OSError as err:
        raise DataError(str(path), f"cannot open: {err.strerror or err}", "check the path and its permissions") from err


def iter_lines(path: Path | str) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, text)`` for non-blank lines (1-based, trailing newline removed)."""
    line_no = 0
    try:
        with open_text(path) as handle:
            for line_no, line in enumerate(handle, start=1):
                text = line.rstrip("\r\n")
                if text.strip():
                    yield line_no, text
    except (EOFError, gzip.BadGzipFile, UnicodeDecodeError, OSError) as err:
        raise DataError(str(path), f"file is truncated or not valid UTF-8 text after this line ({err})",
                        "download the file again and verify its sha256", line=line_no) from err


def parse_lines(path: Path | str, parse: Callable[[int, str], T], *, on_error: str = "raise",
                skipped: SkipLog | None = None) -> Iterator[tuple[int, T]]:
    """Apply `parse(line_no, text)` to each non-blank line.

    `parse` raises :class:`RecordError` (or ``json.JSONDecodeError``) for a bad line;
    with ``on_error='raise'`` that becomes a DataError ``file:line``, with ``'skip'``
    the line is recorded in `skipped` and reading goes on.
    """
    for line_no, text in iter_lines(path):
        try:
            yield line_no, parse(line_no, text)
        except (RecordError, json.JSONDecodeError) as err:
            if isinstance(err, RecordError):
                problem, fix = err.problem, err.fix
            else:
                problem = f"invalid JSON ({err.msg} at column {err.colno})"
                fix = "repair the line, or set on_error: skip to skip malformed lines"
            if on_error == "skip":
                if skipped is not None:
                    skipped.add(path, line_no, problem)
                continue
            raise DataError(str(path), problem, fix, line=line_no) from None


def iter_jsonl(path: Path | str, parse: Callable[[Any], T] | None = None, *, on_error: str = "raise",
               skipped: SkipLog | None = None) -> Iterator[tuple[int, T]]:
    """Yield ``(line_number, value)`` for each JSON line, `value` = ``parse(obj)`` when given."""
    convert = parse or (lambda obj: obj)
    return parse_lines(path, lambda _no, text: convert(json.loads(text)), on_error=on_error, skipped=skipped)


def read_json(path: Path | str) -> Any:
    """Load one JSON document (plain or gzip); DataError with the line of a syntax error."""
    try:
        with open_text(path) as handle:
            return json.load(handle)
    except json.JSONDecodeError as err:
        raise DataError(str(path), f"invalid JSON ({err.msg})", "repair or re-download the file",
                        line=err.lineno) from None
    except (EOFError, gzip.BadGzipFile, UnicodeDecodeError) as err:
        raise DataError(str(path), f"file is truncated or not UTF-8 ({err})", "re-download the file") from err


_JSON_NAMES = {dict: "a JSON object", list: "a JSON list", str: "a string", int: "an integer", float: "a number",
               bool: "true or false", type(None): "null"}


def json_type(value: Any) -> str:
    """How a parsed JSON value is called in messages ("a JSON object", "null", ...)."""
    return _JSON_NAMES.get(type(value), type(value).__name__)


def expect(value: Any, kind: type | tuple[type, ...], what: str, fix: str = "") -> Any:
    """Return `value` if it is of `kind`, else raise RecordError describing `what` was wrong.

    Without a `fix`, the message says what to write instead (every data error carries one).
    """
    if not isinstance(value, kind):
        names = " or ".join(_JSON_NAMES.get(k, k.__name__) for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise RecordError(f"{what} should be {names}, got {json_type(value)}", fix or f"write {what} as {names}")
    return value


def expect_text(value: Any, what: str, fix: str = "") -> str:
    """`value` as a string when it is a string or a number; RecordError for null, booleans, lists and objects.

    Ids, names and texts are strings (or numbers, e.g. ReDial's movie ids); ``str()`` of anything
    else would silently make the id ``"None"`` or ``"[1, 2]"``, so it is a data error instead.
    """
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    shown = f" ({clip(json.dumps(value, ensure_ascii=False), 40)})" if isinstance(value, (list, dict, bool)) else ""
    raise RecordError(f"{what} should be a string or a number, got {json_type(value)}{shown}",
                      fix or f"write {what} as a string; a list or object here usually means the field mapping "
                             "points at the wrong field")
