"""The registry: who registered what, lazy references, and building components from YAML nodes."""
import sys
import types
from dataclasses import dataclass

import pytest
import torch

from crs import interfaces
from crs.errors import ConfigError, PluginError, UnknownComponentError
from crs.hookspecs import KINDS, hookimpl
from crs.interfaces import Metric, Port, Recommender
from crs.plugin_manager import get_plugin_manager
from crs.registry import _MODEL_KINDS, Registry


class FakeRecommender(Recommender):
    """Scores every item the same.

    More text that `crs components` does not show.
    """

    @dataclass
    class Config:
        dim: int
        scale: float = 1.0

    def __init__(self, config, deps):
        super().__init__(config, deps)
        self.deps = deps

    def input_ports(self):
        return {"user": Port("user", dim=self.config.dim), "target": Port("batch.target_item", optional=True)}

    def output_ports(self):
        return {"scores": Port("scores", dim=3)}

    def forward(self, inputs):
        return {"scores": torch.zeros(inputs["user"].shape[0], 3)}


class FakeMetric(Metric):
    @dataclass
    class Config:
        k: int = 10


class NoDataclassConfig(Metric):
    class Config:
        k = 1


class FirstPlugin:
    @hookimpl
    def crs_register_recommenders(self, register):
        register("fake_rec", FakeRecommender)

    @hookimpl
    def crs_register_metrics(self, register):
        register("fake_recall", FakeMetric)


class SecondPlugin:
    @hookimpl
    def crs_register_metrics(self, register):
        register("fake_rec", FakeMetric)  # clashes with FirstPlugin's recommender


def _registry(*plugins: tuple[object, str]) -> Registry:
    pm = get_plugin_manager(load_entry_points=False, builtins=())
    for plugin, name in plugins:
        pm.register(plugin, name)
    try:
        return Registry.from_plugin_manager(pm)
    finally:
        for _, name in plugins:
            pm.unregister(name=name)


@pytest.fixture
def registry():  # deliberately shadows crs.testing's `registry`: these tests use fakes only
    return _registry((FirstPlugin(), "first"))


def test_model_kinds_mirror_interfaces():
    assert _MODEL_KINDS == interfaces.MODEL_KINDS


def test_queries(registry):
    info = registry.get("fake_rec")
    assert (info.name, info.kind, info.plugin, info.cls) == ("fake_rec", "recommender", "first", FakeRecommender)
    assert info.description == "Scores every item the same."
    assert registry.names() == ["fake_rec", "fake_recall"]
    assert registry.names("metric") == ["fake_recall"] and registry.names("generator") == []
    assert registry.kinds() == list(KINDS)
    assert registry.by_plugin() == {"first": {"recommender": ["fake_rec"], "metric": ["fake_recall"]}}
    with pytest.raises(UnknownComponentError, match="Did you mean 'fake_rec'"):
        registry.get("fake_recc")
    with pytest.raises(UnknownComponentError, match="Did you mean 'metric'"):
        registry.names("metrics")


def test_duplicate_name_names_both_plugins():
    with pytest.raises(PluginError) as info:
        _registry((FirstPlugin(), "first"), (SecondPlugin(), "second"))
    text = str(info.value)
    assert "'fake_rec'" in text and "'first'" in text and "'second'" in text
    assert "recommender" in text and "metric" in text and "fix:" in text


def test_lazy_reference_is_imported_on_first_use(tmp_path, monkeypatch):
    (tmp_path / "lazy_fake_components.py").write_text(
        "from dataclasses import dataclass\nfrom crs.interfaces import Metric\n"
        "class LazyMetric(Metric):\n    '''A lazily imported metric.'''\n"
        "    @dataclass\n    class Config:\n        k: int = 5\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    plugin = types.SimpleNamespace()
    plugin.crs_register_metrics = hookimpl(lambda register: register("lazy", "lazy_fake_components:LazyMetric"))
    try:
        registry = _registry((plugin, "lazy_plugin"))
        assert registry.names("metric") == ["lazy"]
        assert "lazy_fake_components" not in sys.modules
        assert registry.get("lazy").cls.__name__ == "LazyMetric"
        assert "lazy_fake_components" in sys.modules
        assert registry.config_fields("lazy") == [("k", "int", "5", False)]
    finally:
        sys.modules.pop("lazy_fake_components", None)


@pytest.mark.parametrize("ref, message", [
    ("no_such_module_xyz:Thing", "importing no_such_module_xyz failed with ModuleNotFoundError"),
    ("crs.interfaces:NoSuchClass", "has no attribute 'NoSuchClass'"),
    ("crs.interfaces:Recommender.__init__", "not a subclass of crs.interfaces.Metric"),
    (FakeRecommender, "not a subclass of crs.interfaces.Metric"),
    (NoDataclassConfig, "Config is not a dataclass"),
])
def test_bad_reference_is_a_plugin_error_on_use(ref, message):
    plugin = types.SimpleNamespace(crs_register_metrics=hookimpl(lambda register: register("bad", ref)))
    registry = _registry((plugin, "bad_plugin"))
    with pytest.raises(PluginError, match=message) as info:
        registry.get("bad").cls
    assert "bad_plugin" in str(info.value)


@pytest.mark.parametrize("name, ref, message", [
    ("no_colon", "module_without_class", "not a 'package.module:ClassName' reference"),
    ("", FakeMetric, "invalid metric name"),
    ("has space", FakeMetric, "invalid metric name"),
    ("obj", 42, "expected a class"),
])
def test_malformed_registration_is_rejected_at_once(name, ref, message):
    plugin = types.SimpleNamespace(crs_register_metrics=hookimpl(lambda register: register(name, ref)))
    with pytest.raises(PluginError, match=message):
        _registry((plugin, "sloppy"))


def test_hook_that_raises_becomes_a_plugin_error():
    def crash(register):
        raise ValueError("plugin bug")

    plugin = types.SimpleNamespace(crs_register_metrics=hookimpl(crash))
    with pytest.raises(PluginError, match="'crashing' failed in crs_register_metrics: ValueError: plugin bug"):
        _registry((plugin, "crashing"))


def test_build_from_dict_and_string_nodes(registry):
    model = registry.build("recommender", {"type": "fake_rec", "dim": 4, "scale": 2}, "model.rec")
    assert isinstance(model, FakeRecommender)
    assert model.config.dim == 4 and model.config.scale == 2.0 and isinstance(model.config.scale, float)
    assert model.path == "model.rec" and model.deps.path == "model.rec"
    assert model.port_renames == {"inputs": {}, "outputs": {}}
    metric = registry.build(("metric",), "fake_recall", "evaluation.metrics.0")
    assert metric.config.k == 10 and not hasattr(metric, "port_renames")


def test_build_sets_the_path_on_given_deps(registry):
    deps = interfaces.BuildDeps(path="somewhere_else", num_users=7)
    model = registry.build("recommender", {"type": "fake_rec", "dim": 2}, "model.rec", deps)
    assert model.deps.path == "model.rec" and model.deps.num_users == 7 and deps.path == "somewhere_else"


def test_port_renames_are_attached_and_checked(registry):
    node = {"type": "fake_rec", "dim": 4, "inputs": {"user": "user.vector"}, "outputs": {"scores": "rec_scores"}}
    model = registry.build("recommender", node, "model.rec")
    assert model.port_renames == {"inputs": {"user": "user.vector"}, "outputs": {"scores": "rec_scores"}}
    with pytest.raises(ConfigError) as info:
        registry.build("recommender", {"type": "fake_rec", "dim": 4, "inputs": {"usr": "x"}}, "model.rec")
    assert "model.rec.inputs.usr" in str(info.value) and "Did you mean 'user'" in str(info.value)
    with pytest.raises(ConfigError, match="mapping of port name"):
        registry.build("recommender", {"type": "fake_rec", "dim": 4, "inputs": ["user"]}, "model.rec")


def test_inputs_is_a_config_key_for_non_model_kinds(registry):
    with pytest.raises(ConfigError, match="unknown key 'inputs'"):
        registry.build("metric", {"type": "fake_recall", "inputs": {}}, "evaluation.metrics.0")


def test_unknown_type_lists_names_of_that_kind_only(registry):
    with pytest.raises(UnknownComponentError) as info:
        registry.build("metric", {"type": "fake_recal"}, "evaluation.metrics.1")
    err = info.value
    assert err.path == "evaluation.metrics.1.type" and err.available == ["fake_recall"]
    assert "Did you mean 'fake_recall'" in str(err) and "fake_rec," not in str(err)
    assert isinstance(err, KeyError) and "\n  fix: use one of: fake_recall" in str(err)


def test_wrong_kind_says_which_kind_it_is(registry):
    with pytest.raises(ConfigError) as info:
        registry.build(_MODEL_KINDS, "fake_recall", "model.rec")
    text = str(info.value)
    assert "'fake_recall' is a metric (from plugin 'first')" in text and "needs a model component" in text
    assert "fake_rec" in text  # the model components it could use


@pytest.mark.parametrize("node, path, message", [
    ({"dim": 3}, "model.rec.type", "has no `type:`"),
    ({"type": 3}, "model.rec.type", "must be a registered name"),
    ([1, 2], "model.rec", "expected a recommender node"),
    ({"type": "fake_rec"}, "model.rec.dim", "required key 'dim' (int) is missing"),
    ({"type": "fake_rec", "dim": 2, "scal": 1}, "model.rec.scal", "Did you mean 'scale'"),
    ({"type": "fake_rec", "dim": "big"}, "model.rec.dim", "expected int, got 'big' (str)"),
])
def test_node_errors_name_the_path_and_a_fix(registry, node, path, message):
    with pytest.raises(ConfigError) as info:
        registry.build("recommender", node, "model.rec")
    assert info.value.path == path
    assert message in str(info.value) and "fix:" in str(info.value)


def test_check_node_validates_without_building(registry):
    checked = registry.check_node("recommender", {"type": "fake_rec", "dim": 5}, "model.rec")
    assert checked.info.name == "fake_rec" and checked.config == FakeRecommender.Config(dim=5)


def test_config_fields(registry):
    assert registry.config_fields("fake_rec") == [("dim", "int", "", True), ("scale", "float", "1.0", False)]
