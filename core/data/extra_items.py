"""Items added to a trained run without retraining (``crs items add RUN_DIR items.jsonl``).

A run folder may hold ``items_extra.jsonl``: one JSON object per line,

    {"id": "900001", "name": "The New Film (2026)", "entity": null,
     "meta": {"genre": ["drama"], "director": ["A. Director"], "star": ["An Actor"], "plot": "..."}}

(``id`` and ``name`` required; ``entity`` an entity-graph node name or null; ``meta`` the
fields a metadata knowledge source reads, e.g. ``mese_metadata``).  When the run is loaded
(:func:`crs.serving.load_pipeline`), the builder appends these items to the item index
*after* the trained catalogue, so every trained item keeps its index, and asks each
knowledge source that can describe new items (a ``texts_of(items)`` method) for their
texts.  Nothing else changes: the vocabulary and the graphs are the trained ones, a new
item's entity node is its ``entity`` when the graph has it and the padding node 0
otherwise, and its train count is 0.  Only models none of whose parameters depend on
the number of items can take new items (MESE's item encoder embeds any item from its
text); for others the saved state no longer fits, which loading reports.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

from ..errors import DataError
from ..interfaces import ItemIndex
from .schema import Item

EXTRA_ITEMS_FILE = "items_extra.jsonl"
KEYS = ("id", "name", "entity", "meta")
FORMAT = ('write one JSON object per line: {"id": "900001", "name": "Title (2026)", "meta": {"genre": [...], '
          '"director": [...], "star": [...], "plot": "..."}} (id and name required; entity and meta optional)')

__all__ = ["EXTRA_ITEMS_FILE", "read_items_file", "items_to_lines", "append_items"]


def read_items_file(path: str | Path) -> list[Item]:
    """The items of a JSONL items file, checked line by line.

    :raises DataError: the file is missing or unreadable, a line is not a JSON object, lacks
        ``id`` or ``name``, has keys other than :data:`KEYS` or values of the wrong type, or
        repeats an id (each names the file and line).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(str(path), "no such file", "pass a JSONL file of items, " + FORMAT)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(str(path), f"cannot read it ({err})", "pass a UTF-8 JSONL file of items") from None
    items: list[Item] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        item = _parse_line(line, str(path), number)
        if item.id in seen:
            raise DataError(str(path), f"item id '{item.id}' again (first on line {seen[item.id]})",
                            "give each item one line", line=number)
        seen[item.id] = number
        items.append(item)
    if not items:
        raise DataError(str(path), "holds no item", FORMAT)
    return items


def _parse_line(line: str, file: str, number: int) -> Item:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise DataError(file, f"not valid JSON ({err.msg} at column {err.colno})", FORMAT, line=number) from None
    if not isinstance(record, dict):
        raise DataError(file, f"expected a JSON object, got {type(record).__name__}", FORMAT, line=number)
    unknown = [key for key in record if key not in KEYS]
    if unknown:
        raise DataError(file, f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}",
                        f"use only {', '.join(KEYS)}; put metadata fields under \"meta\"", line=number)
    ident = record.get("id")
    if isinstance(ident, bool) or not isinstance(ident, (str, int)) or not str(ident).strip():
        raise DataError(file, f"'id' must be a non-empty string or integer, got {ident!r}", FORMAT, line=number)
    name = record.get("name")
    if not isinstance(name, str) or not name.strip():
        raise DataError(file, f"'name' must be a non-empty string, got {name!r}", FORMAT, line=number)
    entity = record.get("entity")
    if entity is not None and (not isinstance(entity, str) or not entity.strip()):
        raise DataError(file, f"'entity' must be a node name or null, got {entity!r}", FORMAT, line=number)
    meta = record.get("meta", {})
    if not isinstance(meta, dict):
        raise DataError(file, f"'meta' must be an object of fields, got {type(meta).__name__}", FORMAT, line=number)
    return Item(id=str(ident).strip(), name=name.strip(), entity=entity, meta=meta)


def items_to_lines(items: Iterable[Item]) -> str:
    """The JSONL text of `items` (the format :func:`read_items_file` reads)."""
    return "".join(json.dumps({"id": i.id, "name": i.name, "entity": i.entity, "meta": i.meta},
                              ensure_ascii=False) + "\n" for i in items)


def append_items(items: ItemIndex, extra: Sequence[Item], node_index: dict[str, int], file: str) -> ItemIndex:
    """`items` with `extra` appended after the trained catalogue (see the module doc).

    :param node_index: the entity graph's node name -> index, for each new item's ``entity``.
    :param file: the items file, named in errors.
    :raises DataError: a new item's id is already in the catalogue.
    """
    if not extra:
        return items
    known = set(items.ids)
    for number, item in enumerate(extra, start=1):
        if item.id in known:
            raise DataError(file, f"item '{item.id}' is already in the run's catalogue",
                            "remove that line (a trained item needs no adding) or give the new item another id",
                            line=number)
    nodes = torch.tensor([node_index.get(item.entity, 0) if item.entity else 0 for item in extra], dtype=torch.long)
    return ItemIndex(ids=[*items.ids, *(i.id for i in extra)], names=[*items.names, *(i.name for i in extra)],
                     entity_nodes=torch.cat([items.entity_nodes, nodes]),
                     train_counts=torch.cat([items.train_counts, torch.zeros(len(extra))]))


def texts_for(sources: dict[str, Any], item_texts: dict[str, Any], extra: Sequence[Item]) -> None:
    """Add the texts of `extra` to each item-text source whose knowledge source can describe new items."""
    for name, source in sources.items():
        describe = getattr(source, "texts_of", None)
        if describe is not None and name in item_texts:
            item_texts[name].texts.update(describe(list(extra)))
