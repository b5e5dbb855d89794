"""Baselines from the KGSF paper's comparison: Popularity, TextCNN, Transformer; and the shared token embedding.

Registration only (lazy "module:Class" references; no torch import here).  The
Transformer generator and the token embedding are core classes (``crs.nn``) because
paper plugins build on them; this plugin gives them their registered names.
"""
from crs.hookspecs import hookimpl

_PKG = "crs.plugins.baselines"


@hookimpl
def crs_register_recommenders(register):
    register("popularity", f"{_PKG}.popularity:PopularityRecommender")
    register("text_cnn", f"{_PKG}.text_cnn:TextCNNRecommender")


@hookimpl
def crs_register_generators(register):
    register("transformer", "crs.nn.seq2seq:TransformerGenerator")  # helper F2


@hookimpl
def crs_register_shared_modules(register):
    register("token_embedding", "crs.nn.embedding:TokenEmbedding")  # one matrix for several slots (`shared:`)
