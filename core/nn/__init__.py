"""Neural building blocks shared by model components (Transformer layers, decoding helpers)."""
from .decoding import greedy_decode, shift_targets, target_nll, token_nll
from .transformer import (
    DecoderLayer,
    EncoderLayer,
    Memory,
    ProjectedMemory,
    SafeAttention,
    TransformerDecoder,
    TransformerEncoder,
    causal_mask,
    keep_last,
    padding_mask,
    sinusoidal_positions,
)

__all__ = [
    "DecoderLayer", "EncoderLayer", "Memory", "ProjectedMemory", "SafeAttention", "TransformerDecoder", "TransformerEncoder",
    "causal_mask", "greedy_decode", "keep_last", "padding_mask", "shift_targets", "sinusoidal_positions",
    "target_nll", "token_nll",
]
