"""The plugin manager: built-ins, entry points, blocking, and what a broken plugin says."""
import sys
import types

import pytest

import crs
from crs.errors import PluginError
from crs.hookspecs import hookimpl
from crs.plugin_manager import DEFAULT_PLUGINS, get_plugin_manager
from crs.registry import Registry
from crs.testing import registering, write_entry_point_plugin

GOOD_SOURCE = '''
from crs.hookspecs import hookimpl

@hookimpl
def crs_register_metrics(register):
    register("fake_metric", "fake_module:FakeMetric")
'''


@pytest.fixture
def clean_modules():
    """Names of modules a test creates; removed from sys.modules afterwards."""
    names: list[str] = []
    try:
        yield names
    finally:
        for name in names:
            sys.modules.pop(name, None)


def _fake_module(name: str, clean_modules: list, **hooks) -> types.ModuleType:
    module = types.ModuleType(name)
    for hook, fn in hooks.items():
        setattr(module, hook, hookimpl(fn))
    sys.modules[name] = module
    clean_modules.append(name)
    return module


def test_each_call_returns_an_independent_bare_manager():
    first = get_plugin_manager(load_entry_points=False, builtins=())
    second = get_plugin_manager(load_entry_points=False, builtins=())
    assert first is not second
    plugin = types.SimpleNamespace(crs_register_metrics=hookimpl(lambda register: None))
    first.register(plugin, "only_in_first")
    try:
        assert first.has_plugin("only_in_first") and not second.has_plugin("only_in_first")
        assert hasattr(second.hook, "crs_register_recommenders")  # hookspecs added
    finally:
        first.unregister(name="only_in_first")


def test_default_plugins_are_the_documented_modules():
    assert DEFAULT_PLUGINS[0] == "crs.plugins.metrics" and "crs.plugins.kgsf" in DEFAULT_PLUGINS
    assert "crs.plugins.plm" in DEFAULT_PLUGINS and "crs.plugins.ccrs" in DEFAULT_PLUGINS
    assert "crs.plugins.c2crs" in DEFAULT_PLUGINS
    assert "crs.plugins.mese" in DEFAULT_PLUGINS
    assert len(DEFAULT_PLUGINS) == len(set(DEFAULT_PLUGINS)) == 11


def test_builtin_is_registered_under_its_module_name_with_the_crs_version(clean_modules):
    _fake_module("fake_builtin_a", clean_modules, crs_register_metrics=lambda register: None)
    pm = get_plugin_manager(load_entry_points=False, builtins=["fake_builtin_a"])
    assert pm.has_plugin("fake_builtin_a")
    assert pm.plugin_versions["fake_builtin_a"] == crs.__version__ == "0.1.0"


def test_missing_builtin_is_a_plugin_error_naming_it():
    with pytest.raises(PluginError) as info:
        get_plugin_manager(load_entry_points=False, builtins=["crs.plugins.no_such_plugin"])
    text = str(info.value)
    assert "crs.plugins.no_such_plugin" in text and "ModuleNotFoundError" in text
    assert "CRS_DISABLE_PLUGINS=crs.plugins.no_such_plugin" in text


def test_broken_plugin_import_names_plugin_module_exception_and_fix(tmp_path, monkeypatch, clean_modules):
    write_entry_point_plugin(tmp_path, "brokenplug", "broken_plug_mod", "raise RuntimeError('boom at import')\n",
                             version="2.0.0")
    monkeypatch.syspath_prepend(str(tmp_path))
    clean_modules.append("broken_plug_mod")
    with pytest.raises(PluginError) as info:
        get_plugin_manager(builtins=())
    text = str(info.value)
    for part in ("'brokenplug'", "broken_plug_mod", "RuntimeError: boom at import", "reinstall",
                 "fake-brokenplug", "CRS_DISABLE_PLUGINS=brokenplug"):
        assert part in text
    assert "\n" in text and "Traceback" not in text


def test_entry_point_plugin_is_loaded_with_its_dist_version(tmp_path, monkeypatch, clean_modules):
    write_entry_point_plugin(tmp_path, "goodplug", "good_plug_mod", GOOD_SOURCE, version="1.2.3")
    monkeypatch.syspath_prepend(str(tmp_path))
    clean_modules.append("good_plug_mod")
    pm = get_plugin_manager(builtins=())
    assert pm.has_plugin("goodplug")
    assert pm.plugin_versions["goodplug"] == "1.2.3"
    assert pm.plugin_dists["goodplug"] == "fake-goodplug"
    assert pm.plugin_modules["goodplug"] == "good_plug_mod"
    assert Registry.from_plugin_manager(pm).get("fake_metric").plugin == "goodplug"
    assert not get_plugin_manager(load_entry_points=False, builtins=()).has_plugin("goodplug")


@pytest.mark.parametrize("blocked", ["goodplug", "good_plug_mod"])
def test_env_blocks_entry_point_by_name_or_module(tmp_path, monkeypatch, clean_modules, blocked):
    write_entry_point_plugin(tmp_path, "goodplug", "good_plug_mod", GOOD_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("CRS_DISABLE_PLUGINS", f"other, {blocked}")
    pm = get_plugin_manager(builtins=())
    assert not pm.has_plugin("goodplug")
    assert "good_plug_mod" not in sys.modules  # blocked plugins are not even imported
    assert blocked in pm.disabled
    assert "fake_metric" not in Registry.from_plugin_manager(pm)


@pytest.mark.parametrize("how", ["env", "argument"])
def test_disabled_builtin_is_skipped_even_if_it_would_fail(monkeypatch, how):
    builtins = ["crs.plugins.no_such_plugin"]
    if how == "env":
        monkeypatch.setenv("CRS_DISABLE_PLUGINS", "no_such_plugin")  # the short name works too
        pm = get_plugin_manager(load_entry_points=False, builtins=builtins)
    else:
        pm = get_plugin_manager(load_entry_points=False, builtins=builtins, disable=["crs.plugins.no_such_plugin"])
    assert not pm.has_plugin("crs.plugins.no_such_plugin")


def test_misspelt_hook_is_reported_by_check_pending(clean_modules):
    _fake_module("typo_plugin", clean_modules, crs_register_recomenders=lambda register: None)
    with pytest.raises(PluginError) as info:
        get_plugin_manager(load_entry_points=False, builtins=["typo_plugin"])
    text = str(info.value)
    assert "'typo_plugin'" in text and "crs_register_recomenders" in text
    assert "CRS_DISABLE_PLUGINS=typo_plugin" in text


def test_hook_with_wrong_argument_is_a_plugin_error(clean_modules):
    _fake_module("bad_args_plugin", clean_modules, crs_register_metrics=lambda registrar: None)
    with pytest.raises(PluginError) as info:
        get_plugin_manager(load_entry_points=False, builtins=["bad_args_plugin"])
    assert "bad_args_plugin" in str(info.value) and "registrar" in str(info.value)


def test_unregister_forgets_the_plugin_origin(clean_modules):
    _fake_module("fake_builtin_b", clean_modules, crs_register_metrics=lambda register: None)
    pm = get_plugin_manager(load_entry_points=False, builtins=["fake_builtin_b"])
    pm.unregister(name="fake_builtin_b")
    assert "fake_builtin_b" not in pm.plugin_versions and not pm.has_plugin("fake_builtin_b")


def test_registry_fixture_uses_installed_plugins(tmp_path, monkeypatch, clean_modules, request):
    write_entry_point_plugin(tmp_path, "goodplug", "good_plug_mod", GOOD_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("CRS_DISABLE_PLUGINS", ",".join(DEFAULT_PLUGINS))  # hermetic: only the fake one
    clean_modules.append("good_plug_mod")
    registry = request.getfixturevalue("registry")
    assert registry.names() == ["fake_metric"]


class _MetricsPlugin:
    @hookimpl
    def crs_register_metrics(self, register):
        register("plugin_object_metric", "somewhere:Metric")


def test_register_plugin_fixture_registers_on_the_bare_manager(register_plugin, plugin_manager):
    plugin = _MetricsPlugin()
    registry = register_plugin(plugin, "temporary")
    assert plugin_manager.get_plugins() == {plugin}  # bare manager: nothing else
    assert registry.get("plugin_object_metric").plugin == "temporary"


def test_registering_unregisters_on_exit_even_after_a_failure():
    pm = get_plugin_manager(load_entry_points=False, builtins=())
    with pytest.raises(RuntimeError):
        with registering(pm) as register:
            register(_MetricsPlugin(), "temporary")
            assert pm.has_plugin("temporary")
            raise RuntimeError("test body failed")
    assert not pm.has_plugin("temporary") and pm.plugin_versions == {}


def test_two_installed_plugins_with_one_name_are_both_named(tmp_path, monkeypatch, clean_modules):
    for folder, module, dist in (("a", "same_a_mod", "dist-a"), ("b", "same_b_mod", "dist-b")):
        write_entry_point_plugin(tmp_path / folder, "same", module, "", dist_name=dist)
        monkeypatch.syspath_prepend(str(tmp_path / folder))
        clean_modules.append(module)
    with pytest.raises(PluginError) as info:
        get_plugin_manager(builtins=())
    text = str(info.value)
    assert "two plugins are named 'same'" in text and "dist-a" in text and "dist-b" in text
    assert "CRS_DISABLE_PLUGINS=same" in text
