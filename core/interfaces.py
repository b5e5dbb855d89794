"""Base classes for every component kind.

Every component class has a nested ``@dataclass Config`` (the keys its YAML node
may carry besides ``type``) and is constructed as ``cls(config, deps)`` where
``deps`` is a :class:`BuildDeps` holding what the pipeline provides explicitly:
vocabulary, item index, indexed graphs, item texts.

Model components (encoders, user encoders, recommenders, fusion objectives,
generators) are ``torch.nn.Module`` s wired by *ports*: each declares the state
keys it reads (``input_ports``) and writes (``output_ports``), with dimensions.
The pipeline builder checks before training that every input is provided by a
batch field or another slot and that dimensions agree, and runs only the slots a
requested output needs.  Losses are outputs named ``loss.<name>``; a training
stage weights them by name.  YAML may rename a slot's ports with
``inputs: {port: key}`` / ``outputs: {port: key}``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from . import kinds as _kinds
from .errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from .data.schema import Corpus
    from .data.vocab import Vocabulary
    from .knowledge import IndexedGraph, ItemTexts, KnowledgeGraph


@dataclass
class EmptyConfig:
    """A component with no options."""


@dataclass(frozen=True)
class Port:
    """A state key a model component reads or writes.

    ``dim`` is the size of the last axis when it matters (None: not checked);
    ``optional`` inputs may be absent (e.g. targets at inference time).
    """

    key: str
    dim: int | None = None
    optional: bool = False
    doc: str = ""


@dataclass
class ItemIndex:
    """The recommendable items of a pipeline, in a fixed order (item index = position)."""

    ids: list[str]
    names: list[str]
    entity_nodes: torch.Tensor  # long (n_items,): node index of each item in the entity graph
    train_counts: torch.Tensor  # float (n_items,): times each item was recommended in train

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def tokens(self) -> list[str]:
        """Each item's placeholder token in texts (:func:`crs.data.vocab.item_token`), in item order."""
        from .data.vocab import item_token

        return [item_token(i) for i in self.ids]

    @property
    def token_index(self) -> dict[str, int]:
        """Placeholder token -> item index, for reading items out of (generated) text.

        Built on first use and again whenever items were appended since."""
        cached = self.__dict__.get("_token_index")
        if cached is None or len(cached) != len(self.ids):
            from .data.vocab import item_token_index

            cached = self.__dict__["_token_index"] = item_token_index(self.ids)
        return cached

    def item_of_token(self, token: str) -> int:
        """The item index whose placeholder is `token`, or -1 when `token` names no item."""
        return self.token_index.get(token, -1)


@dataclass
class BuildDeps:
    """What the pipeline builder hands to a component's constructor."""

    path: str  # YAML path of the component node, for error messages
    vocab: "Vocabulary | None" = None
    items: ItemIndex | None = None
    graphs: dict[str, "IndexedGraph"] = field(default_factory=dict)
    item_texts: dict[str, "ItemTexts"] = field(default_factory=dict)
    num_users: int = 1
    extras: dict[str, Any] = field(default_factory=dict)
    shared: dict[str, nn.Module] = field(default_factory=dict)  # the pipeline's `shared:` modules (crs.shared)

    def graph(self, name: str, key: str = "graph") -> "IndexedGraph":
        """The indexed graph named `name` in `knowledge:`; a ConfigError at `path.key` if absent."""
        if name not in self.graphs:
            have = ", ".join(sorted(self.graphs)) or "(no graph in `knowledge:`)"
            raise ConfigError(f"{self.path}.{key}", f"no knowledge graph named '{name}'",
                              f"name one of the graphs under `knowledge:`: {have}")
        return self.graphs[name]

    def texts(self, name: str, key: str = "source") -> "ItemTexts":
        """The item-text source `name`; a ConfigError at `path.key` when `knowledge:` has none by that name."""
        from .knowledge import item_texts_named

        return item_texts_named(self.item_texts, name, f"{self.path}.{key}")

    def shared_module(self, name: str, key: str, base: type | None = None) -> Any:
        """A :class:`crs.shared.SharedRef` to the `shared:` module `name` (named by config key `key`).

        Hold it as an attribute (not a submodule): the pipeline owns the parameters once.
        A ConfigError at `path.key` names the declared modules when `name` is unknown.
        """
        from .shared import resolve_shared  # crs.shared imports this module

        return resolve_shared(self, name, key, base)

    def require(self, attr: str) -> Any:
        value = getattr(self, attr)
        if value is None:
            raise ConfigError(self.path, f"this component needs the pipeline's {attr}, which is not available")
        return value


class Component:
    """What every component shares: its kind, its Config dataclass, and the config and YAML path it was built with."""

    kind: ClassVar[str] = ""
    Config: ClassVar[type] = EmptyConfig

    def __init__(self, config: Any, deps: BuildDeps):
        self.config = config
        self.path = deps.path  # YAML path of the node, for error messages

    # Lifecycle hooks (crs.training.callbacks): no-ops unless a component overrides them.
    # Keyword arguments only; take ``**context`` and read what you need (``stage``, ``split``, ``pipeline``).
    def on_train_start(self, **context: Any) -> None:
        """A stage that trains this model starts (also when resumed)."""

    def on_train_end(self, **context: Any) -> None:
        """That stage ended (best state restored)."""

    def on_eval_start(self, **context: Any) -> None:
        """An evaluation or validation pass starts; the model is already in eval mode."""

    def on_eval_end(self, **context: Any) -> None:
        """That pass ended."""


# ----------------------------------------------------------------- model slots
class ModelComponent(Component, nn.Module):
    """A trainable slot of the model, wired by ports."""

    def __init__(self, config: Any, deps: BuildDeps):
        nn.Module.__init__(self)  # first: nn.Module must exist before attributes are set on it
        Component.__init__(self, config, deps)

    def input_ports(self) -> dict[str, Port]:
        return {}

    def output_ports(self) -> dict[str, Port]:
        return {}

    def forward(self, inputs: dict[str, Any]) -> dict[str, Any]:  # pragma: no cover - abstract
        """Map local input port names to values; return local output port names to values."""
        raise NotImplementedError


class ContextEncoder(ModelComponent):
    kind = "context_encoder"


class ExternalEncoder(ModelComponent):
    kind = "external_encoder"


class UserEncoder(ModelComponent):
    kind = "user_encoder"


class Recommender(ModelComponent):
    """Outputs ``scores`` (B, n_items) and, when a target is given, ``loss.rec``."""

    kind = "recommender"


class FusionObjective(ModelComponent):
    """Outputs one or more ``loss.<name>`` that align two representation spaces."""

    kind = "fusion_objective"


class Generator(ModelComponent):
    """Outputs ``loss.gen`` (teacher forcing) and, for perplexity, ``nll_sum`` / ``nll_count``.

    ``generate`` decodes replies (greedy unless the component says otherwise).
    A generator with a tokenizer of its own (a pretrained LM) overrides
    ``generate_text`` instead and returns strings; ``inputs["recommend"]``, when the
    pipeline has a recommender, is a callable ``k -> LongTensor (B, k)`` of item
    indices, best first, for filling item placeholders.
    """

    kind = "generator"

    def generate(self, inputs: dict[str, Any], max_len: int) -> torch.Tensor:  # pragma: no cover
        """Return long (B, T) token ids, without BOS, stopping at EOS."""
        raise NotImplementedError

    def generate_text(self, inputs: dict[str, Any], max_len: int) -> list[str] | None:
        """Reply texts (B strings) of at most `max_len` generated tokens.

        The default, None, means "this generator returns vocabulary ids through
        :meth:`generate`".
        """
        return None


MODEL_KINDS = _kinds.MODEL_KINDS  # the kinds that fill `model:` slots, from the one kind table (crs.kinds)


# ------------------------------------------------------------ non-model kinds
class Dataset(Component):
    kind = "dataset"

    def load(self) -> "Corpus":  # pragma: no cover - abstract
        raise NotImplementedError


class KnowledgeSource(Component):
    kind = "knowledge_source"

    def load(self, corpus: "Corpus") -> "KnowledgeGraph | ItemTexts":  # pragma: no cover - abstract
        raise NotImplementedError


class EntityLinker(Component):
    """Finds graph nodes named in free text (data preparation and live chat)."""

    kind = "entity_linker"

    def fit(self, graph: "IndexedGraph") -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def link(self, text: str) -> list[int]:  # pragma: no cover - abstract
        """Node indices of `graph` mentioned in `text`, in order of first mention."""
        raise NotImplementedError

    def link_tokens(self, tokens: list[str]) -> list[tuple[int, int, int]]:
        """Optional: ``(start, end, node)`` spans of `tokens` (``crs.data.vocab.tokenize`` output) that name
        nodes, so the sample builder can tag ``batch.context_token_entities``; the default finds none."""
        return []


class Metric(Component):
    """Accumulates over batches; ``task`` says what it is fed.

    - ``rec``: ``update(scores (B, n_items), targets (B,))`` with excluded candidates at -inf;
    - ``gen``: ``update(hyps: list[list[str]], refs: list[list[str]])`` word tokens;
    - ``nll``: ``update(nll_sum: float, count: int)``.
    """

    kind = "metric"
    task: ClassVar[str] = "rec"

    def reset(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def update(self, *args: Any) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def compute(self) -> dict[str, float]:  # pragma: no cover - abstract
        raise NotImplementedError


class EvaluationProtocol(Component):
    """Decides which samples are scored, the candidate set, and exclusions.  ``id`` goes in every report."""

    kind = "evaluation_protocol"
    id: ClassVar[str] = ""

    def rec_samples(self, samples: list) -> list:  # pragma: no cover - abstract
        """Expand/filter recommender-turn samples into scored samples (target_item set)."""
        raise NotImplementedError

    def candidate_mask(self, batch: dict, n_items: int) -> torch.Tensor | None:
        """Bool (B, n_items), True where an item may be ranked; None = all items."""
        return None

    # Adaptation at evaluation time (e.g. per user, CCRS).  The evaluator calls these only when ``adapts``.
    adapts: ClassVar[bool] = False

    def tasks(self, samples: list) -> list[tuple[list, list, dict]]:
        """Split a split's recommender-turn samples into ``(support, query, info)`` tasks.

        Only the query samples are scored (rec: through :meth:`rec_samples`), with the
        parameters :meth:`adapt` returns for the task's support; ``info`` (e.g.
        ``{"user": 3, "unit": "user"}``) is for the report.  Default: one task, no support.
        """
        return [([], list(samples), {})]

    def adapt(self, pipeline: Any, support: dict[str, list], task: str) -> "dict[str, torch.Tensor] | None":
        """Fast weights for one task, ``{"<slot>.<param>": tensor}`` (see crs.training.meta), or None.

        ``support`` holds the task's support samples per evaluation task: ``"rec"``
        (expanded by :meth:`rec_samples`) and ``"conv"`` (conversation samples); `task`
        says which pass asks ("rec" or "conv").  Called under ``torch.enable_grad()``
        with the model in eval mode; it must not change the model (adapt functionally,
        e.g. with ``crs.training.meta.adapt_on_batches``).  None scores the task unadapted.
        """
        return None


class TrainingStrategy(Component):
    """How one epoch of a stage updates the parameters (plain loop, MAML, ...)."""

    kind = "training_strategy"

    def train_epoch(self, loop: Any) -> dict[str, float]:  # pragma: no cover - abstract
        """Run one epoch using `loop` (a crs.training.loop.EpochLoop); return mean losses."""
        raise NotImplementedError

    def steps_per_epoch(self, plan: Any) -> int:
        """Optimizer steps one epoch takes, to size the LR schedule (`plan`: a crs.training.stage.StagePlan).

        The default suits one ``loop.step`` per batch: one optimizer step per ``accumulate``
        batches, a last partial group included.  Override it when the strategy steps differently.
        """
        return plan.steps_per_epoch()

    def check_samples(self, samples: list, path: str) -> None:
        """Refuse a stage whose train `samples` this strategy cannot use (a ConfigError at `path`, the
        stage's ``strategy`` key).  The trainer asks before any stage trains; by default anything goes."""

