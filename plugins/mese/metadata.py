"""MESE's item metadata texts, in the official string format (knowledge source ``mese_metadata``).

One text per item, as the official preprocessing notebook concatenates it::

    "{title} [SEP] {stars} [SEP] {director} [SEP] {genre} [SEP] {plot}"

- title: lower-cased, the trailing ``(year)`` stripped (the notebook keys titles without year);
- stars: the first ``max_people`` (3) names; lists are joined with ", ";
- a missing field leaves its slot empty (``title [SEP] [SEP] ...``), as the notebook does for
  records without cast;
- an item without any metadata is its title alone: its count is written to the corpus report
  (``mese_metadata.title_only``) so a run says how many items were encoded from a title.

``fields`` chooses the slots (the "w/o content" ablation keeps ``[name, star, director]``).
Where the record comes from:

- ``path: null`` (default): ``Item.meta``, which the ``redial`` dataset fills from iEvaLM's
  ``id2info.json``;
- ``path: <id2info.json(.gz)>``: that file, by item id, else by normalised title (lower case,
  punctuation and spaces folded): the title and year a DBpedia URI such as ``Heat_(1995_film)`` names,
  then the item's name with its year, then without a year when only one record has that title.
  INSPIRED names its movies by title, so this is how it gets ReDial's metadata;
- ``dbpedia: <UniCRS DBpedia folder>``: items still without a record but with a node in that graph take
  stars, director and genre from its ``starring``, ``director`` and ``genre`` edges (graph order; there is no
  plot), counted as ``mese_metadata.from_dbpedia``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from crs.data.readers import read_json
from crs.errors import ConfigError, DataError
from crs.interfaces import KnowledgeSource
from crs.knowledge import ItemTexts

SEP = "[SEP]"
FIELDS = ("name", "star", "director", "genre", "plot")
_YEAR = re.compile(r"\s*\(\s*\d{4}\s*\)\s*$")
_PUNCT = re.compile(r"[^\w\s]")
_URI_FILM_YEAR = re.compile(r"/([^/]+?)_\((\d{4})_(?:[\w]+_)?film\)>?$")


def strip_year(title: str) -> str:
    """``"Friends with Benefits (2011)"`` -> ``"Friends with Benefits"``."""
    return _YEAR.sub("", str(title)).strip()


def title_key(title: str, keep_year: bool = True) -> str:
    """The form titles are matched in: case folded, punctuation dropped, spaces folded (year kept or not)."""
    text = str(title) if keep_year else strip_year(title)
    return " ".join(_PUNCT.sub(" ", text.casefold()).split())


def _value(value: Any, limit: int = 0) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        values = [str(v).strip() for v in value if str(v).strip()]
        return ", ".join(values[:limit] if limit else values)
    return str(value).strip()


def metadata_text(record: dict, title: str, fields: tuple[str, ...] = FIELDS, max_people: int = 3) -> str:
    """The official MESE string of one item (see the module doc); `title` stands in for a missing ``name``."""
    parts = []
    for name in fields:
        if name == "name":
            parts.append(strip_year(record.get("name") or title).lower())
        else:
            parts.append(_value(record.get(name), max_people if name in ("star", "director", "writer") else 0))
    text = parts[0]
    for part in parts[1:]:  # an empty slot stays, without a doubled space: "title [SEP] [SEP] genre"
        text += f" {SEP}" + (f" {part}" if part else "")
    return text


class MeseMetadata(KnowledgeSource):
    """Item id -> the official MESE metadata string -> ``ItemTexts("metadata")`` (see the module doc)."""

    @dataclass
    class Config:
        path: Optional[str] = None  # null: Item.meta; else an id2info.json(.gz) matched by id, then by title
        fields: list[str] = field(default_factory=lambda: list(FIELDS))
        max_people: int = 3  # names kept of star / director lists (official: top 3 actors)
        # a UniCRS DBpedia folder (dbpedia_subkg.json, entity2id.json, relation2id.json): items with no record
        # but a node there get stars, director and genre from its starring / director / genre edges
        dbpedia: Optional[str] = None

    def load(self, corpus: Any) -> ItemTexts:
        cfg = self.config
        if cfg.max_people < 1:
            raise ConfigError(f"{self.path}.max_people", f"must be a positive integer, got {cfg.max_people}")
        if not cfg.fields:
            raise ConfigError(f"{self.path}.fields", "no field chosen", f"use some of: {', '.join(FIELDS)}")
        records = self._records(corpus)
        from_graph = 0
        if cfg.dbpedia is not None:
            graph = self._graph_records(corpus, records)
            records.update(graph)
            from_graph = len(graph)
        texts, title_only = {}, 0
        for item_id, item in corpus.items.items():
            record = records.get(item_id)
            if record:
                texts[item_id] = [metadata_text(record, item.name, tuple(cfg.fields), cfg.max_people)]
            elif item.name:
                texts[item_id] = [strip_year(item.name).lower()]
                title_only += 1
        corpus.report["mese_metadata"] = {"items": len(corpus.items), "with_metadata": len(texts) - title_only,
                                          "title_only": title_only}
        if cfg.dbpedia is not None:
            corpus.report["mese_metadata"]["from_dbpedia"] = from_graph
        return ItemTexts(kind="metadata", texts=texts, label=f"MESE item metadata: {', '.join(cfg.fields)}")

    def texts_of(self, items: list[Any]) -> dict[str, list[str]]:
        """Texts of items that are not in the corpus (``crs items add``), from their own ``meta``."""
        cfg = self.config
        return {item.id: [metadata_text(item.meta, item.name, tuple(cfg.fields), cfg.max_people) if item.meta
                          else strip_year(item.name).lower()] for item in items}

    def _records(self, corpus: Any) -> dict[str, dict]:
        """Item id -> its metadata record (from Item.meta, or the file matched by id and title)."""
        if self.config.path is None:
            return {item_id: item.meta for item_id, item in corpus.items.items() if item.meta}
        path = Path(self.config.path).expanduser()
        if not path.is_file():
            raise ConfigError(f"{self.path}.path", f"no such file: {path}",
                              "point it at an id2info.json(.gz) (item id -> {name, star, director, genre, plot}), "
                              "or set it to null to use the dataset's own item metadata")
        info = read_json(path)
        if not isinstance(info, dict) or not all(isinstance(v, dict) for v in info.values()):
            raise DataError(str(path), "expected a JSON object item id -> {name, star, director, genre, plot}",
                            f"point `{self.path}.path` at an id2info.json-style file")
        with_year: dict[str, Optional[str]] = {}
        without_year: dict[str, Optional[str]] = {}
        for key, record in info.items():
            for table, keep in ((with_year, True), (without_year, False)):
                name = title_key(record.get("name", ""), keep)
                if name:  # None marks a title several records share: never matched
                    table[name] = None if name in table and table[name] != key else key
        records = {}
        for item_id, item in corpus.items.items():
            key = item_id if item_id in info else None
            for name in (uri_title(item.entity or item_id), item.name):  # the URI's year first: it disambiguates
                if key is None and name:
                    key = with_year.get(title_key(name)) or (
                        without_year.get(title_key(name, keep_year=False)) if name == item.name else None)
            if key is not None:
                records[item_id] = info[key]
        return records


    def _graph_records(self, corpus: Any, records: dict[str, dict]) -> dict[str, dict]:
        """Records ``{star, director, genre}`` read off the DBpedia graph for items `records` lacks."""
        folder = Path(str(self.config.dbpedia)).expanduser()
        files = [folder / name for name in ("dbpedia_subkg.json", "entity2id.json", "relation2id.json")]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise ConfigError(f"{self.path}.dbpedia", f"{folder} lacks {', '.join(missing)}",
                              "point it at a UniCRS DBpedia folder (e.g. ../shared/data/inspired/unicrs_dbpedia), "
                              "or set it to null")
        edges, entity_ids, relation_ids = (read_json(f) for f in files)
        if not all(isinstance(x, dict) for x in (edges, entity_ids, relation_ids)):
            raise DataError(str(folder), "expected JSON objects (node id -> [[relation, node], ...], entity -> id, "
                                         "relation -> id)", "use the UniCRS DBpedia release files")
        names = {v: k for k, v in entity_ids.items()}
        wanted = {relation_ids.get(f"<http://dbpedia.org/ontology/{name}>"): field_name
                  for name, field_name in (("starring", "star"), ("director", "director"), ("genre", "genre"))}
        wanted.pop(None, None)
        found = {}
        for item_id, item in corpus.items.items():
            node = entity_ids.get(item.entity or item_id)
            if item_id in records or node is None:
                continue
            record: dict[str, list[str]] = {}
            for pair in edges.get(str(node), ()):
                if isinstance(pair, (list, tuple)) and len(pair) == 2 and pair[0] in wanted:
                    label = uri_label(names.get(pair[1], ""))
                    if label:
                        record.setdefault(wanted[pair[0]], []).append(label)
            if record:
                found[item_id] = record
        return found


def uri_label(uri: str) -> str:
    """``<http://dbpedia.org/resource/Chris_Evans_(actor)>`` -> ``"Chris Evans"`` (the qualifier dropped)."""
    name = str(uri).rstrip(">").rsplit("/", 1)[-1].replace("_", " ")
    return re.sub(r"\s*\([^)]*\)$", "", name).strip()


def uri_title(uri: str) -> str:
    """A title with year from a DBpedia film URI: ``<.../Heat_(1995_film)>`` -> ``"Heat (1995)"``; else ''."""
    found = _URI_FILM_YEAR.search(str(uri))
    return f"{found.group(1).replace('_', ' ')} ({found.group(2)})" if found else ""
