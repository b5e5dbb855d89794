"""`crs components`: one component by name; every component's keys (help, allowed values) and ports (default
keys, dims); whole descriptions; a component that does not build still listed; docs/components.md current."""
from __future__ import annotations

import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest
import torch

import crs.plugin_manager
from crs.cli import main
from crs.component_reference import DOC_FILE, builtin_markdown, describe, description
from crs.config.reference import config_keys
from crs.hookspecs import hookimpl
from crs.interfaces import BuildDeps, Port, Recommender

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ a fake plugin
class Sized(Recommender):
    """`sized`: ports whose dims follow a key, the item count and nothing.

    Second paragraph, not part of the description.
    """

    @dataclass
    class Config:
        dim: int = 8  # width of the user vector
        heads: int = 2  # must divide dim; doubled (4) it still does
        mode: Literal["fast", "slow"] = "fast"  # how it scores

    def __init__(self, config, deps: BuildDeps):
        super().__init__(config, deps)
        self.n_items = len(deps.require("items"))
        self.proj = torch.nn.Linear(config.dim, 1)

    def input_ports(self) -> dict[str, Port]:
        return {"user": Port("user", self.config.dim, doc="user vector (B, dim)"),
                "target": Port("batch.target_item", optional=True)}

    def output_ports(self) -> dict[str, Port]:
        return {"scores": Port("scores", self.n_items), "extra": Port("extra_scores", 7, doc="always 7 wide")}


class NeedsGPU(Recommender):
    """`needs_gpu`: cannot be built on the tiny world."""

    @dataclass
    class Config:
        width: int = 4  # still listed

    def __init__(self, config, deps: BuildDeps):
        raise RuntimeError("this component needs a GPU\nsecond line of the message")


def _fake_plugin() -> types.ModuleType:
    module = types.ModuleType("fake_reference_plugin")

    @hookimpl
    def crs_register_recommenders(register):
        register("sized", Sized)
        register("needs_gpu", NeedsGPU)

    module.crs_register_recommenders = crs_register_recommenders
    return module


@pytest.fixture
def fake_registry(register_plugin, plugin_manager, monkeypatch):
    """A registry of the fake plugin only, also what `crs components` sees in these tests."""
    registry = register_plugin(_fake_plugin())
    monkeypatch.setattr(crs.plugin_manager, "get_plugin_manager", lambda: plugin_manager)
    return registry


# ------------------------------------------------------------------ ports, keys, descriptions
def test_dims_name_the_key_or_data_size_they_follow(fake_registry):
    doc = describe(fake_registry, "sized")
    ports = {p.name: p for p in doc.ports}
    assert (ports["user"].key, ports["user"].dim, ports["user"].direction) == ("user", "8 (dim)", "input")
    assert ports["scores"].dim == "n_items"  # the tiny world's 5 items, named rather than shown as 5
    assert ports["extra"].dim == "7" and ports["extra"].doc == "always 7 wide"
    assert ports["target"].optional and ports["target"].dim == ""
    keys = {k.key: k for k in doc.keys}
    assert keys["mode"].choices == ("fast", "slow") and keys["mode"].help == "how it scores"
    assert keys["dim"].default == 8 and keys["dim"].help == "width of the user vector"


def test_one_component_by_name_with_ports_help_and_choices(fake_registry, capsys):
    assert main(["components", "sized"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("recommender\n  sized  [fake_reference_plugin]  `sized`: ports whose dims follow a key, "
                          "the item count and nothing.\n")
    assert "needs_gpu" not in out  # only the one asked for
    assert "      mode: 'fast' | 'slow' = 'fast'  # how it scores\n" in out
    user = next(line for line in out.splitlines() if "<- user" in line)
    assert re.search(r"input\s+user\s+<- user\s+dim 8 \(dim\)\s+user vector \(B, dim\)", user)
    target = next(line for line in out.splitlines() if "<- batch.target_item" in line)
    assert "optional" in target
    assert re.search(r"output\s+scores\s+-> scores\s+dim n_items", out)


def test_a_component_that_does_not_build_is_listed_with_the_reason(fake_registry, capsys):
    assert main(["components", "recommender"]) == 0  # the listing goes on; only unloadable classes fail it
    out = capsys.readouterr().out
    block = out[out.index("  needs_gpu"):out.index("  sized")]
    assert "      width: int = 4  # still listed\n" in block
    assert "ports: unknown, it does not build from its defaults on crs.testing's tiny world " \
           "(RuntimeError: this component needs a GPU)" in block
    assert "second line" not in block
    assert "dim 8 (dim)" in out  # the next component is complete


def test_descriptions_are_whole_first_paragraphs():
    assert description(Sized) == "`sized`: ports whose dims follow a key, the item count and nothing."
    from crs.plugins.metrics.conversation import F1

    # the docstring's first paragraph spans three lines; the first line alone stops mid-sentence
    assert description(F1).endswith("unigram overlap counted with multiplicity). Key `gen.f1`.")


def test_unknown_name_suggests_kinds_and_components(fake_registry, capsys):
    assert main(["components", "sizd"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown component kind or name 'sizd'. Did you mean 'sized'?")
    assert "Traceback" not in err


@dataclass
class _Base:
    steps: int = 1  # steps on the support
    lr: float = 0.1


@dataclass
class _Nested:
    unit: Literal["user", "conversation"] = "user"  # what a task is


@dataclass
class _Child(_Base):
    lr: float = 0.5  # overridden, with help of its own
    split: _Nested = field(default_factory=_Nested)
    needed: float = None  # type: ignore[assignment]
    # help on the line above
    above: str = "x"
    long: str = "y"  # a comment that goes on
                     # on the next line
    plain: Optional_ = None  # noqa: F821 - unresolvable annotation: checked loosely


def test_config_keys_help_inheritance_continuations_and_choices():
    keys = {k.key: k for k in config_keys(_Child)}
    assert list(keys) == ["steps", "lr", "split.unit", "needed", "above", "long", "plain"]
    assert keys["steps"].help == "steps on the support"  # inherited field keeps the base class's help
    assert keys["lr"].help == "overridden, with help of its own" and keys["lr"].default == 0.5
    assert keys["split.unit"].choices == ("user", "conversation")
    assert keys["split.unit"].type == "'user' | 'conversation'"
    assert keys["needed"].help == ""  # a `type: ignore` directive is not help
    assert keys["above"].help == "help on the line above"
    assert keys["long"].help == "a comment that goes on on the next line"
    assert keys["plain"].help == ""


# ------------------------------------------------------------------ built-ins
def _components_with_key(key: str, module_name: str) -> list[str]:
    from crs.plugin_manager import get_plugin_manager
    from crs.registry import Registry

    registry = Registry.from_plugin_manager(get_plugin_manager())
    found = []
    for name in registry.names():
        cls = registry.get(name).cls
        if cls.__module__ == module_name and key in {k.key for k in config_keys(cls.Config)}:
            found.append(name)
    return found


def test_every_builtin_choice_is_checked_with_the_config(registry):
    """Every built-in key with allowed values (a Literal) refuses a misspelt one when its node is checked, before
    anything is built, naming the key: the one guard (components do not check their choices again)."""
    from crs.errors import ConfigError

    checked = []
    for name in registry.names():
        info = registry.get(name)
        if info.plugin not in crs.plugin_manager.DEFAULT_PLUGINS:
            continue
        keys = config_keys(info.cls.Config)
        required = {key.key: "x" for key in keys if key.required}  # every required built-in key is a str
        for key in keys:
            if not key.choices or not all(isinstance(choice, str) for choice in key.choices):
                continue
            node: dict = {"type": name, **required}
            *parents, last = key.key.split(".")
            place = node
            for parent in parents:
                place = place.setdefault(parent, {})
            place[last] = key.choices[-1] + "x"
            with pytest.raises(ConfigError) as err:
                registry.check_node(info.kind, node, "slot")
            assert err.value.path == f"slot.{key.key}", str(err.value)
            assert f"which is not a valid choice. Did you mean '{key.choices[-1]}'?" in str(err.value)
            assert f"use one of: {', '.join(key.choices)}" in str(err.value)
            checked.append(f"{name}.{key.key}")
    assert {"dot_product.bias_init", "user_adapt.split.order", "user_adapt.split.single", "user_adapt.split.unit",
            "crslab.candidates", "bleu.mode", "bleu.weights", "unicrs_jsonl.item_set", "jsonl.format",
            "jsonl.last_speaker", "jsonl.pooled_mentions", "kg_triples.format", "kg_triples.role",
            "redial.on_error", "conceptnet_edges.on_error"} <= set(checked)


def test_builtin_choice_tuples_match_their_literals():
    from crs.data import tasks
    from crs.data.schema import ROLES
    from crs.knowledge import ENTITY, WORD
    from crs.plugins.datasets import generic_jsonl, graph_files
    from crs.plugins.kgsf import graph_common, rgcn

    assert tuple(graph_common.ACTIVATIONS) == typing.get_args(graph_common.Activation)
    assert typing.get_args(graph_files.GraphRole) == (ENTITY, WORD)
    assert typing.get_args(generic_jsonl.Speaker) == ROLES
    assert rgcn.AGGREGATIONS == ("mean", "sum")
    assert tasks.UNITS == ("user", "conversation")


def test_a_misspelt_choice_is_caught_when_the_config_is_checked(registry):
    from crs.errors import ConfigError

    message = r"got 'popularty' \(str\), which is not a valid choice. Did you mean 'popularity'"
    with pytest.raises(ConfigError, match=message) as err:
        registry.check_node("recommender", {"type": "dot_product", "bias_init": "popularty"}, "model.recommender")
    assert err.value.path == "model.recommender.bias_init"
    assert "use one of: zero, popularity" in str(err.value)


def test_docs_components_md_is_current():
    text = builtin_markdown()
    path = ROOT / DOC_FILE
    assert path.exists(), f"{DOC_FILE} is missing: run `python scripts/components_doc.py`"
    assert path.read_text(encoding="utf-8") == text, \
        f"{DOC_FILE} is not current: run `python scripts/components_doc.py` and commit it"
    # both references `crs components fields|settings` print are in it, and every built-in model slot has ports
    assert "## Batch fields (`crs components fields`)" in text and "`batch.context_entities`" in text
    assert "## Pipeline settings (`crs components settings`)" in text and "`stages.<i>.accumulate`" in text
    assert "Ports unknown" not in text and "Cannot be loaded" not in text
    section = text[text.index("### dot_product"):text.index("### popularity")]
    assert "| `scores` | writes | `scores` | n_items |" in section
    assert "`'zero' \\| 'popularity'`" in section


def test_markdown_option_prints_the_reference(fake_registry, capsys):
    assert main(["components", "--markdown"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# Components\n") and "### sized" in out and "| `user` | reads | `user` | 8 (dim) |" in out
    assert "Ports unknown: it does not build" in out and "## Pipeline settings" in out


def test_builtin_listing_has_ports_for_every_model_slot(capsys):
    from crs.component_reference import PORTED_KINDS
    from crs.kinds import MODEL_KINDS

    assert main(["components", "generator"]) == 0
    out = capsys.readouterr().out
    assert "ports: unknown" not in out and "hf_causal_lm" in out
    assert re.search(r"output\s+logits\s+-> gen_logits\s+dim vocabulary size", out)
    assert set(MODEL_KINDS) < set(PORTED_KINDS)
