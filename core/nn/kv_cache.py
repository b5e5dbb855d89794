"""Running a Hugging Face causal LM over a cached prefix: blocks with their own attention pattern.

MESE scores hundreds of candidate items per turn by appending their embeddings after
the dialogue and reading the state above each one.  Running the dialogue again for
every candidate (or every chunk) would cost a full pass each time; keeping the
dialogue's keys and values (a *prefix*) and appending a *block* of new positions
costs only the block.  Two kinds of block are needed:

- a **candidate block**: every candidate at the *same* position id and attending to
  the prefix and to each other, not causally, so that a candidate's score does not
  depend on where it sits in the block (rank scores are invariant to candidate order);
- a **causal block**: a reply written after the prefix, token by token (teacher forcing
  and greedy decoding).

Both are one forward pass with a 4-D attention mask (B, 1, M, P + M) built here:
transformers uses a 4-D mask as given.  The mask is additive (0 = attend, dtype
minimum = not), which every attention implementation accepts.

A :class:`CachedPrefix` holds the prefix's per-layer keys and values as plain tensors
and builds a fresh ``DynamicCache`` for each block, so the prefix is never changed by
a block run (transformers caches grow in place) and can serve many blocks: rank
candidates, then the reply.  Gradients flow through the cached tensors into the
prefix pass (and into block embeddings, e.g. item embeddings), so one backward trains
both.  Rows are left-padded: real tokens end at the right edge, so every row's last
prefix position is its most recent token.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from typing import Any

import torch

__all__ = ["CachedPrefix", "run_prefix", "run_block", "block_attention_mask", "causal_block", "full_block",
           "left_pad"]


@dataclass
class CachedPrefix:
    """A prefix already run: per-layer ``(keys, values)`` (B, heads, P, d), its mask and position ids.

    ``mask`` is bool (B, P), True on real tokens (left padding is False); ``positions``
    long (B, P) are the position ids the prefix ran with.
    """

    keys_values: list[tuple[torch.Tensor, torch.Tensor]]
    mask: torch.Tensor
    positions: torch.Tensor

    @property
    def length(self) -> int:
        return int(self.mask.shape[1])

    def next_position(self) -> torch.Tensor:
        """Long (B,): the position id after each row's last real token."""
        return self.positions[:, -1] + 1

    def rows(self, index: torch.Tensor | list[int]) -> "CachedPrefix":
        """The prefix of the given rows only (generation row by row, candidate blocks per row)."""
        index = torch.as_tensor(index, dtype=torch.long, device=self.mask.device)
        return CachedPrefix([(k.index_select(0, index), v.index_select(0, index)) for k, v in self.keys_values],
                            self.mask.index_select(0, index), self.positions.index_select(0, index))

    def repeat_rows(self, counts: torch.Tensor) -> "CachedPrefix":
        """Each row repeated ``counts[row]`` times (one row per target when a turn has several)."""
        index = torch.repeat_interleave(torch.arange(len(counts), device=counts.device), counts)
        return self.rows(index)

    def hide_last(self, rows: torch.Tensor) -> "CachedPrefix":
        """The same prefix with the last position masked out where `rows` (bool (B,)) is True.

        Equivalent to cropping that position for those rows only (a batch mixing turns
        that keep their last token with turns that drop it); the next block then starts at
        that position's id, as it would after a crop.
        """
        mask = self.mask.clone()
        mask[:, -1] &= ~rows.bool()
        positions = self.positions.clone()
        positions[:, -1] = torch.where(rows.bool(), positions[:, -1] - 1, positions[:, -1])
        return replace(self, mask=mask, positions=positions)

    def crop(self, length: int) -> "CachedPrefix":
        """The first `length` positions (for every row)."""
        return CachedPrefix([(k[:, :, :length], v[:, :, :length]) for k, v in self.keys_values],
                            self.mask[:, :length], self.positions[:, :length])

    def cache(self) -> Any:
        """A fresh transformers ``DynamicCache`` holding these keys and values.

        Needs transformers >= 4.50, the first release whose ``DynamicCache`` fills itself from a list of
        (keys, values) pairs; before it the list lands in the deprecated ``num_hidden_layers`` argument and
        the cache starts empty, so blocks run without the prefix and give wrong states, with no error."""
        from transformers import DynamicCache

        return DynamicCache([(k, v) for k, v in self.keys_values])


def _cache_tensors(cache: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per-layer (keys, values) of a transformers cache (``DynamicCache`` or the legacy tuple of tuples)."""
    if hasattr(cache, "layers"):
        return [(layer.keys, layer.values) for layer in cache.layers]
    return [(entry[0], entry[1]) for entry in cache]


def _cache_of(output: Any) -> Any:
    """The cache a forward returned (``cache`` in transformers >= 5.2x, ``past_key_values`` before)."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


def _cache_argument(model: Any) -> str:
    """The forward keyword that takes a cache: ``cache`` where it exists (``past_key_values`` is deprecated there).

    Read once per model class (run_block calls this for every generated token)."""
    return _cache_keyword(type(model))


@functools.lru_cache(maxsize=None)
def _cache_keyword(model_class: type) -> str:
    import inspect

    return "cache" if "cache" in inspect.signature(model_class.forward).parameters else "past_key_values"


def _base(model: Any) -> Any:
    """The transformer under a ``...ForCausalLM`` head (its last hidden state, no vocabulary projection)."""
    return getattr(model, "base_model", model)


def left_pad(rows: list[torch.Tensor], pad: float = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows (L_i, ...) stacked into (B, max L, ...) with the padding (`pad`) in front, and the bool mask (B, max L)."""
    width = max(int(r.shape[0]) for r in rows)
    first = rows[0]
    out = first.new_full((len(rows), width, *first.shape[1:]), pad)
    mask = torch.zeros(len(rows), width, dtype=torch.bool, device=first.device)
    for i, row in enumerate(rows):
        n = int(row.shape[0])
        if n:
            out[i, width - n:] = row
            mask[i, width - n:] = True
    return out, mask


def run_prefix(model: Any, embeds: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, CachedPrefix]:
    """Run left-padded input embeddings (B, P, H) causally; return the last hidden states and the cache.

    Position ids count real tokens only (0 at each row's first real token), so a row
    gets the same states alone as in a padded batch.
    """
    mask = mask.bool()
    positions = (mask.long().cumsum(dim=1) - 1).clamp(min=0)
    out = _base(model)(inputs_embeds=embeds, attention_mask=mask.long(), position_ids=positions, use_cache=True)
    return out.last_hidden_state, CachedPrefix(_cache_tensors(_cache_of(out)), mask, positions)


def causal_block(size: int, device: Any = None) -> torch.Tensor:
    """Bool (M, M): token j sees tokens 0..j of the block (a reply)."""
    return torch.ones(size, size, dtype=torch.bool, device=device).tril()


def full_block(size: int, device: Any = None) -> torch.Tensor:
    """Bool (M, M): every position sees every other (a candidate block)."""
    return torch.ones(size, size, dtype=torch.bool, device=device)


def block_attention_mask(prefix_mask: torch.Tensor, block: torch.Tensor, dtype: torch.dtype,
                         block_keys: torch.Tensor | None = None) -> torch.Tensor:
    """The additive 4-D mask (B, 1, M, P + M) of a block after a prefix.

    :param prefix_mask: bool (B, P), True on the prefix's real tokens (every block row sees them).
    :param block: bool (M, M) or (B, M, M): which block positions each block position sees.
    :param block_keys: optional bool (B, M): block positions that exist (right padding of a
        block is hidden from every query); the block's own diagonal stays visible so no
        query row is empty.
    """
    batch, width = prefix_mask.shape[0], block.shape[-1]
    block = block.bool().expand(batch, width, width)
    if block_keys is not None:
        eye = torch.eye(width, dtype=torch.bool, device=block.device)
        block = block & (block_keys.bool().unsqueeze(1) | eye)
    seen = torch.cat([prefix_mask.bool().unsqueeze(1).expand(batch, width, -1), block], dim=2)
    additive = torch.zeros(seen.shape, dtype=dtype, device=seen.device)
    additive.masked_fill_(~seen, torch.finfo(dtype).min)
    return additive.unsqueeze(1)


def run_block(model: Any, prefix: CachedPrefix, embeds: torch.Tensor, positions: torch.Tensor,
              block: torch.Tensor, block_keys: torch.Tensor | None = None) -> tuple[torch.Tensor, CachedPrefix]:
    """Run a block of input embeddings (B, M, H) after `prefix` with its own attention pattern.

    :param positions: long (B, M) position ids of the block (a candidate block repeats one id).
    :param block: bool (M, M) or (B, M, M), see :func:`block_attention_mask`.
    :param block_keys: optional bool (B, M), False on the block's right padding.
    :returns: the last hidden states (B, M, H) and the prefix extended by the block (its
        mask True where `block_keys` is, so a later block sees exactly the real positions).
    """
    mask = block_attention_mask(prefix.mask, block, embeds.dtype, block_keys)
    base = _base(model)
    out = base(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, use_cache=True,
               **{_cache_argument(base): prefix.cache()})
    keys = torch.ones(embeds.shape[:2], dtype=torch.bool, device=embeds.device) if block_keys is None else block_keys
    extended = CachedPrefix(_cache_tensors(_cache_of(out)), torch.cat([prefix.mask, keys.bool()], dim=1),
                            torch.cat([prefix.positions, positions], dim=1))
    return out.last_hidden_state, extended
