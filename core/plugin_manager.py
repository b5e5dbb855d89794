"""The plugin manager factory: built-in plugins, third-party entry points, and blocking.

Nothing here runs at import time and nothing is global: every call to
:func:`get_plugin_manager` returns a fresh :class:`pluggy.PluginManager` (a
:class:`CRSPluginManager`), so tests and tools can build as many independent
managers as they like.

Plugin names
    A built-in plugin is registered under its module name (``crs.plugins.kgsf``);
    a third-party plugin under its entry-point name (``template`` for
    ``[project.entry-points.crs] template = "crs_plugin_template"``).

Blocking plugins
    ``CRS_DISABLE_PLUGINS=a,b`` (and the ``disable=`` argument) block plugins by
    entry-point name, by module name, or, for built-ins, by the last part of the
    module name (``kgsf`` blocks ``crs.plugins.kgsf``).
"""
from __future__ import annotations

import importlib
import importlib.metadata
import os
from typing import Iterable

import pluggy

from . import hookspecs
from .errors import PluginError

DEFAULT_PLUGINS: tuple[str, ...] = (
    "crs.plugins.metrics",
    "crs.plugins.training",
    "crs.plugins.linking",
    "crs.plugins.demo",
    "crs.plugins.datasets",
    "crs.plugins.baselines",
    "crs.plugins.kgsf",
    "crs.plugins.ccrs",
    "crs.plugins.c2crs",
    "crs.plugins.plm",
    "crs.plugins.mese",
)
ENTRY_POINT_GROUP = "crs"
DISABLE_ENV = "CRS_DISABLE_PLUGINS"
PROJECT = "crs"  # pluggy project name; must match the markers in crs.hookspecs


class CRSPluginManager(pluggy.PluginManager):
    """A pluggy manager that also remembers where each plugin came from.

    ``plugin_versions[name]`` is the distribution version of an entry-point plugin
    (``crs.__version__`` for built-ins); ``plugin_modules[name]`` its module name;
    ``plugin_dists[name]`` the distribution that ships it; ``disabled`` the names
    that were blocked.
    """

    def __init__(self) -> None:
        super().__init__(PROJECT)
        self.plugin_versions: dict[str, str] = {}
        self.plugin_modules: dict[str, str] = {}
        self.plugin_dists: dict[str, str] = {}
        self.disabled: set[str] = set()

    def register_module(self, plugin: object, name: str | None = None, *, version: str = "",
                        dist: str = "") -> str:
        """Register `plugin` (a module or object with hookimpls) and record its origin.

        Invalid hook implementations become a PluginError naming the plugin.
        Returns the name it was registered under.
        """
        module = getattr(plugin, "__name__", None) or type(plugin).__module__
        name = name or self.get_canonical_name(plugin)
        try:
            registered = self.register(plugin, name)
        except pluggy.PluginValidationError as err:
            raise PluginError(
                f"plugin '{name}' (module {module}) has an invalid hook implementation: {err}\n"
                f"  fix: match the hook signatures in crs.hookspecs, or disable it with {DISABLE_ENV}={name}"
            ) from err
        except ValueError as err:  # pluggy: name already taken or object registered twice
            raise PluginError(
                f"cannot register plugin '{name}' (module {module}): {err}\n"
                f"  fix: give the entry point a unique name, or disable one with {DISABLE_ENV}={name}"
            ) from err
        if registered is None:  # blocked name: pluggy silently refuses it
            return name
        self.plugin_versions[name] = version or _crs_version()
        self.plugin_modules[name] = module
        self.plugin_dists[name] = dist
        return name

    def unregister(self, plugin=None, name=None):  # keep the origin tables in step with pluggy
        removed = super().unregister(plugin, name)
        for table in (self.plugin_versions, self.plugin_modules, self.plugin_dists):
            for key in [k for k in table if self.get_plugin(k) is None]:
                table.pop(key, None)
        return removed

    def check_pending(self) -> None:
        """pluggy's check, with the offending plugin named in a PluginError."""
        try:
            super().check_pending()
        except pluggy.PluginValidationError as err:
            name = self.get_name(err.plugin) or "?"
            raise PluginError(
                f"plugin '{name}' implements a hook crs does not define: {err}\n"
                f"  fix: check the hook name against crs.hookspecs (e.g. crs_register_recommenders), "
                f"or disable it with {DISABLE_ENV}={name}"
            ) from err


def get_plugin_manager(*, load_entry_points: bool = True, disable: Iterable[str] | None = None,
                       builtins: Iterable[str] | None = None) -> CRSPluginManager:
    """A fresh plugin manager with the crs hookspecs and every enabled plugin registered.

    :param load_entry_points: also load third-party plugins from the ``crs`` entry-point group.
    :param disable: plugin names to block, on top of ``$CRS_DISABLE_PLUGINS``.
    :param builtins: module names of the built-in plugins; default :data:`DEFAULT_PLUGINS`
        (pass ``()`` for a bare manager, e.g. in tests).
    :raises PluginError: a plugin fails to import, or implements an unknown or malformed hook.
    """
    pm = CRSPluginManager()
    pm.add_hookspecs(hookspecs)
    blocked = _blocked_names(disable)
    pm.disabled = set(blocked)
    for name in blocked:
        pm.set_blocked(name)
    for module_name in DEFAULT_PLUGINS if builtins is None else tuple(builtins):
        if _is_blocked(blocked, module_name, module_name):
            continue
        module = _import_plugin(module_name, module_name, builtin=True)
        pm.register_module(module, module_name, version=_crs_version(), dist="crs-registry")
    if load_entry_points:
        _load_entry_points(pm, blocked)
    pm.check_pending()
    return pm


def _blocked_names(disable: Iterable[str] | None) -> set[str]:
    names = {n.strip() for n in os.environ.get(DISABLE_ENV, "").split(",") if n.strip()}
    names.update(n.strip() for n in (disable or ()) if n and n.strip())
    return names


def _is_blocked(blocked: set[str], name: str, module: str) -> bool:
    short = module.rsplit(".", 1)[-1]
    return bool(blocked & {name, module, short})


def _load_entry_points(pm: CRSPluginManager, blocked: set[str]) -> None:
    seen: set[tuple[str, str]] = set()
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        module = ep.value.split(":", 1)[0].strip()
        if (ep.name, ep.value) in seen:  # the same dist visible twice on sys.path
            continue
        seen.add((ep.name, ep.value))
        if _is_blocked(blocked, ep.name, module):
            continue
        dist = getattr(ep, "dist", None)
        if pm.has_plugin(ep.name):
            if pm.plugin_modules.get(ep.name) == module:
                continue  # the same plugin reached through two sys.path entries
            raise PluginError(
                f"two plugins are named '{ep.name}': module {pm.plugin_modules.get(ep.name)} "
                f"({pm.plugin_dists.get(ep.name) or '?'}) and module {module} "
                f"({dist.metadata['Name'] if dist else '?'})\n"
                f"  fix: uninstall one of them, or disable both with {DISABLE_ENV}={ep.name}"
            )
        try:
            plugin = ep.load()
        except Exception as err:  # any failure in third-party code: report, never a traceback
            raise _import_error(ep.name, module, err, builtin=False,
                                dist=dist.metadata["Name"] if dist else "") from err
        pm.register_module(plugin, ep.name, version=dist.version if dist else "unknown",
                           dist=dist.metadata["Name"] if dist else "")


def _import_plugin(name: str, module: str, *, builtin: bool):
    try:
        return importlib.import_module(module)
    except Exception as err:
        raise _import_error(name, module, err, builtin=builtin) from err


def _import_error(name: str, module: str, err: Exception, *, builtin: bool, dist: str = "") -> PluginError:
    reinstall = "reinstall crs-registry (pip install -e .)" if builtin else \
        f"reinstall the package that provides it ({dist or 'its distribution'})"
    return PluginError(
        f"plugin '{name}' (module {module}) failed to import: {type(err).__name__}: {err}\n"
        f"  fix: {reinstall}, or disable it with {DISABLE_ENV}={name}"
    )


def _crs_version() -> str:
    from . import __version__  # crs/__init__.py; cheap, but keeps import order free of cycles

    return __version__
