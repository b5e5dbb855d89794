"""The component registry: registered names -> component classes, and building from YAML nodes.

A :class:`Registry` is filled once from a plugin manager by calling every
``crs_register_<kind>s`` hook implementation with a ``register(name, component)``
callback that knows the kind and the calling plugin.  Names are unique across all
kinds.  ``component`` is a class or a lazy ``"module:Class"`` reference, imported
on first use so that listing names imports no torch.

A YAML component node is a mapping ``{type: NAME, <config keys>}`` (or just the
string ``NAME``).  Model kinds may also carry ``inputs: {port: key}`` /
``outputs: {port: key}`` port renames; these are not config keys and end up on the
built instance as ``instance.port_renames``.
"""
from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field
from typing import Any, Iterable

from .config.validate import field_types, from_dict, join, type_name
from .errors import ConfigError, PluginError, UnknownComponentError, did_you_mean
from .hookspecs import KINDS
from .kinds import MODEL_KINDS as _MODEL_KINDS  # from the kind table; importing it loads no torch
from .kinds import base_class

PORT_KEYS = ("inputs", "outputs")


@dataclass
class ComponentInfo:
    """One registered component.  ``cls`` imports and checks a lazy reference on first access."""

    name: str
    kind: str
    plugin: str
    ref: Any = field(repr=False)  # the class or "module:Class"
    _cls: type | None = field(default=None, repr=False, compare=False)

    @property
    def cls(self) -> type:
        if self._cls is None:
            self._cls = _resolve(self)
        return self._cls

    @property
    def description(self) -> str:
        """First line of the class docstring ('' when it has none)."""
        doc = (self.cls.__doc__ or "").strip()
        return doc.splitlines()[0].strip() if doc else ""

    @property
    def is_model(self) -> bool:
        return self.kind in _MODEL_KINDS


@dataclass
class NodeCheck:
    """A validated component node: what to build and with which config."""

    info: ComponentInfo
    config: Any
    port_renames: dict[str, dict[str, str]]


class Registry:
    """Registered components of every kind.  Build one per plugin manager."""

    def __init__(self, plugin_versions: dict[str, str] | None = None):
        self._entries: dict[str, ComponentInfo] = {}
        self.plugin_versions: dict[str, str] = dict(plugin_versions or {})

    # -------------------------------------------------------------- filling
    @classmethod
    def from_plugin_manager(cls, pm) -> "Registry":
        """Call every registration hook of `pm`, remembering which plugin registered what.

        :raises PluginError: a name is registered twice (naming both plugins), a
            registration is malformed, or a hook implementation fails.
        """
        registry = cls(getattr(pm, "plugin_versions", {}))
        for name, plugin in pm.list_name_plugin():
            if plugin is None:  # a blocked name (CRS_DISABLE_PLUGINS): pluggy keeps it with no plugin
                continue
            registry.plugin_versions.setdefault(name, getattr(pm, "plugin_versions", {}).get(name, "unknown"))
        for kind, hook_name in KINDS.items():
            for impl in getattr(pm.hook, hook_name).get_hookimpls():
                register = registry.registrar(kind, impl.plugin_name)
                try:
                    impl.function(*[{"register": register}[arg] for arg in impl.argnames])
                except (PluginError, ConfigError):
                    raise
                except Exception as err:  # a broken plugin must not produce a bare traceback
                    raise PluginError(
                        f"plugin '{impl.plugin_name}' failed in {hook_name}: {type(err).__name__}: {err}\n"
                        f"  fix: update or reinstall the plugin, or disable it with "
                        f"CRS_DISABLE_PLUGINS={impl.plugin_name}"
                    ) from err
        return registry

    def registrar(self, kind: str, plugin: str):
        """The ``register(name, component)`` callback handed to `plugin`'s hook for `kind`."""

        def register(name: str, component: type | str) -> None:
            self.add(kind, name, component, plugin)

        return register

    def add(self, kind: str, name: str, component: type | str, plugin: str = "?") -> ComponentInfo:
        """Register one component (what the hook callback does)."""
        if kind not in KINDS:
            raise PluginError(f"plugin '{plugin}' registered '{name}' under unknown kind '{kind}'")
        if not isinstance(name, str) or not name or not name.replace("_", "").replace("-", "").isalnum():
            raise PluginError(f"plugin '{plugin}' registered an invalid {kind} name {name!r}\n"
                              f"  fix: names are non-empty strings of letters, digits, '_' and '-'")
        if isinstance(component, str):
            module, _, attr = component.partition(":")
            if not module or not attr:
                raise PluginError(f"plugin '{plugin}' registered {kind} '{name}' as {component!r}, "
                                  f"which is not a 'package.module:ClassName' reference")
        elif not isinstance(component, type):
            raise PluginError(f"plugin '{plugin}' registered {kind} '{name}' as {component!r}: "
                              f"expected a class or a 'module:Class' string")
        if name in self._entries:
            other = self._entries[name]
            raise PluginError(
                f"component name '{name}' is registered twice: as a {other.kind} by plugin '{other.plugin}' "
                f"and as a {kind} by plugin '{plugin}'\n"
                f"  fix: rename one of them, or disable a plugin with CRS_DISABLE_PLUGINS={plugin}"
            )
        info = ComponentInfo(name, kind, plugin, component)
        self._entries[name] = info
        return info

    # -------------------------------------------------------------- queries
    def get(self, name: str) -> ComponentInfo:
        """The component registered as `name` (any kind); UnknownComponentError if none."""
        if name not in self._entries:
            raise UnknownComponentError("", "component", name, self._entries)
        return self._entries[name]

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def names(self, kind: str | None = None) -> list[str]:
        """Sorted names, of one kind or of all."""
        if kind is not None and kind not in KINDS:
            raise UnknownComponentError("", "component kind", kind, KINDS)
        return sorted(n for n, e in self._entries.items() if kind is None or e.kind == kind)

    def kinds(self) -> list[str]:
        """Every component kind, in the order `crs components` lists them."""
        return list(KINDS)

    def by_plugin(self) -> dict[str, dict[str, list[str]]]:
        """plugin name -> kind -> sorted names it registered (plugins registering nothing included)."""
        out: dict[str, dict[str, list[str]]] = {p: {} for p in self.plugin_versions}
        for name in sorted(self._entries):
            entry = self._entries[name]
            out.setdefault(entry.plugin, {}).setdefault(entry.kind, []).append(name)
        return out

    def config_fields(self, name: str) -> list[tuple[str, str, str, bool]]:
        """(field, type, default, required) for each config key of component `name`."""
        config_cls = self.get(name).cls.Config
        hints = field_types(config_cls)
        rows = []
        for f in dataclasses.fields(config_cls):
            if f.default is not dataclasses.MISSING:
                default, required = repr(f.default), False
            elif f.default_factory is not dataclasses.MISSING:
                default, required = repr(f.default_factory()), False
            else:
                default, required = "", True
            rows.append((f.name, type_name(hints.get(f.name, Any)), default, required))
        return rows

    # -------------------------------------------------------------- building
    def check_node(self, kinds: str | Iterable[str], node: Any, path: str, source: Any = None) -> NodeCheck:
        """Validate a component node without building it (type exists, is of `kinds`, config fits).

        :raises UnknownComponentError: `type` names nothing of these kinds (did-you-mean included).
        :raises ConfigError: missing `type`, a component of another kind, or a bad config key/value.
        """
        from .config.validate import locate

        try:
            return self._check_node(_as_tuple(kinds), node, path)
        except ConfigError as err:
            raise locate(err, source)

    def build(self, kinds: str | Iterable[str], node: Any, path: str, deps: Any = None) -> Any:
        """Validate `node` and construct the component as ``cls(config, deps)``.

        `deps` is a :class:`crs.interfaces.BuildDeps` (an empty one when None); its
        ``path`` is set to `path`.  Model components get ``port_renames`` attached
        and their rename keys checked against the ports they declare.
        """
        checked = self.check_node(kinds, node, path)
        from .interfaces import BuildDeps  # torch import only once something is built

        deps = BuildDeps(path=path) if deps is None else dataclasses.replace(deps, path=path)
        instance = checked.info.cls(checked.config, deps)
        if checked.info.is_model:
            instance.port_renames = checked.port_renames
            _check_port_renames(instance, checked.port_renames, path)
        return instance

    def _check_node(self, kinds: tuple[str, ...], node: Any, path: str) -> NodeCheck:
        for kind in kinds:
            if kind not in KINDS:
                raise UnknownComponentError(path, "component kind", kind, KINDS)
        wanted = "model component" if set(kinds) == set(_MODEL_KINDS) else " or ".join(kinds)
        if isinstance(node, str):
            node = {"type": node}
        if not isinstance(node, dict):
            raise ConfigError(path, f"expected a {wanted} node (a mapping with `type:` or a type name), "
                                    f"got {node!r}", f"write e.g. `{path.rsplit('.', 1)[-1] or 'x'}: {{type: NAME}}`")
        choices = [n for k in kinds for n in self.names(k)]
        type_path = join(path, "type")
        if "type" not in node:
            raise ConfigError(type_path, f"the {wanted} node has no `type:`",
                              f"add `type: NAME` with one of: {', '.join(sorted(choices)) or '(none registered)'}")
        name = node["type"]
        if not isinstance(name, str):
            raise ConfigError(type_path, f"`type` must be a registered name, got {name!r}",
                              f"use one of: {', '.join(sorted(choices))}")
        info = self._entries.get(name)
        if info is None:
            raise UnknownComponentError(type_path, wanted, name, choices)
        if info.kind not in kinds:
            raise ConfigError(type_path, f"'{name}' is a {info.kind} (from plugin '{info.plugin}'), "
                                         f"but this slot needs a {wanted}.{did_you_mean(name, choices)}",
                              f"use a {wanted}: {', '.join(sorted(choices)) or '(none registered)'}")
        rest = {k: v for k, v in node.items() if k != "type"}
        renames = {"inputs": {}, "outputs": {}}
        if info.is_model:
            for key in PORT_KEYS:
                renames[key] = _port_map(rest.pop(key, None) or {}, join(path, key))
        config = from_dict(info.cls.Config, rest, path)
        return NodeCheck(info, config, renames)


def _as_tuple(kinds: str | Iterable[str]) -> tuple[str, ...]:
    return (kinds,) if isinstance(kinds, str) else tuple(kinds)


def _port_map(value: Any, path: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ConfigError(path, f"expected a mapping of port name -> state key, got {value!r}",
                          "write e.g. `inputs: {entities: batch.context_entities}`")
    return dict(value)


def _check_port_renames(instance: Any, renames: dict[str, dict[str, str]], path: str) -> None:
    declared = {"inputs": instance.input_ports(), "outputs": instance.output_ports()}
    for key, mapping in renames.items():
        for local in mapping:
            if local not in declared[key]:
                names = sorted(declared[key])
                raise ConfigError(join(join(path, key), local),
                                  f"'{local}' is not one of this component's {key[:-1]} ports."
                                  f"{did_you_mean(local, names)}",
                                  f"rename one of: {', '.join(names) or '(it has none)'}")


def _resolve(info: ComponentInfo) -> type:
    ref = info.ref
    if isinstance(ref, str):
        module_name, _, attr = ref.partition(":")
        try:
            module = importlib.import_module(module_name)
        except Exception as err:
            raise PluginError(
                f"{info.kind} '{info.name}' from plugin '{info.plugin}' cannot be loaded: importing "
                f"{module_name} failed with {type(err).__name__}: {err}\n"
                f"  fix: reinstall the plugin, or disable it with CRS_DISABLE_PLUGINS={info.plugin}"
            ) from err
        cls = module
        for part in attr.split("."):
            cls = getattr(cls, part, None)
        if cls is None:
            raise PluginError(f"{info.kind} '{info.name}' from plugin '{info.plugin}': module {module_name} "
                              f"has no attribute '{attr}'\n  fix: correct the registration reference {ref!r}")
    else:
        cls = ref
    base = base_class(info.kind)
    if not isinstance(cls, type) or not issubclass(cls, base):
        raise PluginError(f"{info.kind} '{info.name}' from plugin '{info.plugin}' is {cls!r}, which is not a "
                          f"subclass of {base.__module__}.{base.__name__}\n  fix: derive it from {base.__name__}")
    if not dataclasses.is_dataclass(getattr(cls, "Config", None)):
        raise PluginError(f"{info.kind} '{info.name}' from plugin '{info.plugin}': {cls.__name__}.Config is "
                          f"not a dataclass\n  fix: decorate the nested Config class with @dataclass")
    return cls
