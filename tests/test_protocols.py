"""Evaluation protocols: sample selection and candidate masks on hand-made samples."""
from __future__ import annotations

import pytest
import torch

from crs.data.samples import Sample
from crs.errors import ConfigError
from crs.interfaces import BuildDeps
from crs.plugins.metrics.protocols import ColdStartProtocol, CRSLabProtocol, FreshProtocol


def sample(conv, context_items, target_items):
    return Sample(conv_id=conv, turn_index=1, user_index=0, context_text=["hi"], context_tokens=[5],
                  context_entities=[], context_words=[], context_items=list(context_items),
                  target_items=list(target_items), response_tokens=[2, 3], response_text="")


SAMPLES = [
    sample("cold", [], [3, 3, 5]),      # no item mentioned yet; item 3 recommended twice
    sample("warm", [1, 3], [3, 4]),     # item 3 was mentioned before
    sample("chat", [2], []),            # a recommender turn without recommendation
]


def build(cls, **options):
    return cls(cls.Config(**options), BuildDeps(path="evaluation.protocols.0"))


def scored(protocol):
    return [(s.conv_id, s.target_item) for s in protocol.rec_samples(SAMPLES)]


def test_crslab_one_sample_per_recommended_item_mentioned_kept():
    protocol = build(CRSLabProtocol)
    assert scored(protocol) == [("cold", 3), ("cold", 5), ("warm", 3), ("warm", 4)]
    assert protocol.candidate_mask({}, 6) is None
    assert protocol.id == "crslab-v1"


def test_fresh_drops_mentioned_targets():
    assert scored(build(FreshProtocol)) == [("cold", 3), ("cold", 5), ("warm", 4)]


def test_fresh_masks_mentioned_items_but_not_padding():
    batch = {"batch.context_items": torch.tensor([[1, 3], [0, 0], [0, 2]]),
             "batch.context_items_mask": torch.tensor([[True, True], [False, False], [True, True]])}
    mask = build(FreshProtocol).candidate_mask(batch, 6)
    assert mask.dtype == torch.bool and mask.shape == (3, 6)
    assert mask[0].tolist() == [True, False, True, False, True, True]
    assert mask[1].all()  # padding 0 is item 0 only where the mask says so
    assert mask[2].tolist() == [False, True, False, True, True, True]


def test_cold_start_keeps_only_turns_without_mentioned_items():
    protocol = build(ColdStartProtocol)
    assert scored(protocol) == [("cold", 3), ("cold", 5)]
    assert protocol.candidate_mask({}, 6) is None


def test_expanded_samples_are_copies():
    expanded = build(CRSLabProtocol).rec_samples(SAMPLES)
    assert SAMPLES[0].target_item == -1 and expanded[0].target_item == 3


def test_protocol_ids_are_distinct_and_versioned():
    ids = [cls.id for cls in (CRSLabProtocol, FreshProtocol, ColdStartProtocol)]
    assert len(set(ids)) == 3 and all(i.endswith("-v1") for i in ids)


def test_unknown_candidate_set_is_a_config_error(registry):
    with pytest.raises(ConfigError, match=r"evaluation\.protocols\.0\.candidates"):
        registry.build("evaluation_protocol", {"type": "fresh", "candidates": "movies"}, "evaluation.protocols.0")
