"""Evaluation protocols: which turns are scored, against which candidates.

All start from the pipeline's samples (one per turn with context of a
``samples.roles`` speaker) and score one sample per target item
(``sample.for_item(i)``; an item named twice in one turn counts once).  The
candidate set is every item (``candidates: all``, the only option so far).  All
but ``all_turns`` score recommender turns only, whatever ``samples.roles`` says, so
their figures keep their meaning.  They differ in exclusions:

- ``crslab`` (id ``crslab-v1``): every recommended item; items already
  mentioned in the dialogue stay among the candidates;
- ``all_turns`` (id ``all-turns-v1``): every turn of either speaker that mentions an
  item (after the first turn; consecutive messages of one speaker are one turn), one
  sample per item it mentions, as the C2-CRS loader builds its recommendation data
  (``rec_process_fn_given_dataset`` of Zyh716/WSDM2022-C2CRS: every merged turn with
  context, no role filter; CRSLab's KGSF loader keeps ``role == 'Recommender'``, which is
  crslab), so figures sit next to that paper's tables.  It needs ``samples.roles:
  [seeker, recommender]`` (a ConfigError before training otherwise).  As in crslab, the
  candidates keep the items already mentioned.  That loader keeps only movies its KG
  links (ReDial: 6,112 of 6,924); ``items: linked`` (id ``all-turns-linked-v1``) does the
  same for targets and candidates, ``items: all`` (the default) keeps every item.  One
  difference remains: an item named twice in one turn gives it two samples there, one here;
- ``fresh`` (id ``fresh-v1``): only recommended items not mentioned earlier, and
  mentioned items are removed from the candidates (score -inf);
- ``cold_start`` (id ``cold-start-v1``): as crslab, restricted to turns whose
  context mentions no item (KGSF section 5.1.3);
- ``user_adapt`` (id ``user-adapt-v1``): CCRS's meta-test.  Each user's
  conversations, ordered by conversation id, are split into support (the first
  floor(n/2)) and query (the rest); the model takes ``rec_adapt.steps`` SGD steps
  on the support's recommendation loss (conversation pass: then ``conv_adapt.steps``
  on its generation loss), scores the query with those fast weights and discards
  them.  Targets and candidates as in crslab.  A user with one conversation is
  scored unadapted (``split.single: query_only``) or, with ``turn_split``, adapts
  on the first half of that conversation's recommender turns; conversations of
  unknown users (index 0, e.g. INSPIRED, which has no user ids) are each their
  own task, reported with unit "conversation" (``split.unit: conversation`` makes
  every conversation a task).  Tasks come from :func:`crs.data.tasks.user_tasks`.
  ``steps: 0`` scores exactly what crslab scores on the query subset.

The id carries a version: change what a protocol does, bump its id, so that
numbers in old reports never silently change meaning.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch

from crs.data.samples import Sample
from crs.data.schema import RECOMMENDER, SEEKER
from crs.data.tasks import SingleRule, TaskUnit
from crs.errors import ConfigError
from crs.interfaces import BuildDeps, EvaluationProtocol

CandidateSet = Literal["all"]


@dataclass
class ProtocolConfig:
    candidates: CandidateSet = "all"  # the items ranked for every sample; only "all" for now


def sample_role(sample: Sample) -> str:
    """The speaker of the turn `sample` was made of (samples built before roles existed: the recommender)."""
    return (getattr(sample, "response_turn", None) or {}).get("role", RECOMMENDER)


class _ItemProtocol(EvaluationProtocol):
    """Shared expansion of turns into one scored sample per target item."""

    Config = ProtocolConfig
    # whose turns are scored; samples of other speakers' turns (samples.roles) are left out
    roles: ClassVar[tuple[str, ...]] = (RECOMMENDER,)

    def rec_samples(self, samples: list[Sample]) -> list[Sample]:
        out = []
        for sample in samples:
            if sample_role(sample) not in self.roles or not self.keeps_turn(sample):
                continue
            for item in dict.fromkeys(sample.target_items):  # de-duplicated, order kept
                if self.keeps_target(sample, item):
                    out.append(sample.for_item(item))
        return out

    def keeps_turn(self, sample: Sample) -> bool:
        return True

    def keeps_target(self, sample: Sample, item: int) -> bool:
        return True


class CRSLabProtocol(_ItemProtocol):
    """CRSLab's protocol: every recommended item of every recommender turn, all items ranked."""

    id = "crslab-v1"


ItemSet = Literal["all", "linked"]


@dataclass
class AllTurnsConfig(ProtocolConfig):
    # linked: only items the entity graph links (not "item:<id>" nodes) are targets and candidates, as in the C2-CRS
    # loader, which drops movies its KG lacks; the id becomes all-turns-linked-v1
    items: ItemSet = "all"


class AllTurnsProtocol(_ItemProtocol):
    """Every turn, of either speaker, that mentions an item: the C2-CRS loader's recommendation data.

    A seeker turn's targets are the items it mentions (``crs.data.build``), so the model
    is also scored on predicting the movie a seeker is about to name.  ``items: linked``
    keeps the items the entity graph links, as targets and as candidates: exactly what
    that loader scores (on ReDial, KGSF's linking leaves 812 of 6,924 movies out).
    """

    id = "all-turns-v1"
    roles = (SEEKER, RECOMMENDER)
    Config = AllTurnsConfig

    def __init__(self, config: AllTurnsConfig, deps: BuildDeps):
        super().__init__(config, deps)
        self.linked: torch.Tensor | None = None  # bool (n_items,) with items: linked
        if config.items == "linked":
            self.id = "all-turns-linked-v1"
            self.linked = linked_items(deps, f"{deps.path}.items")

    def keeps_target(self, sample: Sample, item: int) -> bool:
        return self.linked is None or bool(self.linked[item])

    def candidate_mask(self, batch: dict, n_items: int) -> torch.Tensor | None:
        if self.linked is None:
            return None
        linked = self.linked[:n_items].to(batch["batch.context_items"].device)
        return linked.unsqueeze(0).expand(batch["batch.context_items"].shape[0], n_items)


def linked_items(deps: BuildDeps, key: str) -> torch.Tensor:
    """bool (n_items,): True where the pipeline's entity graph links the item (its node is not "item:<id>")."""
    from crs.data.prepare import UNLINKED_PREFIX
    from crs.knowledge import ENTITY

    items = deps.require("items")
    graphs = [g for g in deps.graphs.values() if g.role == ENTITY]
    if len(graphs) != 1:
        raise ConfigError(key, f"'linked' needs the one entity graph that links items, and the pipeline has "
                          f"{len(graphs)}", "use items: all, or keep one entity graph under `knowledge:`")
    names = graphs[0].nodes
    return torch.tensor([0 < node < len(names) and not names[node].startswith(UNLINKED_PREFIX)
                         for node in items.entity_nodes.tolist()], dtype=torch.bool)


class FreshProtocol(_ItemProtocol):
    """Only items new to the dialogue: mentioned items are neither targets nor candidates.

    Repeating an item the seeker just named is an easy hit that inflates Recall
    under the crslab protocol; this one measures recommending something new.
    """

    id = "fresh-v1"

    def keeps_target(self, sample: Sample, item: int) -> bool:
        return item not in sample.context_items

    def candidate_mask(self, batch: dict, n_items: int) -> torch.Tensor:
        """False at every item in ``batch.context_items`` (padding ignored via its mask)."""
        items = batch["batch.context_items"].long()
        present = batch["batch.context_items_mask"].bool()
        mask = torch.ones(items.shape[0], n_items, dtype=torch.bool, device=items.device)
        rows = torch.arange(items.shape[0], device=items.device).unsqueeze(1).expand_as(items)
        mask[rows[present], items[present]] = False
        return mask


class ColdStartProtocol(_ItemProtocol):
    """KGSF's cold-start setting: only turns whose context mentions no item."""

    id = "cold-start-v1"

    def keeps_turn(self, sample: Sample) -> bool:
        return not sample.context_items


# ------------------------------------------------------------------ user_adapt
TaskOrder = Literal["conversation_id"]


@dataclass
class TaskSplitConfig:
    order: TaskOrder = "conversation_id"  # how a user's conversations are ordered before halving
    single: SingleRule = "query_only"  # a user with one conversation: scored unadapted, or split by turns
    unit: TaskUnit = "user"  # conversation: every conversation is a task (corpora without user ids)


@dataclass
class RecAdaptConfig:
    steps: int = 1  # SGD steps on the support (0 = no adaptation)
    lr: float = 0.006
    inner: list[str] = field(default_factory=lambda: ["*"])  # fnmatch globs over <slot>.<param>
    outer_only: list[str] = field(default_factory=list)  # never adapted, even if `inner` matches
    objectives: dict[str, float] = field(default_factory=lambda: {"rec": 1.0})


@dataclass
class ConvAdaptConfig(RecAdaptConfig):
    lr: float = 3e-4
    objectives: dict[str, float] = field(default_factory=lambda: {"gen": 1.0})


@dataclass
class UserAdaptConfig(ProtocolConfig):
    split: TaskSplitConfig = field(default_factory=TaskSplitConfig)
    rec_adapt: RecAdaptConfig = field(default_factory=RecAdaptConfig)
    conv_adapt: ConvAdaptConfig = field(default_factory=ConvAdaptConfig)


class UserAdaptProtocol(_ItemProtocol):
    """Per-user adaptation on earlier conversations, scored on later ones (CCRS meta-test)."""

    id = "user-adapt-v1"
    Config = UserAdaptConfig
    adapts = True

    def __init__(self, config: UserAdaptConfig, deps: BuildDeps):
        super().__init__(config, deps)
        for key in ("rec_adapt", "conv_adapt"):
            block = getattr(config, key)
            if block.steps < 0:
                raise ConfigError(f"{deps.path}.{key}.steps", f"must be >= 0 (0 = no adaptation), got {block.steps}")
            if not math.isfinite(block.lr) or block.lr <= 0:
                raise ConfigError(f"{deps.path}.{key}.lr", f"must be a positive number, got {block.lr}",
                                  "CCRS uses 0.006 (rec) and 3e-4 (conv)")
            if not block.inner:
                raise ConfigError(f"{deps.path}.{key}.inner", "no parameter pattern is given",
                                  "list globs over <slot>.<param>, e.g. ['*'] or ['generator.encoder.*']")

    # ------------------------------------------------------------- tasks
    def tasks(self, samples: list[Sample]) -> list[tuple[list[Sample], list[Sample], dict]]:
        """Tasks of :func:`crs.data.tasks.user_tasks` (users by index, then unknown users' conversations)."""
        from crs.data.tasks import user_tasks

        split = self.config.split
        return [(task.support, task.query, {"user": task.user_index, "unit": task.unit})
                for task in user_tasks(samples, unit=split.unit, single=split.single)]

    # ------------------------------------------------------------ adapt
    def adapt(self, pipeline: Any, support: dict[str, list], task: str) -> dict[str, torch.Tensor] | None:
        """Rec: ``rec_adapt`` steps on the rec support.  Conv: the same, then ``conv_adapt`` steps from there."""
        model = pipeline.model
        params: dict[str, torch.Tensor] | None = None
        rec, conv = self.config.rec_adapt, self.config.conv_adapt
        if rec.steps and support.get("rec") and model.has_recommender:
            params = self._adapt(pipeline, support["rec"], rec, None, f"{self.path}.rec_adapt")
        if task == "conv" and conv.steps and support.get("conv"):
            adapted = self._adapt(pipeline, support["conv"], conv, params, f"{self.path}.conv_adapt")
            params = {**(params or {}), **adapted}
        return params

    def _adapt(self, pipeline: Any, samples: list, cfg: RecAdaptConfig, start: dict[str, torch.Tensor] | None,
               path: str) -> dict[str, torch.Tensor]:
        from crs.training import meta
        from crs.training.stage import resolve_objectives

        model = pipeline.model
        objectives = resolve_objectives(dict(cfg.objectives), set(model.loss_keys()), path)
        inner = meta.select_params(meta.named_parameters(model), cfg.inner, cfg.outer_only, path=path)
        start = start or {}
        initial = {name: start.get(name, tensor) for name, tensor in inner.items()}
        batch_size = int(pipeline.spec.evaluation.batch_size)
        return meta.adapt_on_batches(model, initial,
                                     lambda: pipeline.batches(samples, batch_size, shuffle=False, seed=0),
                                     objectives, steps=cfg.steps, lr=cfg.lr, path=path, fixed=start)

