"""The generated demo corpus: determinism, sizes, consistency with its knowledge, and real signal."""
from __future__ import annotations

import json
import random
from dataclasses import astuple

import numpy as np
import pytest

from crs.config.spec import SamplesSpec
from crs.data import build, prepare
from crs.data.schema import RECOMMENDER, SEEKER
from crs.errors import ConfigError
from crs.interfaces import BuildDeps
from crs.knowledge import ENTITY, WORD, IndexedGraph
from crs.plugins.demo import lexicon as lx
from crs.plugins.demo.components import DemoDataset
from crs.plugins.demo.corpus import (
    DemoConfig,
    _corpus,
    demo_concept_graph,
    demo_corpus,
    demo_entity_graph,
    demo_metadata,
    demo_reviews,
)
from crs.plugins.demo.export import conversation_record, write_demo_corpus

SMALL = DemoConfig(seed=7, n_items=120, n_people=60, n_users=40, n_train=200, n_valid=30, n_test=30)


def _fresh(config: DemoConfig):
    """Generate without the per-process cache, to test determinism for real."""
    return _corpus.__wrapped__(astuple(config))


def _records(corpus) -> list[dict]:
    return [conversation_record(c) for split in ("train", "valid", "test") for c in corpus.splits[split]]


def test_same_seed_same_corpus_and_other_seed_differs():
    a, b = _fresh(SMALL), _fresh(SMALL)
    assert a is not b and _records(a) == _records(b)
    assert {k: (v.name, v.entity, v.meta) for k, v in a.items.items()} == \
           {k: (v.name, v.entity, v.meta) for k, v in b.items.items()}
    other = _fresh(DemoConfig(**{**SMALL.__dict__, "seed": 8}))
    assert _records(other) != _records(a)
    assert [i.name for i in other.items.values()] != [i.name for i in a.items.values()]


def test_default_corpus_has_the_documented_sizes():
    corpus = _fresh(DemoConfig())  # how long this takes: benchmarks/bench_demo_corpus.py
    assert {k: len(v) for k, v in corpus.splits.items()} == {"train": 1200, "valid": 150, "test": 150}
    assert len(corpus.items) == 300
    convs = prepare.conversations(corpus)
    assert all(6 <= len(c.turns) <= 10 for c in convs)
    assert all(t.role in (SEEKER, RECOMMENDER) and t.index == i for c in convs for i, t in enumerate(c.turns))
    per_user: dict[str, int] = {}
    for c in convs:
        per_user[c.user_id] = per_user.get(c.user_id, 0) + 1
    assert min(per_user.values()) >= 3  # CCRS needs several dialogues per user
    cold = sum(c.meta["cold_start"] for c in convs) / len(convs)
    assert 0.1 < cold < 0.7  # some dialogues recommend before any item was named
    # every item mention is spelt in its turn, and recommended items are mentioned by name
    for c in convs:
        for t in c.turns:
            assert all(m.text in t.text and m.id in corpus.items for m in t.items)
            assert set(t.recommended) <= {m.id for m in t.items}


def test_knowledge_sources_agree_with_the_dataset():
    corpus = demo_corpus(SMALL)
    kg, concepts = demo_entity_graph(SMALL), demo_concept_graph()
    assert kg.role == ENTITY and concepts.role == WORD
    nodes = set(kg.nodes)
    assert all(item.entity in nodes for item in corpus.items.values())
    assert all(m.id in nodes for c in prepare.conversations(corpus) for t in c.turns for m in t.entities)
    assert all(kg.labels[n] for n in kg.nodes)
    assert 300 <= len(concepts.nodes) <= 600
    assert set(concepts.relations) == {"RelatedTo", "Synonym", "IsA"}
    used = {w for c in prepare.conversations(corpus) for t in c.turns for w in t.text.lower().split()}
    used = {w.strip(".,!?") for w in used}
    assert sum(w in used for w in concepts.nodes) >= 100  # the word graph speaks the dialogues' language
    reviews, metadata = demo_reviews(SMALL), demo_metadata(SMALL)
    assert set(reviews.texts) == set(metadata.texts) == set(corpus.items)
    assert all(1 <= len(r) <= 3 for r in reviews.texts.values())
    some = next(iter(corpus.items.values()))
    assert some.name in metadata.texts[some.id][0] and some.meta["director"] in metadata.texts[some.id][0]


def _said_by_seeker(turns):
    """Movies, genres and people the seeker revealed (genres also via concept words)."""
    word_genre = {w: g.key for g in lx.GENRES for w in (*g.adjectives, *g.nouns)}
    movies, genres, people = set(), set(), set()
    for t in turns:
        movies |= {m.id for m in t.items}  # items named by either side are in the shared context
        if t.role == SEEKER:
            genres |= {m.id.split(":", 1)[1] for m in t.entities if m.id.startswith("genre:")}
            people |= {m.id for m in t.entities if m.id.startswith("person:")}
            genres |= {word_genre[w] for w in t.text.lower().replace(".", " ").replace("?", " ").split()
                       if w in word_genre}
    return movies, genres, people


def test_recommendations_are_related_through_the_kg_to_what_was_said():
    corpus = demo_corpus(SMALL)
    graph = demo_entity_graph(SMALL)
    neighbours: dict[str, set[str]] = {}
    for h, t in zip(graph.heads.tolist(), graph.tails.tolist()):
        neighbours.setdefault(graph.nodes[h], set()).add(graph.nodes[t])
        neighbours.setdefault(graph.nodes[t], set()).add(graph.nodes[h])

    def is_related(item_id: str, evidence: set[str]) -> bool:
        node = corpus.items[item_id].entity
        # one hop (the stated genre / person) or two hops (a genre / person shared with a named movie)
        reach = neighbours[node] | {far for near in neighbours[node] if near.startswith(("genre:", "person:"))
                                    for far in neighbours[near]}
        return bool(reach & evidence)

    rng = random.Random(0)
    related = control = total = 0
    for conv in prepare.conversations(corpus):
        for i, turn in enumerate(conv.turns):
            for rec in turn.recommended:
                movies, genres, people = _said_by_seeker(conv.turns[:i])
                evidence = {corpus.items[m].entity for m in movies} | {f"genre:{g}" for g in genres} | people
                total += 1
                related += is_related(rec, evidence)
                control += is_related(rng.choice(sorted(corpus.items)), evidence)
    assert total > 300
    assert related / total > 0.9
    assert control / total < 0.6  # a random movie usually is not: the check has teeth


def test_kg_heuristic_beats_popularity_on_test():
    corpus = prepare.ensure_valid_split(demo_corpus(), 0.1, 0)
    graph = IndexedGraph.from_graph("entity_kg", demo_entity_graph(), prepare.item_entity_names(corpus))
    items = prepare.build_item_index(corpus, graph)
    vocab = prepare.build_vocab(corpus, 1, items)
    samples = build.build_samples(corpus.split("test"), vocab=vocab, items=items, entity_graph=graph,
                                  word_graph=None, users=prepare.build_user_index(corpus), spec=SamplesSpec())
    neighbours: dict[int, set[int]] = {}
    for s, d in zip(graph.src.tolist(), graph.dst.tolist()):
        neighbours.setdefault(s, set()).add(d)
        neighbours.setdefault(d, set()).add(s)
    item_nodes = items.entity_nodes.tolist()
    popularity = items.train_counts.numpy()

    def hit(scores, sample, target):
        scores = scores.copy()
        scores[sample.context_items] = -np.inf
        return target in np.argsort(-scores, kind="stable")[:10]

    pop_hits = kg_hits = n = 0
    for sample in samples:
        context = set(sample.context_entities)
        reach = context.union(*(neighbours.get(e, set()) for e in context))
        kg_scores = np.array([len(neighbours.get(node, set()) & reach) for node in item_nodes], float)
        kg_scores += 1e-3 * popularity / popularity.max()  # popularity only breaks ties
        for target in sample.target_items:
            n += 1
            pop_hits += hit(popularity, sample, target)
            kg_hits += hit(kg_scores, sample, target)
    assert n > 200
    pop_recall, kg_recall = pop_hits / n, kg_hits / n
    assert 0.03 < pop_recall < 0.3  # popularity is a baseline ...
    assert kg_recall > 2 * pop_recall and kg_recall - pop_recall > 0.2  # ... but the KG carries the signal


def test_components_and_registry():
    from crs.plugin_manager import get_plugin_manager
    from crs.registry import Registry

    registry = Registry.from_plugin_manager(get_plugin_manager(load_entry_points=False, builtins=("crs.plugins.demo",)))
    assert {"demo", "demo_kg", "demo_concepts", "demo_reviews", "demo_metadata"} <= set(registry.names())
    node = {"type": "demo", "seed": 7, "n_items": 120, "n_people": 60, "n_users": 40,
            "n_train": 200, "n_valid": 30, "n_test": 30}
    corpus = registry.build("dataset", node, "data").load()
    assert corpus is demo_corpus(SMALL)
    kg = registry.build("knowledge_source", {**node, "type": "demo_kg"}, "knowledge.entity_kg").load(corpus)
    assert {i.entity for i in corpus.items.values()} <= set(kg.nodes)
    texts = registry.build("knowledge_source", {**node, "type": "demo_reviews"}, "knowledge.reviews").load(corpus)
    assert texts.kind == "review"
    with pytest.raises(ConfigError, match="data.n_people"):
        DemoDataset(DemoConfig(n_people=100000), BuildDeps(path="data"))


def test_write_demo_corpus(tmp_path):
    written = write_demo_corpus(tmp_path / "demo", config=SMALL)
    lines = written["train"].read_text().splitlines()
    assert len(lines) == 200
    record = json.loads(lines[0])
    assert set(record) == {"id", "user_id", "turns"}
    assert set(record["turns"][0]) == {"index", "role", "text", "items", "entities", "recommended"}
    assert len(written["items"].read_text().splitlines()) == 120
    triples = [line.split("\t") for line in written["kg"].read_text().splitlines()]
    assert len(triples) == demo_entity_graph(SMALL).num_edges and all(len(t) == 3 for t in triples)
    assert written["concepts"].exists() and written["reviews"].exists()
