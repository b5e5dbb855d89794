"""What ``crs components`` shows, and ``docs/components.md`` is generated from: one reference per component.

A :class:`ComponentDoc` holds a registered component's description (the first paragraph
of its class docstring, whole), every config key (:func:`crs.config.reference.config_keys`:
type, default, allowed values of ``Literal`` keys, one-line help from the source comment)
and, for the kinds wired by ports (model slots) or filling batch fields (featurizers),
its inputs and outputs with their default state keys and dimensions.

Ports are only known once a component is built, so it is built here: from its config
defaults plus its ``contract_node`` (:func:`crs.testing.contract_node`) against the
tiny world of :func:`crs.testing.make_tiny_deps`, as the component contract does.
A dimension is shown by what it follows: the config key that sets it (found by
building again with that key doubled: ``128 (dim)``), else a size of the data
(``n_items``, ``vocabulary size``, ``nodes of <graph>``), else the number as built.
A component that does not build there keeps its listing and says why.

:func:`format_text` is the terminal form; :func:`markdown` the whole reference
(components by kind, then ``crs components fields`` and ``crs components settings``)
that ``scripts/components_doc.py`` writes to ``docs/components.md``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import re
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

from .config.reference import KeyInfo, config_keys, key_line
from .hookspecs import KINDS
from .kinds import MODEL_KINDS

__all__ = ["PortInfo", "ComponentDoc", "describe", "description", "format_text", "markdown", "builtin_markdown",
           "PORTED_KINDS", "DOC_FILE"]

#: Where the built-in reference is checked in (relative to the repository root).
DOC_FILE = "docs/components.md"

#: Kinds whose reference lists ports: model slots (state keys) and featurizers (the batch fields they add).
PORTED_KINDS: tuple[str, ...] = (*MODEL_KINDS, "featurizer")

_ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|obj|exc):`~?([^`]+)`")


@dataclass(frozen=True)
class PortInfo:
    """One input or output: local port name, default state key, dimension label, optional, meaning."""

    direction: str  # "input" | "output"
    name: str
    key: str
    dim: str = ""  # "" = not checked; "128 (dim)", "n_items", ...
    optional: bool = False
    doc: str = ""


@dataclass
class ComponentDoc:
    """Everything the reference says about one registered component."""

    name: str
    kind: str
    plugin: str
    description: str
    keys: list[KeyInfo]
    ports: list[PortInfo] = field(default_factory=list)
    # why the ports could not be listed (the component did not build on the tiny world); "" otherwise
    ports_error: str = ""

    @property
    def has_ports(self) -> bool:
        return self.kind in PORTED_KINDS


def description(cls: type) -> str:
    """The first paragraph of `cls`'s docstring on one line (never cut inside it), Sphinx roles dropped."""
    doc = (cls.__doc__ or "").strip()
    if not doc:
        return ""
    lines: list[str] = []
    for line in doc.splitlines():
        if not line.strip():
            break
        lines.append(line.strip())
    text = " ".join(lines)
    return _ROLE.sub(r"\1", text).replace("``", "`")


def describe(registry: Any, name: str, deps: Any = None) -> ComponentDoc:
    """The reference of registered component `name`.

    :param deps: the world ports are built against (default :func:`crs.testing.make_tiny_deps`).
    :raises crs.errors.PluginError: its class cannot be imported (the caller reports it).
    """
    info = registry.get(name)
    cls = info.cls  # may raise PluginError: a component that cannot even be imported has no reference
    doc = ComponentDoc(info.name, info.kind, info.plugin, description(cls), config_keys(cls.Config))
    if info.kind in PORTED_KINDS:
        try:
            doc.ports = _ports(registry, info, deps)
        except Exception as err:  # any failure to build is shown, never raised: the listing must go on
            first = str(err).strip().splitlines()[0] if str(err).strip() else ""
            doc.ports_error = f"{type(err).__name__}: {first}" if first else type(err).__name__
    return doc


# ------------------------------------------------------------------ ports
@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence what building prints (library warnings, log lines): the reference is the only output."""
    sink = io.StringIO()
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(logging.NOTSET)


def _build(registry: Any, info: Any, node: dict, deps: Any) -> Any:
    with _quiet():
        return registry.build(info.kind, {**node, "type": info.name}, info.name, deps)


def _declared(component: Any, kind: str) -> dict[tuple[str, str], Any]:
    """(direction, port name) -> Port (model slots) or Field (featurizers), in declaration order."""
    if kind == "featurizer":
        return {("output", key.removeprefix("batch.")): spec for spec in component.fields() for key in spec.keys}
    return {**{("input", n): p for n, p in component.input_ports().items()},
            **{("output", n): p for n, p in component.output_ports().items()}}


def _ports(registry: Any, info: Any, deps: Any) -> list[PortInfo]:
    from .testing import contract_node, make_tiny_deps

    deps = make_tiny_deps(info.name) if deps is None else deps
    node = contract_node(info.cls)
    component = _build(registry, info, node, deps)
    declared = _declared(component, info.kind)
    if info.kind == "featurizer":
        return [PortInfo("output", f"{spec.name}_mask" if name.endswith("_mask") and spec.collate == "pad"
                         else spec.name, f"batch.{name}",
                         doc=f"bool {spec.shape}: True on real values" if name.endswith("_mask") and
                         spec.collate == "pad" else f"{spec.dtype} {spec.shape}: {spec.doc}".replace("  ", " "))
                for (_, name), spec in declared.items()]
    labels = _dim_labels(registry, info, node, deps, component, declared)
    return [PortInfo(direction, name, port.key, labels.get((direction, name), ""), bool(port.optional), port.doc)
            for (direction, name), port in declared.items()]


def _dim_labels(registry: Any, info: Any, node: dict, deps: Any, component: Any,
                declared: dict[tuple[str, str], Any]) -> dict[tuple[str, str], str]:
    """(direction, port) -> how its dim reads: the config key(s) it follows, a data size, or the number."""
    dims = {k: port.dim for k, port in declared.items() if port.dim is not None}
    if not dims:
        return {}
    follows: dict[tuple[str, str], list[str]] = {k: [] for k in dims}
    config = getattr(component, "config", None)
    for f in dataclasses.fields(config) if dataclasses.is_dataclass(config) else ():
        value = getattr(config, f.name)
        if type(value) is not int or value <= 0:  # ints only (not bools); 0 often means "off"
            continue
        try:
            other = _declared(_build(registry, info, {**node, f.name: value * 2}, deps), info.kind)
        except Exception:  # doubled, the config does not build (e.g. a divisibility check): no verdict
            continue
        for k, dim in dims.items():
            if k in other and other[k].dim != dim:
                follows[k].append(f.name)
    sizes = {len(deps.items): "n_items"} if deps.items is not None else {}
    if deps.vocab is not None:
        sizes.setdefault(len(deps.vocab), "vocabulary size")
    for graph_name, graph in sorted(deps.graphs.items()):
        sizes.setdefault(int(graph.num_nodes), f"nodes of {graph_name}")
    return {k: f"{dim} ({', '.join(follows[k])})" if follows[k] else sizes.get(dim, str(dim))
            for k, dim in dims.items()}


# ------------------------------------------------------------------ text
def format_text(doc: ComponentDoc, indent: str = "  ") -> str:
    """The terminal block: ``name  [plugin]  description``, one line per key, one per port."""
    lines = [f"{indent}{doc.name}  [{doc.plugin}]  {doc.description}".rstrip()]
    inner = indent + "    "
    lines += [f"{inner}{key_line(key)}" for key in doc.keys]
    if doc.ports_error:
        lines.append(f"{inner}ports: unknown, it does not build from its defaults on crs.testing's tiny world "
                     f"({doc.ports_error})")
    elif doc.ports:
        rows = [(p.direction, p.name, ("<- " if p.direction == "input" else "-> ") + p.key,
                 f"dim {p.dim}" if p.dim else "", "optional" if p.optional else "", p.doc) for p in doc.ports]
        widths = [max(len(row[i]) for row in rows) for i in range(5)]
        for row in rows:
            cells = [cell.ljust(width) for cell, width in zip(row[:5], widths)] + [row[5]]
            lines.append(f"{inner}{'  '.join(cells)}".rstrip())
    return "\n".join(lines)


# --------------------------------------------------------------- markdown
def markdown(registry: Any, names: Iterable[str] | None = None, *, title: str = "Components") -> str:
    """The whole reference as Markdown: components by kind, batch fields, pipeline settings.

    :param names: components to include (default: every registered one); kinds keep their order.
    """
    from .config.spec import PipelineSpec
    from .data.fields import field_table

    wanted = set(registry.names() if names is None else names)
    by_kind = {kind: [n for n in registry.names(kind) if n in wanted] for kind in KINDS}
    by_kind = {kind: names_ for kind, names_ in by_kind.items() if names_}
    out = [f"# {title}", "",
           "<!-- Generated by `python scripts/components_doc.py` (the same data as `crs components`); do not edit. "
           "tests/test_components_reference.py fails when this file is not current. -->", "",
           "Every registered component with its config keys (type, default, allowed values, help) and, for model "
           "slots and featurizers, its ports: the state keys it reads and writes by default (rename them with "
           "`inputs:` / `outputs:`) and their last dimension. Ports are listed as built from the component's "
           "defaults (plus its `contract_node`) on `crs.testing`'s tiny world; a dimension names the config key it "
           "follows, e.g. `128 (dim)`, or the data size it is, e.g. `n_items`. The batch fields and the pipeline "
           "settings outside components follow at the end (`crs components fields`, `crs components settings`).",
           "", "| kind | components |", "|---|---|"]
    for kind, names_ in by_kind.items():
        out.append(f"| {kind} | {', '.join(f'[`{n}`](#{_anchor(n)})' for n in names_)} |")
    out.append("")
    for kind, names_ in by_kind.items():
        out += [f"## {kind}", ""]
        for name in names_:
            out += _component_markdown(registry, name)
    out += ["## Batch fields (`crs components fields`)", "",
            "What model slots can read as inputs, before any featurizer adds its own.", "", field_table(), "",
            "## Pipeline settings (`crs components settings`)", "",
            "The keys of a run file outside component nodes; `<i>` is a list index.", "",
            "| key | type | default | help |", "|---|---|---|---|"]
    out += [_key_row(key) for key in config_keys(PipelineSpec)]
    return "\n".join(out) + "\n"


def builtin_markdown() -> str:
    """:func:`markdown` of the built-in plugins only: what ``docs/components.md`` holds on every machine,
    whatever third-party plugins are installed there."""
    from .plugin_manager import DEFAULT_PLUGINS, get_plugin_manager
    from .registry import Registry

    registry = Registry.from_plugin_manager(get_plugin_manager())
    names = [name for name in registry.names() if registry.get(name).plugin in DEFAULT_PLUGINS]
    return markdown(registry, names, title="Built-in components")


def _component_markdown(registry: Any, name: str) -> list[str]:
    from .errors import CRSError

    try:
        doc = describe(registry, name)
    except CRSError as err:
        return [f"### {name}", "", f"Cannot be loaded: {_cell(str(err))}", ""]
    out = [f"### {name}", "", f"{doc.description} Plugin `{doc.plugin}`.".strip(), ""]
    if doc.keys:
        out += ["| key | type | default | help |", "|---|---|---|---|", *(_key_row(k) for k in doc.keys), ""]
    else:
        out += ["No config keys.", ""]
    if doc.ports_error:
        out += [f"Ports unknown: it does not build from its defaults on the tiny world ({_cell(doc.ports_error)}).",
                ""]
    elif doc.ports:
        out += ["| port | reads / writes | default key | dim | meaning |", "|---|---|---|---|---|"]
        for p in doc.ports:
            role = ("reads" if p.direction == "input" else "writes") + (" (optional)" if p.optional else "")
            out.append(f"| `{p.name}` | {role} | `{p.key}` | {_cell(p.dim)} | {_cell(p.doc)} |")
        out.append("")
    return out


def _key_row(key: KeyInfo) -> str:
    default = "required" if key.required else f"`{_cell(repr(key.default))}`"
    return f"| `{key.key}` | `{_cell(key.type)}` | {default} | {_cell(key.help)} |"


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _anchor(name: str) -> str:
    """GitHub's heading anchor of ``### name``."""
    return re.sub(r"[^\w\- ]", "", name.lower()).replace(" ", "-")
