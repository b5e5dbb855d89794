"""The `jsonl` dataset: any corpus of jsonl dialogues, with its field names mapped in YAML.

Two layouts (``format``):

* ``conversation_per_line``: one conversation per line, its turns in a list field;
* ``turn_per_line``: one turn per line; rows are grouped by ``fields.conversation_id``
  and ordered by ``fields.turn_index`` (file order when that is ``""``).

``fields`` names the source field for each schema field; dotted names reach into
nested objects (``meta.user``).  The defaults read the canonical export written
by the demo corpus writer::

    {"id", "user_id", "turns": [{"index", "role", "text", "items": [{"id", "text"}],
                                 "entities": [...], "recommended": [...]}]}

Required fields (``conversation_id``, ``turns``, ``role``, ``text``) missing from a
record are a DataError ``file:line`` naming the mapping key to fix.  Optional
fields (``user_id``, ``turn_index``, ``items``, ``entities``, ``recommended``) may be
absent from a record, but a mapping that matches nothing in a whole file is
reported as a likely misspelling; map it to ``""`` when the corpus lacks it.
``items`` / ``entities`` / ``recommended`` hold ids or objects (``item_id`` /
``item_text`` and ``entity_id`` / ``entity_text`` subfields).  With
``fields.recommended: ""`` every item a recommender turn mentions counts as
recommended (the ReDial / CRSLab rule).  ``Turn.index`` is the turn's position
after ordering; a missing ``user_id`` makes each conversation its own user.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields as dataclass_fields
from typing import Any, Optional

from crs.data.readers import RecordError, SkipLog, check_on_error, expect, iter_jsonl
from crs.data.schema import RECOMMENDER, ROLES, Conversation, Corpus, Item, Mention, Turn
from crs.errors import ConfigError, DataError, check_choice
from crs.interfaces import BuildDeps, Dataset

from .common import data_file, resolve_root

FORMATS = ("conversation_per_line", "turn_per_line")
_MISSING = object()
_OPTIONAL = ("user_id", "turn_index", "items", "entities", "recommended")


@dataclass
class FieldMap:
    """Source field names (dotted paths allowed; ``""`` = the corpus has no such field)."""

    conversation_id: str = "id"
    user_id: str = "user_id"
    turns: str = "turns"  # conversation_per_line only
    role: str = "role"
    text: str = "text"
    turn_index: str = "index"
    items: str = "items"
    item_id: str = "id"  # subfield when items are objects
    item_text: str = "text"
    entities: str = "entities"
    entity_id: str = "id"
    entity_text: str = "text"
    recommended: str = "recommended"


@dataclass
class ItemFileFields:
    """Field names of the optional items file (one item per line)."""

    id: str = "id"
    name: str = "name"
    entity: str = "entity"  # "" = items carry no entity link


def get_path(record: Any, dotted: str) -> Any:
    """``record["a"]["b"]`` for ``"a.b"``; ``_MISSING`` when any step is absent."""
    value = record
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _coerce(value: Any, cls: type, path: str) -> Any:
    """Accept a plain dict for a nested config dataclass, rejecting unknown keys."""
    if isinstance(value, cls):
        return value
    known = {f.name for f in dataclass_fields(cls)}
    unknown = sorted(set(value) - known)
    if unknown:
        raise ConfigError(f"{path}.{unknown[0]}", "unknown field mapping key",
                          f"use one of: {', '.join(sorted(known))}")
    return cls(**dict(value))


class JsonlDataset(Dataset):
    """Generic jsonl corpus -> :class:`Corpus` (see the module docstring)."""

    @dataclass
    class Config:
        train: str
        test: str
        valid: Optional[str] = None
        root: str = "."  # relative train/valid/test/items names are read from here
        format: str = "conversation_per_line"  # | turn_per_line
        fields: FieldMap = field(default_factory=FieldMap)
        roles: dict[str, str] = field(default_factory=lambda: {"seeker": "seeker", "recommender": "recommender"})
        items: Optional[str] = None  # jsonl with one item per line (optional)
        item_fields: ItemFileFields = field(default_factory=ItemFileFields)
        on_error: str = "raise"  # raise | skip
        max_conversations: int = 0  # per split; 0 = all
        name: str = "jsonl"  # corpus name in reports

    def __init__(self, config: Any, deps: BuildDeps):
        super().__init__(config, deps)
        check_on_error(config.on_error, self.path)
        check_choice(config.format, FORMATS, f"{self.path}.format")
        config.fields = _coerce(config.fields, FieldMap, f"{self.path}.fields")
        config.item_fields = _coerce(config.item_fields, ItemFileFields, f"{self.path}.item_fields")
        bad = {k: v for k, v in dict(config.roles).items() if v not in ROLES}
        if bad:
            key = next(iter(bad))
            raise ConfigError(f"{self.path}.roles.{key}", f"maps to '{bad[key]}'",
                              f"map every role to one of: {', '.join(ROLES)}")
        self.roles = {str(k): v for k, v in dict(config.roles).items()}
        self.f: FieldMap = config.fields
        self._seen: set[str] = set()  # optional fields found in the file being read

    # ------------------------------------------------------------------ public
    def load(self) -> Corpus:
        cfg, root = self.config, resolve_root(self.config.root)
        skipped = SkipLog()
        items = self._read_items(root, skipped) if cfg.items else {}
        listed = len(items)
        splits: dict[str, list[Conversation]] = {}
        for split in ("train", "valid", "test"):
            name = getattr(cfg, split)
            if name is None:
                continue
            path = data_file(root, name, f"{self.path}.{split}")
            self._seen = set()
            if cfg.format == "conversation_per_line":
                convs = [conv for _line, conv in iter_jsonl(path, self._conversation_record,
                                                            on_error=cfg.on_error, skipped=skipped)]
            else:
                convs = self._group_turn_rows(path, skipped)
            self._check_optional_fields(path, convs)
            if cfg.max_conversations:
                convs = convs[: cfg.max_conversations]
            for conv in convs:
                _add_items(conv, items)
            splits[split] = convs
        report = {"conversations": {s: len(c) for s, c in splits.items()},
                  "turns": {s: sum(len(c.turns) for c in convs) for s, convs in splits.items()},
                  "items": len(items), "unlisted_items": len(items) - listed if cfg.items else 0,
                  **skipped.as_report()}
        return Corpus(name=cfg.name, splits=splits, items=items, report=report)

    # ------------------------------------------------------- conversation rows
    def _conversation_record(self, record: Any) -> Conversation:
        expect(record, dict, "a line", "each line must be one JSON object (one conversation)")
        conv_id = str(self._required(record, "conversation_id"))
        raw_turns = expect(self._required(record, "turns"), list, f"field '{self.f.turns}'")
        rows = []
        for n, raw in enumerate(raw_turns):
            expect(raw, dict, f"turn {n}")
            rows.append((self._optional(raw, "turn_index"), n, self._turn(raw, n)))
        if all(order is not None for order, _, _ in rows):
            try:
                rows.sort(key=lambda row: _order_key(row[0]))
            except TypeError:
                raise RecordError("turn indices mix numbers and text",
                                  f"make field '{self.f.turn_index}' (fields.turn_index) consistent") from None
        user = self._optional(record, "user_id")
        return self._assemble(conv_id, None if user is None else str(user), [turn for _, _, turn in rows])

    def _group_turn_rows(self, path: Any, skipped: SkipLog) -> list[Conversation]:
        grouped: dict[str, list[tuple[Any, int, Turn]]] = {}
        users: dict[str, str] = {}

        def parse_row(record: Any) -> tuple[str, Any, Turn, Any]:
            expect(record, dict, "a line", "each line must be one JSON object (one turn)")
            conv_id = str(self._required(record, "conversation_id"))
            return (conv_id, self._optional(record, "turn_index"), self._turn(record, 0),
                    self._optional(record, "user_id"))

        for line, (conv_id, order, turn, user) in iter_jsonl(path, parse_row, on_error=self.config.on_error,
                                                              skipped=skipped):
            rows = grouped.setdefault(conv_id, [])
            rows.append((order, line, turn))
            if user is not None:
                users.setdefault(conv_id, str(user))
        convs = []
        for conv_id, rows in grouped.items():
            if all(order is not None for order, _, _ in rows):
                try:
                    rows.sort(key=lambda row: _order_key(row[0]))
                except TypeError:
                    raise DataError(str(path), f"conversation {conv_id}: turn indices mix numbers and text",
                                    f"make field '{self.f.turn_index}' (fields.turn_index) consistent",
                                    line=rows[0][1]) from None
            convs.append(self._assemble(conv_id, users.get(conv_id), [turn for _, _, turn in rows]))
        return convs

    def _assemble(self, conv_id: str, user: str | None, turns: list[Turn]) -> Conversation:
        for position, turn in enumerate(turns):
            turn.index = position
            if not self.f.recommended and turn.role == RECOMMENDER:
                turn.recommended = [m.id for m in turn.items]
        return Conversation(id=conv_id, user_id=user if user is not None else conv_id, turns=turns)

    # ------------------------------------------------------------------ turns
    def _turn(self, record: dict, n: int) -> Turn:
        raw_role = self._required(record, "role")
        role = self.roles.get(str(raw_role))
        if role is None:
            raise RecordError(f"turn {n} has role {raw_role!r}, which `roles` does not map",
                              f"add it to `roles` (e.g. roles: {{'{raw_role}': seeker}})")
        text = self._required(record, "text")
        items = self._mentions(record, "items", self.f.item_id, self.f.item_text)
        entities = self._mentions(record, "entities", self.f.entity_id, self.f.entity_text)
        recommended = [m.id for m in self._mentions(record, "recommended", self.f.item_id, self.f.item_text)]
        return Turn(index=n, role=role, text=str(text), items=items, entities=entities, recommended=recommended)

    def _mentions(self, record: dict, key: str, id_field: str, text_field: str) -> list[Mention]:
        value = self._optional(record, key)
        if value is None:
            return []
        source = getattr(self.f, key)
        expect(value, list, f"field '{source}' (fields.{key})")
        out = []
        for entry in value:
            if isinstance(entry, dict):
                ident = get_path(entry, id_field)
                if ident is _MISSING:
                    raise RecordError(f"an entry of '{source}' lacks '{id_field}'",
                                      "set the id subfield mapping "
                                      f"(fields.{'item_id' if key != 'entities' else 'entity_id'})")
                text = get_path(entry, text_field)
                out.append(Mention(str(ident), "" if text is _MISSING or text is None else str(text)))
            else:
                out.append(Mention(str(entry)))
        return out

    # ---------------------------------------------------------------- fields
    def _required(self, record: dict, key: str) -> Any:
        source = getattr(self.f, key)
        value = get_path(record, source) if source else _MISSING
        if value is _MISSING:
            raise RecordError(f"field '{source}' (mapped by fields.{key}) is missing",
                              f"set fields.{key} to this corpus's field name (dotted for nested, e.g. meta.{key})")
        return value

    def _optional(self, record: dict, key: str) -> Any:
        source = getattr(self.f, key)
        if not source:
            return None
        value = get_path(record, source)
        if value is _MISSING:
            return None
        self._seen.add(key)
        return value

    def _check_optional_fields(self, path: Any, convs: list[Conversation]) -> None:
        if not convs:
            return
        for key in _OPTIONAL:
            if getattr(self.f, key) and key not in self._seen:
                raise DataError(str(path), f"no record has field '{getattr(self.f, key)}' (mapped by fields.{key})",
                                f"set fields.{key} to this corpus's field name, or to \"\" if it has none")

    # ------------------------------------------------------------------ items
    def _read_items(self, root: Any, skipped: SkipLog) -> dict[str, Item]:
        names = self.config.item_fields
        path = data_file(root, self.config.items, f"{self.path}.items")

        def parse(record: Any) -> Item:
            expect(record, dict, "a line", "each line of the items file must be one JSON object")
            ident = get_path(record, names.id)
            if ident is _MISSING:
                raise RecordError(f"field '{names.id}' (mapped by item_fields.id) is missing",
                                  "set item_fields.id to the items file's id field")
            name = get_path(record, names.name)
            entity = get_path(record, names.entity) if names.entity else None
            return Item(id=str(ident), name=str(ident) if name is _MISSING else str(name),
                        entity=None if entity is _MISSING or entity is None else str(entity))

        return {item.id: item
                for _line, item in iter_jsonl(path, parse, on_error=self.config.on_error, skipped=skipped)}


def _order_key(value: Any) -> Any:
    """Numeric order for numbers and digit strings ("10" after "9")."""
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return value


def _add_items(conv: Conversation, items: dict[str, Item]) -> None:
    """Make every mentioned or recommended id an item (named by its first mention's text)."""
    for turn in conv.turns:
        for mention in turn.items:
            if mention.id not in items:
                items[mention.id] = Item(id=mention.id, name=mention.text or mention.id)
        for ident in turn.recommended:
            if ident not in items:
                items[ident] = Item(id=ident, name=ident)
