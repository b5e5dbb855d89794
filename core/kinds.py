"""The one table of component kinds: hook name, base class and whether the kind fills a model slot.

Everything that needs to know the kinds derives from :data:`KIND_TABLE`, so adding
a kind is one row here plus its ``@hookspec`` function in :mod:`crs.hookspecs`:

- :data:`crs.hookspecs.KINDS` (kind -> hook name; the order ``crs components`` lists kinds in);
- :func:`base_class` (kind -> base class, imported on first look-up; the registry checks components with it);
- :data:`crs.interfaces.MODEL_KINDS` and the registry's model check (the ``model`` column).

Base classes are lazy ``"module:Class"`` references so that listing kinds (the CLI,
the registry filling itself from plugin hooks) imports no torch.

A *model* kind fills a slot under ``model:``: an ``nn.Module`` wired by ports (YAML
``inputs:``/``outputs:`` renames apply to it).  Other kinds are built elsewhere in
the pipeline (``data:``, ``knowledge:``, ``shared:``, ``samples.featurizers``, ...).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Kind:
    """One component kind."""

    name: str  # as in YAML error messages and `crs components <kind>`
    hook: str  # the `crs_register_<kind>s` hookspec plugins implement
    base: str  # "module:Class" every registered component must subclass
    model: bool  # True: fills a `model:` slot and is wired by ports


KIND_TABLE: tuple[Kind, ...] = (
    Kind("dataset", "crs_register_datasets", "crs.interfaces:Dataset", False),
    Kind("knowledge_source", "crs_register_knowledge_sources", "crs.interfaces:KnowledgeSource", False),
    Kind("entity_linker", "crs_register_entity_linkers", "crs.interfaces:EntityLinker", False),
    Kind("featurizer", "crs_register_featurizers", "crs.data.fields:Featurizer", False),
    Kind("shared_module", "crs_register_shared_modules", "crs.shared:SharedModule", False),
    Kind("context_encoder", "crs_register_context_encoders", "crs.interfaces:ContextEncoder", True),
    Kind("external_encoder", "crs_register_external_encoders", "crs.interfaces:ExternalEncoder", True),
    Kind("user_encoder", "crs_register_user_encoders", "crs.interfaces:UserEncoder", True),
    Kind("recommender", "crs_register_recommenders", "crs.interfaces:Recommender", True),
    Kind("fusion_objective", "crs_register_fusion_objectives", "crs.interfaces:FusionObjective", True),
    Kind("training_strategy", "crs_register_training_strategies", "crs.interfaces:TrainingStrategy", False),
    Kind("generator", "crs_register_generators", "crs.interfaces:Generator", True),
    Kind("metric", "crs_register_metrics", "crs.interfaces:Metric", False),
    Kind("evaluation_protocol", "crs_register_evaluation_protocols", "crs.interfaces:EvaluationProtocol", False),
)

KINDS: dict[str, Kind] = {kind.name: kind for kind in KIND_TABLE}
HOOKS: dict[str, str] = {kind.name: kind.hook for kind in KIND_TABLE}
MODEL_KINDS: tuple[str, ...] = tuple(kind.name for kind in KIND_TABLE if kind.model)


def base_class(kind: str) -> type:
    """Import and return the base class of `kind` (KeyError for an unknown kind)."""
    module_name, _, attr = KINDS[kind].base.partition(":")
    return getattr(importlib.import_module(module_name), attr)
