"""Turn plain dicts (parsed YAML) into typed config dataclasses, with errors users can act on.

:func:`from_dict` is strict: unknown keys, missing required keys and values of the
wrong type are :class:`~crs.errors.ConfigError` s naming the dotted YAML path
(``stages.1.optimizer.lr``), what was expected, what was given, and the fix.

Supported annotations: nested dataclasses, ``list[X]``, ``tuple[X, ...]``,
``dict[str, X]``, ``Optional[X]`` / ``X | None``, other unions, ``Literal[...]``,
``int``, ``float`` (ints accepted), ``str``, ``bool``, ``Any``.

``source`` says where the values came from: a string (a file name) put in front of
every message, or a *locator* object with ``where(path) -> str | None`` that maps a
dotted path to ``file:line`` (see :mod:`crs.config.yaml_lines`).
"""
from __future__ import annotations

import dataclasses
import re
import sys
import types
import typing
from typing import Any, Literal, Union

from ..errors import ConfigError, did_you_mean

INT_MIN, INT_MAX = -2**63, 2**63 - 1  # the range of an `int` config value
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def from_dict(cls: type, data: Any, path: str = "", source: Any = None) -> Any:
    """Build dataclass `cls` from the plain mapping `data` (recursively).

    :param path: dotted YAML path of `data`, used in error messages ("" = top level).
    :param source: file name or locator (see module doc) used to say where an error is.
    :raises ConfigError: unknown key (with did-you-mean and the valid keys), missing
        required key, or a value of the wrong type.
    """
    try:
        return _dataclass(cls, data, path)
    except ConfigError as err:
        raise locate(err, source)


def convert(tp: Any, value: Any, path: str = "", source: Any = None) -> Any:
    """Check and convert one value against a type annotation (see :func:`from_dict`)."""
    try:
        return _convert(tp, value, path)
    except ConfigError as err:
        raise locate(err, source)


def locate(err: ConfigError, source: Any) -> ConfigError:
    """Prefix `err`'s message with where its path came from (once; no-op if unknown)."""
    if source is None or err.source is not None:
        return err
    where = source.where(err.path) if hasattr(source, "where") else str(source)
    if where:
        err.source = where
        err.args = (f"{where}: {err.args[0]}", *err.args[1:])
    return err


def join(path: str, key: Any) -> str:
    """Dotted path of `key` inside `path`."""
    return f"{path}.{key}" if path else str(key)


def type_name(tp: Any) -> str:
    """A readable name for an annotation: ``list[str]``, ``int | None``, ``'a' | 'b'``."""
    if tp is Any:
        return "any"
    if tp is type(None):
        return "null"
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        inner = ", ".join("..." if a is Ellipsis else type_name(a) for a in args)
        return f"{name}[{inner}]" if args else name
    if dataclasses.is_dataclass(tp):
        return f"mapping ({tp.__name__})"
    return getattr(tp, "__name__", str(tp))


def field_types(cls: type) -> dict[str, Any]:
    """Resolved annotations of a dataclass; a field whose annotation cannot be resolved is Any."""
    try:
        return typing.get_type_hints(cls)
    except Exception:  # an annotation naming something not importable: check that field loosely
        module = sys.modules.get(cls.__module__)
        namespace = dict(vars(module)) if module else {}
        hints = {}
        for f in dataclasses.fields(cls):
            tp = f.type
            if isinstance(tp, str):
                try:
                    tp = eval(tp, namespace)  # noqa: S307 - annotation strings of our own dataclasses
                except Exception:
                    tp = Any
            hints[f.name] = tp
        return hints


# ------------------------------------------------------------------ internals
def _dataclass(cls: type, data: Any, path: str) -> Any:
    if isinstance(data, cls):
        return data
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(path, f"expected a mapping of {cls.__name__} keys, got {_shown(data)}",
                          f"write `{path or 'the config'}` as `key: value` lines; valid keys: "
                          f"{', '.join(f.name for f in dataclasses.fields(cls))}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = field_types(cls)
    for key in data:
        if key not in fields:
            names = list(fields)
            raise ConfigError(join(path, key), f"unknown key '{key}'.{did_you_mean(str(key), names)}",
                              f"valid keys here: {', '.join(names) if names else '(none: this takes no options)'}")
    values = {}
    for name, f in fields.items():
        if name in data:
            values[name] = _convert(hints.get(name, Any), data[name], join(path, name))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            tp = type_name(hints.get(name, Any))
            raise ConfigError(join(path, name), f"required key '{name}' ({tp}) is missing",
                              f"add `{name}: <{tp}>` " + (f"under `{path}`" if path else "at the top level"))
    return cls(**values)


def _convert(tp: Any, value: Any, path: str) -> Any:
    if tp is Any or tp is object:
        return value
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        return _union(tp, args, value, path)
    if origin is Literal:
        if value in args and not (isinstance(value, bool) and not any(isinstance(a, bool) for a in args)):
            return value
        if isinstance(value, str) and all(isinstance(a, str) for a in args):  # as crs.errors.check_choice says it
            raise ConfigError(path, f"expected {type_name(tp)}, got {_shown(value)}, which is not a valid choice."
                                    f"{did_you_mean(value, args)}", f"use one of: {', '.join(args)}")
        raise _wrong(tp, value, path, f"use one of: {', '.join(repr(a) for a in args)}")
    if value is None:
        raise _wrong(tp, value, path, "give a value (null is not allowed here)")
    if dataclasses.is_dataclass(tp):
        return _dataclass(tp, value, path)
    if origin in (list, typing.List) or tp is list:
        if not isinstance(value, (list, tuple)):
            raise _wrong(tp, value, path, "write a list, e.g. [a, b] or one `- item` line per entry")
        item = args[0] if args else Any
        return [_convert(item, v, join(path, i)) for i, v in enumerate(value)]
    if origin is tuple or tp is tuple:
        return _tuple(tp, args, value, path)
    if origin in (dict, typing.Dict) or tp is dict:
        if not isinstance(value, dict):
            raise _wrong(tp, value, path, "write a mapping of `key: value` lines")
        key_tp, val_tp = (args + (Any, Any))[:2] if args else (Any, Any)
        return {_convert(key_tp, k, join(path, k)): _convert(val_tp, v, join(path, k)) for k, v in value.items()}
    return _scalar(tp, value, path)


def _union(tp: Any, args: tuple, value: Any, path: str) -> Any:
    if value is None and type(None) in args:
        return None
    options = [a for a in args if a is not type(None)]
    for option in options:
        try:
            return _convert(option, value, path)
        except ConfigError:
            if len(options) == 1 or _is_container_error(option, value):
                raise  # a nested error inside the one fitting branch is the useful message
    raise _wrong(tp, value, path)


def _is_container_error(option: Any, value: Any) -> bool:
    """True when `value` has the shape of `option` (so the error lies deeper inside it)."""
    origin = typing.get_origin(option) or option
    if dataclasses.is_dataclass(option) or origin in (dict, typing.Dict):
        return isinstance(value, dict)
    if origin in (list, tuple, typing.List):
        return isinstance(value, (list, tuple))
    return False


def _tuple(tp: Any, args: tuple, value: Any, path: str) -> tuple:
    if not isinstance(value, (list, tuple)):
        raise _wrong(tp, value, path, "write a list, e.g. [a, b]")
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(_convert(args[0], v, join(path, i)) for i, v in enumerate(value))
    if args and len(args) != len(value):
        raise _wrong(tp, value, path, f"give exactly {len(args)} values")
    return tuple(_convert(args[i] if args else Any, v, join(path, i)) for i, v in enumerate(value))


def _scalar(tp: Any, value: Any, path: str) -> Any:
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _wrong(tp, value, path, "write true or false")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            if not INT_MIN <= value <= INT_MAX:  # torch, NumPy and the seeders take 64-bit integers at most
                raise ConfigError(path, f"{value} does not fit in a 64-bit integer",
                                  f"use a whole number from {INT_MIN} to {INT_MAX}")
            return value
        raise _wrong(tp, value, path, "write a whole number, e.g. 3")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and _NUMBER.match(value.strip()):  # PyYAML reads `1e-3` as a string
            return float(value)
        raise _wrong(tp, value, path, "write a number, e.g. 0.001")
    if tp is str:
        if isinstance(value, str):
            return value
        raise _wrong(tp, value, path, "write a string (quote it if it looks like a number or boolean)")
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        raise _wrong(tp, value, path)
    return value  # an annotation we cannot check (a TypeVar, a string we could not resolve)


def _wrong(tp: Any, value: Any, path: str, fix: str = "") -> ConfigError:
    return ConfigError(path, f"expected {type_name(tp)}, got {_shown(value)}",
                       fix or f"give a value of type {type_name(tp)}")


def _shown(value: Any) -> str:
    if value is None:
        return "null"
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})"
