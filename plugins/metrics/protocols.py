"""Evaluation protocols: which recommender turns are scored, against which candidates.

All three start from the pipeline's recommender-turn samples (one per turn with
context) and score one sample per recommended item (``sample.for_item(i)``; an
item recommended twice in one turn counts once).  The candidate set is every
item (``candidates: all``, the only option so far).  They differ in exclusions:

- ``crslab`` (id ``crslab-v1``): every recommended item; items already
  mentioned in the dialogue stay among the candidates;
- ``fresh`` (id ``fresh-v1``): only recommended items not mentioned earlier, and
  mentioned items are removed from the candidates (score -inf);
- ``cold_start`` (id ``cold-start-v1``): as crslab, restricted to turns whose
  context mentions no item (KGSF section 5.1.3).

The id carries a version: change what a protocol does, bump its id, so that
numbers in old reports never silently change meaning.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from crs.data.samples import Sample
from crs.errors import ConfigError
from crs.interfaces import BuildDeps, EvaluationProtocol

CANDIDATE_SETS = ("all",)


@dataclass
class ProtocolConfig:
    candidates: str = "all"  # the items ranked for every sample; only "all" for now


class _ItemProtocol(EvaluationProtocol):
    """Shared expansion of recommender turns into one scored sample per recommended item."""

    Config = ProtocolConfig

    def __init__(self, config: ProtocolConfig, deps: BuildDeps):
        super().__init__(config, deps)
        if config.candidates not in CANDIDATE_SETS:
            raise ConfigError(f"{deps.path}.candidates", f"unknown candidate set '{config.candidates}'",
                              f"use one of: {', '.join(CANDIDATE_SETS)}")

    def rec_samples(self, samples: list[Sample]) -> list[Sample]:
        out = []
        for sample in samples:
            if not self.keeps_turn(sample):
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
