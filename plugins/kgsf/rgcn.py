"""Entity-graph R-GCN (KGSF Eq. 2) with basis decomposition, computed sparsely.

One layer:  out_v = act( sum_r  1/c_{v,r} sum_{u in N_r(v)} W_r h_u  +  W_0 h_v  +  b ),
with W_r = sum_b a_rb V_b and c_{v,r} = |N_r(v)| ("mean", as KGSF's code via PyG's
RGCNConv) or 1 ("sum", the paper's Z = 1).  Every stored edge (h, r, t) also gets its
reverse (t, r, h) under the *same* relation, as KGSF's loader does; stored self-loops
are dropped (the W_0 root term plays their part).

Why it is fast: messages are linear, so instead of transforming every node by every
relation (PyG's RGCNConv does R dense N x d x d products), the layer

1. averages neighbour features per existing (destination, relation) pair with one
   DGL SpMM (nodes -> pairs, edge weight 1 / c_{v,r});
2. applies W_r only to those pairs; pairs are sorted by relation, so this is one
   matmul per relation over a contiguous block (:func:`segmented_matmul`);
3. adds each pair's message to its destination (``index_add``; a pair has one destination).

Cost per layer is O(E d + P d^2) with P <= E pairs, against O(E d + R N d^2).
All index structures are computed once in ``__init__``.

``featureless: true`` is the R-GCN that KGSF's and C2-CRS's released code run (PyG's
``RGCNConv(n_entity, dim, n_relation, num_bases)`` called with ``x=None``): there are no
node embeddings, the inputs are one-hot node ids, so the first layer's basis matrices are
N x d and W_r[j] (row j of relation r's weight) *is* the message of source node j; the
root weight is a per-node table too.  See :class:`FeaturelessRelationalLayer` for how it
is computed (a lookup per message, never a dense N x d x d product) and its size: on
ReDial's KGSF graph it has ~74M parameters against ~8.4M for the default (embedding +
d x d bases) -- a different, higher-rank model, not the same model computed faster.
"""
from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from crs.errors import ConfigError, DataError
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

Aggregation = Literal["mean", "sum"]
AGGREGATIONS = typing.get_args(Aggregation)


@dataclass
class RelationPairs:
    """The (destination, relation) pair structure of a relational graph.

    Edge i feeds pair ``edge_pair[i]`` from node ``edge_src[i]`` with weight ``edge_weight[i]``;
    pairs are sorted by (relation, destination); relation r owns ``pairs_per_relation[r]``
    consecutive pairs.
    """

    edge_src: np.ndarray
    edge_pair: np.ndarray
    edge_weight: np.ndarray
    pair_dst: np.ndarray
    pair_rel: np.ndarray
    pairs_per_relation: np.ndarray


def relation_pairs(src, dst, rel, num_nodes: int, num_relations: int, aggregation: str = "mean",
                   add_reverse: bool = True) -> RelationPairs:
    """Group the edges of a relational graph by (destination, relation)."""
    src = np.asarray(src, dtype=np.int64)
    dst = np.asarray(dst, dtype=np.int64)
    rel = np.asarray(rel, dtype=np.int64)
    keep = src != dst
    src, dst, rel = src[keep], dst[keep], rel[keep]
    if add_reverse:
        src, dst, rel = np.concatenate([src, dst]), np.concatenate([dst, src]), np.concatenate([rel, rel])
    keys = rel * num_nodes + dst
    pair_keys, edge_pair, counts = np.unique(keys, return_inverse=True, return_counts=True)
    weight = 1.0 / counts[edge_pair] if aggregation == "mean" else np.ones(len(src))
    pair_rel = pair_keys // num_nodes
    return RelationPairs(
        edge_src=src,
        edge_pair=edge_pair.reshape(-1),
        edge_weight=weight.astype(np.float32),
        pair_dst=pair_keys % num_nodes,
        pair_rel=pair_rel,
        pairs_per_relation=np.bincount(pair_rel, minlength=num_relations).astype(np.int64),
    )


class _SegmentedMatmul(torch.autograd.Function):
    """Forward and backward write each segment's product straight into one preallocated output."""

    @staticmethod
    def forward(ctx, rows: torch.Tensor, weights: torch.Tensor, bounds: tuple[tuple[int, int], ...]):
        ctx.save_for_backward(rows, weights)
        ctx.bounds = bounds
        out = rows.new_empty(rows.shape[0], weights.shape[2])
        for r, (start, end) in enumerate(bounds):
            if end > start:
                torch.mm(rows[start:end], weights[r], out=out[start:end])
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        rows, weights = ctx.saved_tensors
        grad = grad.contiguous()
        if torch.is_grad_enabled():  # create_graph (second-order MAML): mm(out=) has no derivative
            return _differentiable_backward(ctx, rows, weights, grad)
        grad_rows = grad_weights = None
        if ctx.needs_input_grad[0]:
            grad_rows = rows.new_empty(rows.shape)
        if ctx.needs_input_grad[1]:
            grad_weights = torch.zeros_like(weights)
        for r, (start, end) in enumerate(ctx.bounds):
            if end == start:
                continue
            if grad_rows is not None:
                torch.mm(grad[start:end], weights[r].t(), out=grad_rows[start:end])
            if grad_weights is not None:
                torch.mm(rows[start:end].t(), grad[start:end], out=grad_weights[r])
        return grad_rows, grad_weights, None


def _differentiable_backward(ctx, rows: torch.Tensor, weights: torch.Tensor, grad: torch.Tensor):
    """The same gradients built from differentiable ops, so that they can be differentiated again.

    The row gradient is itself a segmented product (with each W_r transposed), so its own
    backward is this class's again; the weight gradient is one small product per relation.
    """
    grad_rows = grad_weights = None
    if ctx.needs_input_grad[0]:
        grad_rows = _SegmentedMatmul.apply(grad, weights.transpose(1, 2).contiguous(), ctx.bounds)
    if ctx.needs_input_grad[1]:
        grad_weights = torch.stack([rows[start:end].t() @ grad[start:end] if end > start
                                    else weights.new_zeros(weights.shape[1:]) for start, end in ctx.bounds])
    return grad_rows, grad_weights, None


def segmented_matmul(rows: torch.Tensor, weights: torch.Tensor, segment_sizes: list[int]) -> torch.Tensor:
    """Rows grouped in consecutive segments, segment r multiplied by weights[r]: (P, i) x (R, i, o) -> (P, o).

    ``dgl.ops.segment_mm`` does the same, but on the CPU its backward slices into
    full-size zero tensors once per relation (R x P x d fills, measured 4x slower end to
    end on the ReDial KG), and ``split`` + per-segment ``@`` + ``cat`` copies every
    activation and gradient once more; writing into preallocated slices avoids both.
    """
    ends = np.cumsum(segment_sizes).tolist()
    bounds = tuple(zip([0, *ends[:-1]], ends))
    if not bounds or ends[-1] != rows.shape[0]:
        raise ValueError(f"segment sizes sum to {ends[-1] if ends else 0}, rows have {rows.shape[0]}")
    return _SegmentedMatmul.apply(rows.contiguous(), weights.contiguous(), bounds)


class BasisRelationalLayer(nn.Module):
    """One R-GCN layer over a precomputed :class:`RelationPairs` structure."""

    def __init__(self, dim_in: int, dim_out: int, num_relations: int, num_bases: int, bias: bool = True):
        super().__init__()
        self.num_relations = num_relations
        self.bases = nn.Parameter(torch.empty(num_bases, dim_in, dim_out))
        self.coefficients = nn.Parameter(torch.empty(num_relations, num_bases))
        self.root = nn.Parameter(torch.empty(dim_in, dim_out))
        self.bias = nn.Parameter(torch.zeros(dim_out)) if bias else None
        for weight in (self.bases, self.coefficients, self.root):
            nn.init.xavier_uniform_(weight)

    def relation_weights(self) -> torch.Tensor:
        """W_r = sum_b a_rb V_b, shape (R, dim_in, dim_out)."""
        return torch.einsum("rb,bio->rio", self.coefficients, self.bases)

    def forward(self, h: torch.Tensor, pair_graph, edge_weight: torch.Tensor, pair_dst: torch.Tensor,
                pairs_per_relation: list[int]) -> torch.Tensor:
        from crs.compat.dgl import ops

        pair_inputs = ops.gspmm(pair_graph, "mul", "sum", h, edge_weight)  # (P, dim_in) neighbour means
        messages = segmented_matmul(pair_inputs, self.relation_weights(), pairs_per_relation)  # (P, dim_out)
        out = (h @ self.root).index_add(0, pair_dst, messages)
        return out + self.bias if self.bias is not None else out


def glorot_(weight: torch.Tensor) -> None:
    """PyG's ``glorot`` init: U(-a, a), a = sqrt(6 / (fan of the last two axes)), whatever the leading axes.

    (``nn.init.xavier_uniform_`` folds the trailing axes into the fans of a 3-d tensor, which
    for a (B, N, d) basis table gives a different scale than the released models start from.)
    """
    bound = (6.0 / (weight.size(-2) + weight.size(-1))) ** 0.5
    with torch.no_grad():
        weight.uniform_(-bound, bound)


class FeaturelessRelationalLayer(nn.Module):
    """The first R-GCN layer without input features (KGSF/C2-CRS code: PyG ``RGCNConv`` with ``x=None``).

    ``out_v = root[v] + b + sum_r 1/c_{v,r} sum_{j in N_r(v)} W_r[j]``, with
    ``W_r = sum_b a_rb V_b`` and each V_b an (N, d) table: the input of node j is its one-hot
    vector, so its message under relation r is *row j* of W_r.  Parameters (PyG's layout, so
    a PyG layer's weights copy over as they are): ``bases`` (B, N, d), ``coefficients``
    (R, B), ``root`` (N, d), ``bias`` (d).

    Computed as lookups: ``out_v - root[v] - b = sum_{e into v} sum_b (a_{r_e,b} / c_{v,r_e}) V_b[src_e]``
    is one weighted bag sum of table rows per destination, i.e. ``F.embedding_bag`` over the
    (B*N, d) view of ``bases`` with E*B row ids and per-row weights: each message is a row
    read by index, O(B E d), and nothing larger than (N, d) materialised.  PyG's ``RGCNConv``
    instead builds every W_r, an (R, N, d) tensor (1.1 GB in float32 on ReDial), and
    ``FastRGCNConv`` gathers it per edge.  While choosing the method, embedding_bag's
    forward+backward on ReDial (1 thread) took about 3.6 s of CPU against 8.9 s for one DGL SpMM
    per basis (measured by hand, no script kept); ``benchmarks/bench_rgcn_featureless.py`` gives
    3.18 s against 1.52 s for the default layer (BENCHMARKS.md section 3).  The price:
    embedding_bag has no double backward, so this layer is first-order only (a MAML inner loop
    may adapt the slots after it, as kgsf-maml does, not the layer).

    Size on ReDial's KGSF graph (64,363 nodes, 34 relations, d 128, 8 bases; measured with
    ``EntityGraphRGCN``): 74,146,576 parameters featureless against 8,386,320 for the default
    layer on learned 128-d node embeddings.
    """

    def __init__(self, num_nodes: int, dim_out: int, num_relations: int, num_bases: int, bias: bool = True):
        super().__init__()
        self.num_relations = num_relations
        self.bases = nn.Parameter(torch.empty(num_bases, num_nodes, dim_out))
        self.coefficients = nn.Parameter(torch.empty(num_relations, num_bases))
        self.root = nn.Parameter(torch.empty(num_nodes, dim_out))
        self.bias = nn.Parameter(torch.zeros(dim_out)) if bias else None
        for weight in (self.bases, self.coefficients, self.root):  # PyG's init, as the released models start
            glorot_(weight)

    def forward(self, rows: torch.Tensor, offsets: torch.Tensor, edge_rel: torch.Tensor,
                edge_weight: torch.Tensor) -> torch.Tensor:
        """Edges sorted by destination: ``rows`` (E*B,) = ``b * N + src_e`` edge-major (row src_e of V_b),
        ``offsets`` (N,) where each destination's edges start (times B), ``edge_rel`` (E,) and
        ``edge_weight`` (E,) = 1 / c_{dst,r} (or 1) per edge."""
        per_row = (self.coefficients[edge_rel] * edge_weight.unsqueeze(1)).reshape(-1)  # a_{r_e,b} / c_{dst_e,r_e}
        table = self.bases.reshape(-1, self.bases.shape[-1])  # (B*N, d), a view
        out = F.embedding_bag(rows, table, offsets, mode="sum", per_sample_weights=per_row) + self.root
        return out + self.bias if self.bias is not None else out


class EntityGraphRGCN(ExternalEncoder):
    """`rgcn`: node embeddings of an entity graph refined by R-GCN layers; output port `nodes`."""

    @dataclass
    class Config:
        graph: str = "entity_kg"  # knowledge name of the graph
        dim: int = 128
        num_bases: int = 8
        layers: int = 1
        dropout: float = 0.0  # on each layer's input
        activation: Activation = "none"  # KGSF applies none after its single layer; relu or tanh for deeper stacks
        aggregation: Aggregation = "mean"  # mean: 1/|N_r(v)| (KGSF code); sum: Z = 1 (paper text)
        bias: bool = True
        # true: no node embeddings; the first layer has per-node basis rows, as KGSF's and C2-CRS's released
        # code (PyG RGCNConv with x=None; ~74M parameters on ReDial instead of ~8.4M)
        featureless: bool = False

    def __init__(self, config: Config, deps: BuildDeps):
        super().__init__(config, deps)
        check_positive(config.dim, f"{self.path}.dim", "dim")
        check_positive(config.num_bases, f"{self.path}.num_bases", "num_bases")
        check_non_negative(config.layers, f"{self.path}.layers", "layers")  # 0 = plain embeddings (KGSF "-DB" ablation)
        check_dropout(config.dropout, f"{self.path}.dropout")
        if config.aggregation not in AGGREGATIONS:
            raise ConfigError(f"{self.path}.aggregation", f"unknown aggregation '{config.aggregation}'",
                              f"use one of: {', '.join(AGGREGATIONS)}")
        self.act = activation(config.activation, f"{self.path}.activation")
        graph = deps.graph(config.graph)
        self.num_nodes = graph.num_nodes
        self.num_relations = max(graph.num_relations, 1)
        if len(graph.rel) and int(graph.rel.max()) >= self.num_relations:
            raise DataError(f"knowledge graph '{config.graph}'",
                            f"relation id {int(graph.rel.max())} but only {graph.num_relations} relation names",
                            "the knowledge source must index relations 0..len(relations)-1")
        if config.featureless and config.layers < 1:
            raise ConfigError(f"{self.path}.layers", "a featureless R-GCN needs at least one layer (its first "
                                                     "layer is what gives the nodes their representations)",
                              "set layers: 1 (KGSF), or featureless: false for plain node embeddings")
        # featureless: the first layer reads one-hot node ids, so there is no embedding table to learn
        self.embeddings = None if config.featureless else node_embeddings(self.num_nodes, config.dim)
        self.layers = nn.ModuleList(
            FeaturelessRelationalLayer(self.num_nodes, config.dim, self.num_relations, config.num_bases, config.bias)
            if config.featureless and i == 0 else
            BasisRelationalLayer(config.dim, config.dim, self.num_relations, config.num_bases, config.bias)
            for i in range(config.layers))
        self.dropout = nn.Dropout(config.dropout)

        pairs = relation_pairs(graph.src, graph.dst, graph.rel, self.num_nodes, self.num_relations,
                               config.aggregation)
        self.num_pairs = len(pairs.pair_dst)
        # graph structure follows .to(device) but is data, not checkpoint state
        for name in ("edge_src", "edge_pair", "pair_dst"):
            self.register_buffer(name, torch.from_numpy(getattr(pairs, name)), persistent=False)
        self.register_buffer("edge_weight", torch.from_numpy(pairs.edge_weight).unsqueeze(-1), persistent=False)
        if config.featureless:  # the featureless layer sums table rows per destination node
            self._register_featureless_lookup(pairs, config.num_bases)
        # segment lengths are host-side Python ints: torch.split takes them as sizes
        self.pairs_per_relation = pairs.pairs_per_relation.tolist()
        self._graphs = DeviceGraphCache(self._build_graph)

    def _build_graph(self, device: torch.device):
        from crs.compat.dgl import bipartite_from_edges

        graph = bipartite_from_edges(self.edge_src.cpu(), self.edge_pair.cpu(), self.num_nodes, self.num_pairs)
        return graph.to(device)

    def _register_featureless_lookup(self, pairs: RelationPairs, num_bases: int) -> None:
        """The featureless layer's bag structure: edges sorted by destination, one row id per (edge, basis)."""
        dst = pairs.pair_dst[pairs.edge_pair]
        order = np.argsort(dst, kind="stable")
        src = pairs.edge_src[order]
        rows = (np.arange(num_bases)[None, :] * self.num_nodes + src[:, None]).reshape(-1)
        starts = np.concatenate([[0], np.cumsum(np.bincount(dst, minlength=self.num_nodes))[:-1]]) * num_bases
        for name, value in (("lookup_rows", rows), ("lookup_offsets", starts),
                            ("lookup_rel", pairs.pair_rel[pairs.edge_pair][order]),
                            ("lookup_weight", pairs.edge_weight[order])):
            self.register_buffer(name, torch.from_numpy(np.ascontiguousarray(value)), persistent=False)

    def output_ports(self) -> dict[str, Port]:
        return {"nodes": Port("entity_nodes", self.config.dim, doc="entity-graph node representations (n_nodes, dim)")}

    def forward(self, inputs: dict) -> dict:
        return {"nodes": self.encode()}

    def encode(self) -> torch.Tensor:
        """All node representations (num_nodes, dim)."""
        h = None if self.embeddings is None else self.embeddings.weight
        for layer in self.layers:
            if isinstance(layer, FeaturelessRelationalLayer):  # the first layer; one-hot inputs, no dropout
                h = layer(self.lookup_rows, self.lookup_offsets, self.lookup_rel, self.lookup_weight)
            else:  # the DGL pair graph is built (once per device) only when a basis layer runs
                graph = self._graphs.get(self.edge_src.device)
                h = layer(self.dropout(h), graph, self.edge_weight, self.pair_dst, self.pairs_per_relation)
            if self.act is not None:
                h = self.act(h)
        return h
