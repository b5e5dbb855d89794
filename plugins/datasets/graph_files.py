"""Knowledge graphs from generic files: `kg_json` (id-indexed JSON) and `kg_triples` (one triple a line).

``kg_json`` reads the layout UniCRS and iEvaLM release their graphs in -- nothing in it is
DBpedia-specific::

    kg.json           {"<head id>": [[relation id, tail id], ...], ...}
    entity2id.json    {"<node name>": id, ...}     ids exactly 0..N-1
    relation2id.json  {"<relation name>": id, ...} ids exactly 0..R-1

``unicrs_dbpedia`` is the same reader with INSPIRED's file names as defaults (its old name).

``kg_triples`` reads a plain triple file, TSV or JSONL (``.gz`` ok), whose nodes are named
in the file itself: ``head``, ``relation`` and ``tail`` name the JSONL keys, or the TSV
columns (0-based positions, or names from a header line with ``header: true``).  Nodes and
relations are numbered in order of first appearance.

Both keep edges once, as stored (encoders add reverse edges themselves); node labels for the
phrase linker are :func:`~crs.labels.uri_label` of each name (entity graphs) or
:func:`~crs.labels.word_label` (word graphs).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional, Union

from crs.data.readers import (
    OnError,
    RecordError,
    SkipLog,
    expect_text,
    json_type,
    parse_lines,
    read_json,
)
from crs.errors import ConfigError, DataError, clip
from crs.interfaces import BuildDeps, KnowledgeSource
from crs.knowledge import ENTITY, KnowledgeGraph, check_edge_ids
from crs.labels import uri_label, word_label

from .common import config_file, data_file, resolve_root

TripleFormat = Literal["auto", "tsv", "jsonl"]
GraphRole = Literal["entity", "word"]  # crs.knowledge.ENTITY, WORD (a test checks they agree)
_PARTS = ("head", "relation", "tail")
SELF_LOOP = "self_loop"  # the relation name of self-loop edges (UniCRS's release; KGSF's when added)


def as_id(value: Any, *, digits: bool = False) -> Optional[int]:
    """`value` as an integer id: an int (a bool is an int to Python, but never an id) or, with `digits`,
    a digit string (JSON object keys); None for anything else (floats included)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if digits and isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def nodes_by_id(entity2id: Any, path: Path) -> list[str]:
    """Names ordered by their id; the ids must be exactly 0..N-1."""
    fix = "use the id file released with the graph: {name: id, ...} with the ids 0..N-1"
    if not isinstance(entity2id, dict):
        raise DataError(str(path), f"expected a mapping URI -> id, got {type(entity2id).__name__}", fix)
    nodes = [""] * len(entity2id)
    for uri, ident in entity2id.items():
        index = as_id(ident)
        if index is None or not 0 <= index < len(nodes) or nodes[index]:
            raise DataError(str(path), f"entity ids must be the distinct integers 0..{len(nodes) - 1}; "
                                       f"'{uri}' has id {ident!r}", "use the id file released with the graph")
        nodes[index] = str(uri)
    return nodes


def labelled_graph(role: str, nodes: list[str], relations: list[str],
                   edges: list[tuple[int, int, int]]) -> KnowledgeGraph:
    """A KnowledgeGraph of (head, relation, tail) index triples, each node labelled for entity linkers."""
    label = uri_label if role == ENTITY else word_label
    return KnowledgeGraph(role=role, nodes=nodes, relations=relations,
                          heads=[h for h, _, _ in edges], relation_ids=[r for _, r, _ in edges],
                          tails=[t for _, _, t in edges],
                          labels={node: [text] for node in nodes if (text := label(node))})


# ------------------------------------------------------------------ kg_json
class KGJson(KnowledgeSource):
    """``kg.json`` + ``entity2id.json`` + ``relation2id.json`` -> entity graph (see the module docstring).

    A ``self_loop`` relation in the release (UniCRS has one edge per head) is kept by default,
    as UniCRS's R-GCN uses it; ``self_loops: false`` drops it and its edges.
    """

    @dataclass
    class Config:
        root: str = "."  # the folder of the three files
        kg: str = "kg.json"  # head id (string) -> [[relation id, tail id], ...]
        entity2id: str = "entity2id.json"  # node name -> id
        relation2id: str = "relation2id.json"  # relation name -> id
        self_loops: bool = True

    def load(self, corpus: Any = None) -> KnowledgeGraph:
        cfg, root = self.config, resolve_root(self.config.root)
        ids_path = data_file(root, cfg.entity2id, f"{self.path}.entity2id")
        nodes = nodes_by_id(read_json(ids_path), ids_path)
        rel_path = data_file(root, cfg.relation2id, f"{self.path}.relation2id")
        relations = nodes_by_id(read_json(rel_path), rel_path)
        kg_path = data_file(root, cfg.kg, f"{self.path}.kg")
        edges = self._edges(read_json(kg_path), kg_path, len(nodes), len(relations))
        if not cfg.self_loops and SELF_LOOP in relations:
            dropped = relations.index(SELF_LOOP)
            edges = [(h, r - (r > dropped), t) for h, r, t in edges if r != dropped]
            relations = [r for r in relations if r != SELF_LOOP]
        return labelled_graph(ENTITY, nodes, relations, edges)

    def _edges(self, kg: Any, path: Path, n_nodes: int, n_relations: int) -> list[tuple[int, int, int]]:
        shape = "a JSON object head id -> [[relation id, tail id], ...]"
        fix = (f"point `{self.path}.kg` at the graph file of this layout; for a file of named triples use "
               "`type: kg_triples`")
        if not isinstance(kg, dict):
            raise DataError(str(path), f"expected {shape}, got {json_type(kg)}", fix)
        edges = []
        for head_key, pairs in kg.items():
            head = as_id(head_key, digits=True)
            if head is None or not isinstance(pairs, list):
                raise DataError(str(path), f"head '{head_key}': expected {shape}", fix)
            for pair in pairs:
                rel, tail = (as_id(pair[0], digits=True), as_id(pair[1], digits=True)) \
                    if isinstance(pair, list) and len(pair) == 2 else (None, None)
                if rel is None or tail is None:
                    raise DataError(str(path), f"head '{head_key}': expected [relation id, tail id] pairs, got "
                                               f"{clip(json.dumps(pair), 60, marker='')}", fix)
                edges.append((head, rel, tail))
        check_edge_ids(str(path), edges, n_nodes, n_relations,
                       f"`{self.path}.kg`, `.entity2id` and `.relation2id` must come from the same release")
        return edges


class UniCRSDBpedia(KGJson):
    """`kg_json` with the file names of UniCRS's INSPIRED release (``dbpedia_subkg.json``): the old name."""

    @dataclass
    class Config(KGJson.Config):
        root: str = "../shared/data/inspired/unicrs_dbpedia"
        kg: str = "dbpedia_subkg.json"


# --------------------------------------------------------------- kg_triples
class TripleFile(KnowledgeSource):
    """A TSV or JSONL file of (head, relation, tail) names -> knowledge graph (see the module docstring)."""

    @dataclass
    class Config:
        path: str  # the triple file (.gz ok)
        format: TripleFormat = "auto"  # auto (jsonl for *.jsonl / *.json, tsv otherwise)
        head: Optional[Union[int, str]] = None  # JSONL key / TSV column (position or header name); None: "head" / 0
        relation: Optional[Union[int, str]] = None  # None: "relation" / 1
        tail: Optional[Union[int, str]] = None  # None: "tail" / 2
        header: bool = False  # TSV: the first line names the columns
        delimiter: str = "\t"  # TSV column separator
        role: GraphRole = "entity"  # entity: items and related entities; word: a word graph
        on_error: OnError = "raise"  # skip: drop malformed lines (counted in the report)

    def __init__(self, config: Any, deps: BuildDeps):
        super().__init__(config, deps)
        if not config.delimiter:
            raise ConfigError(f"{self.path}.delimiter", "is empty", "use e.g. \"\\t\" (the default) or \",\"")
        self.format = config.format if config.format != "auto" else file_format(config.path)
        # checked here, before any file is read: what names the head, relation and tail
        self.columns = self._keys() if self.format == "jsonl" else self._columns()

    def load(self, corpus: Any = None) -> KnowledgeGraph:
        cfg = self.config
        path = config_file(cfg.path, f"{self.path}.path")
        parse = self._jsonl_parser() if self.format == "jsonl" else self._tsv_parser(path)
        nodes: dict[str, int] = {}
        relations: dict[str, int] = {}
        edges = []
        for _line, triple in parse_lines(path, parse, on_error=cfg.on_error, skipped=SkipLog()):
            if triple is None:  # the header line
                continue
            head, rel, tail = triple
            edges.append((nodes.setdefault(head, len(nodes)), relations.setdefault(rel, len(relations)),
                          nodes.setdefault(tail, len(nodes))))
        if not edges:
            raise DataError(str(path), "no triples in the file", f"point `{self.path}.path` at a non-empty triple file")
        return labelled_graph(cfg.role, list(nodes), list(relations), edges)

    # ------------------------------------------------------------- parsers
    def _keys(self) -> dict[str, str]:
        keys = {}
        for part in _PARTS:
            value = getattr(self.config, part)
            if isinstance(value, int):
                raise ConfigError(f"{self.path}.{part}", f"{value} is a column position, but a JSONL file has keys",
                                  f"name the key, e.g. {part}: {part}")
            keys[part] = part if value is None else value
        return keys

    def _columns(self) -> dict[str, Union[int, str]]:
        cfg, columns = self.config, {}
        for part, default in zip(_PARTS, range(3)):
            value = getattr(cfg, part)
            if isinstance(value, str) and not cfg.header:
                raise ConfigError(f"{self.path}.{part}", f"'{value}' names a column, but `header` is false",
                                  f"set header: true to read column names from the first line, or give the "
                                  f"column's 0-based position, e.g. {part}: {default}")
            if isinstance(value, int) and value < 0:
                raise ConfigError(f"{self.path}.{part}", f"column {value} is negative", "columns count from 0")
            columns[part] = (part if cfg.header else default) if value is None else value
        return columns

    def _jsonl_parser(self):
        keys = self.columns

        def parse(_line: int, text: str) -> tuple[str, str, str]:
            record = json.loads(text)
            if not isinstance(record, dict):
                raise RecordError(f"a line should be a JSON object, got {json_type(record)}",
                                  f"write one object per line with keys {', '.join(keys.values())}")
            return tuple(self._name(record.get(keys[part], _ABSENT), part, f"key '{keys[part]}'") for part in _PARTS)

        return parse

    def _tsv_parser(self, path: Path):
        cfg, columns = self.config, self.columns
        state: dict[str, Any] = {"positions": None if cfg.header else dict(columns)}

        def parse(_line: int, text: str) -> Optional[tuple[str, str, str]]:
            fields = text.split(cfg.delimiter)
            if state["positions"] is None:  # the header line
                names = [f.strip() for f in fields]
                positions = {}
                for part, column in columns.items():
                    if isinstance(column, int):
                        positions[part] = column
                    elif column in names:
                        positions[part] = names.index(column)
                    else:
                        raise DataError(str(path), f"the header has no column '{column}' (`{self.path}.{part}`); "
                                                   f"it names {', '.join(names)}",
                                        f"set `{self.path}.{part}` to one of the header's names", line=_line)
                state["positions"] = positions
                return None
            positions = state["positions"]
            need = max(positions.values()) + 1
            if len(fields) < need:
                raise RecordError(f"expected at least {need} columns separated by {cfg.delimiter!r}, got {len(fields)}",
                                  f"check `{self.path}.delimiter` and the head/relation/tail columns, or set "
                                  "on_error: skip")
            return tuple(self._name(fields[positions[part]], part, f"column {positions[part]}") for part in _PARTS)

        return parse

    def _name(self, value: Any, part: str, where: str) -> str:
        if value is _ABSENT:
            raise RecordError(f"the {part} ({where}, `{self.path}.{part}`) is missing",
                              f"set `{self.path}.{part}` to the field that holds it")
        name = expect_text(value, f"the {part} ({where}, `{self.path}.{part}`)",
                           f"write every {part} as a name (a string)").strip()
        if not name:
            raise RecordError(f"the {part} ({where}, `{self.path}.{part}`) is empty",
                              f"give every triple a {part}, or set on_error: skip")
        return name


_ABSENT = object()


def file_format(name: str) -> str:
    """The triple format a file name implies: jsonl for ``*.jsonl`` / ``*.json`` (``.gz`` ignored), else tsv."""
    name = name[:-3] if name.endswith(".gz") else name
    return "jsonl" if name.endswith((".jsonl", ".json")) else "tsv"
