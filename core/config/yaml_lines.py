"""Where each config value came from: file and line for YAML values, the text of CLI overrides.

A :class:`SourceMap` holds one layer per place values came from (registry preset,
corpus bundle, config file, each override), in increasing precedence.  ``where(path)``
answers with the layer that has the deepest match for the dotted path (ties go to
the later layer, which won the merge), e.g. ``examples/x.yaml:12``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import yaml

from .validate import join


@dataclass
class _Layer:
    label: str  # file name, or the override text
    lines: dict[str, int | None] = field(default_factory=dict)  # dotted path -> 1-based line (None: no line)


class SourceMap:
    """Maps dotted config paths to ``file:line`` (or ``override 'k=v'``) for error messages."""

    def __init__(self) -> None:
        self._layers: list[_Layer] = []

    def add_yaml(self, label: str, text: str, prefix: str = "") -> None:
        """Add the key lines of YAML `text`; only paths under `prefix` (which is stripped) are kept."""
        try:
            root = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError:
            root = None  # the loader reports malformed YAML itself
        lines: dict[str, int | None] = {"": None}
        if root is not None:
            _walk(root, "", lines)
        if prefix:
            cut = prefix + "."
            lines = {"": lines.get(prefix)} | {p[len(cut):]: n for p, n in lines.items() if p.startswith(cut)}
        self._layers.append(_Layer(label, lines))

    def add_override(self, key: str, text: str) -> None:
        """Add one command-line override `text` that set dotted `key`."""
        self._layers.append(_Layer(f"override '{text}'", {key: None}))

    def where(self, path: str) -> str | None:
        """``label:line`` of the layer that set `path` (or its closest ancestor); None if unknown."""
        best: tuple[int, int, str] | None = None  # (depth, layer index, answer)
        candidates = _ancestors(path)
        for index, layer in enumerate(self._layers):
            for depth, candidate in candidates:
                if candidate in layer.lines:
                    line = layer.lines[candidate]
                    answer = f"{layer.label}:{line}" if line is not None else layer.label
                    if best is None or (depth, index) >= best[:2]:
                        best = (depth, index, answer)
                    break
        return best[2] if best else None


def _ancestors(path: str) -> list[tuple[int, str]]:
    """The path and its ancestors, deepest first, with their depth ("" has depth 0)."""
    parts = path.split(".") if path else []
    return [(n, ".".join(parts[:n])) for n in range(len(parts), -1, -1)]


def _walk(node: yaml.Node, path: str, lines: dict[str, int | None]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = join(path, key_node.value)
            lines[key] = key_node.start_mark.line + 1
            _walk(value_node, key, lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            key = join(path, index)
            lines[key] = item.start_mark.line + 1
            _walk(item, key, lines)
