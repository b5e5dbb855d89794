"""MESE's generator: decide whether to recommend, insert the recommended item, write the reply.

Type ``mese_generator`` (generator, slot ``generator``); paper §3.5.  It has no parameters
of its own: it continues the ``mese_plm`` slot's causal LM from the dialogue D (which ends
``header(recommender) [REC]``) over the same KV cache (``plm_context``).

**Training** (teacher forcing) on D' = D ``ITE(gold..) [REC_END] reply EOT`` for a reply that
names items (its ``response_turn`` items, in text order, once each), and on D without its
final [REC] followed by ``reply EOT`` otherwise.  ``loss.gen`` is the mean cross-entropy
(label smoothing: ``mese_plm``'s ``label_smoothing``) over

- the *decision* token, predicted one position before [REC]: [REC] on a recommending
  turn, the first reply token otherwise (the official code trains only the [REC] case);
- every reply token and the EOT.

``nll_sum`` / ``nll_count`` count the reply tokens and EOT only, without smoothing: perplexity
per sub-token of the PLM's tokenizer (``ppl_unit``), not per word.

**Inference** (``generate_text``): the decision is the argmax at the decision position.  If it
is [REC], the ITE of the recommender's top item (``items: predicted``, the paper's §3.5 and
the default: the model's own ranking, never the gold item) and [REC_END] are appended; with
``items: gold`` (what the released evaluation script does) the reply's gold items are
inserted, and only for replies that name items.  Then greedy decoding to EOT or
``max_reply_tokens`` (the official beam search with sampling and a reference-length oracle is
not reproduced).  The k-th [MOVIE_ID] of the reply becomes ``@<item_id>`` of the k-th item
(``fill: item_id``; ``title``: its name): the inserted item first, then the recommender's
next ones (gold: the gold items in order).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F

from crs.data.vocab import item_token
from crs.errors import check_positive_ints
from crs.interfaces import BuildDeps, Generator, Port
from crs.nn import token_nll
from crs.nn.kv_cache import causal_block, left_pad, run_block
from crs.plm import fill_placeholders

from .plm import MOVIE_ID, item_rows


class MeseGenerator(Generator):
    """Writes the recommender's reply over the mese_plm cache (see the module doc)."""

    ppl_unit = "subtoken"
    contract_node: ClassVar[dict] = {}

    @classmethod
    def contract_inputs(cls, deps: BuildDeps, batch: dict) -> dict[str, Any]:
        """The contract runs it after a tiny random mese_plm (see crs.plugins.mese.plm.contract_upstream)."""
        from .plm import contract_upstream

        return contract_upstream(deps, batch)

    @dataclass
    class Config:
        items: Literal["predicted", "gold"] = "predicted"  # which item a generated reply recommends
        fill: Literal["item_id", "title"] = "item_id"  # what replaces the k-th [MOVIE_ID]: @<item_id> or its name
        max_reply_tokens: int = 48  # cap on generated sub-tokens (also bounded by the evaluator's max_len)

    def __init__(self, config: "MeseGenerator.Config", deps: BuildDeps):
        super().__init__(config, deps)
        check_positive_ints(config, ["max_reply_tokens"], self.path)
        self.items = deps.items
        self.vocab = deps.vocab

    # ----------------------------------------------------------------- ports
    def input_ports(self) -> dict[str, Port]:
        return {
            "plm_context": Port("plm_context", optional=True, doc="the mese_plm cache of D"),
            "response_turn": Port("batch.response_turn", optional=True, doc="the reply record (text, items)"),
            "item_index": Port("item_index", optional=True, doc="long (N,) items encoded"),
            "item_embeds": Port("item_embeds", optional=True, doc="(N, hidden) ITEs"),
        }

    def output_ports(self) -> dict[str, Port]:
        return {
            "loss.gen": Port("loss.gen", optional=True, doc="decision + reply cross-entropy (smoothed)"),
            "nll_sum": Port("nll_sum", optional=True, doc="summed reply sub-token NLL"),
            "nll_count": Port("nll_count", optional=True, doc="number of reply sub-tokens"),
        }

    # ----------------------------------------------------------------- pieces
    @staticmethod
    def gold_items(record: dict) -> list[int]:
        return list(dict.fromkeys(i for i in record.get("items", ()) if i >= 0))

    def reply_ids(self, context: Any, record: dict) -> list[int]:
        """The reply's ids ([MOVIE_ID] for its items), then EOT."""
        return [*context.encoder.text_ids(record.get("text", ""), list(record.get("items", ()))),
                *context.special.eot]

    # ----------------------------------------------------------------- training
    def forward(self, inputs: dict[str, Any]) -> dict[str, Any]:
        context, replies = inputs.get("plm_context"), inputs.get("response_turn")
        if context is None or replies is None:
            return {}
        special, encoder = context.special, context.encoder
        table = context.model.get_input_embeddings()
        device = table.weight.device
        golds = [self.gold_items(r) for r in replies]
        recommends = torch.tensor([bool(g) for g in golds], device=device)
        needed = [i for g in golds for i in g]
        lookup = None
        if needed:
            lookup = item_rows(inputs.get("item_index"), inputs.get("item_embeds"), needed, self.path)
        blocks, targets, loss_masks, nll_masks = [], [], [], []
        for record, gold in zip(replies, golds):
            reply = self.reply_ids(context, record)
            if gold:
                rows = torch.tensor([int(lookup[i]) for i in gold], device=device)
                ites = inputs["item_embeds"][rows].to(table.weight.dtype)
                tokens = table(torch.tensor([special.rec_end, *reply], device=device))
                blocks.append(torch.cat([ites, tokens]))
                # predictions: decision -> [REC]; block position j -> block token j + 1 (reply part only)
                first = len(gold)  # [REC_END] predicts the first reply token
                target = [special.rec] + [0] * first + reply
                loss_mask = [True] + [False] * first + [True] * len(reply)
                nll_mask = [False] + [False] * first + [True] * len(reply)
            else:
                blocks.append(table(torch.tensor(reply, device=device)))
                target = reply + [0]  # decision -> reply[0]; block position j -> reply[j + 1]
                loss_mask = [True] * len(reply) + [False]
                nll_mask = list(loss_mask)
            targets.append(torch.tensor(target, device=device))
            loss_masks.append(torch.tensor(loss_mask, device=device))
            nll_masks.append(torch.tensor(nll_mask, device=device))
        embeds, keys = _right_pad(blocks)
        prefix = context.prefix.hide_last(~recommends)  # a turn that does not recommend has no [REC]
        positions = prefix.next_position().unsqueeze(1) + torch.arange(embeds.shape[1], device=device)
        hidden, _ = run_block(context.model, prefix, embeds, positions, causal_block(embeds.shape[1], device), keys)
        head = context.model.get_output_embeddings()
        # (B, 1 + M, V): the decision logits, then one prediction per block position (the last predicts nothing)
        logits = torch.cat([context.decision_logits.unsqueeze(1), head(hidden)], dim=1)
        width = logits.shape[1]
        target = _pad_to(targets, width, 0)
        loss_mask = _pad_to(loss_masks, width, False)
        nll_mask = _pad_to(nll_masks, width, False)
        # half-precision logits are summed in float32; float64 (tests) stays float64
        log_probs = F.log_softmax(logits if logits.dtype == torch.float64 else logits.float(), dim=-1)
        smoothing = float(encoder.config.label_smoothing)
        loss = token_nll(log_probs, target, loss_mask, smoothing)["loss"]
        stats = token_nll(log_probs, target, nll_mask)
        return {"loss.gen": loss, "nll_sum": stats["nll_sum"], "nll_count": stats["nll_count"]}

    # ----------------------------------------------------------------- inference
    @torch.no_grad()
    def generate_text(self, inputs: dict[str, Any], max_len: int) -> list[str]:
        context = inputs.get("plm_context")
        if context is None:
            return [""] * len(inputs.get("response_turn") or ())
        limit = max(1, min(int(max_len), self.config.max_reply_tokens))
        batch = context.decision_logits.shape[0]
        if self.config.items == "gold":
            replies = inputs.get("response_turn") or [{}] * batch
            chosen = [self.gold_items(r) for r in replies]
        else:
            recommend = inputs.get("recommend")
            decisions = context.decision_logits.argmax(dim=-1) == context.special.rec
            top = recommend(1)[:, 0].tolist() if recommend is not None and bool(decisions.any()) else [-1] * batch
            chosen = [[top[b]] if bool(decisions[b]) and top[b] >= 0 else [] for b in range(batch)]
        texts = [self._reply(context, inputs, b, chosen[b], limit) for b in range(batch)]
        return self._fill(texts, chosen, inputs)

    def _reply(self, context: Any, inputs: dict[str, Any], row: int, items: list[int], limit: int) -> str:
        """Reply text of sample `row` (special tokens other than [MOVIE_ID] dropped)."""
        special, tok = context.special, context.tokenizer
        hidden_ids = {int(i) for i in tok.all_special_ids} | {special.rec, special.rec_end, special.sep}
        hidden_ids.discard(special.movie_id)
        ids = self.reply_token_ids(context, inputs, row, items, limit)
        return tok.decode([i for i in ids if i not in hidden_ids], skip_special_tokens=False).strip()

    def reply_token_ids(self, context: Any, inputs: dict[str, Any], row: int, items: list[int], limit: int,
                        trace: list | None = None) -> list[int]:
        """Greedy reply ids of sample `row` after D (EOT cut off), inserting `items` when there are any.

        `trace`, when given, receives the logits (V,) each generated token was chosen from."""
        special = context.special
        table = context.model.get_input_embeddings()
        device = table.weight.device
        head = context.model.get_output_embeddings()
        prefix = context.prefix.rows([row])
        if items:
            lookup = item_rows(inputs.get("item_index"), inputs.get("item_embeds"), items, self.path)
            ites = inputs["item_embeds"][lookup[torch.tensor(items, device=device)]].to(table.weight.dtype)
            block = torch.cat([ites, table(torch.tensor([special.rec_end], device=device))]).unsqueeze(0)
            hidden, prefix = _step(context, prefix, block)
            logits = head(hidden[0, -1])
        else:
            prefix = prefix.hide_last(torch.tensor([True], device=device))  # no [REC]: the reply follows the header
            # gold mode on a turn the model would recommend on: [REC] is not a reply token
            logits = context.decision_logits[row].clone()
            logits[special.rec] = float("-inf")
        generated: list[int] = []
        eot = special.eot
        while True:
            if trace is not None:
                trace.append(logits)
            generated.append(int(logits.argmax()))
            if generated[-len(eot):] == eot or len(generated) >= limit:
                break
            hidden, prefix = _step(context, prefix, table(torch.tensor([[generated[-1]]], device=device)))
            logits = head(hidden[0, -1])
        return generated[:-len(eot)] if generated[-len(eot):] == eot else generated

    def _fill(self, texts: list[str], chosen: list[list[int]], inputs: dict[str, Any]) -> list[str]:
        """The k-th [MOVIE_ID] -> the k-th item: the inserted ones, then the recommender's next best."""
        if self.items is None:
            return texts
        wanted = max(text.count(MOVIE_ID) for text in texts) if texts else 0
        rows = [list(c) for c in chosen]
        recommend = inputs.get("recommend")
        if wanted and recommend is not None and self.config.items == "predicted":
            ranked = recommend(min(wanted + 1, len(self.items))).tolist()
            rows = [list(dict.fromkeys([*c, *r])) for c, r in zip(chosen, ranked)]
        ids = [[self.items.ids[i] for i in row] for row in rows]
        if self.config.fill == "title":
            names = dict(zip(self.items.ids, self.items.names))
            return fill_placeholders(texts, MOVIE_ID, ids, item_token=lambda item: names[item])
        return fill_placeholders(texts, MOVIE_ID, ids, item_token=item_token)


def _step(context: Any, prefix: Any, embeds: torch.Tensor) -> tuple[torch.Tensor, Any]:
    """Run `embeds` (1, M, hidden) causally after `prefix`; the hidden states and the extended prefix."""
    width = embeds.shape[1]
    positions = prefix.next_position().unsqueeze(1) + torch.arange(width, device=embeds.device)
    return run_block(context.model, prefix, embeds, positions, causal_block(width, embeds.device))


def _right_pad(rows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Blocks (M_i, H) -> (B, max M, H) padded on the right, and the bool mask of real positions."""
    flipped, mask = left_pad([row.flip(0) for row in rows])
    return flipped.flip(1), mask.flip(1)


def _pad_to(rows: list[torch.Tensor], width: int, value: Any) -> torch.Tensor:
    out = torch.full((len(rows), width), value, dtype=rows[0].dtype, device=rows[0].device)
    for i, row in enumerate(rows):
        out[i, :len(row)] = row
    return out
