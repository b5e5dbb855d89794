"""KGSF (Zhou et al., KDD 2020): KG encoders, MIM fusion, user encoders, recommender, decoder.

This entry module only registers lazy "module:Class" references, so loading the
plugin imports neither torch nor DGL.
"""
from crs.hookspecs import hookimpl

_PKG = "crs.plugins.kgsf"


@hookimpl
def crs_register_external_encoders(register):
    register("gcn", f"{_PKG}.gcn:WordGraphGCN")  # Eq. 1, word graph (ConceptNet)
    register("rgcn", f"{_PKG}.rgcn:EntityGraphRGCN")  # Eq. 2, entity graph (DBpedia)


@hookimpl
def crs_register_user_encoders(register):
    register("self_attention_pool", f"{_PKG}.user_encoders:SelfAttentionPoolEncoder")  # Eq. 6
    register("gate", f"{_PKG}.user_encoders:GateUserEncoder")  # Eq. 7


@hookimpl
def crs_register_recommenders(register):
    register("dot_product", f"{_PKG}.recommender:DotProductRecommender")  # Eq. 8-9


@hookimpl
def crs_register_fusion_objectives(register):
    register("mim", f"{_PKG}.mim:MutualInformationObjective")  # Eq. 4-6


@hookimpl
def crs_register_generators(register):
    register("kgsf_decoder", f"{_PKG}.decoder:KGSFDecoder")  # Eq. 10-18 (helper F2)
