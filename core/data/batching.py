"""Collating samples into the `batch.*` values of crs.data.fields, and iterating batches.

Every field is collated by its rule in the field table (:mod:`crs.data.fields`), so a
field added there, or declared by a featurizer, needs no code here.
"""
from __future__ import annotations

import random
from typing import Any, Iterator, Sequence

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


def batch_chunks(samples: Sequence[Sample], batch_size: int, *, shuffle: bool, seed: int) -> Iterator[list]:
    """The samples of each batch of `batch_size` (the last may be smaller), in batch order.

    Shuffling uses its own `random.Random(seed)` on a copy, so the caller's list and the
    global RNG are untouched and the same seed gives the same order (one process, or the
    global batches that DDP ranks shard: crs.training.distributed.shard_batches).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = list(samples)
    if shuffle:
        random.Random(seed).shuffle(order)
    for start in range(0, len(order), batch_size):
        yield order[start:start + batch_size]


def iterate_batches(samples: Sequence[Sample], batch_size: int, *, shuffle: bool, seed: int,
                    extra_fields: Sequence[Field] = ()) -> Iterator[dict]:
    """Collated batches of :func:`batch_chunks`."""
    for chunk in batch_chunks(samples, batch_size, shuffle=shuffle, seed=seed):
        yield collate(chunk, extra_fields)
