"""One error hierarchy for everything a user can get wrong.

Every error is meant to be printed as-is by the CLI (no traceback): it names the
place (YAML path, file and line, plugin), says what is wrong, and says how to fix it.
"""
from __future__ import annotations

import difflib
from typing import Any, Iterable


class CRSError(Exception):
    """Base class: the CLI prints `str(err)` and exits non-zero."""

    exit_code = 2


class ConfigError(CRSError):
    """A config value is missing, misspelt, of the wrong type or does not fit."""

    def __init__(self, path: str, problem: str, fix: str = "", *, source: str | None = None):
        self.path, self.problem, self.fix, self.source = path, problem, fix, source
        where = f"{source}: " if source else ""
        text = f"{where}config key '{path}': {problem}" if path else f"{where}{problem}"
        if fix:
            text += f"\n  fix: {fix}"
        super().__init__(text)

    def __str__(self) -> str:  # KeyError subclasses would otherwise quote the message
        return self.args[0]


class UnknownComponentError(ConfigError, KeyError):
    """A `type:` (or preset, slot, kind) name that nothing registered."""

    def __init__(self, path: str, what: str, name: str, available: Iterable[str], *, source: str | None = None):
        names = sorted(available)
        self.name, self.available = name, names
        super().__init__(
            path,
            f"unknown {what} '{name}'.{did_you_mean(name, names)}",
            f"use one of: {', '.join(names) if names else '(none registered)'}",
            source=source,
        )


class PluginError(CRSError):
    """A plugin failed to import, or two plugins claim the same name."""


class DataError(CRSError):
    """A data file is missing, unreadable or malformed; names the file and line."""

    def __init__(self, file: str, problem: str, fix: str = "", *, line: int | None = None):
        self.file, self.line, self.problem = file, line, problem
        where = f"{file}:{line}" if line is not None else str(file)
        text = f"{where}: {problem}"
        if fix:
            text += f"\n  fix: {fix}"
        super().__init__(text)


class WiringError(ConfigError):
    """Two pipeline slots do not fit each other (missing input, dimension mismatch)."""


def check_positive_ints(config: Any, keys: Iterable[str], path: str, fix: str = "") -> None:
    """A ConfigError at ``<path>.<key>`` for the first of `keys` whose value in `config` is below 1 (sizes, counts)."""
    for key in keys:
        if int(getattr(config, key)) < 1:
            raise ConfigError(f"{path}.{key}", f"must be a positive integer, got {getattr(config, key)}", fix)


def check_choice(value: str, choices: Iterable[str], path: str, fix: str = "") -> str:
    """`value` if it is one of `choices`; otherwise a ConfigError at `path` with a did-you-mean."""
    choices = list(choices)
    if value not in choices:
        raise ConfigError(path, f"'{value}' is not a valid choice.{did_you_mean(value, choices)}",
                          fix or f"use one of: {', '.join(choices)}")
    return value


def clip(text: str, limit: int, marker: str = "...") -> str:
    """`text` cut to `limit` characters for a message, ending in `marker` when cut (a value can be arbitrarily long)."""
    return text if len(text) <= limit else text[:limit - len(marker)] + marker


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """' Did you mean 'x'?' for the closest candidate, or '' when nothing is close."""
    close = difflib.get_close_matches(str(name), list(candidates), n=1, cutoff=0.6)
    return f" Did you mean '{close[0]}'?" if close else ""
