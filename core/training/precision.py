"""Where training runs (``device:``) and in which floating-point precision (``stages.<i>.precision``).

``device`` is a top-level key (``cpu``, ``cuda``, ``cuda:N``); :func:`resolve_device`
checks it before anything is built, so a CUDA device on a CPU-only torch is one
config error instead of a traceback from deep inside ``Module.to``.

``precision`` is a stage key, because it is part of how a stage trains (its
gradient scaler lives and is checkpointed next to its optimizer):

- ``fp32``: no autocast (the default; bit-for-bit what older versions computed);
- ``bf16``: the training forward runs under ``torch.autocast(dtype=bfloat16)``; works on CPU
  and on GPUs with bf16 support; no scaler is needed (bf16 has fp32's exponent range);
- ``fp16``: autocast to float16 plus a ``torch.amp.GradScaler``, whose state is saved in the
  checkpoint so that a resumed run stays bit-for-bit identical.

Only the forward is autocast: the trainer wraps the strategy's epoch in
:meth:`Precision.autocast` and :meth:`crs.training.loop.EpochLoop.step` runs the
backward pass under :meth:`Precision.no_autocast`.  Parameters and optimizer state
stay fp32.  Validation losses are computed in fp32.
"""
from __future__ import annotations

import contextlib
from typing import Any, ContextManager

import torch

from ..errors import ConfigError, UnknownComponentError

__all__ = ["PRECISIONS", "DEVICE_TYPES", "resolve_device", "Precision"]

PRECISIONS = ("fp32", "bf16", "fp16")
DEVICE_TYPES = ("cpu", "cuda")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
_CUDA_FIX = ("set device: cpu, or install a CUDA build of torch (https://pytorch.org/get-started) "
             "on a machine with a GPU")


def resolve_device(name: Any, path: str = "device") -> torch.device:
    """`name` as a torch.device after checking that this machine can use it; a ConfigError at `path` otherwise."""
    text = str(name).strip()
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):  # torch's message lists every backend it knows; ours says what works here
        raise ConfigError(path, f"'{text}' is not a device name torch understands",
                          "use cpu, cuda (the current GPU) or cuda:N (GPU number N, from 0)") from None
    if device.type not in DEVICE_TYPES:
        raise ConfigError(path, f"device type '{device.type}' is not supported for training",
                          "use cpu, cuda or cuda:N")
    if device.type == "cuda":
        if torch.version.cuda is None and torch.version.hip is None:
            raise ConfigError(path, f"'{text}' needs a CUDA GPU, but the installed torch {torch.__version__} "
                                    "is a CPU-only build", _CUDA_FIX)
        if not torch.cuda.is_available():
            raise ConfigError(path, f"'{text}' needs a CUDA GPU, but torch sees none (no driver, or "
                                    "CUDA_VISIBLE_DEVICES hides them)", _CUDA_FIX)
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ConfigError(path, f"'{text}' asks for GPU {device.index}, but this machine has {count} "
                                    f"(numbered 0 to {count - 1})", f"use cuda:0 ... cuda:{count - 1}, or cuda")
    return device


class Precision:
    """The autocast and gradient-scaling settings of one stage on one device."""

    def __init__(self, name: Any, device: torch.device | str, path: str):
        self.name = str(name).lower()
        self.device = torch.device(device)
        self.path = path
        if self.name not in PRECISIONS:  # the config validator refuses these; a spec built in Python is unchecked
            raise UnknownComponentError(path, "precision", str(name), PRECISIONS)
        self.dtype = _DTYPES.get(self.name)
        if self.name == "bf16" and self.device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ConfigError(path, "this GPU has no bfloat16 support (it needs compute capability 8.0 or newer)",
                              "use precision: fp16 (with its gradient scaler) or fp32")
        self.scaler: Any = None
        if self.name == "fp16":
            try:
                self.scaler = torch.amp.GradScaler(self.device.type)
            except Exception as err:  # older torch builds have no scaler for some device types
                raise ConfigError(path, f"this torch ({torch.__version__}) has no fp16 gradient scaler for "
                                        f"{self.device.type} ({type(err).__name__}: {err})",
                                  "use precision: bf16, or a newer torch") from None

    @property
    def enabled(self) -> bool:
        return self.dtype is not None

    def autocast(self) -> ContextManager[Any]:
        """The context the training forward runs in (a no-op for fp32)."""
        if not self.enabled:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def no_autocast(self) -> ContextManager[Any]:
        """The context the backward pass runs in: autocast off (PyTorch advises against a backward under it)."""
        if not self.enabled:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, enabled=False)
