"""`c2crs_coarse` and `c2crs_fine`: C2-CRS's coarse-to-fine contrastive objectives (§4.2, spec §2).

Both compare *views* through their own projection heads (d -> d -> ``proj_dim``, cosine,
``temperature``), and both average the loss over every pair of the views they are given, in
the order written (the default ``{context, kg, review}`` gives (C,G), (C,R), (G,R); the code
averages, Eq. 4 sums).  The losses themselves are :mod:`crs.nn.contrastive`'s.

Views are config, so the same objective can pair any representations a pipeline has:
``views`` maps a view name to its width, and each view reads ports named after it (defaults
below; rename them with ``inputs:``).  For example KGSF's word-side and entity-side user
vectors are ``views: {word: 128, entity: 128}``, read from ``user_word`` and ``user_entity``.

Coarse (user level): one vector per sample and view; NT-Xent per pair.  Default ports:
``context`` -> ``user_context``, ``kg`` -> ``user_entity``, ``review`` -> ``user_review``, any
other view ``v`` -> ``user_<v>``.  ``skip_empty: true`` leaves out, per pair, the samples whose
vector in either view is exactly zero (a context without entities or reviews pools to zero);
the code keeps them (``false``, the default).

Fine (entity level): units per view.  A *unit view* gives padded per-sample units: ports
``<v>_states`` (B, M, d), ``<v>_nodes`` (B, M) entity ids, ``<v>_mask`` (B, M); defaults
``context`` -> ``mention_*`` (the context encoder's item mentions) and ``review`` ->
``review_*`` (the review encoder's units), any other ``v`` -> ``<v>_states`` etc.  A *table
view* (listed in ``tables``, default ``[kg]``) gives one unit per distinct entity the batch
mentions: ports ``<v>_table`` (N, d) (default ``entity_nodes``) and ``<v>_index`` /
``<v>_index_mask`` (B, M) (default ``mention_nodes`` / ``mention_mask``); its unit's sample is
the first sample mentioning the entity.  ``negatives``: ``same_sample`` (code) or ``batch``
(paper), see :func:`crs.nn.contrastive.masked_info_nce`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any, Literal

import torch
from torch import nn

from crs.errors import ConfigError, check_positive_ints
from crs.interfaces import BuildDeps, FusionObjective, Port
from crs.nn.contrastive import ProjectionHead, masked_info_nce, nt_xent

Negatives = Literal["same_sample", "batch"]

COARSE_KEYS = {"context": "user_context", "kg": "user_entity", "review": "user_review"}
FINE_UNIT_KEYS = {"context": "mention", "review": "review"}  # <prefix>_states, <prefix>_nodes, <prefix>_mask


def _default_views() -> dict[str, int]:
    return {"context": 300, "kg": 128, "review": 300}


def _check_common(config: Any, path: str) -> None:
    """Temperature positive and finite, proj_dim positive, at least two views of positive width."""
    if not (isinstance(config.temperature, (int, float)) and math.isfinite(config.temperature)
            and config.temperature > 0):
        raise ConfigError(f"{path}.temperature", f"must be a positive number, got {config.temperature}",
                          "C2-CRS uses 0.07")
    check_positive_ints(config, ("proj_dim",), path)
    if len(config.views) < 2:
        raise ConfigError(f"{path}.views", f"a contrastive objective needs at least two views, got "
                                           f"{list(config.views) or 'none'}",
                          "name two or more views with their widths, e.g. views: {context: 300, kg: 128}")
    for name, dim in config.views.items():
        if not name.isidentifier():
            raise ConfigError(f"{path}.views.{name}", f"'{name}' is not usable as a port name",
                              "use letters, digits and _")
        if int(dim) < 1:
            raise ConfigError(f"{path}.views.{name}", f"must be a positive width, got {dim}")


class CoarseContrastiveObjective(FusionObjective):
    """`c2crs_coarse`: loss.coarse = mean over view pairs of NT-Xent between the views' user vectors."""

    @dataclass
    class Config:
        temperature: float = 0.07
        proj_dim: int = 128
        # view name -> width of its user vector; each reads port <name> (default key: see the module doc)
        views: dict[str, int] = field(default_factory=_default_views)
        skip_empty: bool = False  # per pair, leave out samples whose vector is zero in either view

    def __init__(self, config: Config, deps: BuildDeps):
        super().__init__(config, deps)
        _check_common(config, self.path)
        self.heads = nn.ModuleDict({name: ProjectionHead(int(dim), config.proj_dim)
                                    for name, dim in config.views.items()})

    def input_ports(self) -> dict[str, Port]:
        return {name: Port(COARSE_KEYS.get(name, f"user_{name}"), int(dim), doc=f"user vector of view '{name}'")
                for name, dim in self.config.views.items()}

    def output_ports(self) -> dict[str, Port]:
        return {"loss": Port("loss.coarse", doc="mean NT-Xent over the view pairs")}

    def forward(self, inputs: dict[str, Any]) -> dict[str, Any]:
        raw = {name: inputs[name] for name in self.config.views}
        projected = {name: self.heads[name](x) for name, x in raw.items()}
        losses = []
        for a, b in combinations(self.config.views, 2):
            keep = None
            if self.config.skip_empty:
                keep = raw[a].ne(0).any(-1) & raw[b].ne(0).any(-1)
            losses.append(nt_xent(projected[a], projected[b], self.config.temperature, keep))
        return {"loss": torch.stack(losses).mean()}


def unit_view(states: torch.Tensor, nodes: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Units of a unit view: (vectors (U, d), entity (U,), sample (U,)) for every unmasked slot, row-major."""
    rows, cols = mask.bool().nonzero(as_tuple=True)
    return states[rows, cols], nodes[rows, cols].long(), rows


def table_view(table: torch.Tensor, index: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Units of a table view: one per distinct entity in `index` (masked), its sample the first mentioning it."""
    rows, cols = mask.bool().nonzero(as_tuple=True)
    entities = index[rows, cols].long()
    distinct, inverse = torch.unique(entities, return_inverse=True)
    first = torch.full_like(distinct, index.shape[0]).scatter_reduce(0, inverse, rows, reduce="amin")
    return table[distinct], distinct, first


class FineContrastiveObjective(FusionObjective):
    """`c2crs_fine`: loss.fine = mean over view pairs of the masked InfoNCE over their entity-level units."""

    @dataclass
    class Config:
        temperature: float = 0.07
        proj_dim: int = 128
        # view name -> width of its units; ports per view: see the module doc
        views: dict[str, int] = field(default_factory=_default_views)
        tables: list[str] = field(default_factory=lambda: ["kg"])  # views read as a node table (one unit/entity)
        negatives: Negatives = "same_sample"  # same_sample: the code's mask; batch: the paper's wording

    def __init__(self, config: Config, deps: BuildDeps):
        super().__init__(config, deps)
        _check_common(config, self.path)
        for i, name in enumerate(config.tables):
            if name not in config.views:
                raise ConfigError(f"{self.path}.tables.{i}", f"'{name}' is not one of the views "
                                                             f"({', '.join(config.views)})",
                                  "list only views named under `views:` (or `tables: []`)")
        self.heads = nn.ModuleDict({name: ProjectionHead(int(dim), config.proj_dim)
                                    for name, dim in config.views.items()})

    def input_ports(self) -> dict[str, Port]:
        ports: dict[str, Port] = {}
        for name, dim in self.config.views.items():
            dim = int(dim)
            if name in self.config.tables:
                ports[f"{name}_table"] = Port("entity_nodes", dim, doc=f"node table of view '{name}' (N, d)")
                ports[f"{name}_index"] = Port("mention_nodes", doc="entity ids whose nodes are units (B, M)")
                ports[f"{name}_index_mask"] = Port("mention_mask", doc="bool (B, M)")
            else:
                prefix = FINE_UNIT_KEYS.get(name, name)
                ports[f"{name}_states"] = Port(f"{prefix}_states", dim, doc=f"units of view '{name}' (B, M, d)")
                ports[f"{name}_nodes"] = Port(f"{prefix}_nodes", doc="entity id of each unit (B, M)")
                ports[f"{name}_mask"] = Port(f"{prefix}_mask", doc="bool (B, M)")
        return ports

    def output_ports(self) -> dict[str, Port]:
        return {"loss": Port("loss.fine", doc="mean masked InfoNCE over the view pairs")}

    @classmethod
    def contract_inputs(cls, deps: BuildDeps, batch: dict) -> dict[str, Any]:
        """What the default views' upstream slots write, for the component contract (crs.testing): the
        context encoder's mentions and the review encoder's units, as the batch's context entities/items."""
        nodes, mask = batch["batch.context_entities"], batch["batch.context_entities_mask"]
        items, items_mask = batch["batch.context_items"], batch["batch.context_items_mask"]
        item_nodes = torch.as_tensor(deps.items.entity_nodes)[items] * items_mask
        return {"mention_states": torch.randn(*nodes.shape, 300), "mention_nodes": nodes, "mention_mask": mask,
                "review_states": torch.randn(*items.shape, 300), "review_nodes": item_nodes,
                "review_mask": items_mask}

    def units(self, name: str, inputs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(projected vectors, entity ids, sample ids) of view `name`."""
        if name in self.config.tables:
            vectors, entity, sample = table_view(inputs[f"{name}_table"], inputs[f"{name}_index"],
                                                 inputs[f"{name}_index_mask"])
        else:
            vectors, entity, sample = unit_view(inputs[f"{name}_states"], inputs[f"{name}_nodes"],
                                                inputs[f"{name}_mask"])
        return self.heads[name](vectors), entity, sample

    def forward(self, inputs: dict[str, Any]) -> dict[str, Any]:
        units = {name: self.units(name, inputs) for name in self.config.views}
        same_sample = self.config.negatives == "same_sample"
        losses = []
        for a, b in combinations(self.config.views, 2):
            z, entity, sample = (torch.cat(parts) for parts in zip(units[a], units[b]))
            losses.append(masked_info_nce(z, entity, sample, self.config.temperature, same_sample))
        return {"loss": torch.stack(losses).mean()}
