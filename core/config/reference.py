"""References of config keys derived from the dataclasses that define them.

:func:`config_keys` flattens a config dataclass (a component's ``Config``, or the
pipeline spec) into one :class:`KeyInfo` per key: its type and default come from the
dataclass, its allowed values from a ``Literal[...]`` annotation, and its one-line
help from the comment after the field in the source (or the comment line(s) above
it), so the reference cannot drift from what the loader accepts.
:func:`settings_reference` is the pipeline keys that are not component options
(``crs components settings``); ``crs components`` shows component keys the same way
(:mod:`crs.component_reference`).
"""
from __future__ import annotations

import dataclasses
import inspect
import re
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal, Union

from .spec import PipelineSpec
from .validate import field_types, type_name

__all__ = ["KeyInfo", "REQUIRED", "config_keys", "key_line", "literal_choices", "settings_reference"]

_FIELD = re.compile(r"^(\s+)(\w+)\s*:[^#]*?(?:(#)\s*(.+))?$")
_COMMENT_LINE = re.compile(r"^(\s+)#\s*(.+)$")
# Trailing comments that are tool directives, not help text.
_DIRECTIVE = re.compile(r"^(type:|noqa\b|pragma\b)")


class _Required:
    """The default of a key that has none (printed as ``(required)``)."""

    def __repr__(self) -> str:
        return "(required)"


REQUIRED: Any = _Required()


@dataclass(frozen=True)
class KeyInfo:
    """One config key: dotted name, readable type, default, one-line help and allowed values."""

    key: str  # dotted inside the config ("split.unit"); list entries as "<i>" ("stages.<i>.epochs")
    type: str  # as in error messages: "int", "str | null", "'zero' | 'popularity'"
    default: Any  # the default value, or REQUIRED
    help: str = ""  # the comment after (or above) the field in its dataclass's source
    choices: tuple = ()  # allowed values when the annotation is a Literal (also inside Optional)

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


def literal_choices(tp: Any) -> tuple:
    """The values a ``Literal[...]`` annotation allows (``Optional[Literal[...]]`` too); () for other types."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        return typing.get_args(tp)
    if origin in (Union, types.UnionType):
        return tuple(value for arg in typing.get_args(tp) for value in literal_choices(arg))
    return ()


def _own_comments(cls: type) -> dict[str, str]:
    """Field name -> help from `cls`'s own source (see :func:`_comments`)."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    found: dict[str, str] = {}
    above: list[str] = []
    last: tuple[str, int] | None = None  # (field, column of its trailing '#'): continuation lines line up with it
    for line in source.splitlines():
        comment = _COMMENT_LINE.match(line)
        if comment:
            text = comment.group(2).strip()
            if last is not None and line.index("#") == last[1]:
                found[last[0]] = f"{found[last[0]]} {text}"
            else:
                above.append(text)
                last = None
            continue
        match = _FIELD.match(line)
        trailing = match.group(4).strip() if match and match.group(4) else ""
        if _DIRECTIVE.match(trailing):
            trailing = ""
        if match and (trailing or above):
            found[match.group(2)] = trailing or " ".join(above)
        last = (match.group(2), match.start(3)) if match and trailing else None
        above = []
    return found


def _comments(cls: type) -> dict[str, str]:
    """Field name -> its comment: the one after it, else the comment line(s) above it.

    Inherited fields keep the help written in the base class unless a subclass
    re-declares them with a comment of its own.  A comment-only line whose ``#``
    lines up with the previous field's trailing comment continues that comment.
    """
    found: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass is not object and dataclasses.is_dataclass(klass):
            found.update(_own_comments(klass))
    return found


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return REQUIRED


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


def config_keys(cls: type, prefix: str = "") -> list[KeyInfo]:
    """Every key of config dataclass `cls`, nested dataclasses flattened into dotted keys, in field order."""
    out: list[KeyInfo] = []
    types_, comments = field_types(cls), _comments(cls)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        key = f"{prefix}{f.name}"
        tp = types_.get(f.name, Any)
        nested, step = _nested(tp)
        if nested is not None:
            out += config_keys(nested, f"{key}{step}.")
            continue
        out.append(KeyInfo(key, type_name(tp), _default(f), comments.get(f.name, ""), literal_choices(tp)))
    return out


def key_line(info: KeyInfo) -> str:
    """``key: type = default  # help`` (``(required)`` instead of ``= default`` for required keys)."""
    default = " (required)" if info.required else f" = {info.default!r}"
    return f"{info.key}: {info.type}{default}" + (f"  # {info.help}" if info.help else "")


def settings_reference() -> str:
    """Every non-component key of a pipeline, one per line: ``key: type = default  # help``."""
    return "\n".join(key_line(info) for info in config_keys(PipelineSpec))
