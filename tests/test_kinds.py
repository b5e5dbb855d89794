"""The one kind table (crs.kinds) and everything derived from it."""
import inspect
import subprocess
import sys
from dataclasses import dataclass

import pytest

from crs import hookspecs, interfaces, kinds
from crs.errors import PluginError
from crs.interfaces import BuildDeps, Component, ModelComponent
from crs.registry import _MODEL_KINDS, Registry


def test_hookspecs_kinds_follow_the_table_in_order():
    assert list(hookspecs.KINDS.items()) == [(k.name, k.hook) for k in kinds.KIND_TABLE]


def test_every_row_has_a_documented_hookspec_and_every_hookspec_a_row():
    declared = {name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
                if name.startswith("crs_register_")}
    assert declared == {k.hook for k in kinds.KIND_TABLE}
    for kind in kinds.KIND_TABLE:
        fn = getattr(hookspecs, kind.hook)
        assert hasattr(fn, "crs_spec"), f"{kind.hook} is not marked @hookspec"
        doc = fn.__doc__ or ""
        assert ":param register:" in doc and "Called once" in doc, kind.hook
        assert kind.base.replace(":", ".") in doc, f"{kind.hook}'s docstring should name {kind.base}"


def test_model_kinds_are_derived_everywhere():
    expected = tuple(k.name for k in kinds.KIND_TABLE if k.model)
    assert kinds.MODEL_KINDS == interfaces.MODEL_KINDS == _MODEL_KINDS == expected
    assert "featurizer" not in expected and "shared_module" not in expected


def test_bases_resolve_to_classes_of_their_kind():
    for kind in kinds.KIND_TABLE:
        base = kinds.base_class(kind.name)
        assert f"{base.__module__}:{base.__name__}" == kind.base
        assert base.kind == kind.name
        assert issubclass(base, Component)
        # a model kind is exactly a ModelComponent: wired by ports, built under `model:`
        assert issubclass(base, ModelComponent) == kind.model, kind.name


def test_listing_kinds_imports_no_torch():
    code = ("import sys, crs.kinds, crs.hookspecs, crs.registry; "
            "assert list(crs.hookspecs.KINDS) == list(crs.kinds.KINDS); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_component_init_holds_config_and_path_for_every_kind():
    deps = BuildDeps(path="evaluation.metrics.0")
    metric = interfaces.Metric("cfg", deps)
    assert (metric.config, metric.path) == ("cfg", "evaluation.metrics.0")
    slot = interfaces.Recommender("cfg", BuildDeps(path="model.rec"))
    assert (slot.config, slot.path) == ("cfg", "model.rec")
    assert list(slot.parameters()) == []  # nn.Module initialised before the attributes were set


def test_registry_checks_a_new_kind_against_its_table_base():
    from crs.data.fields import Featurizer

    @dataclass
    class Cfg:
        pass

    class GoodFeaturizer(Featurizer):
        Config = Cfg

    class NotAFeaturizer(Component):
        Config = Cfg

    registry = Registry()
    registry.add("featurizer", "good", GoodFeaturizer, "test")
    registry.add("featurizer", "bad", NotAFeaturizer, "test")
    assert registry.get("good").cls is GoodFeaturizer
    assert registry.names("featurizer") == ["bad", "good"]
    with pytest.raises(PluginError, match=r"not a subclass of crs\.data\.fields\.Featurizer"):
        _ = registry.get("bad").cls
