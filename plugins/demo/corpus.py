"""The demo corpus and knowledge in the canonical schema, cached per configuration.

`DemoConfig` is shared by the `demo` dataset and the `demo_*` knowledge sources:
give them the same seed (and sizes) and they describe the same world.
"""
from __future__ import annotations

import random
from dataclasses import astuple, dataclass
from functools import lru_cache

from crs.data.schema import Corpus, Item
from crs.knowledge import ENTITY, WORD, ItemTexts, KnowledgeGraph

from . import lexicon as lx
from .dialogues import DialogueWriter, make_tastes
from .world import CONCEPT_RELATIONS, RELATIONS, build_world, concept_triples, describe, entity_triples, reviews


@dataclass(frozen=True)
class DemoConfig:
    seed: int = 0
    n_items: int = 300
    n_people: int = 150
    n_users: int = 250
    n_train: int = 1200
    n_valid: int = 150
    n_test: int = 150


def _world(config: DemoConfig):
    return build_world(config.seed, config.n_items, config.n_people)


@lru_cache(maxsize=8)
def _corpus(key: tuple) -> Corpus:
    config = DemoConfig(*key)
    world = _world(config)
    rng = random.Random(f"demo-dialogues-{config.seed}")
    tastes = make_tastes(rng, world, config.n_users)
    writer = DialogueWriter(world, rng)
    conversations = []
    total = config.n_train + config.n_valid + config.n_test
    owners = [n % config.n_users for n in range(total)]  # balanced: every user gets several dialogues
    rng.shuffle(owners)
    for n, user in enumerate(owners):
        conversations.append(writer.conversation(f"demo-{n:05d}", f"u{user:04d}", tastes[user]))
    a, b = config.n_train, config.n_train + config.n_valid
    splits = {"train": conversations[:a], "valid": conversations[a:b], "test": conversations[b:]}
    items = {}
    for movie in world.movies:
        meta = {"year": movie.year, "genres": [lx.GENRES[g].name for g in movie.genres],
                "director": world.people[movie.director].name,
                "actors": [world.people[p].name for p in movie.actors], "plot": describe(world, movie)}
        items[movie.id] = Item(movie.id, movie.title, movie.node, meta)
    report = {"generated": True, "seed": config.seed,
              "conversations": {k: len(v) for k, v in splits.items()}, "items": len(items)}
    return Corpus("demo", splits, items, report)


def demo_corpus(config: DemoConfig = DemoConfig()) -> Corpus:
    """The demo corpus for `config` (same object for the same config within a process; do not mutate)."""
    return _corpus(astuple(config))


def demo_entity_graph(config: DemoConfig = DemoConfig()) -> KnowledgeGraph:
    nodes, triples, labels = entity_triples(_world(config))
    return _graph(ENTITY, nodes, list(RELATIONS), triples, labels)


def demo_concept_graph() -> KnowledgeGraph:
    words, triples = concept_triples()
    return _graph(WORD, words, list(CONCEPT_RELATIONS), triples, {w: [w] for w in words})


def _graph(role, nodes, relations, triples, labels) -> KnowledgeGraph:
    node_index = {n: i for i, n in enumerate(nodes)}
    rel_index = {r: i for i, r in enumerate(relations)}
    return KnowledgeGraph(role, list(nodes), relations,
                          heads=[node_index[h] for h, _, _ in triples],
                          relation_ids=[rel_index[r] for _, r, _ in triples],
                          tails=[node_index[t] for _, _, t in triples], labels=labels)


def demo_reviews(config: DemoConfig = DemoConfig()) -> ItemTexts:
    world = _world(config)
    return ItemTexts("review", {m.id: reviews(world, m) for m in world.movies})


def demo_metadata(config: DemoConfig = DemoConfig()) -> ItemTexts:
    world = _world(config)
    return ItemTexts("metadata", {m.id: [describe(world, m)] for m in world.movies})
