"""Which items the entity graph knows: linking items by name, and counting the items left out.

Every item gets a node in the indexed entity graph (:func:`crs.data.prepare.item_entity_names`);
an item the graph does not know gets an isolated ``item:<id>`` node that no edge reaches, so
graph encoders learn nothing about it.  That used to happen silently, so:

* a corpus that names its items but ships no item-to-node table (``Corpus.link_items_by_name``,
  set by the ``jsonl`` dataset when its ``items`` file is omitted) has each such item linked to
  the graph node of the same name, compared case- and underscore-insensitively ("The_Matrix",
  "the matrix" and "The Matrix" are one name); the item's name is tried first, then its id.
  A name that two nodes share is ambiguous and links nothing;
* every run counts the items whose node is not in the entity graph
  (``report["items_unlinked_from_kg"]``) and prints the count in its header.
"""
from __future__ import annotations

from dataclasses import replace

from ..knowledge import KnowledgeGraph
from .prepare import item_entity_names
from .schema import Corpus


def normalized_name(name: str) -> str:
    """The form names are compared in: underscores as spaces, runs of spaces as one, case folded."""
    return " ".join(str(name).replace("_", " ").split()).casefold()


def _nodes_by_name(nodes: list[str]) -> dict[str, str | None]:
    """Normalized name -> node name; None for a name several nodes share."""
    found: dict[str, str | None] = {}
    for node in nodes:
        key = normalized_name(node)
        if key:
            found[key] = None if key in found and found[key] != node else node
    return found


def link_items(corpus: Corpus, graph: KnowledgeGraph | None) -> tuple[Corpus, list[str]]:
    """`corpus` with its items linked by name (when it asks for it) and the unlinked count in its report,
    and the entity-graph node name of each item (:func:`crs.data.prepare.item_entity_names` of it).

    The corpus is a new one (datasets may share theirs); without an entity graph nothing is counted.
    """
    if graph is None:
        return corpus, item_entity_names(corpus)
    report = dict(corpus.report)
    items = corpus.items
    if corpus.link_items_by_name:
        by_name = _nodes_by_name(graph.nodes)
        items, linked, ambiguous = {}, 0, 0
        for item_id, item in corpus.items.items():
            if not item.entity:
                keys = (normalized_name(item.name), normalized_name(item_id))
                hits = [by_name[key] for key in keys if key in by_name]
                node = next((hit for hit in hits if hit is not None), None)
                if node is not None:
                    item, linked = replace(item, entity=node), linked + 1
                elif hits:
                    ambiguous += 1
            items[item_id] = item
        report["items_linked_by_name"] = linked
        if ambiguous:
            report["items_with_ambiguous_names"] = ambiguous
    linked_corpus = replace(corpus, items=items, report=report)
    names = item_entity_names(linked_corpus)
    known = set(graph.nodes)
    report["items_unlinked_from_kg"] = sum(name not in known for name in names)
    return linked_corpus, names


def unlinked_note(report: dict) -> str:
    """`` (N unlinked from the entity KG)`` for a run's header; "" when every item is linked or no KG was loaded."""
    count = report.get("items_unlinked_from_kg", 0)
    return f" ({count} unlinked from the entity KG)" if count else ""
