"""CCRS's user-guided relation attention over the entity graph (Li et al. 2022, Eq. 1-6).

Type ``user_relation_attention`` (external encoder).  For a mentioned entity e, its
in-neighbours e' (edge relation r, reverse edges under the same relation id, as in
``rgcn``) and user u, per head i of k (d_k = d / k):

    T_i = W_i^T h(e),   S_i = W_i^S h(e')                                   (Eq. 1)
    gamma_i(r, u) = vec(A_r^i) . W_u U_u                                    (user intention on r)
    g_i = S_i^T A_r^i T_i * gamma_i(r, u) / sqrt(d)                         (Eq. 2)
    G = softmax over N(e) of [g_1 .. g_k]                                   (Eq. 3)
    f_i = M_r^i W_i^M h(e'),  F = [f_1 .. f_k]                              (Eq. 4)
    h^l(e) = GELU(W^A sum_{e'} G . F) + h^{l-1}(e)                          (Eq. 5-6)

with h^0 = Emb_e and U_u = Emb_u[user] (row 0: the unknown user).  Only the last layer
is user-conditioned; earlier ones (``layers > 1``) use gamma = 1 over the whole graph.

Why plain torch and not DGL: MAML's second-order meta-gradient differentiates this
layer twice, and DGL's attention kernels (edge softmax, SpMM over learned edge weights)
have no double backward, as the spec found (R-GCN's SpMM over fixed weights does have
one, which is why ``rgcn`` can stay on DGL).  The layer gathers
only the in-edges of the (user, entity) pairs a batch mentions (crs.nn.segment), so
its cost follows their degrees (ReDial: movies <= 50 in-edges, the largest hub 2,717).

Outputs:

- ``context_entity_states`` (B, E, d): H_u, the user-conditioned h(e) at each
  position of ``batch.context_entities`` (zero on padding);
- ``entity_nodes`` (N, d): the item table H~ of Eq. 8 for the recommender.  Item rows
  (``neutral_rows: items``; every row with ``all``) go through the last layer with
  gamma = 1, i.e. user-neutral -- our reading: the paper does not say which user
  would condition them.  Other rows hold the last layer's input h^{L-1}.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from crs.errors import ConfigError, DataError, check_positive_ints
from crs.interfaces import BuildDeps, ExternalEncoder, Port
from crs.nn.segment import CSRInEdges, csr_in_edges, gather_segments, segment_softmax, segment_sum

NeutralRows = Literal["items", "all"]


class RelationAttentionLayer(nn.Module):
    """One layer of Eq. 1-6 for a set of destination nodes and their in-edges."""

    def __init__(self, dim: int, heads: int, num_relations: int, user_dim: int = 0):
        super().__init__()
        self.dim, self.heads, self.head_dim = dim, heads, dim // heads
        dk = self.head_dim
        self.target = nn.Linear(dim, dim, bias=False)  # W^T, all heads stacked
        self.source = nn.Linear(dim, dim, bias=False)  # W^S
        self.message = nn.Linear(dim, dim, bias=False)  # W^M
        self.aggregate = nn.Linear(dim, dim, bias=False)  # W^A (no bias: a node without neighbours keeps h^{l-1})
        self.relation_attention = nn.Parameter(torch.empty(num_relations, heads, dk, dk))  # A_r^i
        self.relation_message = nn.Parameter(torch.empty(num_relations, heads, dk, dk))  # M_r^i
        # W_u (d_k^2 x d_u): maps the user embedding into the space of the flattened A_r^i
        self.user_projection = nn.Linear(user_dim, dk * dk, bias=False) if user_dim else None
        for linear in (self.target, self.source, self.message, self.aggregate, self.user_projection):
            if linear is not None:
                nn.init.xavier_uniform_(linear.weight)
        for table in (self.relation_attention, self.relation_message):
            for block in table.view(-1, dk, dk):
                nn.init.xavier_uniform_(block)

    def user_gamma(self, users: torch.Tensor) -> torch.Tensor:
        """gamma (P, R, k): each user's intention on each relation, per head (users: (P, d_u) embeddings)."""
        projected = self.user_projection(users)  # (P, d_k^2)
        flat = self.relation_attention.flatten(2)  # (R, k, d_k^2)
        return torch.einsum("rkx,px->prk", flat, projected)

    def forward(self, h: torch.Tensor, nodes: torch.Tensor, src: torch.Tensor, rel: torch.Tensor,
                segment: torch.Tensor, gamma: torch.Tensor | None = None, return_attention: bool = False):
        """New states (P, d) of `nodes` (P,) from their in-edges (src, rel, segment = position in `nodes`).

        `gamma` (P, R, k) conditions the attention on each destination's user; None means gamma = 1.
        With ``return_attention`` also returns G (E, k).
        """
        count, k, dk = len(nodes), self.heads, self.head_dim
        h_nodes = h.index_select(0, nodes)
        targets = self.target(h_nodes).view(count, k, dk)
        h_src = h.index_select(0, src)
        sources = self.source(h_src).view(-1, k, dk)
        values = self.message(h_src).view(-1, k, dk)
        scores, messages = self._relation_terms(sources, values, targets, rel, segment)
        if gamma is not None:
            scores = scores * gamma[segment, rel]
        attention = segment_softmax(scores / math.sqrt(self.dim), segment, count)  # (E, k)
        pooled = segment_sum(attention.unsqueeze(-1) * messages, segment, count).view(count, self.dim)
        out = F.gelu(self.aggregate(pooled)) + h_nodes
        return (out, attention) if return_attention else out

    def _relation_terms(self, sources, values, targets, rel, segment):
        """S^T A_r T (E, k) and M_r W^M h(e') (E, k, d_k), one block of edges per relation.

        Gathering A_r per edge would materialise (E, k, d_k, d_k); relations are few
        (34 on ReDial), so the edges are grouped by relation and each group uses its matrices once.
        """
        order = torch.argsort(rel)
        counts = torch.bincount(rel, minlength=self.relation_attention.shape[0]).tolist()
        scores, messages, start = [], [], 0
        for r, n in enumerate(counts):
            if n == 0:
                continue
            idx = order[start:start + n]
            start += n
            query = torch.einsum("ekd,kdf->ekf", sources.index_select(0, idx), self.relation_attention[r])
            scores.append((query * targets.index_select(0, segment.index_select(0, idx))).sum(-1))
            messages.append(torch.einsum("kfd,ekd->ekf", self.relation_message[r], values.index_select(0, idx)))
        if not scores:
            empty = sources.new_zeros(0, self.heads)
            return empty, sources.new_zeros(0, self.heads, self.head_dim)
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(len(order), device=order.device)
        # back from relation order to edge order
        return torch.cat(scores).index_select(0, inverse), torch.cat(messages).index_select(0, inverse)


class UserRelationAttention(ExternalEncoder):
    """`user_relation_attention`: user-conditioned entity states of the mentioned entities (CCRS Eq. 1-6)."""

    @dataclass
    class Config:
        graph: str = "entity_kg"  # knowledge name of the entity graph
        dim: int = 128
        heads: int = 4
        layers: int = 1  # only the last layer is user-conditioned
        user_dim: int = 128
        max_neighbors: int = 0  # in-edges kept per entity (a seeded sample); 0 = all
        neutral_rows: NeutralRows = "items"  # rows of entity_nodes that go through the last layer (gamma = 1)

    def __init__(self, config: Config, deps: BuildDeps):
        super().__init__(config, deps)
        check_positive_ints(config, ("dim", "heads", "layers", "user_dim"), self.path,
                            "set it to 1 or more (CCRS: dim 128, heads 4, layers 1, user_dim 128)")
        if config.dim % config.heads:
            raise ConfigError(f"{self.path}.heads", f"dim {config.dim} is not divisible by heads {config.heads}",
                              "choose heads that divide dim (CCRS: dim 128, heads 4)")
        if config.max_neighbors < 0:
            raise ConfigError(f"{self.path}.max_neighbors", f"must be 0 (all) or more, got {config.max_neighbors}")
        graph = deps.graph(config.graph)
        self.num_nodes = graph.num_nodes
        num_relations = max(graph.num_relations, 1)
        if len(graph.rel) and int(graph.rel.max()) >= num_relations:
            raise DataError(f"knowledge graph '{config.graph}'",
                            f"relation id {int(graph.rel.max())} but only {graph.num_relations} relation names",
                            "the knowledge source must index relations 0..len(relations)-1")
        self.entity_embeddings = nn.Embedding(self.num_nodes, config.dim, padding_idx=0)
        self.user_embeddings = nn.Embedding(max(int(deps.num_users), 1), config.user_dim)
        nn.init.xavier_uniform_(self.entity_embeddings.weight)  # Glorot, as the paper says
        nn.init.xavier_uniform_(self.user_embeddings.weight)
        with torch.no_grad():
            self.entity_embeddings.weight[0].zero_()  # the pad node
        self.layers = nn.ModuleList(
            RelationAttentionLayer(config.dim, config.heads, num_relations,
                                   config.user_dim if i == config.layers - 1 else 0)
            for i in range(config.layers))
        csr = self._in_edges(graph, config.max_neighbors)
        # graph structure: follows .to(device), but is data rebuilt from the graph, not checkpoint state
        self.register_buffer("in_indptr", csr.indptr, persistent=False)
        self.register_buffer("in_src", csr.src, persistent=False)
        self.register_buffer("in_rel", csr.rel, persistent=False)
        if config.neutral_rows == "items" and deps.items is not None:
            rows = torch.unique(torch.as_tensor(deps.items.entity_nodes, dtype=torch.long))
            rows = rows[rows > 0]
        else:
            rows = torch.arange(1, self.num_nodes)
        self.register_buffer("neutral_nodes", rows, persistent=False)

    @staticmethod
    def _in_edges(graph, max_neighbors: int) -> CSRInEdges:
        """Stored edges plus their reverses (same relation id), self-loops dropped, grouped by destination."""
        src, dst, rel = (np.asarray(a, dtype=np.int64) for a in (graph.src, graph.dst, graph.rel))
        keep = src != dst
        src, dst, rel = src[keep], dst[keep], rel[keep]
        src, dst, rel = np.concatenate([src, dst]), np.concatenate([dst, src]), np.concatenate([rel, rel])
        if max_neighbors > 0:  # a fixed sample of the neighbours: shuffle once with a fixed seed, keep the first
            order = np.random.default_rng(0).permutation(len(src))
            src, dst, rel = src[order], dst[order], rel[order]
        return csr_in_edges(torch.from_numpy(src), torch.from_numpy(dst), torch.from_numpy(rel), graph.num_nodes,
                            max_neighbors)

    # ----------------------------------------------------------------- ports
    def input_ports(self) -> dict[str, Port]:
        return {
            "user": Port("batch.user_index", doc="long (B,) user index, 0 = unknown user"),
            "index": Port("batch.context_entities", doc="long (B, E) entity-node ids, 0 = pad"),
            "mask": Port("batch.context_entities_mask", doc="bool (B, E)"),
        }

    def output_ports(self) -> dict[str, Port]:
        return {
            "states": Port("context_entity_states", self.config.dim,
                           doc="user-conditioned states of the context entities H_u (B, E, dim); zero on padding"),
            "nodes": Port("entity_nodes", self.config.dim,
                          doc="node table (N, dim): item rows user-neutral (gamma = 1), others h^{L-1}"),
        }

    # ------------------------------------------------------------- running
    def _csr(self) -> CSRInEdges:
        return CSRInEdges(self.in_indptr, self.in_src, self.in_rel)

    def _layer(self, layer: RelationAttentionLayer, h: torch.Tensor, nodes: torch.Tensor,
               gamma: torch.Tensor | None = None, return_attention: bool = False):
        edges, segment = gather_segments(self._csr(), nodes)
        return layer(h, nodes, self.in_src.index_select(0, edges), self.in_rel.index_select(0, edges), segment,
                     gamma, return_attention)

    def base_states(self) -> torch.Tensor:
        """h^{L-1} (N, d): the embeddings through every layer but the last (gamma = 1, whole graph)."""
        h = self.entity_embeddings.weight
        every_node = torch.arange(self.num_nodes, device=h.device)
        for layer in self.layers[:-1]:
            h = self._layer(layer, h, every_node)
        return h

    def user_states(self, h: torch.Tensor, users: torch.Tensor, nodes: torch.Tensor,
                    return_attention: bool = False):
        """Last-layer states (P, d) of `nodes` (P,) for `users` (P,) (user indices), optionally with G."""
        last = self.layers[-1]
        gamma = last.user_gamma(self.user_embeddings(users))
        return self._layer(last, h, nodes, gamma, return_attention)

    def forward(self, inputs: dict) -> dict:
        index = inputs["index"]
        mask = inputs.get("mask")
        mask = index != 0 if mask is None else mask.bool()
        users = inputs["user"].to(index.device).long()
        h = self.base_states()
        # one computation per distinct (user, entity) pair of the batch: rows of a conversation repeat them
        rows = users.unsqueeze(1).expand_as(index)[mask]
        keys = rows * self.num_nodes + index[mask]
        pairs, position = torch.unique(keys, return_inverse=True)
        if len(pairs):
            pair_states = self.user_states(h, pairs // self.num_nodes, pairs % self.num_nodes)
        else:  # no entity in the whole batch: an empty user lookup has no double backward in torch (2.13:
            # "cannot reshape tensor of 0 elements"), which a second-order inner step over Emb_u would need
            pair_states = h.new_zeros(0, h.shape[-1])
        states = h.new_zeros(*index.shape, h.shape[-1])
        states = states.index_put((mask.nonzero(as_tuple=True)), pair_states.index_select(0, position))
        neutral = self._layer(self.layers[-1], h, self.neutral_nodes)
        nodes = h.index_copy(0, self.neutral_nodes, neutral)
        return {"states": states, "nodes": nodes}
