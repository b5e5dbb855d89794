"""The `demo` dataset and the `demo_kg`, `demo_concepts`, `demo_reviews`, `demo_metadata` knowledge sources.

All five take the same :class:`DemoConfig` keys, so one YAML node (seed and
sizes) can be repeated for each and they will describe the same generated world.
"""
from __future__ import annotations

from crs.errors import ConfigError
from crs.interfaces import BuildDeps, Dataset, KnowledgeSource

from . import lexicon as lx
from .corpus import DemoConfig, demo_concept_graph, demo_corpus, demo_entity_graph, demo_metadata, demo_reviews


def _checked(config: DemoConfig, path: str) -> DemoConfig:
    max_people = len(lx.FIRST_NAMES) * len(lx.LAST_NAMES)
    limits = {"n_items": (10, 5000), "n_people": (8, max_people), "n_users": (1, 100000),
              "n_train": (1, 1000000), "n_valid": (0, 1000000), "n_test": (1, 1000000)}
    for key, (low, high) in limits.items():
        value = getattr(config, key)
        if not isinstance(value, int) or not low <= value <= high:
            raise ConfigError(f"{path}.{key}", f"{value!r} is out of range", f"use an integer in [{low}, {high}]")
    memory = config.taste_memory
    if isinstance(memory, bool) or not isinstance(memory, (int, float)) or not 0.0 <= memory <= 1e6:
        raise ConfigError(f"{path}.taste_memory", f"{memory!r} is out of range",
                          "use a number in [0, 1000000] (0: the recommender goes by what was said only)")
    share = config.favourite_person_share
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0.0 <= share <= 1.0:
        raise ConfigError(f"{path}.favourite_person_share", f"{share!r} is out of range",
                          "use a number in [0, 1] (the share of users with a favourite person)")
    if config.disjoint_test_users and (config.n_users < 2 or config.n_test < 2):
        raise ConfigError(f"{path}.disjoint_test_users",
                          f"test users apart from train users need n_users >= 2 and n_test >= 2 "
                          f"(got n_users {config.n_users}, n_test {config.n_test})",
                          "raise n_users and n_test, or set disjoint_test_users: false")
    return config


class DemoDataset(Dataset):
    """A generated movie-recommendation corpus (train/valid/test) with a hidden-taste signal."""

    Config = DemoConfig

    def __init__(self, config: DemoConfig, deps: BuildDeps):
        super().__init__(_checked(config, deps.path), deps)

    def load(self):
        return demo_corpus(self.config)


class DemoKnowledgeGraph(KnowledgeSource):
    """Entity graph: movies, genres, people, decades (has_genre, directed_by, starring, released_in, sequel_of)."""

    Config = DemoConfig

    def __init__(self, config: DemoConfig, deps: BuildDeps):
        super().__init__(_checked(config, deps.path), deps)

    def load(self, corpus):
        return demo_entity_graph(self.config)


class DemoConceptGraph(KnowledgeSource):
    """Word graph (ConceptNet-like RelatedTo / Synonym / IsA) over the words the dialogues use."""

    Config = DemoConfig

    def __init__(self, config: DemoConfig, deps: BuildDeps):
        super().__init__(_checked(config, deps.path), deps)

    def load(self, corpus):
        return demo_concept_graph()


class DemoReviews(KnowledgeSource):
    """1-3 generated reviews per movie (ItemTexts kind "review")."""

    Config = DemoConfig

    def __init__(self, config: DemoConfig, deps: BuildDeps):
        super().__init__(_checked(config, deps.path), deps)

    def load(self, corpus):
        return demo_reviews(self.config)


class DemoMetadata(KnowledgeSource):
    """One descriptive text per movie: genres, year, people, plot (ItemTexts kind "metadata")."""

    Config = DemoConfig

    def __init__(self, config: DemoConfig, deps: BuildDeps):
        super().__init__(_checked(config, deps.path), deps)

    def load(self, corpus):
        return demo_metadata(self.config)
