"""The canonical corpus schema every dataset plugin reads into.

Ids are strings everywhere in the schema (ReDial movie ids, DBpedia URIs, demo
names); integer indices only appear once a pipeline indexes them (`crs.data.index`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SEEKER = "seeker"
RECOMMENDER = "recommender"
ROLES = (SEEKER, RECOMMENDER)


@dataclass
class Mention:
    """An item or entity mentioned in a turn: its id and the words that named it."""

    id: str
    text: str = ""


@dataclass
class Turn:
    index: int
    role: str  # SEEKER or RECOMMENDER
    text: str
    items: list[Mention] = field(default_factory=list)  # items (recommendable) mentioned
    entities: list[Mention] = field(default_factory=list)  # other KG entities mentioned
    recommended: list[str] = field(default_factory=list)  # item ids recommended in this turn
    # False: a recommender turn that is context only, so build_samples makes no sample of it (a per-turn
    # corpus's history turns that its file has no line for: one sample per line, not one per history turn)
    is_sample: bool = True


@dataclass
class Conversation:
    id: str
    user_id: str
    turns: list[Turn]
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Item:
    """A recommendable item. `entity` is the knowledge-graph node it is linked to, if any."""

    id: str
    name: str
    entity: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)  # genre, plot, people, ... as plain values


@dataclass
class Corpus:
    """What a dataset component returns.

    `splits` holds at least "train" and "test"; the pipeline carves "valid" from
    train deterministically when a corpus has none.  `report` carries load
    statistics (e.g. skipped malformed lines) that end up in the run report.
    """

    name: str
    splits: dict[str, list[Conversation]]
    items: dict[str, Item]
    report: dict[str, Any] = field(default_factory=dict)
    # True: items without an `entity` are linked to the entity graph's node of the same name (case and
    # underscores ignored) when the pipeline indexes it (crs.data.item_links); for corpora that name items
    # but ship no item-to-node table (`jsonl` without an items file).
    link_items_by_name: bool = False

    def split(self, name: str) -> list[Conversation]:
        return self.splits.get(name, [])
