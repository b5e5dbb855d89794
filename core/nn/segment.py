"""Operations over segments of a flat edge list, in plain torch (no DGL), twice differentiable.

A *segment* is a group of rows sharing an id (e.g. the in-edges of one destination
node): ``segment[i]`` says which group row ``i`` belongs to.  Attention over graph
neighbours is a softmax within each segment followed by a weighted sum per segment.
DGL's attention kernels (edge softmax, SpMM over learned edge weights) have no double
backward, which MAML-style second-order training needs through an attention layer
(CCRS's user-guided relation attention); everything here is built
from ``index_add`` / ``gather`` / ``exp`` so autograd can differentiate it again.

- :func:`segment_softmax`: softmax of ``(E, ...)`` scores within each segment;
- :func:`segment_sum`: sum of ``(E, ...)`` rows per segment;
- :func:`csr_in_edges`: a CSR index of edges by destination (built once per graph);
- :func:`gather_segments`: the edges of chosen destinations, as a flat list with segment ids.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


def segment_sum(values: torch.Tensor, segment: torch.Tensor, num_segments: int) -> torch.Tensor:
    """Rows of `values` (E, ...) summed per segment id (E,) -> (num_segments, ...); empty segments are 0."""
    out = values.new_zeros((num_segments, *values.shape[1:]))
    return out.index_add(0, segment, values)


def segment_softmax(scores: torch.Tensor, segment: torch.Tensor, num_segments: int) -> torch.Tensor:
    """Softmax of `scores` (E, ...) over the rows of each segment, independently per trailing index.

    The per-segment maximum is subtracted for stability; it is detached, which does not
    change the result (softmax is shift invariant) and keeps every derivative, of any
    order, exact.  Rows of a segment sum to 1; an empty segment simply has no rows.
    """
    if scores.shape[0] == 0:
        return scores
    index = segment.view(-1, *([1] * (scores.dim() - 1))).expand_as(scores)
    peak = scores.new_full((num_segments, *scores.shape[1:]), float("-inf"))
    peak = peak.scatter_reduce(0, index, scores.detach(), reduce="amax", include_self=True)
    weights = torch.exp(scores - peak.gather(0, index))
    total = segment_sum(weights, segment, num_segments)
    return weights / total.gather(0, index)


@dataclass
class CSRInEdges:
    """Edges grouped by destination: the in-edges of node v are ``src/rel[indptr[v]:indptr[v + 1]]``."""

    indptr: torch.Tensor  # long (N + 1,)
    src: torch.Tensor  # long (E,)
    rel: torch.Tensor  # long (E,)

    def degree(self, nodes: torch.Tensor) -> torch.Tensor:
        return self.indptr[nodes + 1] - self.indptr[nodes]


def csr_in_edges(src: torch.Tensor, dst: torch.Tensor, rel: torch.Tensor, num_nodes: int,
                 max_in_edges: int = 0) -> CSRInEdges:
    """Group edges by destination (stable: each node keeps its edges in the given order).

    ``max_in_edges > 0`` keeps only the first that many in-edges of each node, so shuffle
    the edges beforehand (with a fixed seed) for a random but reproducible neighbour sample.
    """
    src, dst, rel = (torch.as_tensor(t, dtype=torch.long) for t in (src, dst, rel))
    order = torch.argsort(dst, stable=True)
    src, dst, rel = src[order], dst[order], rel[order]
    counts = torch.bincount(dst, minlength=num_nodes)
    if max_in_edges > 0 and len(dst):
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.arange(len(dst)) - starts[dst]
        keep = rank < max_in_edges
        src, dst, rel = src[keep], dst[keep], rel[keep]
        counts = counts.clamp(max=max_in_edges)
    indptr = torch.zeros(num_nodes + 1, dtype=torch.long)
    indptr[1:] = torch.cumsum(counts, 0)
    return CSRInEdges(indptr, src, rel)


def gather_segments(csr: CSRInEdges, nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The in-edges of `nodes` (P,) as ``(edge ids (E',), segment (E',))``: segment = position in `nodes`.

    Only these edges are touched, so the cost follows the degrees of the nodes asked
    for, not the size of the graph (a batch's context entities, not every node).
    """
    counts = csr.degree(nodes)
    segment = torch.repeat_interleave(torch.arange(len(nodes), device=nodes.device), counts)
    if segment.numel() == 0:
        return segment, segment
    first = torch.cumsum(counts, 0) - counts  # offset of each segment in the flat list
    offset = torch.arange(segment.numel(), device=nodes.device) - first[segment]
    return csr.indptr[nodes][segment] + offset, segment
