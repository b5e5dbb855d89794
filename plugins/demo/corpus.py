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
    # true: the test conversations belong to users who have none in train or valid (as ReDial's official test
    # seekers), at least two each, so a test user's earlier conversations can serve as adaptation support (CCRS)
    disjoint_test_users: bool = False
    # how much the recommender favours what it remembers of each user's hidden taste: the favourite person's movies
    # score taste_memory (a person named in the dialogue scores 4), and among the best candidates a movie that fits
    # the taste weighs 1 + taste_memory times its popularity. 0: it goes by what was said only, so a user's other
    # conversations tell nothing the context does not; > 0 gives per-user adaptation something to find
    taste_memory: float = 0.0
    # the share of users with a favourite person (the rest have favourite genres only); the default corpus keeps 0.5
    favourite_person_share: float = 0.5


def _world(config: DemoConfig):
    return build_world(config.seed, config.n_items, config.n_people)


@lru_cache(maxsize=8)
def _corpus(key: tuple) -> Corpus:
    config = DemoConfig(*key)
    world = _world(config)
    rng = random.Random(f"demo-dialogues-{config.seed}")
    tastes = make_tastes(rng, world, config.n_users, config.favourite_person_share)
    writer = DialogueWriter(world, rng, taste_memory=config.taste_memory)
    conversations = []
    total = config.n_train + config.n_valid + config.n_test
    if config.disjoint_test_users:
        owners = _disjoint_owners(rng, config)
    else:
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
    if config.disjoint_test_users:
        report["test_users"] = len({c.user_id for c in splits["test"]})
    return Corpus("demo", splits, items, report)


def _disjoint_owners(rng: random.Random, config: DemoConfig) -> list[int]:
    """The user of each conversation, test users apart: about their share of the conversations, two or more each.

    Test users are the last ones (the count keeps the corpus-wide conversations per user,
    but never under two per test user); train and valid take the others round robin.
    """
    total = config.n_train + config.n_valid + config.n_test
    n_test_users = max(1, min(round(config.n_users * config.n_test / total), config.n_test // 2,
                              config.n_users - 1))
    first_test_user = config.n_users - n_test_users
    seen = [n % first_test_user for n in range(config.n_train + config.n_valid)]
    unseen = [first_test_user + n % n_test_users for n in range(config.n_test)]
    rng.shuffle(seen)
    rng.shuffle(unseen)
    return seen + unseen


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
    return ItemTexts("review", {m.id: reviews(world, m) for m in world.movies},
                     label="generated reviews (demo world templates)")


def demo_metadata(config: DemoConfig = DemoConfig()) -> ItemTexts:
    world = _world(config)
    return ItemTexts("metadata", {m.id: [describe(world, m)] for m in world.movies},
                     label="generated descriptions (demo world: genres, year, people, templated plot)")
