"""Samples (one per recommender turn) and the batch fields components read.

A :class:`Sample` is built for every recommender turn that has some context.  The
batch a component sees is a dict named ``batch.<field>``; its fields come from the one
table in :mod:`crs.data.fields` (B = batch size; padded fields have a ``_mask``):

{table}

Featurizers (``samples.featurizers``) add fields of their own; their values live in
``Sample.features`` and are collated by the same rules.
"""
from __future__ import annotations

import dataclasses
from dataclasses import field, replace
from typing import Any

from .fields import BUILTIN_FIELDS, field_table

__doc__ = __doc__.replace("{table}", field_table())


def _for_item(self: Any, item: int) -> Any:
    """This sample with ``target_item`` set (rec samples are expanded one per recommended item)."""
    return replace(self, target_item=item)


def _make_sample_class() -> type:
    """The Sample dataclass: identity, one attribute per built-in field, then meta and features."""
    attributes: list[tuple[str, Any, Any]] = [("conv_id", "str", field())]
    attributes += [(spec.name, spec.annotation, field(default_factory=spec.default)) for spec in BUILTIN_FIELDS]
    attributes += [("meta", "dict", field(default_factory=dict)),
                   ("features", "dict", field(default_factory=dict))]  # featurizer fields, by name
    cls = dataclasses.make_dataclass("Sample", attributes, namespace={"for_item": _for_item})
    cls.__module__ = __name__  # pickling finds the class here (make_dataclass's `module=` is 3.12+)
    cls.__doc__ = ("One recommender turn with its context: ``conv_id``, the built-in batch fields of "
                   "crs.data.fields, ``meta`` and ``features`` (values of featurizer fields).")
    return cls


Sample = _make_sample_class()
