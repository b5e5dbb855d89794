"""Builds a runnable pipeline from a validated spec: data, knowledge, samples, model slots."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any, Iterator, Sequence

import torch

from ..config.spec import PipelineSpec
from ..data.extra_items import append_items, texts_for
from ..data.fields import batch_keys, check_fields, featurize_all
from ..data.schema import Corpus, Item
from ..data.text_coverage import TextLookups
from ..data.vocab import Vocabulary
from ..errors import ConfigError
from ..interfaces import MODEL_KINDS, BuildDeps, ItemIndex
from ..knowledge import (
    ENTITY,
    WORD,
    GraphLookups,
    IndexedGraph,
    ItemTexts,
    KnowledgeGraph,
    check_graph_reads,
    output_keys,
)
from ..shared import build_shared
from .model import PipelineModel
from .wiring import wire

log = logging.getLogger(__name__)


@dataclass
class Pipeline:
    spec: PipelineSpec
    resolved: dict
    registry: Any
    corpus: Corpus
    vocab: Vocabulary
    items: ItemIndex
    graphs: dict[str, IndexedGraph]
    item_texts: dict[str, ItemTexts]
    users: dict[str, int]
    samples: dict[str, list]
    model: PipelineModel
    linker: Any = None
    timings: dict[str, float] = field(default_factory=dict)
    fields: list = field(default_factory=list)  # batch fields added by featurizers (crs.data.fields.Field)
    # reader (model slot path, samples.vocab_item_texts) -> item-text sources it looked up, in order
    text_reads: dict[str, list[str]] = field(default_factory=dict)
    # what the samples were built with, for building more of them (crs.serving): the graphs they index (the entity
    # graph is the item-only one when no knowledge graph is configured) and the featurizers that ran over them
    entity_graph: Any = None
    word_graph: Any = None
    featurizers: list = field(default_factory=list)

    @property
    def device(self) -> torch.device:
        return torch.device(self.spec.device)

    def item_text_report(self) -> dict:
        """Which item texts this pipeline reads and their coverage (crs.data.text_coverage); {} when no slot and
        no ``samples.vocab_item_texts`` read any (a corpus bundle's unused texts say nothing about a run)."""
        vocab_texts = list(self.spec.samples.vocab_item_texts)
        if not self.item_texts or not (self.text_reads or vocab_texts):
            return {}
        from ..data.text_coverage import text_coverage

        return text_coverage(self.item_texts, self.items.ids, self.samples, self.text_reads, self.spec.knowledge,
                             vocab_texts)

    def deps(self, path: str) -> BuildDeps:
        return _model_deps(path, self.vocab, self.items, self.graphs, self.item_texts, self.users)

    def build(self, kind: str, node: Any, path: str) -> Any:
        """Build a non-model component (metric, protocol, strategy) with this pipeline's dependencies."""
        return self.registry.build(kind, node, path, self.deps(path))

    def task_samples(self, split: str, task: str) -> list:
        samples = self.samples.get(split, [])
        if task == "rec":
            return [s.for_item(i) for s in samples for i in s.target_items]
        if task in ("conv", "all"):
            return [s for s in samples if len(s.response_tokens) > 2]
        if task == "dialogue":
            return dialogue_samples(samples)
        raise ConfigError("stages.task", f"unknown task '{task}'", "use rec, conv, all or dialogue")

    def batches(self, samples: list, batch_size: int, *, shuffle: bool, seed: int,
                group_by_length: bool = False) -> Iterator[dict]:
        from ..data.batching import iterate_batches

        device = self.device
        for batch in iterate_batches(samples, batch_size, shuffle=shuffle, seed=seed, extra_fields=self.fields,
                                     group_by_length=group_by_length):
            if device.type != "cpu":
                batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
            yield batch


def _add_test_support(samples: dict[str, list], corpus: Any, split: str) -> tuple[dict[str, list], Any]:
    """``samples.test_support_to_train``: train also gets the evaluation split's support samples.

    They are appended, not moved: the evaluation split keeps every conversation, so an
    adapting protocol still splits each user exactly as before and the query samples
    scored are the same.  Vocabulary and item index were built from train before this
    step: words seen only in support stay unknown (they would otherwise differ from the
    adapting models' vocabulary, which would make their PPL incomparable).
    """
    from ..data.tasks import support_samples

    support = support_samples(samples.get(split, []))
    report = {**corpus.report, "test_support_to_train": {
        "split": split, "samples": len(support), "conversations": len({s.conv_id for s in support}),
        "users": len({s.user_index for s in support})}}
    return {**samples, "train": [*samples.get("train", []), *support]}, replace(corpus, report=report)


def dialogue_samples(samples: list) -> list:
    """One sample per conversation (task ``dialogue``): its last recommender-turn sample, whose
    ``context_turns`` hold every turn before that one, so a model can read the whole dialogue in one pass
    (MESE's packing: one causal pass yields the state of every recommender turn).

    The turns are gathered from all the conversation's samples (each sample's context and reply),
    so a ``samples.context_turns`` window does not cut the dialogue short; the other fields are the
    last sample's (its targets are the last turn's: a packing model reads each turn's items from its
    record).  Conversations keep their first-sample order.
    """
    by_conv: dict[str, list] = {}
    for sample in samples:
        by_conv.setdefault(sample.conv_id, []).append(sample)
    out = []
    for group in by_conv.values():
        last = max(group, key=lambda s: s.turn_index)
        turns: dict[int, dict] = {}
        for sample in group:
            for record in (*sample.context_turns, sample.response_turn):
                if record:
                    turns.setdefault(record.get("index", -1), record)
        before = [turns[i] for i in sorted(turns) if i < last.turn_index]
        out.append(replace(last, context_turns=before))
    return out


def check_slot_names(nodes: dict[str, Any], section: str) -> None:
    """Slots and shared modules live in an ``nn.ModuleDict``, which cannot hold a key named like one of its
    methods (``items``, ``keys``, ``values``, ``update``...) or containing a dot: refused with the key before
    any data loads, not a KeyError from torch once the model is assembled."""
    from torch import nn

    for name in nodes:
        if hasattr(nn.ModuleDict, name) or "." in name or not name:
            raise ConfigError(f"{section}.{name}", f"'{name}' cannot name a {section} slot: the pipeline keeps "
                              f"its {section} modules in a torch ModuleDict, where it is reserved",
                              f"rename it, e.g. {section}.{name.replace('.', '_') or 'slot'}_encoder (and the "
                              "stages' train: lists that name it)")


def _model_deps(path: str, vocab: Vocabulary, items: ItemIndex, graphs: dict[str, IndexedGraph],
                item_texts: dict[str, ItemTexts], users: dict[str, int]) -> BuildDeps:
    """What components built after the data is loaded receive (index 0 of users = unknown user)."""
    return BuildDeps(path=path, vocab=vocab, items=items, graphs=graphs, item_texts=item_texts,
                     num_users=len(users) + 1)


def _pick_graph(graphs: dict[str, IndexedGraph | KnowledgeGraph], role: str, wanted: str | None,
                key: str) -> str | None:
    if wanted is not None:
        if wanted not in graphs:
            raise ConfigError(f"samples.{key}", f"no knowledge graph named '{wanted}'",
                              f"name one of: {', '.join(graphs) or '(none under knowledge:)'}")
        return wanted
    named = [n for n, g in graphs.items() if g.role == role]
    if len(named) > 1:
        raise ConfigError(f"samples.{key}", f"several {role} graphs ({', '.join(named)}); which one feeds the samples?",
                          f"set samples.{key} to one of them")
    return named[0] if named else None


def _build_featurizers(spec: PipelineSpec, registry: Any, vocab: Vocabulary, items: ItemIndex,
                       graphs: dict[str, IndexedGraph], item_texts: dict[str, ItemTexts],
                       users: dict[str, int]) -> tuple[list, list]:
    """The featurizers of ``samples.featurizers`` and the fields they declare, checked against each other and
    the built-ins."""
    featurizers, declared = [], []
    for i, node in enumerate(spec.samples.featurizers):
        path = f"samples.featurizers.{i}"
        featurizer = registry.build("featurizer", node, path,
                                    _model_deps(path, vocab, items, graphs, item_texts, users))
        declared += featurizer.fields()
        check_fields(declared, path)
        featurizers.append(featurizer)
    return featurizers, declared


def build_pipeline(spec: PipelineSpec, registry: Any, resolved: dict, extra_items: Sequence[Item] = (),
                   extra_items_file: str = "items_extra.jsonl") -> Pipeline:
    """The pipeline `spec` describes: data, knowledge, samples, model.

    :param extra_items: items added to a trained run (``crs items add``; crs.data.extra_items), appended
        to the item index after the catalogue, with texts from the knowledge sources that can describe them.
    :param extra_items_file: where they came from, named in errors.
    """
    from ..data import build as sample_build
    from ..data import prepare
    from ..data.item_links import link_items
    from ..training.precision import resolve_device

    resolve_device(spec.device)  # before any data loads: a GPU that is not there is a config error, not a traceback
    check_slot_names(spec.model, "model")
    check_slot_names(spec.shared, "shared")
    prepare.item_text_sources(spec.samples.vocab_item_texts, spec.knowledge, "samples.vocab_item_texts")  # named?
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    dataset = registry.build("dataset", spec.data, "data", BuildDeps(path="data"))
    corpus = dataset.load()
    if spec.samples.max_train_conversations:
        corpus = prepare.limit_train(corpus, spec.samples.max_train_conversations)
    corpus = prepare.ensure_valid_split(corpus, spec.samples.valid_fraction, spec.seed, spec.samples.valid_by)
    timings["load_data_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    raw_graphs: dict[str, KnowledgeGraph] = {}
    item_texts: dict[str, ItemTexts] = {}
    sources: dict[str, Any] = {}
    for name, node in spec.knowledge.items():
        source = sources[name] = registry.build("knowledge_source", node, f"knowledge.{name}",
                                                BuildDeps(path=f"knowledge.{name}"))
        loaded = source.load(corpus)
        (raw_graphs if isinstance(loaded, KnowledgeGraph) else item_texts)[name] = loaded
    entity_name = _pick_graph(raw_graphs, ENTITY, spec.samples.entity_graph, "entity_graph")
    word_name = _pick_graph(raw_graphs, WORD, spec.samples.word_graph, "word_graph")
    # items named like graph nodes get linked (when the corpus asks); the report counts the unlinked ones
    corpus, item_nodes = link_items(corpus, raw_graphs[entity_name] if entity_name else None)
    graphs = {
        name: IndexedGraph.from_graph(name, g, extra_nodes=item_nodes if name == entity_name else ())
        for name, g in raw_graphs.items()
    }
    entity_graph = graphs.get(entity_name) if entity_name else None
    word_graph = graphs.get(word_name) if word_name else None
    if entity_graph is None:  # item-only pipelines still need item nodes
        empty = KnowledgeGraph(ENTITY, [], [], [], [], [])
        entity_graph = IndexedGraph.from_graph("items", empty, extra_nodes=item_nodes)
    items = prepare.build_item_index(corpus, entity_graph)
    vocab_texts = prepare.item_text_sources(spec.samples.vocab_item_texts, item_texts, "samples.vocab_item_texts")
    vocab = prepare.build_vocab(corpus, spec.samples.min_word_freq, items, vocab_texts)
    users = prepare.build_user_index(corpus)
    if extra_items:  # after the vocabulary: the trained one stays, and every trained item keeps its index
        items = append_items(items, extra_items, entity_graph.node_index, extra_items_file)
        texts_for(sources, item_texts, extra_items)
    linker = None
    if spec.linker is not None:
        linker = registry.build("entity_linker", spec.linker, "linker", BuildDeps(path="linker"))
        linker.fit(entity_graph)
    timings["load_knowledge_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    samples = {
        split: sample_build.build_samples(
            convs, vocab=vocab, items=items, entity_graph=entity_graph, word_graph=word_graph,
            linker=linker, users=users, spec=spec.samples)
        for split, convs in corpus.splits.items()
    }
    if spec.samples.test_support_to_train:
        samples, corpus = _add_test_support(samples, corpus, spec.evaluation.split)
    featurizers, extra_fields = _build_featurizers(spec, registry, vocab, items, graphs, item_texts, users)
    featurize_all(featurizers, samples, corpus.splits)
    timings["build_samples_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    text_reads: dict[str, list[str]] = {}
    # modules several slots use (`shared:`) are built once, before the slots that name them
    shared = build_shared(spec.shared, registry, _model_deps("shared", vocab, items, graphs, item_texts, users))
    slots, renames = {}, {}
    for name, node in spec.model.items():
        deps = _model_deps(f"model.{name}", vocab, items, graphs, item_texts, users)
        deps.shared = shared
        deps.graphs = looked_up = GraphLookups(graphs)
        deps.item_texts = texts_read = TextLookups(item_texts)  # for the report: which texts stand in
        component = registry.build(MODEL_KINDS, node, f"model.{name}", deps)
        if texts_read.names:
            text_reads[f"model.{name}"] = texts_read.names
        # node tables are indexed with the samples' entity/word ids: a slot over any other graph would misindex
        check_graph_reads(f"model.{name}", looked_up.names, output_keys(component), graphs, entity_graph,
                          word_graph, {k: str(v.get("type")) for k, v in spec.knowledge.items()})
        slots[name] = component
        renames[name] = getattr(component, "port_renames", {})
    model = PipelineModel(slots, wire(slots, renames, batch_keys(extra_fields)), shared).to(spec.device)
    timings["build_model_s"] = time.perf_counter() - t0
    log.debug("pipeline built: %s", {k: round(v, 2) for k, v in timings.items()})  # CRS_DEBUG=1 shows it
    return Pipeline(spec=spec, resolved=resolved, registry=registry, corpus=corpus, vocab=vocab, items=items,
                    graphs=graphs, item_texts=item_texts, users=users, samples=samples, model=model,
                    linker=linker, timings=timings, fields=extra_fields, text_reads=text_reads,
                    entity_graph=entity_graph, word_graph=word_graph, featurizers=featurizers)
