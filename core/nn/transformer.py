"""Transformer building blocks: masks, positions, encoder, and a decoder with a chain of memories.

Conventions (shared by every generator in the project):

- token id 0 is padding; a *mask* is a bool tensor that is True on real positions
  (the same convention as the ``batch.*_mask`` fields and of
  ``F.scaled_dot_product_attention``'s boolean masks).
- A *memory* is a pair ``(states (B, M, D), mask (B, M))`` the decoder attends to.
  :class:`DecoderLayer` runs causal self-attention, then one cross-attention per
  named source *in the configured order*, then the feed-forward block.  A plain
  Transformer has the single source ``("encoder",)``; the KGSF KG-enhanced decoder
  (Eq. 10-14) uses ``("words", "entities", "encoder")``.
- Layers are post-norm (residual, then LayerNorm), as in the original Transformer
  and the KGSF code base.

Rows whose memory is entirely padding (e.g. a context with no entities) would make a
softmax over nothing, i.e. NaN.  :class:`SafeAttention` handles them by letting such a
row attend to slot 0 (so the softmax is defined) and then *zeroing* the attention
output of that row (after the output projection, so not even its bias leaks in): the
residual connection passes the input through unchanged, which
is what "no information from this source" should mean.  A memory with zero length
(M == 0) gives a zero output without running attention at all.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, check_positive_ints
from .dropout import Dropout

Memory = tuple[torch.Tensor, torch.Tensor]  # (states (B, M, D), mask (B, M) bool, True = real)


def padding_mask(tokens: torch.Tensor, pad: int = 0) -> torch.Tensor:
    """Bool mask, True where `tokens` is not padding."""
    return tokens != pad


def causal_mask(length: int, device: torch.device | None = None) -> torch.Tensor:
    """Bool (T, T), True where position i must NOT see position j (j > i); nn.MultiheadAttention's convention."""
    return torch.ones(length, length, dtype=torch.bool, device=device).triu(1)


def keep_last(tokens: torch.Tensor, mask: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep each row's last `length` real tokens, moved to the front (works for left or right padding)."""
    from_end = mask.flip(1).long().cumsum(1).flip(1)  # 1 on the last real token, 2 on the one before, ...
    keep = mask & (from_end <= length)
    order = torch.sort((~keep).long(), dim=1, stable=True).indices[:, :length]  # kept positions first, in order
    return tokens.gather(1, order) * keep.gather(1, order), keep.gather(1, order)


def sinusoidal_positions(length: int, dim: int, device: torch.device | None = None) -> torch.Tensor:
    """Fixed sine/cosine position codes (Vaswani et al.), float (length, dim).

    Fixed codes need no maximum length baked into the parameters, so a checkpoint
    can decode longer than it was trained on.
    """
    position = torch.arange(length, dtype=torch.float, device=device).unsqueeze(1)
    rates = torch.exp(torch.arange(0, dim, 2, dtype=torch.float, device=device) * (-math.log(10000.0) / dim))
    codes = torch.zeros(length, dim, device=device)
    codes[:, 0::2] = torch.sin(position * rates)
    codes[:, 1::2] = torch.cos(position * rates[: dim // 2])
    return codes


class ProjectedMemory(NamedTuple):
    """Keys/values of one memory already projected for one attention module (reused while decoding)."""

    keys: torch.Tensor  # (B, H, M, D/H)
    values: torch.Tensor  # (B, H, M, D/H)
    allowed: torch.Tensor | None  # bool (B, 1, 1, M), True = may be attended; None = all
    empty: torch.Tensor | None  # bool (B,), rows whose memory is all padding (output zeroed)


class SafeAttention(nn.Module):
    """Multi-head attention whose rows with an all-padding key set output zeros instead of NaN.

    Written out (rather than nn.MultiheadAttention) so that a memory's key/value
    projection can be computed once per batch and reused at every decoding step.
    """

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} must be divisible by heads {heads}")
        self.heads, self.head_dim, self.dropout = heads, dim // heads, dropout
        self.query = nn.Linear(dim, dim)
        self.key_value = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.heads, self.head_dim).transpose(1, 2)

    def project(self, keys: torch.Tensor, key_mask: torch.Tensor | None) -> ProjectedMemory:
        """Project a memory (B, M, D) with mask (B, M) (True = real) for :meth:`forward`."""
        k, v = self.key_value(keys).chunk(2, dim=-1)
        if key_mask is None:
            return ProjectedMemory(self._split(k), self._split(v), None, None)
        return ProjectedMemory(self._split(k), self._split(v), *_allowed_keys(key_mask))

    def forward(self, query: torch.Tensor, keys: torch.Tensor | None = None, key_mask: torch.Tensor | None = None,
                *, causal: bool = False, projected: ProjectedMemory | None = None) -> torch.Tensor:
        """query (B, T, D) attends to keys (B, M, D) (default: the query itself) or a projected memory.

        ``key_mask`` (B, M) is True on real keys; ``causal`` blocks keys after the query position
        (self-attention only).
        """
        if projected is None:
            projected = self.project(query if keys is None else keys, key_mask)
        if projected.keys.size(2) == 0:
            return torch.zeros_like(query)
        q = self._split(self.query(query))
        allowed = projected.allowed
        if causal and allowed is not None:
            allowed = allowed & ~causal_mask(query.size(1), query.device)
        out = F.scaled_dot_product_attention(
            q, projected.keys, projected.values, attn_mask=allowed,
            dropout_p=self.dropout if self.training else 0.0, is_causal=causal and allowed is None)
        out = self.out(out.transpose(1, 2).reshape(query.shape))
        if projected.empty is not None:
            out = out.masked_fill(projected.empty[:, None, None], 0.0)
        return out

    def packed_self_attention(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Self-attention of packed tokens: `x` (N, D) holds the real positions of `mask` (B, L), row-major.

        The projections run on the N real tokens only; the (B, L) layout is rebuilt just for the
        attention product, so padding costs nothing outside it (see :class:`TransformerEncoder`).
        Returns (N, D). Rows without a real token have no output, so no row needs zeroing.
        """
        q = self.query(x)
        k, v = self.key_value(x).chunk(2, dim=-1)
        q, k, v = (self._split(scatter_rows(t, mask)) for t in (q, k, v))
        allowed, _ = _allowed_keys(mask)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed,
                                             dropout_p=self.dropout if self.training else 0.0)
        return self.out(out.transpose(1, 2).flatten(2)[mask])


def _allowed_keys(key_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(attention mask (B, 1, 1, M), True = may be attended; rows whose keys are all padding (B,)).

    An all-padding row would make the softmax NaN: it may attend to its first key instead, and
    callers zero (or drop) that row's output.
    """
    key_mask = key_mask.bool()
    empty = ~key_mask.any(dim=1)
    if key_mask.size(1) > 0 and bool(empty.any()):
        key_mask = key_mask.clone()
        key_mask[empty, 0] = True
    return key_mask[:, None, None, :], empty


def scatter_rows(packed: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, L, D): the rows of `packed` (N, D) at the True positions of `mask` (B, L), row-major; zeros elsewhere."""
    out = packed.new_zeros(*mask.shape, packed.size(-1))
    out[mask] = packed
    return out


class FeedForward(nn.Module):
    def __init__(self, dim: int, ffn_dim: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, ffn_dim), nn.ReLU(), Dropout(dropout), nn.Linear(ffn_dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class EncoderLayer(nn.Module):
    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float, attention_dropout: float = 0.0):
        super().__init__()
        self.self_attn = SafeAttention(dim, heads, attention_dropout)
        self.ffn = FeedForward(dim, ffn_dim, dropout)
        self.norm_attn, self.norm_ffn = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.dropout = Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """`x` (N, D): the packed real tokens of `mask` (B, L) (:class:`TransformerEncoder`); returns (N, D)."""
        x = self.norm_attn(x + self.dropout(self.self_attn.packed_self_attention(x, mask)))
        return self.norm_ffn(x + self.dropout(self.ffn(x)))


def _embedding(vocab_or_embedding: int | nn.Embedding | Any, dim: int) -> nn.Embedding | Any:
    """A new (vocab, dim) embedding, or the given one checked for `dim`.

    "Given" is an ``nn.Embedding`` (registered by the module holding it) or anything
    with ``embedding_dim``, ``weight`` and a call on token ids, such as a
    :class:`crs.shared.SharedRef` to a shared token embedding (held as a plain
    attribute, so the pipeline rather than this module owns its parameters).
    """
    if hasattr(vocab_or_embedding, "embedding_dim"):
        if vocab_or_embedding.embedding_dim != dim:
            raise ValueError(f"embedding dim {vocab_or_embedding.embedding_dim} != model dim {dim}")
        return vocab_or_embedding
    embedding = nn.Embedding(int(vocab_or_embedding), dim, padding_idx=0)
    init_token_embedding_(embedding.weight, padding_idx=0)
    return embedding


def init_token_embedding_(weight: torch.Tensor, padding_idx: int = 0) -> None:
    """Initialise a token-embedding matrix (V, dim) in place: normal with std dim^-0.5, the padding row zero.

    std dim^-0.5 and a sqrt(dim) scale at lookup give unit-variance inputs, while the same matrix
    stays well scaled when shared as the output projection.
    """
    nn.init.normal_(weight, mean=0.0, std=weight.shape[-1] ** -0.5)
    with torch.no_grad():
        weight[padding_idx].zero_()


class _Embedder(nn.Module):
    """Token embedding * sqrt(dim) + sinusoidal positions, then dropout."""

    def __init__(self, embedding: nn.Embedding, dim: int, dropout: float):
        super().__init__()
        self.embedding, self.dim = embedding, dim
        self.dropout = Dropout(dropout)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L, D) for `tokens` (B, L); with `mask` (B, L), (N, D) for its N True positions only (row-major)."""
        positions = sinusoidal_positions(tokens.size(1), self.dim, tokens.device)
        if mask is None:
            return self.dropout(self.embedding(tokens) * math.sqrt(self.dim) + positions.unsqueeze(0))
        columns = mask.nonzero(as_tuple=True)[1]
        return self.dropout(self.embedding(tokens[mask]) * math.sqrt(self.dim) + positions[columns])


class TransformerEncoder(nn.Module):
    """Standard Transformer encoder over token ids.

    ``TransformerEncoder(vocab_size_or_embedding, dim, heads, layers, ffn_dim, dropout, max_len)``;
    ``forward(tokens (B, L), mask=None) -> (states (B, L', D), mask (B, L'))`` where L' = min(L, max_len)
    (each row keeps its last max_len real tokens, left-aligned).  Padded positions of ``states`` are zero.

    The layers run on the packed real tokens, (N, D) with N = ``mask.sum()``: embedding, projections,
    feed-forward, LayerNorm and dropout are position-wise, so padding changes none of their values,
    and only the attention product needs the (B, L) layout.  Dialogue contexts vary in length: in the
    demo corpus a random batch's contexts fill 47% of its padded width, and the encoder used to spend
    the rest on padding (BENCHMARKS.md, section 1).
    """

    def __init__(self, vocab_or_embedding: int | nn.Embedding, dim: int, heads: int, layers: int,
                 ffn_dim: int, dropout: float = 0.1, max_len: int = 256, attention_dropout: float = 0.0):
        super().__init__()
        self.embedding = _embedding(vocab_or_embedding, dim)
        self.embed = _Embedder(self.embedding, dim, dropout)
        self.layers = nn.ModuleList(EncoderLayer(dim, heads, ffn_dim, dropout, attention_dropout)
                                    for _ in range(layers))
        self.max_len = max_len

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> Memory:
        if mask is None:
            mask = padding_mask(tokens)
        mask = mask.bool()
        if tokens.size(1) > self.max_len:
            tokens, mask = keep_last(tokens, mask, self.max_len)
        x = self.embed(tokens, mask)
        for layer in self.layers:
            x = layer(x, mask)
        return scatter_rows(x, mask), mask


class DecoderLayer(nn.Module):
    """Causal self-attention, then cross-attention to each source in `sources` order, then FFN.

    Each sub-layer is residual + LayerNorm.  ``forward(x, memories)`` takes a mapping
    source name -> (states, mask) -- or the result of :meth:`prepare` on it, which
    projects each memory's keys/values once so decoding steps can reuse them.
    """

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float, sources: Sequence[str] = ("encoder",),
                 attention_dropout: float = 0.0):
        super().__init__()
        self.sources = tuple(sources)
        self.self_attn = SafeAttention(dim, heads, attention_dropout)
        self.norm_self = nn.LayerNorm(dim)
        self.cross_attn = nn.ModuleDict({name: SafeAttention(dim, heads, attention_dropout) for name in self.sources})
        self.norm_cross = nn.ModuleDict({name: nn.LayerNorm(dim) for name in self.sources})
        self.ffn = FeedForward(dim, ffn_dim, dropout)
        self.norm_ffn = nn.LayerNorm(dim)
        self.dropout = Dropout(dropout)

    def prepare(self, memories: Mapping[str, Memory]) -> dict[str, ProjectedMemory]:
        missing = [name for name in self.sources if name not in memories]
        if missing:
            raise KeyError(f"decoder memories missing: {missing} (have {sorted(memories)})")
        return {name: self.cross_attn[name].project(*memories[name]) for name in self.sources}

    def forward(self, x: torch.Tensor, memories: Mapping[str, Memory | ProjectedMemory]) -> torch.Tensor:
        # Target padding sits after EOS, and causality always leaves position 0 visible,
        # so self-attention needs no key mask: padded query rows are ignored by the loss.
        x = self.norm_self(x + self.dropout(self.self_attn(x, causal=True)))
        for name in self.sources:
            memory = memories[name]
            if isinstance(memory, ProjectedMemory):
                attended = self.cross_attn[name](x, projected=memory)
            else:
                attended = self.cross_attn[name](x, memory[0], memory[1])
            x = self.norm_cross[name](x + self.dropout(attended))
        return self.norm_ffn(x + self.dropout(self.ffn(x)))


class TransformerDecoder(nn.Module):
    """A stack of :class:`DecoderLayer` over token ids; returns hidden states (B, T, D).

    The output projection is left to the caller (generators share it with the input
    embedding, and only project the last position while decoding).  ``max_len`` is
    kept for symmetry with the encoder; positions are sinusoidal, so any length works.
    ``forward(tokens, memories)`` accepts raw memories or ``prepare(memories)`` (faster
    when the same memories serve many calls, as in greedy decoding).
    """

    def __init__(self, vocab_or_embedding: int | nn.Embedding, dim: int, heads: int, layers: int,
                 ffn_dim: int, dropout: float = 0.1, max_len: int = 256, sources: Sequence[str] = ("encoder",),
                 attention_dropout: float = 0.0):
        super().__init__()
        self.embedding = _embedding(vocab_or_embedding, dim)
        self.embed = _Embedder(self.embedding, dim, dropout)
        self.layers = nn.ModuleList(DecoderLayer(dim, heads, ffn_dim, dropout, sources, attention_dropout)
                                    for _ in range(layers))
        self.sources = tuple(sources)

    def prepare(self, memories: Mapping[str, Memory]) -> list[dict[str, ProjectedMemory]]:
        """Per-layer projected memories for repeated :meth:`forward` calls."""
        return [layer.prepare(memories) for layer in self.layers]

    def forward(self, tokens: torch.Tensor,
                memories: Mapping[str, Memory] | list[dict[str, ProjectedMemory]]) -> torch.Tensor:
        per_layer = memories if isinstance(memories, list) else self.prepare(memories)
        x = self.embed(tokens)
        for layer, layer_memories in zip(self.layers, per_layer):
            x = layer(x, layer_memories)
        return x


def check_transformer_config(config: Any, path: str) -> None:
    """A Transformer component's sizes positive, heads dividing dim, dropouts in [0, 1): a ConfigError at the
    offending key under `path` (config keys dim, heads, layers, ffn_dim, dropout, attention_dropout)."""
    check_positive_ints(config, ("dim", "heads", "layers", "ffn_dim"), path)
    if config.dim % config.heads:
        raise ConfigError(f"{path}.heads", f"dim {config.dim} is not divisible by heads {config.heads}",
                          "choose heads that divide dim (e.g. dim: 128, heads: 4)")
    for key in ("dropout", "attention_dropout"):
        if not 0.0 <= getattr(config, key) < 1.0:
            raise ConfigError(f"{path}.{key}", f"must be in [0, 1), got {getattr(config, key)}")
