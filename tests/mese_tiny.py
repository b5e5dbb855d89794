"""Overrides that run a MESE preset with the tiny random models shipped with crs (not a test module).

The presets name SmolLM2 and MiniLM (pip packages, ~100 MB each); tests wire and train them on the
demo corpus with the 2-layer, 32-wide Llama of ``crs.tiny_models.causal_lm`` and the tiny BERT of
``crs.tiny_models.encoder`` instead, and fewer negatives and candidates to suit its 300 items.
"""
from __future__ import annotations

TINY_MESE = [
    "model.item_encoder.source=package:crs.tiny_models.encoder", "model.item_encoder.random_init=true",
    "model.item_encoder.ite_dim=32", "model.item_encoder.select_dim=16", "model.item_encoder.max_tokens=32",
    "model.item_encoder.select_negatives=7", "model.item_encoder.rank_negatives=7",
    "model.plm.source=package:crs.tiny_models.causal_lm", "model.plm.random_init=true", "model.plm.gguf_file=null",
    "model.plm.max_tokens=128", "model.plm.layers=0",
    "model.recommender.hidden_dim=32", "model.recommender.select_dim=16", "model.recommender.select_negatives=7",
    "model.recommender.rank_negatives=7", "model.recommender.top_k=50", "model.recommender.rank_chunk=50",
]


def tiny_overrides(preset: str) -> list[str]:
    """The overrides that make `preset` run on tiny models (none for presets that are not MESE's)."""
    if preset != "mese" and not preset.startswith("mese-"):
        return []
    # the demo corpus has no metadata_no_content source
    extra = ["model.item_encoder.metadata=metadata"] if preset == "mese-no-content" else []
    return [*TINY_MESE, *extra]
