"""What knowledge sources return, and the indexed graph components receive.

A knowledge source returns a :class:`KnowledgeGraph` (named nodes, typed edges)
or :class:`ItemTexts` (item id -> texts, for reviews and metadata).  The pipeline
turns each graph into an :class:`IndexedGraph`: node 0 is a padding node, and for
the entity graph every item that the KG lacks gets an isolated node, so that
every item has a node index.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

ENTITY = "entity"  # nodes are items and related entities (DBpedia, demo KG)
WORD = "word"  # nodes are words (ConceptNet)
PAD_NODE = "__pad_node__"


@dataclass
class KnowledgeGraph:
    """A directed multigraph over named nodes with named relations.

    `labels` maps a node to the surface forms an entity linker should match
    (e.g. "tom hanks" for a DBpedia URI); `role` is ENTITY or WORD.
    Edges are stored once as given; encoders add reverse edges or self-loops
    themselves when their paper does.
    """

    role: str
    nodes: list[str]
    relations: list[str]
    heads: np.ndarray  # int64 (E,) indices into nodes
    relation_ids: np.ndarray  # int64 (E,) indices into relations
    tails: np.ndarray  # int64 (E,)
    labels: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.heads = np.asarray(self.heads, dtype=np.int64)
        self.tails = np.asarray(self.tails, dtype=np.int64)
        self.relation_ids = np.asarray(self.relation_ids, dtype=np.int64)

    @property
    def num_edges(self) -> int:
        return int(self.heads.shape[0])


@dataclass
class ItemTexts:
    """Texts about items (reviews, metadata descriptions), keyed by item id."""

    kind: str  # "review" | "metadata" | ...
    texts: dict[str, list[str]]


@dataclass
class IndexedGraph:
    """A KnowledgeGraph re-indexed for a pipeline: node 0 is padding.

    `src`, `dst`, `rel` are the stored edges (no reverse edges, no self-loops).
    `node_index` maps node names to indices.
    """

    name: str
    role: str
    nodes: list[str]
    relations: list[str]
    src: np.ndarray
    dst: np.ndarray
    rel: np.ndarray
    node_index: dict[str, int]
    labels: dict[str, list[str]] = field(default_factory=dict)

    @property
    def num_nodes(self) -> int:
        return len(self.nodes)

    @property
    def num_relations(self) -> int:
        return len(self.relations)

    @classmethod
    def from_graph(cls, name: str, graph: KnowledgeGraph, extra_nodes: list[str] = ()) -> "IndexedGraph":
        nodes = [PAD_NODE, *graph.nodes]
        known = set(nodes)
        nodes += [n for n in dict.fromkeys(extra_nodes) if n not in known]
        return cls(
            name=name,
            role=graph.role,
            nodes=nodes,
            relations=list(graph.relations),
            src=graph.heads + 1,
            dst=graph.tails + 1,
            rel=graph.relation_ids.copy(),
            node_index={n: i for i, n in enumerate(nodes)},
            labels=graph.labels,
        )
