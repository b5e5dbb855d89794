"""KGSF's copy mechanism (Eq. 18) as a gated pointer-generator mixture over graph-node tokens.

The paper writes the output distribution as a sum

    Pr(y_i) = Pr1(y_i | R_i) + Pr2(y_i | R_i, G1, G2)

where Pr1 is the softmax over the vocabulary and Pr2 "copies" the words and items
whose graph nodes occur in the context.  A plain sum of two distributions is not a
distribution, so (as in pointer-generator networks) we mix them with a learned gate:

    Pr(y_i) = p_gen * Pr1(y_i) + (1 - p_gen) * Pr2(y_i),   p_gen = sigmoid(w^T R_i + b)

which keeps Eq. 18's two terms and their roles while summing to one; the gate is the
learned share of each term that the paper's sum leaves implicit.

Pr2 is an attention distribution of the decoder state R_i (projected by W_c) over the
context's graph nodes (word nodes V(C) and entity nodes N(C), already projected to the
decoder dimension), moved onto vocabulary tokens by a node -> token map: a word node
becomes the vocab token of the same word, an item's entity node becomes the item token
``@<item_id>``, and nodes without a token (other entities, multi-word concepts, words
outside the vocabulary) are excluded from the copy softmax so that no mass is lost.
A row with no copyable node in its context uses Pr1 alone (its gate is forced open).
Everything is computed in log space: log Pr = logsumexp(log p_gen + log Pr1,
log(1 - p_gen) + log Pr2), so a token absent from the context gets log(1-p_gen)+(-inf)
without NaN gradients.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:  # pragma: no cover
    from crs.data.vocab import Vocabulary
    from crs.knowledge import IndexedGraph


def word_node_tokens(graph: "IndexedGraph", vocab: "Vocabulary") -> torch.Tensor:
    """long (num_nodes,): the vocab id of each word node's word, 0 (pad) when it has none."""
    tokens = torch.zeros(graph.num_nodes, dtype=torch.long)
    for node, name in enumerate(graph.nodes):
        if node == 0:
            continue  # the pad node
        token = vocab.index.get(name, vocab.index.get(name.lower(), 0))
        tokens[node] = token if token > vocab.sep else 0  # never copy special tokens
    return tokens


def entity_node_tokens(num_nodes: int, item_ids: Sequence[str], item_nodes: torch.Tensor,
                       vocab: "Vocabulary") -> torch.Tensor:
    """long (num_nodes,): the vocab id of each item node's placeholder token, 0 for every other node.

    The token is :func:`crs.data.vocab.item_token` of the item id, the same function the
    vocabulary and mention replacement use, so every item with a node is copyable
    whatever its id looks like (INSPIRED's DBpedia URIs included).
    """
    from crs.data.vocab import item_token

    tokens = torch.zeros(num_nodes, dtype=torch.long)
    for item_id, node in zip(item_ids, item_nodes.tolist()):
        token = vocab.index.get(item_token(item_id), 0)
        if token and 0 < node < num_nodes:
            tokens[node] = token
    return tokens


class CopyMixture(nn.Module):
    """Mixes vocabulary log-probabilities with a copy distribution over context node tokens."""

    def __init__(self, dim: int):
        super().__init__()
        self.query = nn.Linear(dim, dim, bias=False)  # W_c: decoder state -> node space
        self.gate = nn.Linear(dim, 1)  # p_gen = sigmoid(w^T R_i + b)
        self.scale = 1.0 / math.sqrt(dim)

    def attention(self, hidden: torch.Tensor, nodes: torch.Tensor, copyable: torch.Tensor) -> torch.Tensor:
        """Copy attention (B, T, N) of decoder states (B, T, D) over node states (B, N, D)."""
        scores = (self.query(hidden) @ nodes.transpose(1, 2)) * self.scale  # (B, T, N)
        scores = scores.masked_fill(~copyable[:, None, :], -1e9)  # masked nodes get exactly 0 mass
        return torch.softmax(scores, dim=-1)

    def copy_log_probs(self, hidden: torch.Tensor, nodes: torch.Tensor, node_tokens: torch.Tensor,
                       copyable: torch.Tensor, vocab_size: int) -> torch.Tensor:
        """log Pr2 over the vocabulary (B, T, V); -inf on tokens of no copyable context node.

        hidden (B, T, D); nodes (B, N, D) projected node states; node_tokens (B, N) vocab ids;
        copyable (B, N) bool.  Rows without any copyable node give a uniform-over-nothing
        placeholder (finite garbage) that the caller must gate off.
        """
        attention = self.attention(hidden, nodes, copyable)
        index = node_tokens[:, None, :].expand(-1, hidden.size(1), -1)
        probs = hidden.new_zeros(hidden.size(0), hidden.size(1), vocab_size).scatter_add(-1, index, attention)
        return _safe_log(probs)

    def _mix(self, hidden: torch.Tensor, log_vocab: torch.Tensor, log_copy: torch.Tensor,
             copyable: torch.Tensor) -> torch.Tensor:
        """log(p_gen * Pr1 + (1 - p_gen) * Pr2) for log Pr1, log Pr2 of any trailing shape."""
        logit = self.gate(hidden)  # (B, T, 1)
        log_gen, log_use_copy = F.logsigmoid(logit), F.logsigmoid(-logit)
        has_copy = copyable.any(dim=1)[:, None, None]  # (B, 1, 1)
        log_gen = torch.where(has_copy, log_gen, torch.zeros_like(log_gen))
        log_use_copy = torch.where(has_copy, log_use_copy, torch.full_like(log_use_copy, -math.inf))
        if log_vocab.dim() == 2:  # per-target values (B, T)
            log_gen, log_use_copy = log_gen.squeeze(-1), log_use_copy.squeeze(-1)
        return torch.logaddexp(log_gen + log_vocab, log_use_copy + log_copy)

    def forward(self, hidden: torch.Tensor, vocab_log_probs: torch.Tensor, nodes: torch.Tensor,
                node_tokens: torch.Tensor, copyable: torch.Tensor) -> torch.Tensor:
        """log of the mixture p_gen * Pr1 + (1 - p_gen) * Pr2, shape (B, T, V)."""
        log_copy = self.copy_log_probs(hidden, nodes, node_tokens, copyable, vocab_log_probs.size(-1))
        return self._mix(hidden, vocab_log_probs, log_copy, copyable)

    def target_log_probs(self, hidden: torch.Tensor, target_vocab_log_probs: torch.Tensor, nodes: torch.Tensor,
                         node_tokens: torch.Tensor, copyable: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The mixture's log-probability of each target token (B, T), without any (B, T, V) tensor.

        Pr2(y) is the attention mass on the context nodes whose token is y, so it is a
        masked sum over the (few) context nodes rather than a scatter over the vocabulary.
        """
        attention = self.attention(hidden, nodes, copyable)  # (B, T, N)
        hits = node_tokens[:, None, :] == targets[:, :, None]  # (B, T, N)
        log_copy = _safe_log((attention * hits).sum(-1))
        return self._mix(hidden, target_vocab_log_probs, log_copy, copyable)


def _safe_log(probs: torch.Tensor) -> torch.Tensor:
    # where() rather than log(probs): log(0) would be -inf with an infinite gradient (NaN after
    # the chain rule); the clamped branch keeps the selected gradient finite.
    return torch.where(probs > 0, probs.clamp_min(1e-38).log(), torch.full_like(probs, -math.inf))
