"""What knowledge sources return, and the indexed graph components receive.

A knowledge source returns a :class:`KnowledgeGraph` (named nodes, typed edges)
or :class:`ItemTexts` (item id -> texts, for reviews and metadata).  The pipeline
turns each graph into an :class:`IndexedGraph`: node 0 is a padding node, and for
the entity graph every item that the KG lacks gets an isolated node, so that
every item has a node index.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from .errors import ConfigError, DataError, did_you_mean

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
    """Texts about items (reviews, metadata descriptions), keyed by item id.

    An item without text has no key (never an empty list or an empty string), so that
    readers can mask it.  `label` says in words what the texts are (e.g. "RevCore review
    snippets" or "item metadata: plot"): run reports print it, so that a plot standing in
    for a review is never called a review.
    """

    kind: str  # "review" | "metadata" | ...
    texts: dict[str, list[str]]
    label: str = ""


def item_texts_named(item_texts: Mapping[str, Any], name: str, key: str) -> Any:
    """``item_texts[name]``, the item-text source `name` (a ``knowledge:`` name); when there is none by that name, a
    ConfigError at `key` naming the closest one, the ones there are, and how to add one."""
    if name not in item_texts:
        have = (", ".join(sorted(item_texts))
                or "(none: add one under `knowledge:`, e.g. reviews: {type: revcore_reviews})")
        raise ConfigError(key, f"no item-text source named '{name}' in `knowledge:`{did_you_mean(name, item_texts)}",
                          f"name one of: {have}; or add `{name}` under `knowledge:` (the `redial` and `inspired` "
                          "corpus bundles have reviews and metadata)")
    return item_texts[name]


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
        """Index `graph` (pad node first, then its nodes, then `extra_nodes` it lacks).

        :raises DataError: an edge names a node or relation the graph does not have (a knowledge
            source whose edge file and id files disagree would otherwise index past an embedding table).
        """
        check_edges(name, graph)
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


def check_edges(name: str, graph: KnowledgeGraph) -> None:
    """A DataError naming graph `name` when an edge's head, tail or relation id is outside the graph."""
    if not (len(graph.heads) == len(graph.tails) == len(graph.relation_ids)):
        raise DataError(f"knowledge graph '{name}'", f"{len(graph.heads)} heads, {len(graph.relation_ids)} relations "
                                                     f"and {len(graph.tails)} tails: one of each per edge is needed",
                        "fix the knowledge source that built it")
    check_edge_ids(f"knowledge graph '{name}'", np.stack([graph.heads, graph.relation_ids, graph.tails], axis=1),
                   len(graph.nodes), len(graph.relations),
                   "the edge file and the id files must come from the same release, and the edge "
                   "columns must be read in the order the file has them (head, relation, tail)")


def check_edge_ids(where: str, edges: Sequence[Sequence[int]] | np.ndarray, n_nodes: int, n_relations: int | None,
                   fix: str) -> None:
    """A DataError at `where` (a graph, or the file a loader read the edges from) naming the first edge
    ``(head, relation, tail)`` whose head or tail is not a node id ``0..n_nodes - 1`` or whose relation is
    not ``0..n_relations - 1`` (relations are not checked when `n_relations` is None).

    The one range check of edges: :meth:`IndexedGraph.from_graph` runs it on every graph, and loaders run it
    on the ids as their files store them, so that the message names the file.
    """
    try:
        triples = np.asarray(edges, dtype=np.int64).reshape(-1, 3)
    except OverflowError:  # an id beyond int64 is outside every range: mark it as one
        triples = np.asarray([[v if -2**63 <= v < 2**63 else -1 for v in edge] for edge in edges],
                             dtype=np.int64).reshape(-1, 3)
    heads, relations, tails = triples[:, 0], triples[:, 1], triples[:, 2]
    bad = (heads < 0) | (heads >= n_nodes) | (tails < 0) | (tails >= n_nodes)
    if n_relations is not None:
        bad |= (relations < 0) | (relations >= n_relations)
    found = np.flatnonzero(bad)
    if len(found):
        head, relation, tail = (int(v) for v in edges[int(found[0])])
        ranges = f"nodes 0..{n_nodes - 1}" + (f", relations 0..{n_relations - 1}" if n_relations is not None else "")
        more = f"; {len(found)} edges are out of range" if len(found) > 1 else ""
        raise DataError(where, f"edge ({head}, {relation}, {tail}) is outside the id ranges ({ranges}){more}", fix)


class GraphLookups(dict):
    """A component's view of the pipeline's graphs that notes which names it looks up (see check_graph_reads)."""

    def __init__(self, graphs: dict[str, IndexedGraph]):
        super().__init__(graphs)
        self.names: list[str] = []

    def __getitem__(self, name: str) -> IndexedGraph:
        self.names.append(name)
        return super().__getitem__(name)

    def get(self, name: str, default: object = None) -> object:
        self.names.append(name)
        return super().get(name, default)


#: Output ports whose rows the batch indexes with node ids of the samples' graph of that role.
NODE_PORTS = {"entity_nodes": ENTITY, "word_nodes": WORD}


def check_graph_reads(path: str, read: Iterable[str], outputs: Iterable[str], graphs: dict[str, IndexedGraph],
                      entity_graph: IndexedGraph, word_graph: IndexedGraph | None,
                      sources: dict[str, str] | None = None) -> None:
    """A ConfigError when the model slot at `path` builds node representations the batches would misindex.

    Batches carry node ids of the samples' two graphs only: entity ids of `entity_graph`
    (``batch.context_entities``, item nodes), which index ``entity_nodes``, and word ids of
    `word_graph` (``batch.context_words``), which index ``word_nodes``.  So a slot may read
    only those graphs, and a slot writing ``entity_nodes`` (``word_nodes``) must read the
    samples' entity (word) graph.  Otherwise its node table is indexed with another graph's
    ids: out of range (an index error deep inside training) or, worse, silently the wrong
    nodes.  This happens when a knowledge source yields the other role than intended (a
    word-graph reader pointed at an entity file, or columns read in another order) or when
    a component names a graph the samples do not use.

    :param read: names of the graphs the component looked up (:class:`GraphLookups`).
    :param outputs: the slot's output keys after renames (``entity_nodes``, ...).
    :param sources: knowledge name -> its `type:`, for the message.
    """
    samples_graph = {ENTITY: entity_graph.name, WORD: word_graph.name if word_graph is not None else None}
    entities = f"'{entity_graph.name}'" if entity_graph.name in graphs else \
        "the item-only graph, as no knowledge source yields an entity graph"
    words = f"'{word_graph.name}'" if word_graph is not None else "none"
    for name in dict.fromkeys(n for n in read if n in graphs):
        graph = graphs[name]
        made_by = f" (built by `{(sources or {}).get(name)}`)" if (sources or {}).get(name) else ""
        problem = ""
        if name not in samples_graph.values():
            problem = "which the batches do not index"
        for port in outputs:
            role = NODE_PORTS.get(port)
            if role is not None and samples_graph[role] != name:
                problem = f"and writes '{port}', which batches index with {role} ids of another graph"
                break
        if problem:
            other = ENTITY if graph.role == WORD else WORD
            raise ConfigError(
                path, f"reads knowledge graph '{name}', a {graph.role} graph{made_by}, {problem}: batches carry node "
                      f"ids of the samples' graphs only (entities: {entities}; words: {words}), so its node table "
                      "would be indexed with another graph's ids",
                f"if knowledge.{name} is meant as the {other} graph, check that its `type:` reads {other} graphs "
                "and reads the file's columns in the order the file has them; otherwise point the slot at the "
                f"samples' {graph.role} graph, or choose the samples' graphs with samples.entity_graph / "
                "samples.word_graph")


def output_keys(component: object) -> list[str]:
    """The keys a model component writes, after the `outputs:` renames of its YAML node."""
    renames = (getattr(component, "port_renames", None) or {}).get("outputs", {})
    ports = component.output_ports() if hasattr(component, "output_ports") else {}
    return [renames.get(local, port.key) for local, port in ports.items()]
