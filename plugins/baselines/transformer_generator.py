"""The plain Transformer encoder-decoder reply generator (KGSF's "Transformer" baseline).

Type ``transformer`` (generator kind).  The context tokens are encoded by a standard
Transformer encoder; the decoder attends to the encoder states only.  Input embedding,
decoder embedding and (by default) the output projection share one matrix.

Ports (local name -> default key):

=================  ===============================  ==========================================
inputs
tokens             batch.context_tokens             (B, L) vocab ids of the history
tokens_mask        batch.context_tokens_mask        (B, L) bool
response           batch.response_tokens            optional, (B, R): BOS y_1 .. y_n EOS
response_mask      batch.response_tokens_mask       optional, (B, R) bool
outputs (all optional: only when a response is given)
loss.gen           loss.gen                         mean token cross-entropy over non-pad targets
nll_sum            nll_sum                          float, summed plain NLL (for perplexity)
nll_count          nll_count                        float, number of non-pad targets
logits             gen_logits                       (B, R-1, V) log-probabilities of each target
=================  ===============================  ==========================================

Subclasses (KGSF's KG-enhanced decoder) change what the decoder attends to
(:meth:`memory_sources`, :meth:`encode`) and how hidden states become token
probabilities (:meth:`token_log_probs`); teacher forcing and greedy decoding are shared.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from crs.errors import ConfigError
from crs.interfaces import BuildDeps, Generator, Port
from crs.nn import Memory, TransformerDecoder, TransformerEncoder, greedy_decode, shift_targets, target_nll, token_nll


class TransformerGenerator(Generator):
    """Encoder-decoder Transformer generating the recommender's reply from the dialogue context."""

    @dataclass
    class Config:
        dim: int = 128
        heads: int = 4
        layers: int = 2
        ffn_dim: int = 256
        dropout: float = 0.1
        # Dropout on attention weights; 0 as in KGSF's released configuration. On CPU a non-zero value
        # also forces the unfused attention path, which makes training several times slower.
        attention_dropout: float = 0.0
        max_len: int = 256  # context tokens kept (the last ones) by the encoder
        share_embeddings: bool = True  # tie the output projection to the token embedding
        label_smoothing: float = 0.0

    def __init__(self, config: Any, deps: BuildDeps):
        super().__init__(config, deps)
        self._check_config(config)
        vocab = deps.require("vocab")
        self.vocab_size = len(vocab)
        self.bos, self.eos, self.pad = vocab.bos, vocab.eos, vocab.pad
        dim = config.dim
        self.embedding = nn.Embedding(self.vocab_size, dim, padding_idx=self.pad)
        nn.init.normal_(self.embedding.weight, mean=0.0, std=dim ** -0.5)
        with torch.no_grad():
            self.embedding.weight[self.pad].zero_()
        self.encoder = TransformerEncoder(self.embedding, dim, config.heads, config.layers, config.ffn_dim,
                                          config.dropout, config.max_len, config.attention_dropout)
        self.decoder = TransformerDecoder(self.embedding, dim, config.heads, config.layers, config.ffn_dim,
                                          config.dropout, config.max_len, sources=self.memory_sources(),
                                          attention_dropout=config.attention_dropout)
        self.output = None if config.share_embeddings else nn.Linear(dim, self.vocab_size)

    def _check_config(self, config: Any) -> None:
        for key in ("dim", "heads", "layers", "ffn_dim", "max_len"):
            if int(getattr(config, key)) < 1:
                raise ConfigError(f"{self.path}.{key}", f"must be a positive integer, got {getattr(config, key)}")
        if config.dim % config.heads:
            raise ConfigError(f"{self.path}.heads", f"dim {config.dim} is not divisible by heads {config.heads}",
                              "choose heads that divide dim (e.g. dim: 128, heads: 4)")
        for key in ("dropout", "attention_dropout"):
            if not 0.0 <= getattr(config, key) < 1.0:
                raise ConfigError(f"{self.path}.{key}", f"must be in [0, 1), got {getattr(config, key)}")
        if not 0.0 <= config.label_smoothing < 1.0:
            raise ConfigError(f"{self.path}.label_smoothing", f"must be in [0, 1), got {config.label_smoothing}")

    # ----------------------------------------------------------------- ports
    def input_ports(self) -> dict[str, Port]:
        return {
            "tokens": Port("batch.context_tokens", doc="context token ids"),
            "tokens_mask": Port("batch.context_tokens_mask", doc="context token mask"),
            "response": Port("batch.response_tokens", optional=True, doc="target reply, BOS .. EOS"),
            "response_mask": Port("batch.response_tokens_mask", optional=True),
        }

    def output_ports(self) -> dict[str, Port]:
        # Optional: produced only when a response is given (teacher forcing), not at inference.
        return {
            "loss.gen": Port("loss.gen", optional=True, doc="mean token cross-entropy"),
            "nll_sum": Port("nll_sum", optional=True, doc="summed token NLL (perplexity)"),
            "nll_count": Port("nll_count", optional=True, doc="number of target tokens"),
            "logits": Port("gen_logits", self.vocab_size, optional=True, doc="target log-probabilities"),
        }

    # ------------------------------------------------------ subclass hooks
    def memory_sources(self) -> tuple[str, ...]:
        """Names of the memories each decoder layer attends to, in order."""
        return ("encoder",)

    def encode(self, inputs: dict[str, Any]) -> dict[str, Memory]:
        """Everything the decoder attends to, computed once per batch (cached while decoding)."""
        tokens = inputs["tokens"]
        mask = inputs.get("tokens_mask")
        return {"encoder": self.encoder(tokens, None if mask is None else mask.bool())}

    def token_log_probs(self, hidden: torch.Tensor, memories: dict[str, Memory],
                        inputs: dict[str, Any]) -> torch.Tensor:
        """Decoder states (B, T, D) -> log-probabilities over the vocabulary (B, T, V)."""
        return F.log_softmax(self.vocab_logits(hidden), dim=-1)

    def target_log_probs(self, hidden: torch.Tensor, memories: dict[str, Memory], inputs: dict[str, Any],
                         targets: torch.Tensor) -> torch.Tensor:
        """log Pr(target) (B, T); equal to gathering :meth:`token_log_probs` at the targets."""
        return self.token_log_probs(hidden, memories, inputs).gather(-1, targets.unsqueeze(-1)).squeeze(-1)

    def vocab_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.output is not None:
            return self.output(hidden)
        return hidden @ self.embedding.weight.t()

    # ------------------------------------------------------------- running
    def forward(self, inputs: dict[str, Any]) -> dict[str, Any]:
        response = inputs.get("response")
        if response is None:
            return {}  # nothing to score; replies come from `generate`
        memories = self.encode(inputs)
        decoder_input, targets, target_mask = shift_targets(response, inputs.get("response_mask"))
        hidden = self.decoder(decoder_input, memories)
        if torch.is_grad_enabled() and not self.config.label_smoothing:
            # Training needs only the targets' log-probabilities; subclasses (the copy mixture)
            # then avoid building and back-propagating through several (B, T, V) tensors.
            stats = target_nll(self.target_log_probs(hidden, memories, inputs, targets), target_mask)
            return {"loss.gen": stats["loss"], "nll_sum": stats["nll_sum"], "nll_count": stats["nll_count"]}
        log_probs = self.token_log_probs(hidden, memories, inputs)
        stats = token_nll(log_probs, targets, target_mask, self.config.label_smoothing)
        return {"loss.gen": stats["loss"], "nll_sum": stats["nll_sum"], "nll_count": stats["nll_count"],
                "logits": log_probs}

    @torch.no_grad()
    def generate(self, inputs: dict[str, Any], max_len: int) -> torch.Tensor:
        """Greedy replies: long (B, T <= max_len), no BOS, EOS kept, pad (0) after it."""
        memories = self.encode(inputs)
        projected = self.decoder.prepare(memories)  # memory keys/values projected once, not per step
        tokens = inputs["tokens"]

        def step(prefix: torch.Tensor) -> torch.Tensor:
            # The decoder is re-run over the prefix (no self-attention cache): at reply lengths
            # of ~30 tokens that is cheap; the vocabulary projection is done for the last position only.
            hidden = self.decoder(prefix, projected)[:, -1:]
            scores = self.token_log_probs(hidden, memories, inputs)[:, 0]
            # Padding and BOS never occur inside a target reply; an undertrained model must not emit them.
            scores[:, [self.pad, self.bos]] = float("-inf")
            return scores

        return greedy_decode(step, tokens.size(0), bos=self.bos, eos=self.eos, pad=self.pad,
                             max_len=max_len, device=tokens.device)
