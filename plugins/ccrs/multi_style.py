"""CCRS's multi-style vocabulary bias (Li et al. 2022, Eq. 9-10), and KBRD's user-to-vocabulary bias.

Type ``multi_style`` (user encoder).  From the user preference p_u (B, d):

    mu^m = softmax(p_u W^C L)        style probabilities (B, n_s)             (Eq. 9)
    g_u  = mu^m L^T                  the user's speaking style (B, d)
    bias = W_2 ReLU(W_1 g_u)         (B, |V|), d -> bias_hidden -> |V|       (F of Eq. 10)

L (d x n_s) holds the n_s style embeddings (parameter ``styles``).  The paper prints
mu^m without the softmax, but its Fig. 4 reads mu^m as a probability, so we normalise.
``num_styles: 0`` skips the styles (g_u = p_u): the plain user-to-vocabulary bias of
KBRD (Chen et al. 2019, ``user_representation_to_bias_1/2``; layer names kept).

The bias reaches the reply generator through the ``transformer`` generator's optional
``vocab_bias`` input port, which adds it in the one logits hook
(:meth:`crs.nn.seq2seq.TransformerGenerator.vocab_logits`): the training loss and greedy
decoding both see it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from crs.errors import ConfigError, check_positive_ints
from crs.interfaces import BuildDeps, Port, UserEncoder


class MultiStyleBias(UserEncoder):
    """`multi_style`: a per-sample bias over the vocabulary from the user preference (and speaking styles)."""

    @dataclass
    class Config:
        dim: int = 128  # size of the user preference p_u
        num_styles: int = 4  # n_s; 0 = no styles, KBRD's plain user bias
        bias_hidden: int = 512  # hidden size of F (KBRD: 512)

    def __init__(self, config: Config, deps: BuildDeps):
        super().__init__(config, deps)
        check_positive_ints(config, ("dim", "bias_hidden"), self.path)
        if config.num_styles < 0:
            raise ConfigError(f"{self.path}.num_styles", f"must be 0 (no styles) or more, got {config.num_styles}",
                              "CCRS uses 4 styles; 0 gives KBRD's plain user bias")
        self.vocab_size = len(deps.require("vocab"))
        dim = config.dim
        if config.num_styles:
            self.similarity = nn.Linear(dim, dim, bias=False)  # W^C
            self.styles = nn.Parameter(torch.empty(dim, config.num_styles))  # L
            nn.init.xavier_uniform_(self.similarity.weight)
            nn.init.xavier_uniform_(self.styles)
        self.user_representation_to_bias_1 = nn.Linear(dim, config.bias_hidden)
        self.user_representation_to_bias_2 = nn.Linear(config.bias_hidden, self.vocab_size)

    def input_ports(self) -> dict[str, Port]:
        return {"user": Port("user", self.config.dim, doc="user preference p_u (B, dim)")}

    def output_ports(self) -> dict[str, Port]:
        ports = {"bias": Port("vocab_bias", self.vocab_size, doc="bias over the vocabulary (B, |V|)")}
        if self.config.num_styles:
            ports["style_probs"] = Port("style_probs", self.config.num_styles, doc="mu^m (B, num_styles)")
        return ports

    def style_probs(self, user: torch.Tensor) -> torch.Tensor:
        """mu^m (B, n_s): how much each speaking style fits each sample."""
        return torch.softmax(self.similarity(user) @ self.styles, dim=-1)

    def forward(self, inputs: dict) -> dict:
        user = inputs["user"]
        out = {}
        if self.config.num_styles:
            probs = self.style_probs(user)
            user = probs @ self.styles.t()  # g_u
            out["style_probs"] = probs
        out["bias"] = self.user_representation_to_bias_2(torch.relu(self.user_representation_to_bias_1(user)))
        return out
