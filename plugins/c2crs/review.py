"""`c2crs_review`: C2-CRS's review encoder (§4.1 "user-generated data"): item texts -> unit and user vectors.

Each item gets up to ``units_per_item`` text *units*, taken from the first of ``sources`` (the
names of item-text knowledge, e.g. ``[reviews, metadata]``) that has any text for it: that is
the fallback order, so with ``[reviews, metadata]`` an item without a review snippet is
described by its plot.  What stood in for reviews is the caller's to report: plots are not
reviews.  A unit is the text's first ``max_tokens`` tokens in the pipeline vocabulary
(unknown words become UNK).  Units are tokenized once, when the encoder is built, and kept
as a buffer; a forward pass only indexes it.

Forward (spec §1): the last ``max_units`` items of ``batch.context_items`` per sample; each
distinct item of the batch is encoded once by the encoder's own Transformer (on the shared
token embedding when ``embedding:`` names one) and pooled over its tokens (self-attentive:
E_k); an item with several units averages them.  Per sample, ``review_states`` holds its
items' vectors, ``review_nodes`` their entity nodes, ``review_mask`` which are real *and* have
text: an item without text is masked, never a NaN and never a zero vector posing as a review.
``user_review`` (e_R) pools a sample's unmasked items (self-attentive); a sample with none
gets the zero vector.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from crs.errors import ConfigError, check_positive_ints
from crs.interfaces import BuildDeps, ExternalEncoder, Port
from crs.nn import SelfAttentivePool, check_transformer_config, keep_last, masked_mean

from .context import token_encoder


def item_units(deps: BuildDeps, sources: list[str], units_per_item: int, max_tokens: int
               ) -> tuple[torch.Tensor, dict[str, int]]:
    """Long (n_items, units_per_item, max_tokens) token ids of each item's units (0 = pad / no unit).

    Each item's units come from the first source in `sources` with a non-empty text for it;
    also returns how many items each source supplied (for coverage reports).
    """
    vocab, items = deps.require("vocab"), deps.require("items")
    texts = [deps.texts(name, key=f"sources.{i}").texts for i, name in enumerate(sources)]
    units = torch.zeros(len(items), units_per_item, max_tokens, dtype=torch.long)
    supplied = dict.fromkeys(sources, 0)
    for index, item_id in enumerate(items.ids):
        for name, source in zip(sources, texts):
            encoded = [ids[:max_tokens] for ids in (vocab.encode(t) for t in source.get(item_id) or [] if t)]
            encoded = [ids for ids in encoded if ids][:units_per_item]
            if encoded:
                for unit, ids in enumerate(encoded):
                    units[index, unit, :len(ids)] = torch.as_tensor(ids)
                supplied[name] += 1
                break
    return units, supplied


class C2CRSReviewEncoder(ExternalEncoder):
    """`c2crs_review`: per-sample review unit vectors of the context's items and their pooled user view e_R.

    Ports: items=batch.context_items, items_mask=batch.context_items_mask -> states=review_states
    (B, I, dim), nodes=review_nodes (B, I) entity node ids, mask=review_mask (B, I) (item real
    and has text), user=user_review (B, dim); I <= max_units (at least 1).
    """

    @dataclass
    class Config:
        # item-text knowledge names, in fallback order: an item's units come from the first with text for it
        sources: list[str] = field(default_factory=lambda: ["reviews"])
        units_per_item: int = 1
        max_tokens: int = 40  # tokens per unit (its first ones)
        max_units: int = 32  # context items per sample (the last ones)
        dim: int = 300
        heads: int = 2
        layers: int = 2
        ffn_dim: int = 300
        dropout: float = 0.1
        attention_dropout: float = 0.0
        embedding: Optional[str] = None  # name of a `shared:` token embedding; None = own one

    def __init__(self, config: Config, deps: BuildDeps):
        super().__init__(config, deps)
        check_transformer_config(config, self.path)
        check_positive_ints(config, ("units_per_item", "max_tokens", "max_units"), self.path)
        if not config.sources:
            raise ConfigError(f"{self.path}.sources", "names no item-text source",
                              "name the item-text knowledge to read, e.g. sources: [reviews, metadata]")
        units, self.coverage = item_units(deps, list(config.sources), config.units_per_item, config.max_tokens)
        self.register_buffer("units", units, persistent=False)
        self.register_buffer("has_text", units[:, :, 0] != 0, persistent=False)  # (n_items, K)
        self.register_buffer("item_nodes", torch.as_tensor(deps.require("items").entity_nodes).long().clone(),
                             persistent=False)
        self.encoder = token_encoder(config, deps, config.max_tokens)
        self.token_pool = SelfAttentivePool(config.dim)  # E_k = pool(Transformer_R(unit))
        self.user_pool = SelfAttentivePool(config.dim)  # e_R = pool over the sample's units

    def input_ports(self) -> dict[str, Port]:
        return {"items": Port("batch.context_items", doc="item indices mentioned so far (B, I)"),
                "items_mask": Port("batch.context_items_mask", doc="bool (B, I)")}

    def output_ports(self) -> dict[str, Port]:
        dim = self.config.dim
        return {
            "states": Port("review_states", dim, doc="unit vector of each context item (B, I, dim), 0 if masked"),
            "nodes": Port("review_nodes", doc="entity node of each context item (B, I), 0 = pad"),
            "mask": Port("review_mask", doc="bool (B, I): a real item with text"),
            "user": Port("user_review", dim, doc="e_R: pooled unit vectors (B, dim); zero without any"),
        }

    def encode_items(self, item_ids: torch.Tensor) -> torch.Tensor:
        """Vectors (n, dim) of the given distinct items with text: their units encoded, pooled, averaged."""
        units, has_text = self.units[item_ids], self.has_text[item_ids]  # (n, K, T), (n, K)
        flat = units[has_text]  # only units with text run through the Transformer
        states, mask = self.encoder(flat, flat != 0)
        vectors = self.token_pool(states, mask)  # (units, dim)
        per_item = vectors.new_zeros(*has_text.shape, vectors.shape[-1])
        per_item[has_text] = vectors
        return masked_mean(per_item, has_text)  # textless units are zero rows: the mean over those with text

    def forward(self, inputs: dict[str, Any]) -> dict[str, Any]:
        items, mask = inputs["items"].long(), inputs["items_mask"].bool()
        if items.shape[1] > self.config.max_units:
            # keep_last zeroes dropped entries; item 0 is a real item, so carry item + 1 and undo it
            kept, mask = keep_last(items + 1, mask, self.config.max_units)
            items = (kept - 1).clamp(min=0)
        items = items * mask
        mask = mask & self.has_text[items].any(-1)  # an item without text is no unit
        batch, width, dim = items.shape[0], items.shape[1], self.config.dim
        states = self.token_pool.project.weight.new_zeros(batch, width, dim)
        distinct, where = torch.unique(items[mask], return_inverse=True)
        if distinct.numel():
            states = states.index_put((mask.nonzero(as_tuple=True)), self.encode_items(distinct)[where])
        nodes = self.item_nodes[items] * mask
        return {"states": states, "nodes": nodes, "mask": mask, "user": self.user_pool(states, mask)}
