"""The one table of batch fields, and featurizers: the components that add fields of their own.

Every value a model component can read from the batch is a :class:`Field` in
:data:`BUILTIN_FIELDS` (filled by the sample builder) or in the ``fields()`` of a
:class:`Featurizer` listed under ``samples.featurizers`` (filled during data
preparation, once per sample, never in a forward pass).  Everything else is derived
from the table, so nothing can drift apart:

- the :class:`crs.data.samples.Sample` dataclass (one attribute per built-in field;
  a featurizer's values live in ``Sample.features``);
- :func:`crs.data.batching.collate` (each field's ``collate`` rule and pad value);
- the set of batch keys the wiring check accepts (:func:`batch_keys`);
- the field documentation (:func:`field_table`, in ``crs.data.samples``' docstring,
  the README and ``crs components fields``).

Collate rules (B = batch size):

``pad``     a list of ints per sample -> long (B, L) right-padded with ``pad``, plus a
            bool ``<name>_mask`` (True = real value).  L >= 1 even when every list is
            empty, so components never see a zero-width tensor.
``value``   one int per sample -> long (B,).
``float``   one float per sample -> float (B,).
``list``    any Python value per sample -> a list of B values (texts, turn records).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

from ..errors import ConfigError
from ..interfaces import Component

if TYPE_CHECKING:  # pragma: no cover
    from .samples import Sample
    from .schema import Conversation

__all__ = ["Field", "BUILTIN_FIELDS", "COLLATE_RULES", "Featurizer", "batch_keys", "field_table",
           "check_fields"]

COLLATE_RULES = ("pad", "value", "float", "list")


@dataclass(frozen=True)
class Field:
    """One batch field: ``batch.<name>`` (and ``batch.<name>_mask`` for ``pad`` fields)."""

    name: str
    collate: str  # one of COLLATE_RULES
    doc: str
    shape: str = ""  # shown in the docs, e.g. "(B, L)"
    pad: Any = 0  # pad value of `pad` fields
    default: Callable[[], Any] = list  # value of a Sample that does not set the field
    annotation: str = "list[int]"  # the Sample attribute's type, for the generated dataclass

    @property
    def key(self) -> str:
        return f"batch.{self.name}"

    @property
    def keys(self) -> tuple[str, ...]:
        """Every batch key this field produces."""
        return (self.key, f"{self.key}_mask") if self.collate == "pad" else (self.key,)

    @property
    def dtype(self) -> str:
        return {"pad": "long", "value": "long", "float": "float", "list": "list"}[self.collate]


def _minus_one() -> int:
    return -1


BUILTIN_FIELDS: tuple[Field, ...] = (
    Field("context_tokens", "pad", "history tokens (vocab ids), turns joined by SEP, last L kept", "(B, L)"),
    Field("context_entities", "pad", "entity-graph node ids mentioned so far (items included), in order", "(B, E)"),
    Field("context_entity_turns", "pad",
          "index (in context_turns) of the turn where each context entity was first mentioned; aligned "
          "with context_entities", "(B, E)"),
    Field("context_words", "pad", "word-graph node ids of context words (no stopwords)", "(B, W)"),
    Field("context_items", "pad", "item indices mentioned so far", "(B, I)"),
    Field("context_token_entities", "pad",
          "entity-graph node named at each context token (0 = none); aligned with context_tokens: an item "
          "placeholder gives its item's node, annotated entity mentions and linker phrases tag the tokens they "
          "span (rules in crs.data.build)", "(B, L)"),
    Field("context_token_items", "pad",
          "item index of each context token that is an item placeholder (-1 = none); aligned with "
          "context_tokens", "(B, L)",
          pad=-1),
    Field("target_items", "pad", "all items recommended in this turn", "(B, T)"),
    Field("response_tokens", "pad", "BOS y_1 .. y_n EOS, vocab ids", "(B, R)"),
    Field("target_item", "value", "the item to recommend (rec samples), -1 when none", "(B,)",
          default=_minus_one, annotation="int"),
    Field("user_index", "value", "user index (0 = unknown user)", "(B,)", default=int, annotation="int"),
    Field("turn_index", "value", "index of the turn being answered", "(B,)", default=int, annotation="int"),
    Field("context_text", "list", "raw texts of the context turns", "list[list[str]]", annotation="list[str]"),
    Field("context_turns", "list",
          "the context turns in order, one record each: {index (turn index in the conversation), role, text "
          "(item mentions replaced by placeholder tokens, crs.data.vocab.item_token), items (item index of each "
          "placeholder, in text order), unplaced_items (annotated items the text does not name)}; records are "
          "shared between samples: read-only", "list[list[dict]]", annotation="list[dict]"),
    Field("response_text", "list", "raw reply text", "list[str]", default=str, annotation="str"),
    Field("response_turn", "list", "the turn being answered, as a context_turns record", "list[dict]",
          default=dict, annotation="dict"),
)

#: Not a sample attribute: the collated samples themselves (for protocols and reports).
SAMPLES_KEY = "batch.samples"


def batch_keys(extra: Iterable[Field] = ()) -> frozenset[str]:
    """Every batch key: the built-in fields', `extra` fields' and ``batch.samples``."""
    return frozenset(key for spec in (*BUILTIN_FIELDS, *extra) for key in spec.keys) | {SAMPLES_KEY}


def field_table(fields: Sequence[Field] = BUILTIN_FIELDS) -> str:
    """The fields as a Markdown table (README, ``crs components fields``)."""
    rows = ["| key | type | meaning |", "|---|---|---|"]
    for spec in fields:
        rows.append(f"| `{spec.key}` | {spec.dtype} {spec.shape} | {spec.doc} |")
        if spec.collate == "pad":
            rows.append(f"| `{spec.key}_mask` | bool {spec.shape} | True on real values of `{spec.key}` |")
    rows.append(f"| `{SAMPLES_KEY}` | list[Sample] | the samples themselves |")
    return "\n".join(rows)


def check_fields(fields: Sequence[Field], path: str) -> None:
    """A featurizer's fields: known collate rules, names that clash with no built-in or each other."""
    taken = {spec.name: "a built-in field" for spec in BUILTIN_FIELDS}
    for spec in fields:
        if spec.collate not in COLLATE_RULES:
            raise ConfigError(path, f"field '{spec.name}' has unknown collate rule '{spec.collate}'",
                              f"use one of: {', '.join(COLLATE_RULES)}")
        if not spec.name.isidentifier():
            raise ConfigError(path, f"field name '{spec.name}' is not an identifier", "use letters, digits and _")
        clash = taken.get(spec.name) or (taken.get(spec.name[:-5]) if spec.name.endswith("_mask") else None)
        if clash:
            raise ConfigError(path, f"field '{spec.name}' clashes with {clash}",
                              "rename the field (e.g. prefix it with the featurizer's name)")
        taken[spec.name] = f"the field of {path}"


# ------------------------------------------------------------ featurizers
class Featurizer(Component):
    """Adds batch fields computed once per sample during data preparation.

    A featurizer is a component (kind ``featurizer``, hook ``crs_register_featurizers``)
    listed under ``samples.featurizers`` in YAML.  It is constructed as ``cls(config,
    deps)`` after the vocabulary, items and graphs exist (``deps`` is the same
    :class:`crs.interfaces.BuildDeps` model slots get), declares its fields, and fills
    them for each sample; the values are stored in ``sample.features`` and collated by
    the fields' rules, so a model slot reads them as ``batch.<name>`` like any built-in
    field.  Use it for work that does not belong in a forward pass: sub-word token ids
    for a pretrained model, review ids, per-token tags.
    """

    kind = "featurizer"

    def fields(self) -> list[Field]:  # pragma: no cover - abstract
        """The fields this featurizer fills (names must not clash with built-in fields)."""
        raise NotImplementedError

    def featurize(self, sample: "Sample", conversation: "Conversation") -> dict[str, Any]:  # pragma: no cover
        """Values of this featurizer's fields for `sample` (a turn of `conversation`), by field name."""
        raise NotImplementedError


def featurize_all(featurizers: Sequence[Featurizer], samples_by_split: dict[str, list], conversations_by_split:
                  dict[str, list]) -> None:
    """Fill ``sample.features`` for every sample; each featurizer must return exactly its fields."""
    if not featurizers:
        return
    conversations = {split: {conv.id: conv for conv in convs} for split, convs in conversations_by_split.items()}
    for featurizer in featurizers:
        names = {spec.name for spec in featurizer.fields()}
        for split, samples in samples_by_split.items():
            by_id = conversations.get(split, {})
            for sample in samples:
                values = featurizer.featurize(sample, by_id[sample.conv_id])
                if set(values) != names:
                    raise ConfigError(featurizer.path, f"featurize() returned fields {sorted(values)} but the "
                                      f"featurizer declares {sorted(names)}",
                                      "return one value per declared field")
                sample.features.update(values)
