"""The one hookspec module: one `crs_register_<kind>s(register)` hook per component kind.

Each hook is called once per plugin manager, when the registry is first filled
(`crs.registry.Registry.from_plugin_manager`), never at import time.  A hook only
*registers*: it calls ``register(name, component)`` for each component it ships and
builds nothing.  ``component`` is the class itself or a lazy reference
``"package.module:ClassName"`` so that plugin entry modules stay light (no torch
import until a component is used).

``register(name: str, component: type | str) -> None`` raises
:class:`crs.errors.PluginError` when ``name`` is already taken (by any kind),
naming both plugins.

The kinds themselves (hook name, base class, model slot or not) are listed once, in
:data:`crs.kinds.KIND_TABLE`; this module defines each row's hook and derives
:data:`KINDS` from the table (a test checks that the two agree).
"""
from __future__ import annotations

from typing import Callable, Union

import pluggy

from .kinds import HOOKS

hookspec = pluggy.HookspecMarker("crs")
hookimpl = pluggy.HookimplMarker("crs")

Register = Callable[[str, Union[type, str]], None]


@hookspec
def crs_register_datasets(register: Register) -> None:
    """Register dataset components (subclasses of :class:`crs.interfaces.Dataset`).

    :param register: call ``register(name, cls)`` once per dataset.
    Called once when the registry is filled.
    """


@hookspec
def crs_register_knowledge_sources(register: Register) -> None:
    """Register knowledge sources (:class:`crs.interfaces.KnowledgeSource`): graphs, reviews, metadata.

    :param register: call ``register(name, cls)`` once per knowledge source.
    Called once when the registry is filled.
    """


@hookspec
def crs_register_entity_linkers(register: Register) -> None:
    """Register entity linkers (:class:`crs.interfaces.EntityLinker`): text -> entity / word node names.

    :param register: call ``register(name, cls)`` once per linker.
    Called once when the registry is filled.
    """


@hookspec
def crs_register_featurizers(register: Register) -> None:
    """Register featurizers (:class:`crs.data.fields.Featurizer`): per-sample batch fields computed in data preparation.

    :param register: call ``register(name, cls)`` once per featurizer.
    Called once when the registry is filled.
    """


@hookspec
def crs_register_shared_modules(register: Register) -> None:
    """Register shared modules (:class:`crs.shared.SharedModule`): built once under ``shared:``, used by several slots.

    :param register: call ``register(name, cls)`` once per shared module.
    Called once when the registry is filled.
    """


@hookspec
def crs_register_context_encoders(register: Register) -> None:
    """Register context encoders (:class:`crs.interfaces.ContextEncoder`): dialogue history -> states.

    :param register: call ``register(name, cls)`` once per encoder.
    Called once when the registry is filled.
    """


@hookspec
def crs_register_external_encoders(register: Register) -> None:
    """Register external-data encoders (:class:`crs.interfaces.ExternalEncoder`): knowledge -> node/item vectors.

    :param register: call ``register(name, cls)`` once per encoder.
    Called once when the registry is filled.
    """


@hookspec
def crs_register_user_encoders(register: Register) -> None:
    """Register user encoders (:class:`crs.interfaces.UserEncoder`): mentioned words/entities -> preference vectors.

    :param register: call ``register(name, cls)`` once per encoder.
    Called once when the registry is filled.
    """


@hookspec
def crs_register_recommenders(register: Register) -> None:
    """Register recommenders (:class:`crs.interfaces.Recommender`): preference -> item scores.

    :param register: call ``register(name, cls)`` once per recommender.
    Called once when the registry is filled.
    """


@hookspec
def crs_register_fusion_objectives(register: Register) -> None:
    """Register fusion objectives (:class:`crs.interfaces.FusionObjective`): losses aligning representation spaces.

    :param register: call ``register(name, cls)`` once per objective.
    Called once when the registry is filled.
    """


@hookspec
def crs_register_training_strategies(register: Register) -> None:
    """Register training strategies (:class:`crs.interfaces.TrainingStrategy`): how one epoch updates parameters.

    :param register: call ``register(name, cls)`` once per strategy.
    Called once when the registry is filled.
    """


@hookspec
def crs_register_generators(register: Register) -> None:
    """Register response generators (:class:`crs.interfaces.Generator`).

    :param register: call ``register(name, cls)`` once per generator.
    Called once when the registry is filled.
    """


@hookspec
def crs_register_metrics(register: Register) -> None:
    """Register metrics (:class:`crs.interfaces.Metric`).

    :param register: call ``register(name, cls)`` once per metric.
    Called once when the registry is filled.
    """


@hookspec
def crs_register_evaluation_protocols(register: Register) -> None:
    """Register evaluation protocols (:class:`crs.interfaces.EvaluationProtocol`).

    :param register: call ``register(name, cls)`` once per protocol.
    Called once when the registry is filled.
    """


#: kind name -> hook name, in the order `crs components` lists kinds; derived from crs.kinds.KIND_TABLE.
KINDS: dict[str, str] = dict(HOOKS)
