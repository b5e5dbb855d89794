"""A plain-text reference of the pipeline keys that are not component options.

Derived from the spec dataclasses themselves (:mod:`crs.config.spec`): each key's type
and default come from the dataclass, its one-line help from the comment after the
field in the source, so the reference cannot drift from what the loader accepts.
``crs components settings`` prints it.
"""
from __future__ import annotations

import dataclasses
import inspect
import re
import typing
from typing import Any

from .spec import PipelineSpec
from .validate import field_types, type_name

_FIELD = re.compile(r"^\s+(\w+)\s*:[^#]*?(?:#\s*(.+))?$")
_COMMENT_LINE = re.compile(r"^\s+#\s*(.+)$")


def _comments(cls: type) -> dict[str, str]:
    """Field name -> its comment in `cls`'s source: the one after it, else the comment line(s) above it."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    found: dict[str, str] = {}
    above: list[str] = []
    for line in source.splitlines():
        comment = _COMMENT_LINE.match(line)
        if comment:
            above.append(comment.group(1).strip())
            continue
        match = _FIELD.match(line)
        if match and (match.group(2) or above):
            found[match.group(1)] = (match.group(2) or " ".join(above)).strip()
        above = []
    return found


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return "(required)"


def _nested(tp: Any) -> tuple[type | None, str]:
    """The dataclass behind a field type (``Optional[X]``, ``list[X]`` included) and the path step it adds."""
    if dataclasses.is_dataclass(tp):
        return tp, ""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) is list and args and dataclasses.is_dataclass(args[0]):
        return args[0], ".<i>"
    if len(args) == 1 and dataclasses.is_dataclass(args[0]):
        return args[0], ""
    return None, ""


def _lines(cls: type, prefix: str) -> list[str]:
    out: list[str] = []
    types, comments = field_types(cls), _comments(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        nested, step = _nested(types.get(f.name))
        if nested is not None:
            out += _lines(nested, f"{key}{step}.")
            continue
        default = _default(f)
        help_text = f"  # {comments[f.name]}" if f.name in comments else ""
        out.append(f"{key}: {type_name(types.get(f.name))} = {default!r}{help_text}")
    return out


def settings_reference() -> str:
    """Every non-component key of a pipeline, one per line: ``key: type = default  # help``."""
    return "\n".join(_lines(PipelineSpec, ""))
