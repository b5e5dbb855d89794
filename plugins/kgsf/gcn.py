"""Word-graph GCN (KGSF Eq. 1): symmetric-normalised graph convolution with self-loops.

The stored word-graph edges are made undirected (each edge in both directions,
duplicates removed, as KGSF's loader builds a *set* of (a, b) and (b, a) pairs),
stored self-loops are dropped and exactly one self-loop per node is added. Each layer is

    V' = act(D^-1/2 (A + I) D^-1/2 V W + b)

computed as one DGL SpMM with the normalisation precomputed as edge weights.
KGSF's paper writes ReLU in Eq. 1, but its released code applies no nonlinearity after
its single layer, so ``activation`` defaults to "none".
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from crs.interfaces import BuildDeps, ExternalEncoder, Port

from .graph_common import (
    Activation,
    DeviceGraphCache,
    activation,
    check_dropout,
    check_non_negative,
    check_positive,
    node_embeddings,
)


def undirected_with_self_loops(src: np.ndarray, dst: np.ndarray, num_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Edges of the undirected simple graph over src/dst plus one self-loop per node, sorted by (dst, src)."""
    src = np.asarray(src, dtype=np.int64)
    dst = np.asarray(dst, dtype=np.int64)
    keep = src != dst
    a = np.concatenate([src[keep], dst[keep]])
    b = np.concatenate([dst[keep], src[keep]])
    keys = np.unique(b * num_nodes + a)  # unique (dst, src) pairs, sorted by dst
    loops = np.arange(num_nodes, dtype=np.int64)
    keys = np.union1d(keys, loops * num_nodes + loops)
    return keys % num_nodes, keys // num_nodes


class WordGraphGCN(ExternalEncoder):
    """`gcn`: node embeddings of a word graph refined by GCN layers; output port `nodes`."""

    @dataclass
    class Config:
        graph: str = "word_kg"  # knowledge name of the graph
        dim: int = 128
        layers: int = 1
        dropout: float = 0.0  # on each layer's input
        activation: Activation = "none"  # after every layer

    def __init__(self, config: Config, deps: BuildDeps):
        super().__init__(config, deps)
        check_positive(config.dim, f"{self.path}.dim", "dim")
        check_non_negative(config.layers, f"{self.path}.layers", "layers")  # 0 = plain embeddings (KGSF "-DB" ablation)
        check_dropout(config.dropout, f"{self.path}.dropout")
        self.act = activation(config.activation, f"{self.path}.activation")
        graph = deps.graph(config.graph)
        self.num_nodes = graph.num_nodes
        self.embeddings = node_embeddings(self.num_nodes, config.dim)
        self.weights = nn.ModuleList(nn.Linear(config.dim, config.dim, bias=False) for _ in range(config.layers))
        self.biases = nn.ParameterList(nn.Parameter(torch.zeros(config.dim)) for _ in range(config.layers))
        for linear in self.weights:
            nn.init.xavier_uniform_(linear.weight)
        self.dropout = nn.Dropout(config.dropout)

        src, dst = undirected_with_self_loops(graph.src, graph.dst, self.num_nodes)
        degree = np.bincount(dst, minlength=self.num_nodes).astype(np.float64)  # in == out: symmetric
        norm = (degree[src] * degree[dst]) ** -0.5
        # graph structure follows .to(device) but is data, not checkpoint state
        self.register_buffer("edge_src", torch.from_numpy(src), persistent=False)
        self.register_buffer("edge_dst", torch.from_numpy(dst), persistent=False)
        self.register_buffer("edge_norm", torch.from_numpy(norm).float().unsqueeze(-1), persistent=False)
        self._graphs = DeviceGraphCache(self._build_graph)

    def _build_graph(self, device: torch.device):
        from crs.compat.dgl import graph_from_edges

        return graph_from_edges(self.edge_src.cpu(), self.edge_dst.cpu(), self.num_nodes, device=device)

    def output_ports(self) -> dict[str, Port]:
        return {"nodes": Port("word_nodes", self.config.dim, doc="word-graph node representations (n_nodes, dim)")}

    def forward(self, inputs: dict) -> dict:
        return {"nodes": self.encode()}

    def encode(self) -> torch.Tensor:
        """All node representations (num_nodes, dim)."""
        from crs.compat.dgl import ops

        graph = self._graphs.get(self.edge_src.device)
        h = self.embeddings.weight
        for linear, bias in zip(self.weights, self.biases):
            h = linear(self.dropout(h))  # transform first: the SpMM then runs at output width
            h = ops.gspmm(graph, "mul", "sum", h, self.edge_norm) + bias
            if self.act is not None:
                h = self.act(h)
        return h
