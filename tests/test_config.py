"""Config validation (dict -> dataclass) and loading (preset, bundle, file, overrides)."""
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import pytest

from crs.config import from_dict, load_config, validate_components
from crs.config.loader import find_registry_file
from crs.config.spec import PipelineSpec, StageSpec
from crs.errors import ConfigError, UnknownComponentError
from crs.hookspecs import hookimpl
from crs.interfaces import Dataset, Metric, Recommender, TrainingStrategy
from crs.plugin_manager import get_plugin_manager
from crs.registry import Registry


# ---------------------------------------------------------------- validate.py
@dataclass
class Inner:
    lr: float = 0.1
    mode: Literal["min", "max"] = "min"


@dataclass
class Outer:
    name: str
    steps: list[Inner] = field(default_factory=list)
    weights: dict[str, float] = field(default_factory=dict)
    limit: Optional[int] = None
    flag: bool = False
    anything: Any = None
    pair: tuple[int, ...] = ()


def test_from_dict_converts_nested_values():
    out = from_dict(Outer, {"name": "x", "steps": [{"lr": 1}, {"mode": "max"}], "weights": {"rec": 2},
                            "limit": 3, "flag": True, "anything": [1, "a"], "pair": [1, 2]})
    assert out == Outer("x", [Inner(1.0, "min"), Inner(0.1, "max")], {"rec": 2.0}, 3, True, [1, "a"], (1, 2))
    assert isinstance(out.steps[0].lr, float) and isinstance(out.weights["rec"], float)
    assert from_dict(Outer, {"name": "y", "limit": None}).limit is None
    assert from_dict(Inner, {"lr": "1e-3"}).lr == 0.001  # PyYAML reads 1e-3 as a string


def _error(cls, data, path="") -> ConfigError:
    with pytest.raises(ConfigError) as info:
        from_dict(cls, data, path)
    return info.value


def test_unknown_key_has_did_you_mean_and_valid_keys():
    err = _error(Outer, {"name": "x", "steps": [{}, {"lrr": 1}]}, "stages")
    assert err.path == "stages.steps.1.lrr"
    assert str(err) == ("config key 'stages.steps.1.lrr': unknown key 'lrr'. Did you mean 'lr'?\n"
                        "  fix: valid keys here: lr, mode")


def test_missing_required_names_key_and_type():
    err = _error(Outer, {})
    assert err.path == "name" and "required key 'name' (str) is missing" in str(err)
    assert "add `name: <str>`" in str(err)


@pytest.mark.parametrize("data, path, expected", [
    ({"name": 3}, "name", "expected str, got 3 (int)"),
    ({"name": "x", "flag": 1}, "flag", "expected bool, got 1 (int)"),
    ({"name": "x", "limit": 2.5}, "limit", "expected int, got 2.5 (float)"),
    ({"name": "x", "limit": True}, "limit", "expected int, got True (bool)"),
    ({"name": "x", "steps": [{"lr": "fast"}]}, "steps.0.lr", "expected float, got 'fast' (str)"),
    ({"name": "x", "steps": [{"mode": "mid"}]}, "steps.0.mode", "expected 'min' | 'max', got 'mid' (str)"),
    ({"name": "x", "steps": {"lr": 1}}, "steps", "expected list[mapping (Inner)]"),
    ({"name": "x", "weights": {"rec": None}}, "weights.rec", "expected float, got null"),
    ({"name": "x", "steps": [3]}, "steps.0", "expected a mapping of Inner keys, got 3 (int)"),
])
def test_wrong_type_names_expected_type_and_given_value(data, path, expected):
    err = _error(Outer, data)
    assert err.path == path and expected in str(err) and "fix:" in str(err)


def test_pipeline_paths_are_dotted_yaml_paths():
    data = {"data": {"type": "d"}, "model": {}, "stages": [{"name": "a"}, {"name": "b", "optimizer": {"lr": "x"}}]}
    assert _error(PipelineSpec, data).path == "stages.1.optimizer.lr"


# ------------------------------------------------------------------ loader.py
REGISTRY_YAML = """\
presets:
  base:
    name: base
    model:
      rec: {type: fake_rec, dim: 8}
    stages:
      - name: rec
        objectives: {rec: 1.0}
  child:
    preset: base
    name: child
    data: small
corpora:
  small:
    data: {type: fake_data, size: 10}
    knowledge:
      entity_kg: {type: fake_data}
  big:
    data: {type: fake_data, size: 1000}
    knowledge: {}
    samples: {context_turns: 5}
"""


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A temp cwd with registry.yaml; `write(name, text)` adds a config file."""
    (tmp_path / "registry.yaml").write_text(REGISTRY_YAML)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CRS_REGISTRY", raising=False)

    def write(name: str, text: str) -> str:
        (tmp_path / name).write_text(text)
        return name

    return write


def test_preset_file_and_overrides_layer_in_order(workdir):
    path = workdir("run.yaml", "preset: base\nname: mine\nmodel:\n  rec:\n    dim: 16\n"
                               "data: {type: fake_data}\n")
    spec, resolved = load_config(path, ["model.rec.dim=32", "stages.0.epochs=3", "seed=7"])
    assert spec.name == "mine" and spec.preset == "base" and spec.seed == 7
    assert spec.model == {"rec": {"type": "fake_rec", "dim": 32}}
    assert spec.stages == [StageSpec(name="rec", objectives={"rec": 1.0}, epochs=3)]
    # the default runs/${name}-${corpus} is resolved; a data node written out names the corpus by its type
    assert spec.run_dir == "runs/mine-fake_data" and spec.corpus == "fake_data"
    assert resolved["stages"][0]["epochs"] == 3 and resolved["run_dir"] == "runs/mine-fake_data"


def test_changing_a_type_replaces_the_node(workdir):
    path = workdir("run.yaml", "preset: base\ndata: {type: fake_data}\nmodel:\n  rec: {type: other_rec}\n")
    assert load_config(path, [])[0].model["rec"] == {"type": "other_rec"}
    spec, _ = load_config(path, ["model.rec.type=fake_rec", "model.rec.dim=4"])
    assert spec.model["rec"] == {"type": "fake_rec", "dim": 4}
    spec, _ = load_config("run.yaml", ["model.rec=fake_rec"])  # a bare name is shorthand for {type: name}
    assert spec.model["rec"] == {"type": "fake_rec"}


def test_bundle_from_chained_preset(workdir):
    spec, _ = load_config(None, ["preset=child"])
    assert spec.name == "child" and spec.preset == "child"
    assert spec.data == {"type": "fake_data", "size": 10}
    assert spec.knowledge == {"entity_kg": {"type": "fake_data"}}


def test_bundle_override_then_explicit_data_keys_win(workdir):
    spec, _ = load_config(None, ["preset=child", "data=big", "data.size=100"])
    assert spec.data == {"type": "fake_data", "size": 100}
    assert spec.knowledge == {} and spec.samples.context_turns == 5


def test_same_file_values_win_over_its_bundle(workdir):
    path = workdir("run.yaml", "preset: base\ndata: big\nsamples: {max_context_words: 9}\n")
    spec, _ = load_config(path, [])
    assert spec.data["size"] == 1000
    assert (spec.samples.context_turns, spec.samples.max_context_words) == (5, 9)  # bundle's, then the file's


def test_interpolation_is_resolved(workdir):
    path = workdir("run.yaml", "preset: base\ndata: {type: fake_data}\nname: x\nrun_dir: out/${name}-${seed}\n")
    assert load_config(path, [])[0].run_dir == "out/x-42"


def test_registry_file_lookup(workdir, tmp_path, monkeypatch):
    assert find_registry_file() == Path("registry.yaml")
    other = tmp_path / "other.yaml"
    other.write_text("presets:\n  only: {name: only, data: {type: d}, model: {}, stages: []}\n")
    monkeypatch.setenv("CRS_REGISTRY", str(other))
    assert load_config(None, ["preset=only"])[0].name == "only"
    assert load_config(None, ["preset=base", "data.type=d"], registry_path="registry.yaml")[0].name == "base"
    monkeypatch.delenv("CRS_REGISTRY")
    monkeypatch.chdir(tmp_path / "..")
    import crs  # the repo root next to the package is the last resort
    assert find_registry_file() == (Path(crs.__file__).resolve().parents[1] / "registry.yaml"
                                    if (Path(crs.__file__).resolve().parents[1] / "registry.yaml").is_file()
                                    else None)


# The one-paragraph messages of every config error kind.
def _load_error(*args, **kwargs) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(*args, **kwargs)
    text = str(info.value)
    assert "fix:" in text and "Traceback" not in text
    return info.value


def test_unknown_preset_lists_presets_and_says_where(workdir):
    path = workdir("run.yaml", "name: a\npreset: basic\n")
    err = _load_error(path, [])
    assert isinstance(err, UnknownComponentError)
    assert str(err).startswith("run.yaml:2: config key 'preset': unknown preset 'basic'. Did you mean 'base'?")
    assert "use one of: base, child" in str(err)
    assert str(_load_error(None, ["preset=nope"])).startswith("override 'preset=nope': ")


def test_unknown_bundle_lists_bundles(workdir):
    err = _load_error(None, ["preset=base", "data=smal"])
    assert isinstance(err, UnknownComponentError) and "Did you mean 'small'" in str(err)
    assert "use one of: big, small" in str(err)


def test_malformed_yaml_names_file_and_line(workdir):
    path = workdir("bad.yaml", "name: a\nmodel:\n  rec: {type: x\nstages: []\n")
    err = _load_error(path, [])
    assert str(err).startswith("bad.yaml:4: malformed YAML") or str(err).startswith("bad.yaml:3: malformed YAML")
    path = workdir("bad2.yaml", "name: a\n  seed: 3\n")
    assert str(_load_error(path, [])).startswith("bad2.yaml:2: malformed YAML")


@pytest.mark.parametrize("override", ["seed", "=3", "a..b=1", "x y=2"])
def test_malformed_override(workdir, override):
    err = _load_error(None, ["preset=base", override])
    assert f"malformed override '{override}'" in str(err) and "key=value" in str(err)


def test_override_into_a_short_list(workdir):
    err = _load_error(None, ["preset=base", "data.type=d", "stages.4.epochs=2"])
    assert err.path == "stages.4" and "list of 1 entries" in str(err)


def test_value_errors_carry_the_file_line(workdir):
    path = workdir("run.yaml", "preset: base\ndata: {type: d}\nstages:\n  - name: a\n"
                               "    optimizer:\n      lr: fast\n")
    err = _load_error(path, [])
    assert str(err).startswith("run.yaml:6: config key 'stages.0.optimizer.lr': expected float, got 'fast'")
    err = _load_error(path, ["stages.0.optimizer.lr=0.1", "stages.0.epochs=many"])
    assert str(err).startswith("override 'stages.0.epochs=many': config key 'stages.0.epochs': expected int")
    path = workdir("run2.yaml", "preset: base\ndata: {type: d}\nstagez: []\n")
    err = _load_error(path, [])
    assert str(err).startswith("run2.yaml:3: config key 'stagez': unknown key 'stagez'. Did you mean 'stages'?")


def test_missing_required_key_points_at_the_file(workdir):
    err = _load_error(workdir("run.yaml", "name: a\nmodel: {}\nstages: []\n"), [])
    assert str(err).startswith("run.yaml: config key 'data': required key 'data'")


def test_missing_file_and_missing_registry(workdir, tmp_path):
    assert "not found" in str(_load_error("nope.yaml", []))
    (tmp_path / "registry.yaml").unlink()
    err = _load_error(workdir("run.yaml", "preset: base\n"), [], registry_path=tmp_path / "registry.yaml")
    assert "needs registry.yaml, which was not found" in str(err)


# ------------------------------------------------------ validate_components
class _Rec(Recommender):
    @dataclass
    class Config:
        dim: int = 8


class _Data(Dataset):
    @dataclass
    class Config:
        size: int = 1


class _Plain(TrainingStrategy):
    pass


class _Recall(Metric):
    @dataclass
    class Config:
        k: int = 10


class _FakePlugin:
    @hookimpl
    def crs_register_recommenders(self, register):
        register("fake_rec", _Rec)

    @hookimpl
    def crs_register_datasets(self, register):
        register("fake_data", _Data)

    @hookimpl
    def crs_register_training_strategies(self, register):
        register("plain", _Plain)

    @hookimpl
    def crs_register_metrics(self, register):
        register("recall", _Recall)


@pytest.fixture
def fake_registry():
    pm = get_plugin_manager(load_entry_points=False, builtins=())
    pm.register(_FakePlugin(), "fake")
    try:
        return Registry.from_plugin_manager(pm)
    finally:
        pm.unregister(name="fake")


EVAL = "evaluation: {protocols: [], metrics: [recall]}\n"


def test_components_are_checked_up_front_with_file_lines(workdir, fake_registry):
    path = workdir("run.yaml", "preset: base\ndata: {type: fake_data}\n" + EVAL +
                   "model:\n  rec:\n    type: fake_rec\n    dimm: 3\n")
    err = _load_error(path, [], registry=fake_registry)
    assert str(err).startswith("run.yaml:7: config key 'model.rec.dimm': unknown key 'dimm'. Did you mean 'dim'?")
    spec, _ = load_config(path, ["~model.rec.dimm", "model.rec.dim=4"], registry=fake_registry)
    assert spec.model["rec"] == {"type": "fake_rec", "dim": 4}
    assert "which is not set" in str(_load_error(path, ["~model.rec.size"]))


def test_all_bad_nodes_are_reported_together(workdir, fake_registry):
    path = workdir("run.yaml", "preset: base\ndata: small\nevaluation: {protocols: [], metrics: [recal]}\n"
                               "stages:\n  - name: a\n    strategy: maml\n")
    spec, _ = load_config(path, [])
    with pytest.raises(ConfigError) as info:
        validate_components(spec, fake_registry, path)
    text = str(info.value)
    assert text.startswith("3 config errors:")
    assert "run.yaml:6: config key 'stages.0.strategy.type': unknown training_strategy 'maml'" in text
    assert "config key 'evaluation.metrics.0.type': unknown metric 'recal'. Did you mean 'recall'?" in text
    assert "config key 'knowledge.entity_kg.type': 'fake_data' is a dataset" in text  # bundle's node


def test_valid_config_passes_component_checks(workdir, fake_registry):
    path = workdir("run.yaml", "preset: base\ndata: {type: fake_data, size: 3}\n" + EVAL)
    spec, resolved = load_config(path, [], registry=fake_registry)
    assert spec.evaluation.metrics == [{"type": "recall"}] and resolved["data"] == {"type": "fake_data", "size": 3}


def test_misspelt_slot_in_an_override_suggests_the_existing_slot(workdir, fake_registry):
    path = workdir("run.yaml", "preset: base\ndata: {type: fake_data}\n" + EVAL +
                   "model:\n  recommender: {type: fake_rec}\n")
    err = _load_error(path, ["model.recomender.dim=3"], registry=fake_registry)
    assert "there is no model slot 'recomender'. Did you mean 'recommender'?" in str(err)
    assert "a new slot needs `type: NAME`" in str(err)


@pytest.mark.parametrize("slot", ["items", "keys", "update"])
def test_a_slot_named_like_a_module_dict_method_is_a_config_error(slot, tmp_path):
    # an nn.ModuleDict cannot hold these keys: torch raised a KeyError traceback after the data had loaded
    from crs.pipeline import build_pipeline
    from crs.plugin_manager import get_plugin_manager
    from crs.registry import Registry

    registry = Registry.from_plugin_manager(get_plugin_manager())
    spec, resolved = load_config(None, ["preset=popularity", "data=demo", "data.n_train=20", "data.n_valid=5",
                                        "data.n_test=5", f"run_dir={tmp_path}", f"model.{slot}.type=popularity",
                                        "~model.recommender"], registry=registry)
    with pytest.raises(ConfigError, match=f"(?s)model.{slot}.*reserved.*rename it"):
        build_pipeline(spec, registry, resolved)
