"""Collating samples into the `batch.*` values of crs.data.fields, and iterating batches.

Every field is collated by its rule in the field table (:mod:`crs.data.fields`), so a
field added there, or declared by a featurizer, needs no code here.
"""
from __future__ import annotations

import random
from typing import Any, Callable, Iterator, Sequence

import torch

from .fields import BUILTIN_FIELDS, SAMPLES_KEY, Field
from .samples import Sample


def pad(rows: Sequence[Sequence[int]], value: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(long (B, L) right-padded with `value`, bool (B, L) mask); L >= 1."""
    # One tensor from the concatenated rows, scattered through the mask (row-major order matches the
    # concatenation): a per-row tensor and copy costs more than the whole rest of collate on long fields.
    lengths = torch.tensor([len(row) for row in rows], dtype=torch.long)
    width = max(1, int(lengths.max()) if len(rows) else 0)
    mask = torch.arange(width) < lengths.unsqueeze(1)
    values = torch.full((len(rows), width), value, dtype=torch.long)
    values[mask] = torch.tensor([v for row in rows for v in row], dtype=torch.long)
    return values, mask


def _collate_field(spec: Field, values: list[Any], batch: dict) -> None:
    if spec.collate == "pad":
        batch[spec.key], batch[f"{spec.key}_mask"] = pad(values, spec.pad)
    elif spec.collate == "value":
        batch[spec.key] = torch.tensor(values, dtype=torch.long)
    elif spec.collate == "float":
        batch[spec.key] = torch.tensor(values, dtype=torch.float)
    else:  # list
        batch[spec.key] = [list(v) if isinstance(v, list) else v for v in values]


def collate(samples: Sequence[Sample], extra_fields: Sequence[Field] = ()) -> dict:
    """The batch dict for `samples`: every built-in field, every field in `extra_fields`, and the samples."""
    batch: dict = {}
    for spec in BUILTIN_FIELDS:
        _collate_field(spec, [getattr(s, spec.name) for s in samples], batch)
    for spec in extra_fields:
        _collate_field(spec, [s.features[spec.name] if spec.name in s.features else spec.default()
                              for s in samples], batch)
    batch[SAMPLES_KEY] = list(samples)
    return batch


#: Batches per pool that :func:`batch_chunks` sorts by size when grouping by length (fairseq's and Hugging
#: Face's length grouping use pools of this order): big enough to find similar lengths, small enough that
#: every batch still mixes samples from all over the shuffled epoch.
LENGTH_POOL_BATCHES = 50


def padded_size(sample: Sample, extra_fields: Sequence[Field] = ()) -> int:
    """How many padded positions `sample` fills: the summed lengths of its ``pad`` fields."""
    size = sum(len(getattr(sample, spec.name)) for spec in BUILTIN_FIELDS if spec.collate == "pad")
    return size + sum(len(sample.features.get(spec.name, ())) for spec in extra_fields if spec.collate == "pad")


def batch_chunks(samples: Sequence[Sample], batch_size: int, *, shuffle: bool, seed: int,
                 size_of: Callable[[Any], int] | None = None) -> Iterator[list]:
    """The samples of each batch of `batch_size` (the last may be smaller), in batch order.

    Shuffling uses its own `random.Random(seed)` on a copy, so the caller's list and the
    global RNG are untouched and the same seed gives the same order (one process, or the
    global batches that DDP ranks shard: crs.training.distributed.shard_batches).

    With `size_of` (e.g. :func:`padded_size`) and shuffling, batches group samples of similar
    size (a stage's ``group_by_length``): the shuffled epoch is cut into pools of
    :data:`LENGTH_POOL_BATCHES` batches, each pool is sorted by size and cut into batches, and
    the order of all the batches is shuffled.  Padding, and the time spent on it, shrink; each
    epoch still sees every sample once in an order the seed fixes.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = list(samples)
    if not shuffle:
        yield from _cut(order, batch_size)
        return
    rng = random.Random(seed)
    rng.shuffle(order)
    if size_of is None:
        yield from _cut(order, batch_size)
        return
    pool = batch_size * LENGTH_POOL_BATCHES
    batches = [batch for start in range(0, len(order), pool)
               for batch in _cut(sorted(order[start:start + pool], key=size_of), batch_size)]
    rng.shuffle(batches)
    yield from batches


def _cut(order: list, batch_size: int) -> Iterator[list]:
    for start in range(0, len(order), batch_size):
        yield order[start:start + batch_size]


def iterate_batches(samples: Sequence[Sample], batch_size: int, *, shuffle: bool, seed: int,
                    extra_fields: Sequence[Field] = (), group_by_length: bool = False) -> Iterator[dict]:
    """Collated batches of :func:`batch_chunks`; `group_by_length` groups them by :func:`padded_size`."""
    size_of = (lambda sample: padded_size(sample, extra_fields)) if group_by_length else None
    for chunk in batch_chunks(samples, batch_size, shuffle=shuffle, seed=seed, size_of=size_of):
        yield collate(chunk, extra_fields)
