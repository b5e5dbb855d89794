"""Built-in plugin: real corpora (ReDial, UniCRS-style INSPIRED, generic jsonl) and knowledge loaders.

Registration uses lazy ``"module:Class"`` references, so importing this module
loads nothing heavy.
"""
from __future__ import annotations

from crs.hookspecs import hookimpl

_PKG = "crs.plugins.datasets"

DATASETS = {
    "redial": f"{_PKG}.redial:RedialDataset",
    "unicrs_jsonl": f"{_PKG}.unicrs:UniCRSJsonlDataset",
    "jsonl": f"{_PKG}.generic_jsonl:JsonlDataset",
}

KNOWLEDGE_SOURCES = {
    "kgsf_dbpedia": f"{_PKG}.dbpedia:KGSFDBpedia",
    "kg_json": f"{_PKG}.graph_files:KGJson",
    "unicrs_dbpedia": f"{_PKG}.graph_files:UniCRSDBpedia",  # kg_json with INSPIRED's file names (its old name)
    "kg_triples": f"{_PKG}.graph_files:TripleFile",
    "conceptnet_edges": f"{_PKG}.conceptnet:ConceptNetEdges",
    "item_metadata_json": f"{_PKG}.item_texts:ItemMetadataJson",
    "revcore_reviews": f"{_PKG}.item_texts:RevCoreReviews",
}


@hookimpl
def crs_register_datasets(register):
    for name, ref in DATASETS.items():
        register(name, ref)


@hookimpl
def crs_register_knowledge_sources(register):
    for name, ref in KNOWLEDGE_SOURCES.items():
        register(name, ref)
