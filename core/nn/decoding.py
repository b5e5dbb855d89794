"""Teacher-forcing loss and greedy decoding shared by the sequence generators.

Both work on *log-probabilities* rather than logits so that generators whose output
is a mixture (KGSF's copy mechanism) use the same code as plain softmax decoders.
"""
from __future__ import annotations

from typing import Callable

import torch


def shift_targets(response: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Split ``BOS y_1 .. y_n EOS`` into decoder input (drop last) and targets/mask (drop first)."""
    if mask is None:
        mask = response != 0
    return response[:, :-1], response[:, 1:], mask[:, 1:].bool()


def token_nll(log_probs: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor,
              label_smoothing: float = 0.0, token_weights: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Loss and perplexity statistics from log-probabilities (B, T, V) and targets (B, T).

    Returns ``loss`` (mean over non-pad targets, with label smoothing if > 0: the
    smoothed part is the mean negative log-probability over the vocabulary),
    ``nll_sum`` (float, plain NLL summed over non-pad targets, for perplexity) and
    ``nll_count`` (float, the number of those targets).  A batch without any target
    gives a zero loss that still has a gradient path.

    ``token_weights`` (B, T), optional, scales each target's loss term: the loss is
    then ``sum_t w_t * loss_t / #non-pad targets`` (C2-CRS's instance weighting,
    Eq. 11-12 as released), so all-ones weights give the unweighted loss.
    ``nll_sum``/``nll_count`` stay unweighted: perplexity is a property of the model,
    not of the training objective.
    """
    target_log_probs = log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (B, T)
    smooth = -log_probs.mean(dim=-1) if label_smoothing > 0 else None
    return target_nll(target_log_probs, mask, label_smoothing, smooth, token_weights)


def target_nll(target_log_probs: torch.Tensor, mask: torch.Tensor, label_smoothing: float = 0.0,
               smooth: torch.Tensor | None = None,
               token_weights: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """As :func:`token_nll`, from the targets' log-probabilities (B, T) alone.

    ``smooth`` is the per-position mean negative log-probability over the vocabulary,
    needed only for label smoothing; ``token_weights`` (B, T) as in :func:`token_nll`.
    """
    mask = mask.bool()
    nll = -target_log_probs
    count = mask.sum().to(target_log_probs.dtype)
    nll_sum = (nll * mask).sum()
    per_token = (1.0 - label_smoothing) * nll + label_smoothing * smooth if label_smoothing > 0 else nll
    if token_weights is not None:
        if token_weights.shape != nll.shape:
            raise ValueError(f"token_weights has shape {tuple(token_weights.shape)}, "
                             f"the targets {tuple(nll.shape)}")
        per_token = per_token * token_weights.to(per_token.dtype)
    # reuse nll_sum when nothing changes the per-token term (the common, unweighted case)
    loss_sum = nll_sum if per_token is nll else (per_token * mask).sum()
    loss = loss_sum / count.clamp(min=1.0)
    return {"loss": loss, "nll_sum": nll_sum.detach(), "nll_count": count.detach()}


StepFn = Callable[[torch.Tensor], torch.Tensor]


@torch.no_grad()
def greedy_decode(step: StepFn, batch_size: int, *, bos: int, eos: int, pad: int = 0, max_len: int = 30,
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """Greedy decoding of a batch.

    ``step(prefix)`` gets the token prefix (B, t) (starting with BOS) and returns the
    next-token scores (B, V) (log-probabilities or logits; only the argmax matters).
    Returns long (B, T) without BOS, T <= max_len: each row holds its tokens up to and
    including EOS, then ``pad``.  Decoding stops early once every row has produced EOS.
    """
    prefix = torch.full((batch_size, 1), bos, dtype=torch.long, device=device)
    finished = torch.zeros(batch_size, dtype=torch.bool, device=device)
    out: list[torch.Tensor] = []
    for _ in range(max_len):
        scores = step(prefix)
        token = scores.argmax(dim=-1)
        token = token.masked_fill(finished, pad)
        out.append(token)
        finished = finished | (token == eos)
        if bool(finished.all()):
            break
        prefix = torch.cat([prefix, token.unsqueeze(1)], dim=1)
    if not out:
        return torch.zeros(batch_size, 0, dtype=torch.long, device=device)
    return torch.stack(out, dim=1)
