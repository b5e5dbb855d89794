"""The Transformer encoder-decoder reply generator, and the base class of every generator built on it.

Registered as type ``transformer`` (generator kind) by the baselines plugin (KGSF's
"Transformer" baseline); paper plugins subclass it (KGSF's KG-enhanced decoder, and
decoders of later papers), which is why it lives in core: a plugin imports ``crs``,
never another plugin.  The context tokens are encoded by a standard Transformer
encoder; the decoder attends to the encoder states only.  Input embedding, decoder
embedding and (by default) the output projection share one matrix; with
``embedding: <name>`` that matrix is the pipeline's shared module ``shared.<name>``
(e.g. a ``token_embedding`` several slots use) instead of one of its own.  With
``context_states: true`` it has no encoder: the decoder attends to the ``context_states``
port, another slot's encoder states (C2-CRS's context encoder, which the conversation
stage keeps frozen), so one context encoder serves the recommender and the generator.

Ports (local name -> default key):

=================  ===============================  ==========================================
inputs
tokens             batch.context_tokens             (B, L) vocab ids of the history
tokens_mask        batch.context_tokens_mask        (B, L) bool
response           batch.response_tokens            optional, (B, R): BOS y_1 .. y_n EOS
response_mask      batch.response_tokens_mask       optional, (B, R) bool
vocab_bias         vocab_bias                       optional, (B, V) added to the logits (e.g. ``multi_style``)
context_states     context_states                   only with ``context_states: true``: (B, L, dim) encoder
                                                    states, and ``context_states_mask`` (B, L) bool
outputs (all optional: only when a response is given)
loss.gen           loss.gen                         mean token cross-entropy over non-pad targets
nll_sum            nll_sum                          float, summed plain NLL (for perplexity)
nll_count          nll_count                        float, number of non-pad targets
logits             gen_logits                       (B, R-1, V) log-probabilities of each target
=================  ===============================  ==========================================

Subclass hooks; teacher forcing and greedy decoding are shared and call them:

- :meth:`memory_sources`, :meth:`encode`: what the decoder layers attend to;
- :meth:`vocab_logits`: **the one place** decoder states become vocabulary logits.
  The training loss (full and target-only paths) and greedy decoding both go through
  it, so a vocabulary bias (e.g. a style-aware bias) cannot change one without the other;
- :meth:`token_log_probs` / :meth:`target_log_probs`: the output distribution built on
  :meth:`vocab_log_probs` (KGSF mixes in a copy distribution here); override both
  together, the second being the first gathered at the targets;
- :meth:`target_weights`: optional per-target loss weights (C2-CRS's instance
  weighting); perplexity statistics stay unweighted.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, check_positive_ints
from ..interfaces import BuildDeps, Generator, Port
from .decoding import greedy_decode, shift_targets, target_nll, token_nll
from .embedding import use_token_embedding
from .transformer import Memory, TransformerDecoder, TransformerEncoder, check_transformer_config, init_token_embedding_


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
        # name of a `shared:` token embedding (e.g. one the context encoder also reads); None = own one
        embedding: Optional[str] = None
        # true: no own encoder; attend to the `context_states` port (another slot's context encoder) instead
        context_states: bool = False

    def __init__(self, config: Any, deps: BuildDeps):
        super().__init__(config, deps)
        self._check_config(config)
        vocab = deps.require("vocab")
        self.vocab_size = len(vocab)
        self.bos, self.eos, self.pad = vocab.bos, vocab.eos, vocab.pad
        dim = config.dim
        if config.embedding is None:
            self.embedding = nn.Embedding(self.vocab_size, dim, padding_idx=self.pad)
            init_token_embedding_(self.embedding.weight, self.pad)
        else:  # a SharedRef: the pipeline owns the matrix, this slot only uses it
            self.embedding = use_token_embedding(deps, config.embedding, dim)
        # with port-fed context states there is nothing to encode here (and no parameters to hold for it)
        self.encoder = None if config.context_states else TransformerEncoder(
            self.embedding, dim, config.heads, config.layers, config.ffn_dim, config.dropout, config.max_len,
            config.attention_dropout)
        self.decoder = TransformerDecoder(self.embedding, dim, config.heads, config.layers, config.ffn_dim,
                                          config.dropout, config.max_len, sources=self.memory_sources(),
                                          attention_dropout=config.attention_dropout)
        self.output = None if config.share_embeddings else nn.Linear(dim, self.vocab_size)

    def _check_config(self, config: Any) -> None:
        check_transformer_config(config, self.path)
        check_positive_ints(config, ("max_len",), self.path)
        if not 0.0 <= config.label_smoothing < 1.0:
            raise ConfigError(f"{self.path}.label_smoothing", f"must be in [0, 1), got {config.label_smoothing}")

    # ----------------------------------------------------------------- ports
    def input_ports(self) -> dict[str, Port]:
        return {
            "tokens": Port("batch.context_tokens", doc="context token ids"),
            "tokens_mask": Port("batch.context_tokens_mask", doc="context token mask"),
            "response": Port("batch.response_tokens", optional=True, doc="target reply, BOS .. EOS"),
            "response_mask": Port("batch.response_tokens_mask", optional=True),
            # a per-sample bias over the vocabulary from another slot (CCRS's styles, KBRD's user bias),
            # added in vocab_logits so that the loss and decoding both see it
            "vocab_bias": Port("vocab_bias", self.vocab_size, optional=True, doc="bias over the vocabulary (B, V)"),
            **({"context_states": Port("context_states", self.config.dim, doc="another slot's encoder states"),
                "context_states_mask": Port("context_states_mask", optional=True,
                                            doc="their mask (B, L), True = real; absent: all real")}
               if self.config.context_states else {}),
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
        if self.encoder is None:  # context_states: true
            states, mask = inputs["context_states"], inputs.get("context_states_mask")
            if mask is None:
                mask = torch.ones(states.shape[:2], dtype=torch.bool, device=states.device)
            return {"encoder": (states, mask.bool())}
        tokens = inputs["tokens"]
        mask = inputs.get("tokens_mask")
        return {"encoder": self.encoder(tokens, None if mask is None else mask.bool())}

    def vocab_logits(self, hidden: torch.Tensor, inputs: dict[str, Any]) -> torch.Tensor:
        """Decoder states (B, T, D) -> vocabulary logits (B, T, V): the one logits hook.

        Every path to a token probability calls this: the teacher-forcing loss (the full
        distribution and the target-only fast path) and each greedy decoding step (then
        T = 1).  Override it to change the logits, e.g. add a bias over the vocabulary
        computed from ``inputs`` (the slot's local input ports, whole batch).
        """
        logits = self.output(hidden) if self.output is not None else hidden @ self.embedding.weight.t()
        bias = inputs.get("vocab_bias")
        if bias is not None:  # (B, V): the same bias at every position of a sample
            logits = logits + (bias.unsqueeze(1) if bias.dim() == 2 else bias)
        return logits

    def vocab_log_probs(self, hidden: torch.Tensor, inputs: dict[str, Any]) -> torch.Tensor:
        """log softmax of :meth:`vocab_logits` (B, T, V): the plain vocabulary distribution."""
        return F.log_softmax(self.vocab_logits(hidden, inputs), dim=-1)

    def token_log_probs(self, hidden: torch.Tensor, memories: dict[str, Memory],
                        inputs: dict[str, Any]) -> torch.Tensor:
        """Decoder states (B, T, D) -> the output distribution's log-probabilities (B, T, V)."""
        return self.vocab_log_probs(hidden, inputs)

    def target_log_probs(self, hidden: torch.Tensor, memories: dict[str, Memory], inputs: dict[str, Any],
                         targets: torch.Tensor) -> torch.Tensor:
        """log Pr(target) (B, T); equal to gathering :meth:`token_log_probs` at the targets."""
        return self.token_log_probs(hidden, memories, inputs).gather(-1, targets.unsqueeze(-1)).squeeze(-1)

    def target_weights(self, targets: torch.Tensor, inputs: dict[str, Any]) -> torch.Tensor | None:
        """Per-target loss weights (B, T) for ``loss.gen``, or None (all 1, the default).

        See :func:`crs.nn.token_nll`: the loss becomes sum w_t * nll_t / #targets, while
        ``nll_sum``/``nll_count`` stay unweighted for perplexity.
        """
        return None

    # ------------------------------------------------------------- running
    def forward(self, inputs: dict[str, Any]) -> dict[str, Any]:
        response = inputs.get("response")
        if response is None:
            return {}  # nothing to score; replies come from `generate`
        memories = self.encode(inputs)
        decoder_input, targets, target_mask = shift_targets(response, inputs.get("response_mask"))
        hidden = self.decoder(decoder_input, memories)
        weights = self.target_weights(targets, inputs)
        if torch.is_grad_enabled() and not self.config.label_smoothing:
            # Training needs only the targets' log-probabilities; subclasses (the copy mixture)
            # then avoid building and back-propagating through several (B, T, V) tensors.
            stats = target_nll(self.target_log_probs(hidden, memories, inputs, targets), target_mask,
                               token_weights=weights)
            return {"loss.gen": stats["loss"], "nll_sum": stats["nll_sum"], "nll_count": stats["nll_count"]}
        log_probs = self.token_log_probs(hidden, memories, inputs)
        stats = token_nll(log_probs, targets, target_mask, self.config.label_smoothing, weights)
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
