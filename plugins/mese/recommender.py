"""MESE's recommender: candidate selection by the dialogue query, then ranking by the PLM over the KV cache.

Type ``mese`` (recommender, slot ``recommender``); paper §3.4, official ``MESE_Train.ipynb``.

- **Select.** q = W_q · D_R (``rec_query``, the state at [REC]; hidden -> ``select_dim``);
  the logits of one target against sampled negatives are q · k (``item_keys``);
  ``loss.select`` = cross-entropy with the target first among 1 + ``select_negatives``.
- **Rank.** The ITEs of 1 target + ``rank_negatives`` negatives are appended after D over
  its KV cache as one *candidate block* (:mod:`crs.nn.kv_cache`): all at one position id
  (``candidate_position: after_rec`` = the position after the final [REC]; ``zero`` is the
  official choice, made for GPT-2's learned positions, not for RoPE), each attending to D
  and to the other candidates, not causally, so a candidate's score never depends on its
  place in the block.  q_i = w_r · h_i + b; ``loss.rank`` = cross-entropy of q / ``rank_temperature``.
  (The official class weight of 30 on the positive has no effect on a one-positive
  softmax and is left out.)
- **Evaluation.** The top ``top_k`` items by q · k come from a faiss index
  (:class:`crs.nn.retrieval.ItemRetrieval`, exact inner product unless ``index: hnsw``),
  built from the item encoder's keys at the first forward of each evaluation pass and
  never in training; one rank pass (``rank_chunk`` candidates per block) scores them.
  ``scores`` (B, n_items) holds the rank logits on those K and -inf elsewhere, so R@k is
  "retrieved and ranked within k", as in the paper, and R@K is the retrieval hit rate.
  The losses are given in evaluation too (validation reports them), over negatives in a
  fixed order when the encoder drew none.

Targets: ``batch.target_item`` where set (rec samples, one per row), else every item of
``batch.target_items`` (conversation samples: one (row, target) pair each).  Negatives are
the item encoder's ``item_negatives`` (uniform, shared by the batch, never a batch item), the
first ``select_negatives`` / ``rank_negatives`` of them; without that port, the encoded
items that are no target of the batch.  In training, ``scores`` are the selection logits
over the items encoded for the batch (the dtype's minimum elsewhere, finite so that a
loss over them stays finite): cheap, and only there for shape.

Without ``plm_context`` (no ``mese_plm`` wired) there is no rank pass: scores are the
selection logits, and only ``loss.select`` is given.  No parameter depends on the number
of items (W_q, w_r, b only), so items added after training are recommendable.
"""
from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Optional

import torch
import torch.nn.functional as F
from torch import nn

from crs.errors import ConfigError, check_positive_ints
from crs.interfaces import BuildDeps, Port, Recommender
from crs.nn.kv_cache import full_block, run_block
from crs.nn.retrieval import ItemRetrieval

CandidatePosition = Literal["after_rec", "zero"]
POSITIONS = typing.get_args(CandidatePosition)


class MeseRecommender(Recommender):
    """Select by q · k, rank by the PLM over the dialogue's cache (see the module doc)."""

    # the contract runs it after a tiny mese_plm (32 wide) with random item keys and ITEs: contract_inputs
    contract_node: ClassVar[dict] = {"hidden_dim": 32, "select_dim": 6, "top_k": 4, "select_negatives": 2,
                                     "rank_negatives": 2}

    @classmethod
    def contract_inputs(cls, deps: BuildDeps, batch: dict) -> dict[str, Any]:
        from .plm import contract_upstream

        return contract_upstream(deps, batch, select_dim=6)

    @dataclass
    class Config:
        hidden_dim: int = 576  # the PLM's width: rec_query, ITEs, the rank head's input
        select_dim: int = 768  # the item encoder's key width
        select_negatives: int = 99  # negatives per target in loss.select
        rank_negatives: int = 149  # negatives per target in loss.rank (paper: 150)
        rank_temperature: float = 1.2  # rank logits are divided by it in loss.rank
        candidate_position: CandidatePosition = "after_rec"  # position id of every candidate
        top_k: int = 500  # candidates retrieved (and ranked) per query at evaluation
        rank_chunk: int = 500  # candidates per rank block at evaluation (>= top_k: one block)
        index: Literal["flat", "hnsw"] = "flat"  # faiss index: exact inner product, or HNSW for huge catalogues
        metric: Literal["ip", "cosine"] = "ip"  # cosine: the official annoy "angular" index
        ef_search: Optional[int] = None  # HNSW beam width (default: crs.nn.retrieval's)

    def __init__(self, config: "MeseRecommender.Config", deps: BuildDeps):
        super().__init__(config, deps)
        check_positive_ints(config, ["hidden_dim", "select_dim", "select_negatives", "rank_negatives", "top_k",
                                     "rank_chunk"], self.path)
        if not config.rank_temperature > 0:
            raise ConfigError(f"{self.path}.rank_temperature", f"must be positive, got {config.rank_temperature}")
        if config.candidate_position not in POSITIONS:
            raise ConfigError(f"{self.path}.candidate_position", f"unknown position '{config.candidate_position}'",
                              f"use one of: {', '.join(POSITIONS)}")
        self.items = deps.items  # read at call time: `crs items add` appends to it
        self.query_projection = nn.Linear(config.hidden_dim, config.select_dim)  # W_q
        self.rank_head = nn.Linear(config.hidden_dim, 1)  # w_r, b
        self._index: ItemRetrieval | None = None

    # ----------------------------------------------------------------- ports
    def input_ports(self) -> dict[str, Port]:
        c = self.config
        return {
            "rec_query": Port("rec_query", c.hidden_dim, doc="(B, hidden) the PLM state at [REC]"),
            "plm_context": Port("plm_context", optional=True, doc="the mese_plm cache to rank over"),
            "item_index": Port("item_index", optional=True, doc="long (N,) items encoded (default 0..N-1)"),
            "item_keys": Port("item_keys", c.select_dim, doc="(N, select_dim) selection keys"),
            "item_embeds": Port("item_embeds", c.hidden_dim, optional=True, doc="(N, hidden) ITEs to rank"),
            "item_negatives": Port("item_negatives", optional=True, doc="bool (N,) the sampled negatives"),
            "target_item": Port("batch.target_item", optional=True),
            "target_items": Port("batch.target_items", optional=True),
            "target_items_mask": Port("batch.target_items_mask", optional=True),
        }

    def output_ports(self) -> dict[str, Port]:
        return {
            "scores": Port("scores", doc="(B, n_items): rank logits on the retrieved K, -inf elsewhere"),
            "loss.select": Port("loss.select", optional=True, doc="selection cross-entropy"),
            "loss.rank": Port("loss.rank", optional=True, doc="rank cross-entropy over the candidate block"),
        }

    # ----------------------------------------------------------------- lifecycle
    def train(self, mode: bool = True) -> "MeseRecommender":
        self._index = None  # keys will change
        return super().train(mode)

    def on_eval_start(self, **context: Any) -> None:
        self._index = None  # built from this pass's keys at its first forward

    # ----------------------------------------------------------------- pieces
    def n_items(self, item_index: torch.Tensor) -> int:
        if self.items is not None:
            return len(self.items)
        return int(item_index.max()) + 1 if item_index.numel() else 0

    def query(self, rec_query: torch.Tensor) -> torch.Tensor:
        """q = W_q · D_R, (B, select_dim)."""
        return self.query_projection(rec_query)

    def rank_logits(self, context: Any, candidate_embeds: torch.Tensor, prefix: Any = None) -> torch.Tensor:
        """Rank logits (B, M) of candidate ITEs (B, M, hidden) appended after D as one candidate block."""
        prefix = context.prefix if prefix is None else prefix
        rows, width = candidate_embeds.shape[:2]
        positions = (torch.zeros(rows, width, dtype=torch.long, device=prefix.mask.device)
                     if self.config.candidate_position == "zero"
                     else prefix.next_position().unsqueeze(1).expand(rows, width))
        hidden, _ = run_block(context.model, prefix, candidate_embeds, positions,
                              full_block(width, candidate_embeds.device))
        return self.rank_head(hidden).squeeze(-1)

    # ----------------------------------------------------------------- forward
    def forward(self, inputs: dict[str, Any]) -> dict[str, Any]:
        keys = inputs["item_keys"]
        item_index = inputs.get("item_index")
        if item_index is None:
            item_index = torch.arange(keys.shape[0], device=keys.device)
        q = self.query(inputs["rec_query"])
        if self.training:
            scores = self._select_scores(q, keys, item_index)
        else:
            scores = self._eval_scores(inputs, q, keys, item_index)
        # losses in evaluation too: validation reports them (one extra rank block of 1 + rank_negatives)
        return {"scores": scores, **self._losses(inputs, q, keys, item_index)}

    def _select_scores(self, q: torch.Tensor, keys: torch.Tensor, item_index: torch.Tensor) -> torch.Tensor:
        """Training-time scores: q . k on the encoded items, the dtype's (finite) minimum elsewhere."""
        scores = q.new_full((q.shape[0], self.n_items(item_index)), torch.finfo(q.dtype).min)
        scores[:, item_index] = q @ keys.T
        return scores

    def targets(self, inputs: dict[str, Any]) -> list[tuple[int, int]]:
        """(row, item) pairs to train on (see the module doc)."""
        single = inputs.get("target_item")
        if single is not None and bool((single >= 0).any()):
            return [(row, int(t)) for row, t in enumerate(single.tolist()) if t >= 0]
        many = inputs.get("target_items")
        if many is None:
            return []
        mask = inputs.get("target_items_mask")
        mask = torch.ones_like(many, dtype=torch.bool) if mask is None else mask.bool()
        pairs = []
        for row, (items, real) in enumerate(zip(many.tolist(), mask.tolist())):
            pairs += [(row, t) for t, r in zip(dict.fromkeys(items), real) if r and t >= 0]
        return pairs

    def _losses(self, inputs: dict[str, Any], q: torch.Tensor, keys: torch.Tensor, item_index: torch.Tensor
                ) -> dict[str, torch.Tensor]:
        row_of = {int(item): row for row, item in enumerate(item_index.tolist())}
        pairs = [(b, row_of[t]) for b, t in self.targets(inputs) if t in row_of]
        context, embeds = inputs.get("plm_context"), inputs.get("item_embeds")
        ranks = context is not None and embeds is not None
        if not pairs:  # no target in this batch: zero losses that keep a gradient path
            zero = q.sum() * 0.0
            return {"loss.select": zero, **({"loss.rank": zero} if ranks else {})}
        negatives = self._negative_rows(inputs, item_index, {row for _, row in pairs})
        rows = torch.tensor([b for b, _ in pairs], device=q.device)
        positives = torch.tensor([r for _, r in pairs], device=q.device)
        select = self._candidates(positives, negatives[:self.config.select_negatives])
        select_logits = (q[rows].unsqueeze(1) * keys[select]).sum(-1)
        zeros = torch.zeros(len(pairs), dtype=torch.long, device=q.device)
        out = {"loss.select": F.cross_entropy(select_logits, zeros)}
        if ranks:
            rank = self._candidates(positives, negatives[:self.config.rank_negatives])
            logits = self.rank_logits(context, embeds[rank], context.prefix.rows(rows))
            out["loss.rank"] = F.cross_entropy(logits / self.config.rank_temperature, zeros)
        return out

    @staticmethod
    def _candidates(positives: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
        """Rows (P, 1 + n): each pair's positive first, then the shared negatives."""
        return torch.cat([positives.unsqueeze(1), negatives.unsqueeze(0).expand(len(positives), -1)], dim=1)

    @staticmethod
    def _negative_rows(inputs: dict[str, Any], item_index: torch.Tensor, positive_rows: set[int]) -> torch.Tensor:
        """Rows of the negatives: the encoder's drawn ones; without any (evaluation encodes every item and draws
        none), the other encoded items in an order fixed by a private seed, so validation losses are repeatable
        and the global RNG (which training draws from) is not touched."""
        flags = inputs.get("item_negatives")
        if flags is not None and bool(flags.any()):
            return torch.nonzero(flags.bool().to(item_index.device), as_tuple=False).squeeze(1)
        order = torch.randperm(len(item_index), generator=torch.Generator().manual_seed(0))
        rows = [r for r in order.tolist() if r not in positive_rows]
        return torch.tensor(rows, dtype=torch.long, device=item_index.device)

    # ----------------------------------------------------------------- evaluation
    def retrieval(self, keys: torch.Tensor, item_index: torch.Tensor) -> ItemRetrieval:
        """The faiss index of this evaluation pass (built at its first forward, or when items were added)."""
        if self._index is None or len(self._index) != len(item_index):
            extra = {"ef_search": self.config.ef_search} if self.config.ef_search else {}
            self._index = ItemRetrieval(keys.shape[1], self.config.metric, self.config.index, **extra)
            self._index.build(keys, item_index)
        return self._index

    @torch.no_grad()
    def _eval_scores(self, inputs: dict[str, Any], q: torch.Tensor, keys: torch.Tensor, item_index: torch.Tensor
                     ) -> torch.Tensor:
        k = min(self.config.top_k, len(item_index))
        select, ids = self.retrieval(keys, item_index).search(q, k)
        scores = q.new_full((q.shape[0], self.n_items(item_index)), float("-inf"))
        context, embeds = inputs.get("plm_context"), inputs.get("item_embeds")
        found = ids >= 0
        safe = ids.clamp(min=0)
        if context is None or embeds is None:
            values = select
        else:
            lookup = torch.full((scores.shape[1],), -1, dtype=torch.long, device=q.device)
            lookup[item_index] = torch.arange(len(item_index), device=q.device)
            candidate_rows = lookup[safe]  # (B, K)
            parts = []
            for start in range(0, k, self.config.rank_chunk):
                chunk = candidate_rows[:, start:start + self.config.rank_chunk]
                parts.append(self.rank_logits(context, embeds[chunk]))
            values = torch.cat(parts, dim=1)
        rows, places = torch.nonzero(found, as_tuple=True)  # an index with fewer than K items pads with id -1
        scores[rows, safe[rows, places]] = values[rows, places].to(scores.dtype)
        return scores
