"""The `unicrs_jsonl` dataset: UniCRS-style processed jsonl (INSPIRED as released with DBpedia links).

Each line is one dialogue: a JSON list of turns ``{"role": "SEEKER"|"RECOMMENDER",
"text", "movie", "movie_link", "movie_name", "entity_link", "entity_name"}``.

Conventions:

* items are DBpedia movie URIs (``movie_link``), used both as item ids and as the
  items' entity-graph node names; ``Item.name`` is the ``movie_name`` first seen.
  A URI is no single token, so in texts an item becomes ``crs.data.vocab.item_token``
  of it: a slug plus a stable hash, e.g. ``@Knives_Out_667cea77``;
* ``item_set: recommended`` (default) makes every movie some RECOMMENDER turn
  mentions (in any split) an item -- exactly UniCRS's ``item_ids.json`` (1,123
  movies for INSPIRED); movies only seekers mention then become ``Turn.entities``.
  ``item_set: mentioned`` makes every linked movie an item;
* ``Turn.recommended`` = the item links of a RECOMMENDER turn;
* ``Turn.entities`` = ``entity_link`` / ``entity_name`` pairs (plus non-item movies);
* turns are kept one per list entry, as UniCRS released them (no merging);
* the files carry no user or dialogue ids: each dialogue gets the id
  ``<split>-<line>`` and no user id.  No pseudo-user is made up (one per dialogue
  would pass for a real user everywhere users count): user-level models see
  unknown users, the ``user_adapt`` protocol makes each conversation a task of its
  own (unit ``conversation``: within-dialogue adaptation, not user customisation),
  and the ``maml`` strategy asks for ``task_unit: conversation``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Optional

from crs.data.readers import OnError, RecordError, SkipLog, expect, expect_text, iter_jsonl
from crs.data.schema import RECOMMENDER, SEEKER, Conversation, Corpus, Item, Mention, Turn
from crs.interfaces import Dataset

from .common import data_file, resolve_root

_ROLES = {"SEEKER": SEEKER, "RECOMMENDER": RECOMMENDER}
_LIST_FIELDS = ("movie_link", "movie_name", "entity_link", "entity_name")
ItemSet = Literal["recommended", "mentioned"]


@dataclass
class _RawTurn:
    role: str
    text: str
    movies: list[tuple[str, str]]  # (link, name)
    entities: list[tuple[str, str]]


class UniCRSJsonlDataset(Dataset):
    """UniCRS processed jsonl -> :class:`Corpus` (see the module docstring)."""

    @dataclass
    class Config:
        root: str = "../shared/data/inspired/unicrs_dbpedia"
        train: str = "train_data_dbpedia.jsonl.gz"
        valid: Optional[str] = "valid_data_dbpedia.jsonl.gz"
        test: str = "test_data_dbpedia.jsonl.gz"
        item_set: ItemSet = "recommended"  # which movies are items (see the module docstring)
        on_error: OnError = "raise"  # skip: drop malformed lines (counted in the report)
        max_conversations: int = 0  # per split; 0 = all
        name: str = "inspired"  # corpus name in reports

    def load(self) -> Corpus:
        cfg, root = self.config, resolve_root(self.config.root)
        skipped = SkipLog()
        raw: dict[str, list[tuple[int, list[_RawTurn]]]] = {}
        for split in ("train", "valid", "test"):
            name = getattr(cfg, split)
            if name is None:
                continue
            path = data_file(root, name, f"{self.path}.{split}")
            raw[split] = []
            for line, turns in iter_jsonl(path, _parse_dialogue, on_error=cfg.on_error, skipped=skipped):
                raw[split].append((line, turns))
                if cfg.max_conversations and len(raw[split]) >= cfg.max_conversations:
                    break
        items = self._items(raw)
        splits = {split: [_conversation(split, line, turns, items) for line, turns in dialogues]
                  for split, dialogues in raw.items()}
        report: dict[str, Any] = {
            "conversations": {s: len(c) for s, c in splits.items()},
            "turns": {s: sum(len(c.turns) for c in convs) for s, convs in splits.items()},
            "items": len(items),
            **skipped.as_report(),
        }
        return Corpus(name=cfg.name, splits=splits, items=items, report=report)

    def _items(self, raw: dict[str, list[tuple[int, list[_RawTurn]]]]) -> dict[str, Item]:
        """Items in order of first appearance (train first), so indices are stable across runs."""
        items: dict[str, Item] = {}
        for dialogues in raw.values():
            for _line, turns in dialogues:
                for turn in turns:
                    if self.config.item_set == "recommended" and turn.role != RECOMMENDER:
                        continue
                    for link, name in turn.movies:
                        if link not in items:
                            items[link] = Item(id=link, name=name, entity=link)
        return items


def _parse_dialogue(record: Any) -> list[_RawTurn]:
    expect(record, list, "a line", "each line must be a JSON list of turns (UniCRS format); for other layouts use "
                                   "the `jsonl` dataset with a field mapping")
    turns = []
    for n, turn in enumerate(record):
        expect(turn, dict, f"turn {n}", "each turn must be an object with role, text, movie_link, movie_name, "
                                        "entity_link and entity_name")
        missing = [key for key in ("role", "text") if key not in turn]
        if missing:
            raise RecordError(f"turn {n} lacks field {' and '.join(repr(key) for key in missing)}",
                              "each turn needs `role` (SEEKER | RECOMMENDER) and `text`")
        raw_role = expect_text(turn["role"], f"turn {n} field 'role'", "write the role as SEEKER or RECOMMENDER")
        role = _ROLES.get(raw_role.upper())
        if role is None:
            raise RecordError(f"turn {n} field 'role' is {turn['role']!r}", "roles must be SEEKER or RECOMMENDER")
        text = expect_text(turn["text"], f"turn {n} field 'text'", "write the turn's text as a string")
        lists = {key: expect(turn.get(key) or [], list, f"turn {n} field '{key}'",
                             f"write '{key}' as a list (empty when the turn has none)") for key in _LIST_FIELDS}
        for link_key, name_key in (("movie_link", "movie_name"), ("entity_link", "entity_name")):
            if len(lists[link_key]) != len(lists[name_key]):
                raise RecordError(f"turn {n}: {link_key} has {len(lists[link_key])} entries but "
                                  f"{name_key} has {len(lists[name_key])}", "the two lists must be parallel")
        values = {key: [expect_text(v, f"entry {i} of turn {n} field '{key}'",
                                    f"write each entry of '{key}' as a string")
                        for i, v in enumerate(lists[key])] for key in _LIST_FIELDS}
        turns.append(_RawTurn(
            role=role, text=text,
            movies=list(zip(values["movie_link"], values["movie_name"])),
            entities=list(zip(values["entity_link"], values["entity_name"])),
        ))
    return turns


def _conversation(split: str, line: int, raw_turns: list[_RawTurn], items: dict[str, Item]) -> Conversation:
    turns = []
    for index, raw in enumerate(raw_turns):
        mentioned = [Mention(link, name) for link, name in dict(raw.movies).items() if link in items]
        others = [Mention(link, name) for link, name in dict(raw.movies).items() if link not in items]
        turns.append(Turn(
            index=index, role=raw.role, text=raw.text, items=mentioned,
            entities=others + [Mention(link, name) for link, name in raw.entities],
            recommended=[m.id for m in mentioned] if raw.role == RECOMMENDER else [],
        ))
    conv_id = f"{split}-{line}"
    return Conversation(id=conv_id, user_id="", turns=turns, meta={"split": split, "line": line})
