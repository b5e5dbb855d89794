"""Collating samples into `batch.*` tensors and iterating batches."""
from __future__ import annotations

import dataclasses
import re

import pytest
import torch

from crs.data import samples as samples_module
from crs.data.batching import LENGTH_POOL_BATCHES, batch_chunks, collate, iterate_batches, padded_size
from crs.data.fields import BUILTIN_FIELDS, Field, batch_keys, check_fields
from crs.data.samples import Sample


def _sample(n: int, **overrides) -> Sample:
    fields = dict(conv_id=f"c{n}", turn_index=n, user_index=n % 3, context_text=[f"text {n}"],
                  context_tokens=list(range(5, 5 + n)), context_entities=[n + 1] * (n % 2), context_words=[],
                  context_items=[0] if n % 2 else [], target_items=[n, n + 1], response_tokens=[2, 7, 3],
                  response_text=f"reply {n}")
    fields.update(overrides)
    return Sample(**fields)


def _documented_keys() -> set[str]:
    """The batch keys of the table in crs.data.samples' docstring."""
    return set(re.findall(r"^\| `(batch\.\w+)`", samples_module.__doc__, flags=re.MULTILINE))


def test_collate_has_exactly_the_documented_keys():
    batch = collate([_sample(1), _sample(2)])
    assert {"batch.context_tokens_mask", "batch.context_turns", "batch.samples"} <= _documented_keys()
    assert set(batch) == _documented_keys()


def test_sample_attributes_come_from_the_field_table():
    names = [f.name for f in dataclasses.fields(Sample)]
    assert names == ["conv_id", *(spec.name for spec in BUILTIN_FIELDS), "meta", "features"]


def test_featurizer_fields_are_collated_by_their_rule():
    extra = [Field("review_ids", "pad", "review ids", pad=-1), Field("weight", "float", "a weight", default=float),
             Field("tags", "list", "tags")]
    samples = [_sample(1, features={"review_ids": [4, 5], "weight": 0.5, "tags": ["a"]}),
               _sample(2, features={"review_ids": [], "weight": 2.0, "tags": []})]
    batch = collate(samples, extra)
    assert batch["batch.review_ids"].tolist() == [[4, 5], [-1, -1]]
    assert batch["batch.review_ids_mask"].tolist() == [[True, True], [False, False]]
    assert batch["batch.weight"].tolist() == [0.5, 2.0]
    assert batch["batch.tags"] == [["a"], []]
    assert set(batch) == set(batch_keys(extra))


def test_featurizer_fields_may_not_clash():
    from crs.errors import ConfigError

    with pytest.raises(ConfigError, match="clashes with a built-in field"):
        check_fields([Field("context_tokens", "pad", "x")], "samples.featurizers.0")
    with pytest.raises(ConfigError, match="unknown collate rule"):
        check_fields([Field("mine", "stack", "x")], "samples.featurizers.0")
    with pytest.raises(ConfigError, match="clashes with the field of samples.featurizers.0"):
        check_fields([Field("mine", "pad", "x"), Field("mine", "list", "y")], "samples.featurizers.0")


def test_collate_pads_with_zero_and_masks():
    samples = [_sample(1), _sample(3, target_item=4), _sample(2)]
    batch = collate(samples)
    tokens, mask = batch["batch.context_tokens"], batch["batch.context_tokens_mask"]
    assert tokens.dtype == torch.long and mask.dtype == torch.bool
    assert tokens.shape == mask.shape == (3, 3)
    assert tokens.tolist() == [[5, 0, 0], [5, 6, 7], [5, 6, 0]]
    assert mask.sum(1).tolist() == [1, 3, 2]
    assert (tokens[~mask] == 0).all()
    # item index 0 is a real item: only the mask tells it from padding
    assert batch["batch.context_items"].tolist() == [[0], [0], [0]]
    assert batch["batch.context_items_mask"].tolist() == [[True], [True], [False]]
    assert batch["batch.target_item"].tolist() == [-1, 4, -1]
    assert batch["batch.target_items"].tolist() == [[1, 2], [3, 4], [2, 3]]
    assert batch["batch.user_index"].tolist() == [1, 0, 2]
    assert batch["batch.turn_index"].tolist() == [1, 3, 2]
    assert batch["batch.response_text"] == ["reply 1", "reply 3", "reply 2"]
    assert batch["batch.context_text"] == [["text 1"], ["text 3"], ["text 2"]]
    assert batch["batch.samples"] == samples


def test_field_empty_everywhere_keeps_one_masked_column():
    batch = collate([_sample(2), _sample(4)])
    assert batch["batch.context_words"].shape == (2, 1)
    assert not batch["batch.context_words_mask"].any()
    assert not batch["batch.context_entities_mask"].any()


def test_iterate_batches_is_deterministic_and_complete():
    samples = [_sample(n) for n in range(1, 11)]
    original = list(samples)
    def order(seed, shuffle=True):
        return [s.conv_id for b in iterate_batches(samples, 3, shuffle=shuffle, seed=seed)
                for s in b["batch.samples"]]
    assert order(5) == order(5)
    assert order(5) != order(6)
    assert sorted(order(5)) == sorted(s.conv_id for s in samples)
    assert order(0, shuffle=False) == [s.conv_id for s in samples]
    assert samples == original  # the caller's list is not shuffled in place
    sizes = [len(b["batch.samples"]) for b in iterate_batches(samples, 3, shuffle=False, seed=0)]
    assert sizes == [3, 3, 3, 1]
    with pytest.raises(ValueError):
        list(iterate_batches(samples, 0, shuffle=False, seed=0))


def test_padded_size_counts_the_real_positions_of_every_padded_field():
    extra = (Field("spans", "pad", "test spans"), Field("score", "float", "test score"))
    sample = _sample(4, context_words=[9, 9])
    sample.features.update(spans=[1, 2, 3], score=0.5)
    batch = collate([sample], extra)
    real = sum(int(value.sum()) for key, value in batch.items() if key.endswith("_mask"))
    assert padded_size(sample, extra) == real == padded_size(sample) + 3  # a float field pads nothing
    assert real >= 4 + 2 + 3  # context tokens, words and reply are among them


def test_grouping_by_length_keeps_every_sample_once_and_batches_similar_lengths():
    import random
    rng = random.Random(3)
    lengths = [rng.randint(1, 200) for _ in range(1000)]
    samples = list(range(len(lengths)))
    def grouped(seed):
        return list(batch_chunks(samples, 8, shuffle=True, seed=seed, size_of=lengths.__getitem__))
    batches = grouped(1)
    assert grouped(1) == batches and grouped(2) != batches  # the seed fixes the order
    assert sorted(x for b in batches for x in b) == samples
    assert len(batches) == 125 and {len(b) for b in batches} == {8}  # pools of 400: no short batch
    def fill(batch_list):  # share of a padded batch that is real
        return sum(sum(lengths[x] for x in b) / (len(b) * max(lengths[x] for x in b)) for b in batch_list) \
            / len(batch_list)
    random_batches = list(batch_chunks(samples, 8, shuffle=True, seed=1))
    assert fill(random_batches) < 0.7 < 0.95 < fill(batches)
    # Each batch comes from one pool of LENGTH_POOL_BATCHES batches of the shuffled epoch, not from the whole
    # sorted epoch: the shortest and the longest lengths still end up in several batches each.
    order = list(range(len(samples)))
    random.Random(1).shuffle(order)
    pool_of = {x: i // (8 * LENGTH_POOL_BATCHES) for i, x in enumerate(order)}
    assert all(len({pool_of[x] for x in b}) == 1 for b in batches)
    # the batch order is shuffled, not sorted by length
    maxima = [max(lengths[x] for x in b) for b in batches]
    assert maxima != sorted(maxima) and maxima != sorted(maxima, reverse=True)


def test_grouping_leaves_a_short_last_batch_of_a_pool_and_no_other():
    samples = list(range(8 * LENGTH_POOL_BATCHES + 5))  # one full pool, then a pool of 5
    batches = list(batch_chunks(samples, 8, shuffle=True, seed=0, size_of=lambda x: x % 13))
    assert sorted(len(b) for b in batches) == [5] + [8] * LENGTH_POOL_BATCHES


def test_grouping_needs_shuffling_to_change_anything():
    samples = list(range(20))
    assert list(batch_chunks(samples, 6, shuffle=False, seed=0, size_of=lambda x: -x)) == \
        list(batch_chunks(samples, 6, shuffle=False, seed=0))
