"""pytest plugin for crs plugin authors (loaded through the ``pytest11`` entry point).

Fixtures, each fresh per test:

``plugin_manager``
    A bare :class:`crs.plugin_manager.CRSPluginManager`: the crs hookspecs and no
    plugin at all (no built-ins, no installed entry points), so tests see only what
    they register.
``register_plugin``
    ``register_plugin(plugin, name=None) -> Registry``: registers a module or object
    with hookimpls on ``plugin_manager`` and returns a Registry of everything
    registered so far; every plugin is unregistered again when the test ends.
``registry``
    A Registry of the built-in plugins plus the installed third-party ones
    (``crs.plugin_manager.get_plugin_manager()``), i.e. what ``crs run`` sees.
``tiny_deps`` / ``tiny_batch``
    A :class:`crs.interfaces.BuildDeps` with a tiny vocabulary, 5 items, an entity
    graph (``entity_kg``) and a word graph (``word_kg``), item texts (``reviews``,
    ``metadata``); and a batch of 3 samples with every ``batch.*`` field of
    :mod:`crs.data.samples`, consistent with it.  The last sample mentions no
    entity, word or item, as early dialogue turns do: components must cope.

Helpers, one line each:

- ``make_tiny_deps(path)``: the BuildDeps behind ``tiny_deps``, usable outside pytest.
- ``make_tiny_samples(deps)``: the three Samples behind ``tiny_batch``, built from ``make_tiny_conversations()``.
- ``make_tiny_batch(deps, samples=None)``: those samples collated as a run collates them.
- ``check_component(cls, node, deps, batch)``: build a component, run it on a batch, check its ports and losses.
- ``check_contract(registry, name)``: ``check_component`` on a registered model component with its contract node.
- ``contract_node(cls)``: the node the contract builds ``cls`` from (its ``contract_node`` or ``{}``).
- ``write_entry_point_plugin(directory, entry_name, module_name, source)``: a fake pip-installed plugin.

The contract: every registered model component (``crs.interfaces.MODEL_KINDS``) must pass
``check_contract`` (the suite's ``tests/test_contract.py`` runs it on each one, so a new
plugin is checked without writing a test).  A component is built from its config
defaults; one whose defaults cannot build against ``make_tiny_deps()`` declares an
example node as a class attribute, ``contract_node: ClassVar[dict] = {"graph": "entity_kg"}``
(config keys, plus ``inputs``/``outputs`` renames as in YAML).  There is no opt-out:
a component that passes with neither fails the contract.

torch is imported only when a fixture or helper needs it.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any

import pytest

TINY_ITEMS = ("The Matrix", "Alien", "Heat", "Up", "Jaws")
TINY_ENTITIES = ("science_fiction", "horror", "crime", "animation", "thriller", "keanu_reeves")
TINY_WORDS = ("movie", "scary", "funny", "action", "love", "like", "space", "shark")
TINY_BATCH_SIZE = 3


@pytest.fixture
def plugin_manager():
    """A fresh, bare plugin manager (hookspecs only)."""
    from crs.plugin_manager import get_plugin_manager

    return get_plugin_manager(load_entry_points=False, builtins=())


@pytest.fixture
def register_plugin(plugin_manager):
    """``register_plugin(plugin, name=None) -> Registry``; unregisters everything at teardown."""
    with registering(plugin_manager) as register:
        yield register


@contextmanager
def registering(plugin_manager):
    """Context manager behind ``register_plugin``: yields ``register(plugin, name=None) -> Registry``
    and unregisters every plugin registered through it on exit (also when the body fails)."""
    from crs.registry import Registry

    registered: list[str] = []

    def register(plugin: Any, name: str | None = None) -> Registry:
        registered.append(plugin_manager.register_module(plugin, name))
        plugin_manager.check_pending()
        return Registry.from_plugin_manager(plugin_manager)

    try:
        yield register
    finally:
        for name in reversed(registered):
            if plugin_manager.get_plugin(name) is not None:
                plugin_manager.unregister(name=name)


@pytest.fixture
def registry():
    """The Registry `crs run` would use: built-in plus installed plugins."""
    from crs.plugin_manager import get_plugin_manager
    from crs.registry import Registry

    return Registry.from_plugin_manager(get_plugin_manager())


@pytest.fixture
def tiny_deps():
    """BuildDeps for a 5-item world with an entity graph and a word graph."""
    return make_tiny_deps()


@pytest.fixture
def tiny_batch(tiny_deps):
    """A batch of 3 samples with every `batch.*` field, consistent with `tiny_deps`."""
    return make_tiny_batch(tiny_deps)


# ------------------------------------------------------------------ builders
def make_tiny_deps(path: str = "tiny"):
    """The BuildDeps behind the ``tiny_deps`` fixture (usable outside pytest too)."""
    from collections import Counter

    import numpy as np
    import torch

    from crs.data.build import replace_mentions
    from crs.data.vocab import Vocabulary, item_token, tokenize
    from crs.interfaces import BuildDeps, ItemIndex
    from crs.knowledge import ENTITY, WORD, IndexedGraph, ItemTexts, KnowledgeGraph

    item_ids = [f"item{i}" for i in range(len(TINY_ITEMS))]
    # Items 0-3 are in the KG; item 4 is not, so IndexedGraph adds it as an isolated node.
    kg_nodes = item_ids[:4] + list(TINY_ENTITIES)
    edges = [("item0", "genre", "science_fiction"), ("item1", "genre", "horror"), ("item2", "genre", "crime"),
             ("item3", "genre", "animation"), ("item0", "starring", "keanu_reeves"),
             ("thriller", "related", "horror")]
    relations = ["genre", "starring", "related"]
    heads = [kg_nodes.index(h) for h, _, _ in edges]
    rels = [relations.index(r) for _, r, _ in edges]
    tails = [kg_nodes.index(t) for _, _, t in edges]
    entity_kg = KnowledgeGraph(ENTITY, kg_nodes, relations, np.array(heads),
                               np.array(rels), np.array(tails),
                               labels={n: [n.replace("_", " ")] for n in kg_nodes})
    entity_graph = IndexedGraph.from_graph("entity_kg", entity_kg, extra_nodes=item_ids)
    word_kg = KnowledgeGraph(WORD, list(TINY_WORDS), ["related_to"], np.array([0, 1, 3, 6]),
                             np.zeros(4, dtype=np.int64), np.array([4, 7, 6, 3]))
    word_graph = IndexedGraph.from_graph("word_kg", word_kg)
    # word counts as Vocabulary.build would keep them, from the tiny conversations' texts
    counts = Counter(tok for conv in make_tiny_conversations() for turn in conv.turns
                     for tok in tokenize(replace_mentions(turn)))
    vocab = Vocabulary([*TINY_WORDS, "i", "a", "you", "hi", "?", "!", "watch", "try", *map(item_token, item_ids)],
                       counts)
    items = ItemIndex(
        ids=item_ids, names=list(TINY_ITEMS),
        entity_nodes=torch.tensor([entity_graph.node_index[i] for i in item_ids], dtype=torch.long),
        train_counts=torch.tensor([3.0, 1.0, 0.0, 2.0, 1.0]),
    )
    texts = {
        "reviews": ItemTexts("review", {i: [f"a review of {n}", f"i like {n}"] for i, n in zip(item_ids, TINY_ITEMS)}),
        "metadata": ItemTexts("metadata", {i: [f"{n}. a movie"] for i, n in zip(item_ids, TINY_ITEMS)}),
    }
    return BuildDeps(path=path, vocab=vocab, items=items,
                     graphs={"entity_kg": entity_graph, "word_kg": word_graph},
                     item_texts=texts, num_users=4)


def make_tiny_conversations() -> list:
    """The three conversations behind ``tiny_batch`` (users ``u1``, ``u2`` and none), with annotated
    item and entity mentions, so every batch field has values a real run would give."""
    from crs.data.schema import RECOMMENDER, SEEKER, Conversation, Mention, Turn

    return [
        Conversation("c1", "u1", [
            Turn(0, SEEKER, "i like space movie", entities=[Mention("science_fiction", "space")]),
            Turn(1, RECOMMENDER, "try @item0 !", [Mention("item0", "@item0")], recommended=["item0"]),
            Turn(2, SEEKER, "something scary ?", entities=[Mention("horror", "scary")]),
            Turn(3, RECOMMENDER, "watch @item1 !", [Mention("item1", "@item1")], recommended=["item1", "item4"]),
        ]),
        Conversation("c2", "u2", [
            Turn(0, SEEKER, "a funny movie ?", entities=[Mention("animation", "funny")]),
            Turn(1, RECOMMENDER, "try @item3", [Mention("item3", "@item3")], recommended=["item3"]),
        ]),
        Conversation("c3", "", [
            Turn(0, SEEKER, "hi !"),
            Turn(1, RECOMMENDER, "you like heat ?", recommended=["item2"]),
        ]),
    ]


def make_tiny_samples(deps) -> list:
    """Three :class:`crs.data.samples.Sample` s over `deps`: the last recommender turn of each
    :func:`make_tiny_conversations` conversation, built by the pipeline's own sample builder (so every
    field, per-token tags and turn records included, is consistent), with ``target_item`` set to the
    turn's first target.  The last sample's context mentions nothing."""
    from crs.config.spec import SamplesSpec
    from crs.data.build import SampleBuilder

    builder = SampleBuilder(vocab=deps.vocab, items=deps.items, entity_graph=deps.graphs["entity_kg"],
                            word_graph=deps.graphs["word_kg"], linker=None, users={"u1": 1, "u2": 2},
                            spec=SamplesSpec())
    samples = [builder.conversation(conv)[-1] for conv in make_tiny_conversations()]
    return [sample.for_item(sample.target_items[0]) for sample in samples]


def make_tiny_batch(deps, samples: list | None = None) -> dict:
    """Collate samples (default :func:`make_tiny_samples`) into ``batch.*`` tensors.

    Uses the pipeline's own collate, so components are tested on exactly the batch
    layout they get in a run.
    """
    from .data.batching import collate

    return collate(make_tiny_samples(deps) if samples is None else samples)


# ------------------------------------------------------------------ checking
def check_component(cls: type, node: dict | None, deps, batch: dict) -> tuple[Any, dict]:
    """Build ``cls`` from a YAML-like `node`, run ``forward`` on `batch`, and check its ports.

    `node` holds config keys (``type`` is ignored; ``inputs``/``outputs`` rename ports
    as in YAML).  An input port whose key is not in `batch` is filled with random
    floats when it declares a dim (the output of another slot): shape (N, dim) for a
    node table ``<role>_nodes`` (``entity_nodes``, ``word_nodes``; N = nodes of the
    first graph of that role in `deps`), (B, dim) otherwise; optional inputs are left out.
    A class with a ``contract_inputs(deps, batch)`` classmethod gives the values of such
    keys itself (``{state key: value}``: what its upstream slots would write, e.g. a
    cache object no random tensor can stand for); they are used for optional ports too.
    Checks: every non-optional output port is produced, no undeclared output appears,
    tensors have the declared last dim and are finite, ``loss.*`` outputs are scalars
    and backpropagate.
    Returns ``(component, outputs)`` (outputs keyed by local port name).
    """
    import torch

    from crs.config.validate import from_dict

    node = dict(node or {})
    node.pop("type", None)
    renames = {key: dict(node.pop(key, None) or {}) for key in ("inputs", "outputs")}
    path = getattr(deps, "path", "") or "component"
    component = cls(from_dict(cls.Config, node, path), deps)
    size = _batch_size(batch)
    # What other slots would give, from the class itself (e.g. a cache object only its upstream slot can make)
    upstream = cls.contract_inputs(deps, batch) if hasattr(cls, "contract_inputs") else {}
    inputs = {}
    for local, port in component.input_ports().items():
        key = renames["inputs"].get(local, port.key)
        if key in batch:
            inputs[local] = batch[key]
        elif key in upstream:
            inputs[local] = upstream[key]
        elif not port.optional:
            assert port.dim is not None, (
                f"input port '{local}' reads '{key}', which is not in the batch and has no declared dim; "
                f"put a value for '{key}' into the batch passed to check_component")
            inputs[local] = torch.randn(_rows(key, deps, size), port.dim)
    outputs = component(inputs)
    declared = component.output_ports()
    undeclared = sorted(set(outputs) - set(declared))
    assert not undeclared, f"forward returned undeclared outputs {undeclared}; declared: {sorted(declared)}"
    losses = []
    for local, port in declared.items():
        if local not in outputs:
            assert port.optional, f"output port '{local}' ({port.key}) was not produced"
            continue
        value = outputs[local]
        if isinstance(value, torch.Tensor):
            if port.dim is not None:
                assert value.shape[-1] == port.dim, \
                    f"output '{local}' has last dim {value.shape[-1]}, declared {port.dim}"
            if value.is_floating_point():
                assert torch.isfinite(value).all(), f"output '{local}' has NaN or inf values"
        if port.key.startswith("loss."):
            assert isinstance(value, torch.Tensor) and value.dim() == 0, f"loss '{local}' must be a scalar tensor"
            if value.requires_grad:
                losses.append(value)
    if losses:
        torch.stack(losses).sum().backward()
    return component, outputs


def contract_node(cls: type) -> dict:
    """The node the contract builds `cls` from: a copy of its ``contract_node`` attribute, or ``{}`` (defaults)."""
    import copy

    node = getattr(cls, "contract_node", None)
    if node is None:
        return {}
    assert isinstance(node, dict), f"{cls.__name__}.contract_node must be a dict (a YAML-like node), got {node!r}"
    return copy.deepcopy(node)


def check_contract(registry, name: str, deps=None, batch: dict | None = None) -> tuple[Any, dict]:
    """:func:`check_component` on the registered model component `name`, built from :func:`contract_node`.

    `deps` and `batch` default to :func:`make_tiny_deps` and :func:`make_tiny_batch`.
    A failure is re-raised as an AssertionError that names the component, its plugin
    and the node it was built from, and says how to declare ``contract_node``.
    """
    from crs.interfaces import MODEL_KINDS

    info = registry.get(name)
    assert info.kind in MODEL_KINDS, f"'{name}' is a {info.kind}; the contract covers {', '.join(MODEL_KINDS)}"
    cls = info.cls
    node = contract_node(cls)
    deps = make_tiny_deps(f"model.{name}") if deps is None else deps
    batch = make_tiny_batch(deps) if batch is None else batch
    try:
        return check_component(cls, node, deps, batch)
    except Exception as err:
        built_from = f"its contract_node {node}" if getattr(cls, "contract_node", None) is not None else \
            "its config defaults (it declares no contract_node)"
        raise AssertionError(
            f"{info.kind} '{name}' (plugin {info.plugin}, {cls.__module__}.{cls.__qualname__}) fails the "
            f"component contract, built from {built_from}: {type(err).__name__}: {err}\n"
            "  fix: make it pass crs.testing.check_component on make_tiny_deps()/make_tiny_batch(); if it needs "
            "config values to build there, declare them as `contract_node: ClassVar[dict] = {...}` on the class"
        ) from err


def _rows(key: str, deps, batch_size: int) -> int:
    """Rows of a generated input: the node count for ``<role>_nodes`` keys, else one per sample."""
    if key.endswith("_nodes"):
        role = key[: -len("_nodes")]
        for graph in (getattr(deps, "graphs", None) or {}).values():
            if getattr(graph, "role", None) == role:
                return graph.num_nodes
    return batch_size


def _batch_size(batch: dict) -> int:
    for value in batch.values():
        if hasattr(value, "shape") and len(value.shape) > 0:
            return int(value.shape[0])
    return TINY_BATCH_SIZE


# ------------------------------------------------------------------ fake installs
def write_entry_point_plugin(directory, entry_name: str, module_name: str, source: str, *,
                             version: str = "0.0.1", dist_name: str | None = None):
    """Write module `module_name` (code `source`) plus the dist-info that declares it as a
    ``crs`` entry point named `entry_name`, into `directory`.

    Put `directory` on ``sys.path`` (``monkeypatch.syspath_prepend``) and the plugin is
    "installed" for :func:`crs.plugin_manager.get_plugin_manager`, exactly as pip would
    leave it, without touching the environment.  Returns `directory` as a Path.
    """
    from pathlib import Path

    directory = Path(directory)
    dist_name = dist_name or f"fake-{entry_name}"
    info = directory / f"{dist_name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist_name}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[crs]\n{entry_name} = {module_name}\n")
    (directory / f"{module_name}.py").write_text(source)
    return directory
