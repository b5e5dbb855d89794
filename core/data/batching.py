"""Collating samples into the `batch.*` tensors of crs.data.samples, and iterating batches.

Padded fields are right-padded with 0 and come with a bool `_mask` (True = real
value).  A field that is empty in every sample still gets one padded column, so
components never see a zero-width tensor (their masks are simply all False).
"""
from __future__ import annotations

import random
from typing import Iterator, Sequence

import torch

from .samples import Sample

#: sample attribute -> batch key prefix, for every padded list field
PADDED_FIELDS = ("context_tokens", "context_entities", "context_words", "context_items", "target_items",
                 "response_tokens")


def pad(rows: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(long (B, L) right-padded with 0, bool (B, L) mask); L >= 1."""
    width = max(1, max((len(r) for r in rows), default=0))
    values = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.bool)
    for i, row in enumerate(rows):
        if row:
            values[i, :len(row)] = torch.as_tensor(row, dtype=torch.long)
            mask[i, :len(row)] = True
    return values, mask


def collate(samples: Sequence[Sample]) -> dict:
    """The batch dict for `samples`: exactly the keys documented in crs.data.samples."""
    batch: dict = {}
    for name in PADDED_FIELDS:
        values, mask = pad([getattr(s, name) for s in samples])
        batch[f"batch.{name}"] = values
        batch[f"batch.{name}_mask"] = mask
    batch["batch.target_item"] = torch.tensor([s.target_item for s in samples], dtype=torch.long)
    batch["batch.user_index"] = torch.tensor([s.user_index for s in samples], dtype=torch.long)
    batch["batch.turn_index"] = torch.tensor([s.turn_index for s in samples], dtype=torch.long)
    batch["batch.context_text"] = [list(s.context_text) for s in samples]
    batch["batch.response_text"] = [s.response_text for s in samples]
    batch["batch.samples"] = list(samples)
    return batch


def iterate_batches(samples: Sequence[Sample], batch_size: int, *, shuffle: bool, seed: int) -> Iterator[dict]:
    """Collated batches of `batch_size` (the last may be smaller).

    Shuffling uses its own `random.Random(seed)` on a copy, so the caller's list and the
    global RNG are untouched and the same seed gives the same order.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = list(samples)
    if shuffle:
        random.Random(seed).shuffle(order)
    for start in range(0, len(order), batch_size):
        yield collate(order[start:start + batch_size])
