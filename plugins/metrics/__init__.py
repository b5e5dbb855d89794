"""Built-in metrics and evaluation protocols.

Registered lazily by ``module:Class`` so that loading this plugin imports no torch.
Metrics: ``recall``, ``mrr``, ``ndcg`` (task rec), ``dist``, ``bleu``, ``f1``,
``item_ratio``, ``rer`` (task gen), ``ppl`` (task nll).  Protocols: ``crslab``, ``all_turns``, ``fresh``,
``cold_start``, ``user_adapt`` (see :mod:`crs.plugins.metrics.protocols`).
"""
from crs.hookspecs import hookimpl

_HERE = "crs.plugins.metrics"

METRICS = {
    "recall": f"{_HERE}.ranking:Recall",
    "mrr": f"{_HERE}.ranking:MRR",
    "ndcg": f"{_HERE}.ranking:NDCG",
    "dist": f"{_HERE}.conversation:Dist",
    "bleu": f"{_HERE}.conversation:BLEU",
    "f1": f"{_HERE}.conversation:F1",
    "item_ratio": f"{_HERE}.conversation:ItemRatio",
    "rer": f"{_HERE}.conversation:RecommendationRate",
    "ppl": f"{_HERE}.conversation:Perplexity",
}

PROTOCOLS = {
    "crslab": f"{_HERE}.protocols:CRSLabProtocol",
    "all_turns": f"{_HERE}.protocols:AllTurnsProtocol",
    "fresh": f"{_HERE}.protocols:FreshProtocol",
    "cold_start": f"{_HERE}.protocols:ColdStartProtocol",
    "user_adapt": f"{_HERE}.protocols:UserAdaptProtocol",
}


@hookimpl
def crs_register_metrics(register):
    for name, ref in METRICS.items():
        register(name, ref)


@hookimpl
def crs_register_evaluation_protocols(register):
    for name, ref in PROTOCOLS.items():
        register(name, ref)
