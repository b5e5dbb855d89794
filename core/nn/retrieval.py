"""Nearest-neighbour retrieval of items by inner product, on faiss.

A recommender that scores a query against item keys (``q . k``) cannot score every
item of a large catalogue with a big model; it retrieves the top K by the key
inner product first and ranks only those (MESE's candidate selection).  This module
is the index it searches:

- ``index: flat`` (default): exact inner product, ``IndexIDMap2(IndexFlatIP(d))``:
  the same top K as ``torch.topk(q @ K.T)``, so the index never changes what the
  training objective (a softmax over ``q . k``) ranks first;
- ``index: hnsw``: ``IndexHNSWFlat(d, 32, METRIC_INNER_PRODUCT)``, approximate, for
  catalogues far beyond ~100k items (``benchmarks/bench_retrieval.py`` measures its
  recall and latency; measured at 50k keys so far, BENCHMARKS.md section 8: 1M is the script's
  default, not yet run here);
- ``metric: cosine``: keys and queries are L2-normalised first (what the official
  MESE code's annoy "angular" index ranks by).

Ids are item indices (any int64), so an index can grow with :meth:`ItemRetrieval.add`
(``crs items add``) without renumbering.  Nothing here is a parameter: a model holds
an index as a plain attribute, rebuilt from its item keys at the start of each
evaluation (``Component.on_eval_start``), so the state dict never depends on the
number of items.  Tensors in, tensors out (on the query's device); faiss works on
float32 CPU arrays underneath.
"""
from __future__ import annotations

import typing
from typing import Literal

import numpy as np
import torch

Metric = Literal["ip", "cosine"]
IndexKind = Literal["flat", "hnsw"]
METRICS = typing.get_args(Metric)
INDEX_KINDS = typing.get_args(IndexKind)
HNSW_NEIGHBOURS = 32  # M: links per node; 32 is faiss's usual choice for d in the hundreds
DEFAULT_EF_SEARCH = 128  # beam width at query time: twice the 64 that gave recall@50 0.993 at 50k keys (margin)
DEFAULT_EF_CONSTRUCTION = 64

__all__ = ["ItemRetrieval", "METRICS", "INDEX_KINDS"]


def _faiss():
    # faiss is a hard dependency, imported late so that importing crs.nn stays cheap
    import faiss

    return faiss


class ItemRetrieval:
    """An inner-product index over item keys with int64 ids (see the module doc).

    :param dim: key width d.
    :param metric: "ip" (inner product) or "cosine".
    :param index: "flat" (exact) or "hnsw" (approximate).
    :param ef_search: HNSW beam width when searching (more: higher recall, slower).
    :param ef_construction: HNSW beam width when inserting.
    """

    def __init__(self, dim: int, metric: str = "ip", index: str = "flat", *, ef_search: int = DEFAULT_EF_SEARCH,
                 ef_construction: int = DEFAULT_EF_CONSTRUCTION):
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
        if index not in INDEX_KINDS:
            raise ValueError(f"index must be one of {INDEX_KINDS}, got {index!r}")
        if int(dim) < 1:
            raise ValueError(f"dim must be a positive integer, got {dim}")
        self.dim, self.metric, self.kind = int(dim), metric, index
        self.ef_search, self.ef_construction = int(ef_search), int(ef_construction)
        self.index = self._empty()

    def _empty(self):
        faiss = _faiss()
        if self.kind == "flat":
            return faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))
        hnsw = faiss.IndexHNSWFlat(self.dim, HNSW_NEIGHBOURS, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = self.ef_construction
        hnsw.hnsw.efSearch = self.ef_search
        self._hnsw = hnsw  # the map hides its inner index's type; keep a handle to set efSearch per search
        # IndexIDMap, not ...2: the second map only serves reconstruction by id, which nothing here needs
        return faiss.IndexIDMap(hnsw)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    # ----------------------------------------------------------------- building
    def build(self, keys: torch.Tensor, ids: torch.Tensor | None = None) -> "ItemRetrieval":
        """Replace the contents with `keys` (N, d); `ids` (N,) default to 0..N-1.  Returns self."""
        self.index = self._empty()
        return self.add(keys, ids)

    def add(self, keys: torch.Tensor, ids: torch.Tensor | None = None) -> "ItemRetrieval":
        """Insert `keys` (N, d) under `ids` (N,) (default: the next N ids after the current size)."""
        vectors = self._vectors(keys)
        if ids is None:
            ids = torch.arange(len(self), len(self) + vectors.shape[0])
        ids_np = np.ascontiguousarray(torch.as_tensor(ids).detach().cpu().numpy().astype(np.int64).reshape(-1))
        if ids_np.shape[0] != vectors.shape[0]:
            raise ValueError(f"{vectors.shape[0]} keys but {ids_np.shape[0]} ids")
        if vectors.shape[0]:
            self.index.add_with_ids(vectors, ids_np)
        return self

    def _vectors(self, x: torch.Tensor) -> np.ndarray:
        x = torch.as_tensor(x).detach().to("cpu", torch.float32)
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"expected vectors of shape (N, {self.dim}), got {tuple(x.shape)}")
        if self.metric == "cosine":
            x = torch.nn.functional.normalize(x, dim=-1)
        return np.ascontiguousarray(x.numpy())

    # ----------------------------------------------------------------- search
    def search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Top `k` items per query: ``(scores (B, k) float, ids (B, k) long)``, best first.

        With fewer than `k` items indexed, the missing places hold score -inf and id -1.
        """
        device = queries.device if torch.is_tensor(queries) else torch.device("cpu")
        q = self._vectors(queries)
        k = int(k)
        if k < 1:
            raise ValueError(f"k must be a positive integer, got {k}")
        if self.kind == "hnsw":
            self._hnsw.hnsw.efSearch = max(self.ef_search, k)  # a beam narrower than k cannot return k items
        scores, ids = self.index.search(q, k)
        scores_t = torch.from_numpy(scores).to(device)
        ids_t = torch.from_numpy(ids).to(device)
        return scores_t.masked_fill(ids_t < 0, float("-inf")), ids_t
