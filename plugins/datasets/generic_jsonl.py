"""The `jsonl` dataset: any corpus of jsonl dialogues, with its field names mapped in YAML.

Three layouts (``format``):

* ``conversation_per_line``: one conversation per line, its turns in a list field;
* ``turn_per_line``: one turn per line; rows are grouped by ``fields.conversation_id``
  and ordered by ``fields.turn_index`` (file order when that is ``""``);
* ``sample_per_line``: one recommendation turn per line -- the history as a list of plain
  strings (``fields.history``), the entities / items mentioned in it pooled
  (``fields.entities`` / ``fields.items``), the recommended items and the reply
  (``fields.reply``).  Speakers alternate back from ``last_speaker``; the lines of one
  dialogue are grouped into one conversation (``group_samples``) and pooled mentions are
  attached to the first turn naming them or kept on the last history turn
  (``pooled_mentions``): :mod:`crs.plugins.datasets.sample_lines` has the rules.

``fields`` names the source field for each schema field; dotted names reach into
nested objects (``meta.user``).  The defaults read the canonical export written
by the demo corpus writer::

    {"id", "user_id", "turns": [{"index", "role", "text", "items": [{"id", "text"}],
                                 "entities": [...], "recommended": [...]}]}

Required fields (``conversation_id``, ``turns``, ``role``, ``text``; ``history`` and
``reply`` for ``sample_per_line``) missing from a record are a DataError ``file:line``
naming the mapping key to fix.  Optional fields (``user_id``, ``turn_index``, ``items``,
``entities``, ``recommended``; and ``conversation_id`` for ``sample_per_line``) may be
absent from a record (or null), but a mapping that matches nothing in a whole file is
reported as a likely misspelling; map it to ``""`` when the corpus lacks it.
``items`` / ``entities`` / ``recommended`` hold ids or objects (``item_id`` /
``item_text`` and ``entity_id`` / ``entity_text`` subfields).  Ids and texts must be
strings or numbers: a null, a list or an object there is a DataError (never the id
``"None"``).  With ``fields.recommended: ""`` every item a recommender turn mentions
counts as recommended (the ReDial / CRSLab rule).  ``Turn.index`` is the turn's position
after ordering; a missing ``user_id`` makes each conversation its own user.

Items: with an ``items`` file, its entries (and every id the dialogues mention) are the
items, linked to the entity graph by its ``entity`` field.  Without one, every mentioned
or recommended id is an item named by its first mention's words, and the pipeline links
an item to the entity-graph node of the same name (case and underscores ignored; see
:mod:`crs.data.item_links`); items it cannot link are counted in the run's report and header.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from dataclasses import fields as dataclass_fields
from typing import Any, Literal, Optional

from crs.data.readers import OnError, RecordError, SkipLog, expect, expect_text, iter_jsonl
from crs.data.schema import RECOMMENDER, ROLES, Conversation, Corpus, Item, Mention, Turn
from crs.errors import ConfigError, DataError
from crs.interfaces import BuildDeps, Dataset

from .common import data_file, resolve_root
from .sample_lines import PooledMentions, SampleLine, assemble

Format = Literal["conversation_per_line", "turn_per_line", "sample_per_line"]
Speaker = Literal["seeker", "recommender"]  # crs.data.schema.ROLES (a test checks they agree)
_MISSING = object()
# optional fields per format (a mapping that matches no record of a file is reported as misspelt)
_TURN_OPTIONAL = ("user_id", "turn_index", "items", "entities", "recommended")
_OPTIONAL = {
    "conversation_per_line": _TURN_OPTIONAL,
    "turn_per_line": _TURN_OPTIONAL,
    "sample_per_line": ("conversation_id", "user_id", "items", "entities", "recommended"),
}


@dataclass
class FieldMap:
    """Source field names (dotted paths allowed; ``""`` = the corpus has no such field)."""

    conversation_id: str = "id"
    user_id: str = "user_id"
    turns: str = "turns"  # conversation_per_line only
    role: str = "role"
    text: str = "text"
    turn_index: str = "index"
    items: str = "items"  # sample_per_line: the items the history mentions, pooled
    item_id: str = "id"  # subfield when items are objects
    item_text: str = "text"
    entities: str = "entities"  # sample_per_line: the entities the history mentions, pooled
    entity_id: str = "id"
    entity_text: str = "text"
    recommended: str = "recommended"
    history: str = "history"  # sample_per_line only: the turns before the reply, a list of strings
    reply: str = "reply"  # sample_per_line only: the recommender's reply text


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
        format: Format = "conversation_per_line"  # what one line of the files holds
        fields: FieldMap = field(default_factory=FieldMap)
        roles: dict[str, str] = field(default_factory=lambda: {"seeker": "seeker", "recommender": "recommender"})
        items: Optional[str] = None  # jsonl with one item per line (optional; without it items link by name)
        item_fields: ItemFileFields = field(default_factory=ItemFileFields)
        last_speaker: Speaker = "seeker"  # sample_per_line: speaker of the last history string
        pooled_mentions: PooledMentions = "first_mention"  # sample_per_line: last_turn keeps them pooled
        group_samples: bool = True  # sample_per_line: lines continuing one dialogue become one conversation
        on_error: OnError = "raise"  # skip: drop malformed lines (counted in the report)
        max_conversations: int = 0  # per split; 0 = all
        name: str = "jsonl"  # corpus name in reports

    def __init__(self, config: Any, deps: BuildDeps):
        super().__init__(config, deps)
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
        per_line: dict[str, int] = {}
        for split in ("train", "valid", "test"):
            name = getattr(cfg, split)
            if name is None:
                continue
            path = data_file(root, name, f"{self.path}.{split}")
            self._seen = set()
            if cfg.format == "conversation_per_line":
                convs = [conv for _line, conv in iter_jsonl(path, self._conversation_record,
                                                            on_error=cfg.on_error, skipped=skipped)]
            elif cfg.format == "turn_per_line":
                convs = self._group_turn_rows(path, skipped)
            else:
                convs, counts = self._sample_lines(split, path, skipped)
                for key, value in counts.items():
                    per_line[key] = per_line.get(key, 0) + value
            self._check_optional_fields(path, convs)
            if cfg.max_conversations:
                convs = convs[: cfg.max_conversations]
            for conv in convs:
                _add_items(conv, items)
            splits[split] = convs
        report = {"conversations": {s: len(c) for s, c in splits.items()},
                  "turns": {s: sum(len(c.turns) for c in convs) for s, convs in splits.items()},
                  "items": len(items), "unlisted_items": len(items) - listed if cfg.items else 0,
                  **({"sample_per_line": per_line} if per_line else {}),
                  **skipped.as_report()}
        return Corpus(name=cfg.name, splits=splits, items=items, report=report, link_items_by_name=not cfg.items)

    # ------------------------------------------------------- conversation rows
    def _conversation_record(self, record: Any) -> Conversation:
        expect(record, dict, "a line", "each line must be one JSON object (one conversation)")
        conv_id = self._required_text(record, "conversation_id")
        raw_turns = expect(self._required(record, "turns"), list, f"field '{self.f.turns}' (mapped by fields.turns)",
                           "map fields.turns to the list of turn objects")
        rows = []
        for n, raw in enumerate(raw_turns):
            expect(raw, dict, f"turn {n} of field '{self.f.turns}' (mapped by fields.turns)",
                   "each turn must be an object with role and text; for turns written as plain strings "
                   "(a history list), use format: sample_per_line")
            rows.append((self._optional(raw, "turn_index"), n, self._turn(raw, n)))
        if all(order is not None for order, _, _ in rows):
            try:
                rows.sort(key=lambda row: _order_key(row[0]))
            except TypeError:
                raise RecordError(f"turn indices (field '{self.f.turn_index}', mapped by fields.turn_index) mix "
                                  "numbers and text",
                                  f"make field '{self.f.turn_index}' consistent, or map fields.turn_index to \"\" "
                                  "to keep the list order") from None
        user = self._optional_text(record, "user_id")
        return self._assemble(conv_id, user, [turn for _, _, turn in rows])

    def _group_turn_rows(self, path: Any, skipped: SkipLog) -> list[Conversation]:
        grouped: dict[str, list[tuple[Any, int, Turn]]] = {}
        users: dict[str, str] = {}

        def parse_row(record: Any) -> tuple[str, Any, Turn, Any]:
            expect(record, dict, "a line", "each line must be one JSON object (one turn)")
            conv_id = self._required_text(record, "conversation_id")
            return (conv_id, self._optional(record, "turn_index"), self._turn(record, 0),
                    self._optional_text(record, "user_id"))

        for line, (conv_id, order, turn, user) in iter_jsonl(path, parse_row, on_error=self.config.on_error,
                                                              skipped=skipped):
            rows = grouped.setdefault(conv_id, [])
            rows.append((order, line, turn))
            if user is not None:
                users.setdefault(conv_id, user)
        convs = []
        for conv_id, rows in grouped.items():
            if all(order is not None for order, _, _ in rows):
                try:
                    rows.sort(key=lambda row: _order_key(row[0]))
                except TypeError:
                    raise DataError(str(path), f"conversation {conv_id}: turn indices (field '{self.f.turn_index}', "
                                    "mapped by fields.turn_index) mix numbers and text",
                                    f"make field '{self.f.turn_index}' consistent, or map fields.turn_index to \"\" "
                                    "to keep the file order", line=rows[0][1]) from None
            convs.append(self._assemble(conv_id, users.get(conv_id), [turn for _, _, turn in rows]))
        return convs

    def _assemble(self, conv_id: str, user: str | None, turns: list[Turn]) -> Conversation:
        for position, turn in enumerate(turns):
            turn.index = position
            if not self.f.recommended and turn.role == RECOMMENDER:
                turn.recommended = [m.id for m in turn.items]
        return Conversation(id=conv_id, user_id=user if user is not None else conv_id, turns=turns)

    # ------------------------------------------------------------ sample lines
    def _sample_lines(self, split: str, path: Any, skipped: SkipLog) -> tuple[list[Conversation], dict[str, int]]:
        cfg = self.config

        def parse(record: Any) -> SampleLine:
            expect(record, dict, "a line", "each line must be one JSON object (one recommendation turn)")
            history = expect(self._required(record, "history"), list,
                             f"field '{self.f.history}' (mapped by fields.history)",
                             "map fields.history to the list of the turns before the reply (plain strings)")
            texts = history if all(type(text) is str for text in history) else [  # messages built on errors only
                expect_text(text, f"entry {n} of field '{self.f.history}' (mapped by fields.history)",
                            "write each history turn as a string") for n, text in enumerate(history)]
            return SampleLine(
                line=0, history=texts, reply=self._required_text(record, "reply"),
                recommended=self._mentions(record, "recommended", self.f.item_id, self.f.item_text),
                entities=self._mentions(record, "entities", self.f.entity_id, self.f.entity_text),
                items=self._mentions(record, "items", self.f.item_id, self.f.item_text),
                conversation_id=self._optional_text(record, "conversation_id"),
                user_id=self._optional_text(record, "user_id"))

        lines = []
        for line, sample in iter_jsonl(path, parse, on_error=cfg.on_error, skipped=skipped):
            sample.line = line
            lines.append(sample)
        return assemble(split, lines, last_speaker=cfg.last_speaker, pooled_mentions=cfg.pooled_mentions,
                        group=cfg.group_samples)

    # ------------------------------------------------------------------ turns
    def _turn(self, record: dict, n: int) -> Turn:
        raw = self._required(record, "role")
        raw_role = expect_text(raw, f"the role of turn {n} (field '{self.f.role}', mapped by fields.role)",
                               "write each turn's role as a string or number")
        role = self.roles.get(raw_role)
        if role is None:
            raise RecordError(f"turn {n} has role {raw!r}, which `roles` does not map (field '{self.f.role}', "
                              "mapped by fields.role)",
                              f"add it to `roles` (e.g. roles: {{'{raw_role}': seeker}})")
        text = self._required_text(record, "text")
        items = self._mentions(record, "items", self.f.item_id, self.f.item_text)
        entities = self._mentions(record, "entities", self.f.entity_id, self.f.entity_text)
        recommended = [m.id for m in self._mentions(record, "recommended", self.f.item_id, self.f.item_text)]
        return Turn(index=n, role=role, text=text, items=items, entities=entities, recommended=recommended)

    def _mentions(self, record: dict, key: str, id_field: str, text_field: str) -> list[Mention]:
        value = self._optional(record, key)
        if value is None:
            return []
        source = getattr(self.f, key)
        id_key, text_key = ("entity_id", "entity_text") if key == "entities" else ("item_id", "item_text")
        expect(value, list, f"field '{source}' (mapped by fields.{key})",
               f"write '{source}' as a list of ids or of objects with '{id_field}' (fields.{id_key})")
        if all(type(entry) is str for entry in value):  # plain ids, the common case
            return [Mention(entry) for entry in value]
        out = []
        for n, entry in enumerate(value):
            what = f"entry {n} of field '{source}' (mapped by fields.{key})"
            if isinstance(entry, dict):
                ident = get_path(entry, id_field)
                if ident is _MISSING:
                    raise RecordError(f"{what} lacks '{id_field}' (mapped by fields.{id_key})",
                                      f"set fields.{id_key} to the id subfield of '{source}' entries")
                text = get_path(entry, text_field)
                out.append(Mention(
                    expect_text(ident, f"the id '{id_field}' (fields.{id_key}) of {what}",
                                "give every entry an id (a string or number)"),
                    "" if text is _MISSING or text is None else expect_text(
                        text, f"the text '{text_field}' (fields.{text_key}) of {what}",
                        f"write the text as a string, or map fields.{text_key} to another subfield")))
            else:
                out.append(Mention(expect_text(entry, what, "write each entry as an id (a string or number) or "
                                                           f"as an object with '{id_field}' (fields.{id_key})")))
        return out

    # ---------------------------------------------------------------- fields
    def _required(self, record: dict, key: str) -> Any:
        source = getattr(self.f, key)
        value = get_path(record, source) if source else _MISSING
        if value is _MISSING:
            raise RecordError(f"field '{source}' (mapped by fields.{key}) is missing",
                              f"set fields.{key} to this corpus's field name (dotted for nested, e.g. meta.{key})")
        return value

    def _required_text(self, record: dict, key: str) -> str:
        source = getattr(self.f, key)
        return expect_text(self._required(record, key), f"field '{source}' (mapped by fields.{key})",
                           f"give every record a string '{source}', or map fields.{key} to the right field")

    def _optional(self, record: dict, key: str) -> Any:
        source = getattr(self.f, key)
        if not source:
            return None
        value = get_path(record, source)
        if value is _MISSING:
            return None
        self._seen.add(key)
        return value

    def _optional_text(self, record: dict, key: str) -> Optional[str]:
        value = self._optional(record, key)
        if value is None:
            return None
        source = getattr(self.f, key)
        return expect_text(value, f"field '{source}' (mapped by fields.{key})",
                           f"write '{source}' as a string or number (null = absent), or map fields.{key} to \"\"")

    def _check_optional_fields(self, path: Any, convs: list[Conversation]) -> None:
        if not convs:
            return
        for key in _OPTIONAL[self.config.format]:
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
            ident = expect_text(ident, f"field '{names.id}' (mapped by item_fields.id)", "give every item an id")
            name = get_path(record, names.name)
            name = ident if name is _MISSING or name is None else expect_text(
                name, f"field '{names.name}' (mapped by item_fields.name)",
                "write the item's name as a string, or map item_fields.name to another field")
            entity = get_path(record, names.entity) if names.entity else None
            entity = None if entity is _MISSING or entity is None else expect_text(
                entity, f"field '{names.entity}' (mapped by item_fields.entity)",
                "write the item's entity-graph node name as a string (null = unlinked), or map item_fields.entity "
                "to \"\"")
            return Item(id=ident, name=name, entity=entity)

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

