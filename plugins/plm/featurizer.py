"""The ``plm_tokens`` featurizer: a pretrained tokenizer's ids of each sample's context and reply.

Tokenizing is data preparation, done once per sample when the pipeline is built,
not in every forward pass (a sub-word tokenizer costs about as much as a tiny
model's step).  Fields (``<prefix>`` is the ``prefix`` key, default ``plm``):

========================  ========  =====================================================
``<prefix>_context_ids``  (B, L)    the dialogue context ending with the reply's role
                                    header, left-truncated to ``max_context_tokens``
``<prefix>_response_ids`` (B, R)    the reply, EOS last, at most ``max_response_tokens``
========================  ========  =====================================================

Both are ``pad`` fields (right-padded with the tokenizer's pad id, each with a
``_mask``); a causal LM re-aligns the context to the left itself.

The context is ``sample.context_turns`` (role and text, item mentions as item
tokens).  Item mentions become ``item_placeholder`` (default ``[MOVIE_ID]``, added
to the tokenizer as a special token), so a generator can learn *where* an item goes
and leave *which* item to the recommender; ``item_placeholder: null`` keeps the
``@<id>`` tokens as text.  Formats:

- ``plain``: one ``<Role>: <text>`` line per turn, then ``<Recommender role>:``; role
  names from ``roles``; BOS first when the tokenizer has one;
- ``chat``: the tokenizer's chat template (seeker = user, recommender = assistant)
  with the generation prompt, for instruction-tuned models.
"""
from __future__ import annotations

import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Optional

from crs.data.fields import Featurizer, Field
from crs.data.schema import RECOMMENDER, SEEKER
from crs.errors import ConfigError
from crs.interfaces import BuildDeps
from crs.plm import items_to_placeholder, load_tokenizer

Format = Literal["plain", "chat"]
FORMATS = typing.get_args(Format)
CHAT_ROLES = {SEEKER: "user", RECOMMENDER: "assistant"}


def added_tokens(special_tokens: list[str], placeholder: Optional[str]) -> list[str]:
    """The tokens added to the tokenizer, in order: `special_tokens`, then the placeholder.

    The featurizer and the generator both call this, so the same configuration gives
    both the same token ids.
    """
    tokens = list(special_tokens)
    if placeholder and placeholder not in tokens:
        tokens.append(placeholder)
    return tokens


class PLMTokens(Featurizer):
    """Sub-word ids of context and reply for a pretrained language model (see the module doc)."""

    # what `crs components` builds it from to list its fields (the tiny tokenizer shipped with crs)
    contract_node: ClassVar[dict] = {"tokenizer": "package:crs.tiny_models.causal_lm"}

    @dataclass
    class Config:
        tokenizer: str = ""  # HF model id, local folder, or package:<pip package>[/subdir]
        gguf_file: Optional[str] = None  # read the tokenizer from this .gguf file inside `tokenizer`
        special_tokens: list[str] = field(default_factory=list)  # added in order, e.g. ["[REC]", "[REC_END]"]
        item_placeholder: Optional[str] = "[MOVIE_ID]"  # item mentions become this token; null keeps @<id>
        prefix: str = "plm"  # field names: <prefix>_context_ids, <prefix>_response_ids
        format: Format = "plain"  # chat: the tokenizer's chat template
        roles: dict[str, str] = field(default_factory=lambda: {SEEKER: "User", RECOMMENDER: "System"})
        max_context_tokens: int = 256  # the last ones are kept
        max_response_tokens: int = 64  # EOS included

    def __init__(self, config: "PLMTokens.Config", deps: BuildDeps):
        super().__init__(config, deps)
        self._check(config)
        self.item_tokens = list(deps.items.tokens) if deps.items is not None else []  # by item index
        self.tokenizer = load_tokenizer(config.tokenizer, special_tokens=added_tokens(config.special_tokens,
                                        config.item_placeholder), key=f"{self.path}.tokenizer",
                                        gguf_file=config.gguf_file)
        if config.format == "chat" and not getattr(self.tokenizer, "chat_template", None):
            raise ConfigError(f"{self.path}.format", f"the tokenizer '{config.tokenizer}' has no chat template",
                              "use `format: plain`, or a tokenizer of an instruction-tuned model")
        self.eos = self.tokenizer.eos_token_id
        if self.eos is None:
            raise ConfigError(f"{self.path}.tokenizer", f"the tokenizer '{config.tokenizer}' has no EOS token, so "
                              "replies cannot be ended", "use the tokenizer of a causal language model")
        self.bos = self.tokenizer.bos_token_id

    def _check(self, config: "PLMTokens.Config") -> None:
        if config.format not in FORMATS:
            raise ConfigError(f"{self.path}.format", f"unknown format '{config.format}'",
                              f"use one of: {', '.join(FORMATS)}")
        if not config.prefix.isidentifier():
            raise ConfigError(f"{self.path}.prefix", f"'{config.prefix}' cannot start a field name",
                              "use letters, digits and _")
        if config.max_context_tokens < 2:
            raise ConfigError(f"{self.path}.max_context_tokens", f"must be at least 2, got {config.max_context_tokens}")
        if config.max_response_tokens < 2:
            raise ConfigError(f"{self.path}.max_response_tokens", f"must be at least 2 (EOS included), "
                              f"got {config.max_response_tokens}")

    # ----------------------------------------------------------------- fields
    def fields(self) -> list[Field]:
        p, pad = self.config.prefix, int(self.tokenizer.pad_token_id)
        source = self.config.tokenizer
        return [
            Field(f"{p}_context_ids", "pad", f"ids of the dialogue context under the tokenizer {source}, ending "
                  f"with the reply's role header (last {self.config.max_context_tokens} kept)", "(B, L)", pad=pad),
            Field(f"{p}_response_ids", "pad", f"ids of the reply under the tokenizer {source}, EOS last", "(B, R)",
                  pad=pad),
        ]

    def featurize(self, sample: Any, conversation: Any) -> dict[str, Any]:
        context, reply = self.turns(sample, conversation)
        p = self.config.prefix
        return {f"{p}_context_ids": self.context_ids(context), f"{p}_response_ids": self.response_ids(reply)}

    # ----------------------------------------------------------------- texts
    def turns(self, sample: Any, conversation: Any) -> tuple[list[tuple[str, str]], str]:
        """``[(role, text), ...]`` of the context and the reply text, item mentions as placeholders."""
        context = [(t.get("role", ""), self._placeholders(t.get("text", ""), t.get("items", ())))
                   for t in sample.context_turns]
        reply = sample.response_turn
        return context, self._placeholders(reply.get("text", ""), reply.get("items", ()))

    def _placeholders(self, text: str, items: Any) -> str:
        if not self.config.item_placeholder:
            return text
        tokens = [self.item_tokens[i] for i in items if 0 <= i < len(self.item_tokens)]
        return items_to_placeholder(text, tokens, self.config.item_placeholder)

    # ----------------------------------------------------------------- ids
    def context_ids(self, context: list[tuple[str, str]]) -> list[int]:
        """Token ids of the context plus the reply's role header, the last ``max_context_tokens`` kept."""
        limit = self.config.max_context_tokens
        if self.config.format == "chat":
            messages = [{"role": CHAT_ROLES.get(role, "user"), "content": text} for role, text in context]
            ids = _ids(self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True))
            return ids[-limit:]
        roles = self.config.roles
        lines = [f"{roles.get(role, role)}: {text}" if role else text for role, text in context]
        lines.append(f"{roles.get(RECOMMENDER, RECOMMENDER)}:")
        ids = self.tokenizer("\n".join(lines), add_special_tokens=False)["input_ids"]
        if self.bos is None:
            return ids[-limit:]
        return [self.bos, *ids[-(limit - 1):]]  # BOS survives truncation: the model always saw it first

    def response_ids(self, reply: str) -> list[int]:
        """Token ids of the reply (after a space, as it follows the header), then EOS."""
        ids = self.tokenizer(" " + reply.strip(), add_special_tokens=False)["input_ids"]
        return [*ids[:self.config.max_response_tokens - 1], self.eos]


def _ids(encoded: Any) -> list[int]:
    """``apply_chat_template(tokenize=True)`` returns a list in transformers 4 and a mapping in 5."""
    if hasattr(encoded, "keys"):
        encoded = encoded["input_ids"]
    return [int(i) for i in encoded]
