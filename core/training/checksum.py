"""A checksum of a checkpoint's content, so that a damaged or edited checkpoint is never used.

:func:`state_checksum` hashes what a checkpoint *holds* rather than the bytes of its file:
every tensor's dtype, shape and raw bytes and every plain value (dict keys in order,
list/tuple items, strings, numbers, None), each tagged with its type and length so that
no two different states feed the hash the same byte stream.  The checkpoint writer stores
the result inside the checkpoint (:mod:`crs.training.checkpoint`) and the reader recomputes
it after ``torch.load``.

Why the content and not the file: the digest then travels inside the one file that is
written atomically (a separate checksum file could be left one write behind by a kill),
and it checks exactly what a run would use.  A flipped byte in a file either makes
``torch.load`` fail, or changes a loaded value and so the digest; bytes that change
nothing that is loaded (zip padding, timestamps) cannot change a result.
"""
from __future__ import annotations

import hashlib
from typing import Any

import torch

__all__ = ["state_checksum"]

PREFIX = "sha256:"


def state_checksum(state: Any) -> str:
    """``"sha256:<hex>"`` over the content of `state` (nested dicts, lists, tuples, tensors, plain values)."""
    digest = hashlib.sha256()
    _feed(digest, state)
    return PREFIX + digest.hexdigest()


def _feed(digest: Any, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        tensor = value.detach()
        digest.update(f"T{tensor.dtype}{tuple(tensor.shape)}|".encode())
        if tensor.numel():
            flat = tensor.to("cpu").contiguous().reshape(-1)
            digest.update(flat.view(torch.uint8).numpy())
    elif isinstance(value, dict):
        digest.update(f"D{len(value)}|".encode())
        for key, item in value.items():
            _feed(digest, key)
            _feed(digest, item)
    elif isinstance(value, (list, tuple)):
        digest.update(f"{'L' if isinstance(value, list) else 'U'}{len(value)}|".encode())
        for item in value:
            _feed(digest, item)
    elif isinstance(value, str):
        encoded = value.encode("utf-8", "surrogatepass")
        digest.update(f"S{len(encoded)}|".encode())
        digest.update(encoded)
    elif isinstance(value, bytes):
        digest.update(f"B{len(value)}|".encode())
        digest.update(value)
    elif value is None or isinstance(value, bool):
        digest.update(f"{value}|".encode())
    elif isinstance(value, int):
        digest.update(f"I{value}|".encode())
    elif isinstance(value, float):
        digest.update(f"F{value.hex()}|".encode())  # exact, and NaN/inf included
    else:  # torch.dtype, torch.device and the like: what weights_only loading lets through
        text = f"{type(value).__module__}.{type(value).__qualname__}:{value!r}".encode()
        digest.update(f"O{len(text)}|".encode())
        digest.update(text)
