"""Neural building blocks shared by model components: pieces two papers use live here, not in a plugin.

- :mod:`crs.nn.transformer`: masks, positions, encoder, decoder with a chain of memories;
- :mod:`crs.nn.decoding`: teacher-forcing NLL (optionally token-weighted) and greedy decoding;
- :mod:`crs.nn.pooling`: self-attentive pooling, masked mean pooling and node gathering;
- :mod:`crs.nn.retrieval`: the faiss inner-product item index (not re-exported: imports faiss late);
- :mod:`crs.nn.losses`: the recommendation cross-entropy;
- :mod:`crs.nn.segment`: softmax and sums over segments of an edge list (graph attention in plain
  torch, twice differentiable for MAML; not re-exported here);
- :mod:`crs.nn.seq2seq`: the Transformer encoder-decoder generator that paper decoders subclass
  (not re-exported here: it is a component, importing ``crs.interfaces``);
- :mod:`crs.nn.embedding`: the ``token_embedding`` shared module (one matrix for several slots).
"""
from .decoding import greedy_decode, shift_targets, target_nll, token_nll
from .losses import rec_cross_entropy
from .pooling import SelfAttentivePool, gather_nodes, masked_mean
from .transformer import (
    DecoderLayer,
    EncoderLayer,
    Memory,
    ProjectedMemory,
    SafeAttention,
    TransformerDecoder,
    TransformerEncoder,
    causal_mask,
    check_transformer_config,
    keep_last,
    padding_mask,
    sinusoidal_positions,
)

__all__ = [
    "DecoderLayer", "EncoderLayer", "Memory", "ProjectedMemory", "SafeAttention", "SelfAttentivePool",
    "TransformerDecoder", "TransformerEncoder", "causal_mask", "check_transformer_config", "gather_nodes",
    "greedy_decode", "keep_last",
    "masked_mean", "padding_mask", "rec_cross_entropy", "shift_targets", "sinusoidal_positions", "target_nll",
    "token_nll",
]
