"""Pieces the KGSF graph encoders share: node embeddings, activations, per-device DGL graphs."""
from __future__ import annotations

from typing import Callable, Literal

import torch
from torch import nn

from crs.errors import ConfigError

Activation = Literal["none", "relu", "tanh"]  # the keys of ACTIVATIONS (a test checks they agree)
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor] | None] = {
    "none": None,
    "relu": torch.relu,
    "tanh": torch.tanh,
}


def activation(name: str, path: str) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The activation called `name`; a ConfigError at `path` for unknown names."""
    if name not in ACTIVATIONS:
        raise ConfigError(path, f"unknown activation '{name}'", f"use one of: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def node_embeddings(num_nodes: int, dim: int) -> nn.Embedding:
    """Learned node features; row 0 (the pad node) is zero and never updated."""
    table = nn.Embedding(num_nodes, dim, padding_idx=0)
    nn.init.normal_(table.weight, std=dim ** -0.5)
    with torch.no_grad():
        table.weight[0].zero_()
    return table


def check_positive(value: int | float, path: str, what: str) -> None:
    if value <= 0:
        raise ConfigError(path, f"{what} must be positive, got {value}", f"set {path.rsplit('.', 1)[-1]}: 1 or more")


def check_non_negative(value: int, path: str, what: str) -> None:
    if value < 0:
        raise ConfigError(path, f"{what} must be 0 or more, got {value}", f"set {path.rsplit('.', 1)[-1]}: 0 or more")


def check_dropout(value: float, path: str) -> None:
    if not 0.0 <= value < 1.0:
        raise ConfigError(path, f"dropout must be in [0, 1), got {value}", "set dropout: 0.0 .. 0.9")


class DeviceGraphCache:
    """Builds a DGL graph once per device from buffers that follow `.to(device)`.

    DGL graphs are not nn.Module state, so they cannot be registered as buffers;
    this cache rebuilds the graph lazily whenever the module's buffers moved.
    """

    def __init__(self, build: Callable[[torch.device], object]):
        self._build = build
        self._graphs: dict[torch.device, object] = {}

    def get(self, device: torch.device):
        if device not in self._graphs:
            self._graphs[device] = self._build(device)
        return self._graphs[device]

    def clear(self) -> None:
        self._graphs.clear()

    # deepcopy/pickle of the owning module should not drag DGL graphs along
    def __getstate__(self):
        return {"_build": self._build, "_graphs": {}}
