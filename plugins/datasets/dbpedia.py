"""DBpedia entity graphs: KGSF's ReDial subgraph (`kgsf_dbpedia`).

UniCRS's INSPIRED graph (`unicrs_dbpedia`) is read by the generic `kg_json` reader
(:mod:`crs.plugins.datasets.graph_files`), whose layout is not DBpedia-specific.

Node names are the URIs exactly as the id files spell them (``<http://dbpedia.org/
resource/Tom_Hanks>``), so a dataset's ``Item.entity`` matches a node by name.
``labels`` map each node to :func:`~crs.labels.uri_label` for the
phrase linker.  Edges are returned once, in their stored direction; encoders add
reverse edges themselves (see :class:`crs.knowledge.KnowledgeGraph`).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from crs.data.safe_pickle import load_plain_pickle
from crs.errors import DataError, clip
from crs.interfaces import KnowledgeSource
from crs.knowledge import ENTITY, KnowledgeGraph, check_edge_ids

from .common import data_file, resolve_root
from .graph_files import SELF_LOOP, as_id, labelled_graph, nodes_by_id


def _shown(value: Any) -> str:
    return f"{clip(repr(value), 60)} ({type(value).__name__})"


class KGSFDBpedia(KnowledgeSource):
    """KGSF's DBpedia subgraph (``subkg.pkl`` + ``entity2entityId.pkl``) with KGSF's relation filter.

    KGSF drops stored self-edges and edges of its reserved self-loop relation
    (id 185), adds a reverse for every edge, counts edges per relation and keeps the
    relations with more than ``min_relation_edges`` (1000) edges.  This source counts
    the same way (each stored edge counts twice) but returns only the stored direction.
    On the released files 34 relations pass; KGSF's self-loop relation makes 35.
    Self-loops are left to the encoder (R-GCN has a root weight); ``self_loops: true``
    adds KGSF's one self-loop per node as relation ``self_loop`` (it counts toward
    the filter like any relation, as in KGSF).  Relations are named ``dbpedia:<id>``
    (the release has no relation names) and ordered as KGSF indexes them.
    """

    @dataclass
    class Config:
        root: str = "../shared/data/redial/kgsf"
        subkg: str = "subkg.pkl"  # head id -> [(relation id, tail id), ...]
        entity2id: str = "entity2entityId.pkl"  # URI -> entity id
        movie_ids: Optional[str] = "movie_ids.pkl"  # entity ids of the movies; only checked to be in range
        min_relation_edges: int = 1000
        self_loops: bool = False
        reserved_self_loop_relation: int = 185  # KGSF's self-loop id; stored edges with it are dropped

    def load(self, corpus: Any = None) -> KnowledgeGraph:
        cfg, root = self.config, resolve_root(self.config.root)
        ids_path = data_file(root, cfg.entity2id, f"{self.path}.entity2id")
        nodes = nodes_by_id(load_plain_pickle(ids_path), ids_path)
        kg_path = data_file(root, cfg.subkg, f"{self.path}.subkg")
        stored = self._stored_edges(load_plain_pickle(kg_path), len(nodes), kg_path)
        if cfg.movie_ids:
            self._check_movies(data_file(root, cfg.movie_ids, f"{self.path}.movie_ids"), len(nodes))

        # KGSF's order: for each entity its self-loop first, then its edges.
        counts: Counter = Counter()
        order: dict[Any, None] = {}
        by_head: dict[int, list[tuple[int, int]]] = {}
        for head, rel, tail in stored:
            by_head.setdefault(head, []).append((rel, tail))
        for entity in range(len(nodes)):
            if cfg.self_loops:
                counts[SELF_LOOP] += 1
                order.setdefault(SELF_LOOP)
            for rel, _tail in by_head.get(entity, ()):
                counts[rel] += 2  # the edge and the reverse KGSF adds
                order.setdefault(rel)
        kept = [rel for rel in order if counts[rel] > cfg.min_relation_edges]
        rel_index = {rel: i for i, rel in enumerate(kept)}
        edges = [(h, rel_index[r], t) for h, r, t in stored if r in rel_index]
        if SELF_LOOP in rel_index:
            edges += [(n, rel_index[SELF_LOOP], n) for n in range(len(nodes))]
        names = [SELF_LOOP if rel == SELF_LOOP else f"dbpedia:{rel}" for rel in kept]
        return labelled_graph(ENTITY, nodes, names, edges)

    def _stored_edges(self, subkg: Any, n_nodes: int, path: Path) -> list[tuple[int, int, int]]:
        fix = "use the subkg.pkl released with KGSF: {head entity id: [(relation id, tail entity id), ...]}"
        if not isinstance(subkg, dict):
            raise DataError(str(path),
                            f"expected a mapping head id -> [(relation, tail), ...], got {type(subkg).__name__}", fix)
        stored = []
        for head, pairs in subkg.items():
            if as_id(head) is None:
                raise DataError(str(path), f"head {head!r} is a {type(head).__name__}, not an integer entity id", fix)
            if not isinstance(pairs, (list, tuple)):
                raise DataError(str(path), f"head {head}: expected a list of (relation, tail) pairs, got "
                                           f"{_shown(pairs)}", fix)
            for pair in pairs:
                if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and all(as_id(x) is not None for x in pair)):
                    raise DataError(str(path), f"head {head}: expected (relation id, tail id) pairs of integers, "
                                               f"got {_shown(pair)}", fix)
                stored.append((head, pair[0], pair[1]))
        stored.sort(key=lambda edge: edge[0])  # heads in id order (KGSF's); each head's pairs keep theirs
        check_edge_ids(str(path), stored, n_nodes, None,
                       "the graph and entity2id files must come from the same release")
        reserved = self.config.reserved_self_loop_relation
        return [(head, rel, tail) for head, rel, tail in stored if head != tail and rel != reserved]

    @staticmethod
    def _check_movies(path: Path, n_nodes: int) -> None:
        movies = load_plain_pickle(path)
        if not isinstance(movies, (list, tuple)) or not all(isinstance(m, int) and 0 <= m < n_nodes for m in movies):
            raise DataError(str(path), f"expected a list of entity ids within 0..{n_nodes - 1}",
                            "the movie ids and entity2id files must come from the same release")

