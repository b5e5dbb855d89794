"""MESE (Yang et al. 2022, "Improving Conversational Recommendation Systems' Quality with Context-Aware
Item Meta-Information"): items encoded from their metadata by a PLM, faiss candidate retrieval, PLM
ranking over the dialogue's KV cache, and a generator that recommends while it writes.

- knowledge source ``mese_metadata``: each item's metadata as one string in the official format
  ``"{title} [SEP] {stars} [SEP] {director} [SEP] {genre} [SEP] {plot}"`` (title only without metadata);
- external encoder ``mese_item_encoder``: a sentence encoder (MiniLM by default), masked mean pooling,
  then a selection key and an item embedding (ITE) for the PLM, per encoded item;
- context encoder ``mese_plm``: the dialogue, with ITEs spliced in, through a causal LM (SmolLM2 by
  default); the state at the final [REC] and the KV cache the other two continue from;
- recommender ``mese``: selection loss over q . k, then candidate ranking in one pass over the cache;
- generator ``mese_generator``: decides to recommend, inserts the top item, writes the reply;
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


@hookimpl
def crs_register_context_encoders(register):
    register("mese_plm", f"{_PKG}.plm:MesePLM")


@hookimpl
def crs_register_recommenders(register):
    register("mese", f"{_PKG}.recommender:MeseRecommender")


@hookimpl
def crs_register_generators(register):
    register("mese_generator", f"{_PKG}.generator:MeseGenerator")
