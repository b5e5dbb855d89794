"""MESE (Yang et al. 2022, "Improving Conversational Recommendation Systems' Quality with Context-Aware
Item Meta-Information"): items encoded from their metadata by a PLM, faiss candidate retrieval, PLM
ranking over the dialogue's KV cache, and a generator that recommends while it writes.

- knowledge source ``mese_metadata``: each item's metadata as one string in the official format
  ``"{title} [SEP] {stars} [SEP] {director} [SEP] {genre} [SEP] {plot}"`` (title only without metadata);
- external encoder ``mese_item_encoder``: a sentence encoder (MiniLM by default), masked mean pooling,
  then a selection key and an item embedding (ITE) for the PLM, per encoded item;
- the retrieval index the recommender searches at evaluation lives in the core (``crs.nn.retrieval``):
  nothing in it is specific to MESE.

This entry module only registers lazy "module:Class" references, so loading the plugin imports no torch
and no transformers.
"""
from crs.hookspecs import hookimpl

_PKG = "crs.plugins.mese"


@hookimpl
def crs_register_knowledge_sources(register):
    register("mese_metadata", f"{_PKG}.metadata:MeseMetadata")


@hookimpl
def crs_register_external_encoders(register):
    register("mese_item_encoder", f"{_PKG}.item_encoder:MeseItemEncoder")
