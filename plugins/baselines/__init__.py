"""Baselines from the KGSF paper's comparison: Popularity, TextCNN, Transformer.

Registration only (lazy "module:Class" references; no torch import here).
"""
from crs.hookspecs import hookimpl

_PKG = "crs.plugins.baselines"


@hookimpl
def crs_register_recommenders(register):
    register("popularity", f"{_PKG}.popularity:PopularityRecommender")
    register("text_cnn", f"{_PKG}.text_cnn:TextCNNRecommender")


@hookimpl
def crs_register_generators(register):
    register("transformer", f"{_PKG}.transformer_generator:TransformerGenerator")  # helper F2
