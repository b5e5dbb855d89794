"""Samples from conversations: one per recommender turn, with its dialogue context.

``samples.roles`` says whose turns become samples: ``[recommender]`` (the default, as
CRSLab) or ``[seeker, recommender]``, as the C2-CRS loader has it: every turn after the
first, of either speaker.  A recommender turn's targets are ``Turn.recommended``; a
seeker turn's are the items it mentions (C2-CRS trains and scores the recommender on
them too).  ``response_turn["role"]`` tells the two apart downstream.

Each turn is analysed once (placeholder text, tokens, per-token entity and item tags,
item / entity / word nodes, its ``context_turns`` record) and the context of every
later recommender turn is assembled from those pieces, so building stays linear in
the number of turns times the context length (ReDial: ~100k turns in seconds).

Item mentions become one placeholder token each (:func:`crs.data.vocab.item_token`:
``@<item_id>`` for word-like ids), so that generators can emit items and the
vocabulary stays independent of how titles are spelt.

How mentions are located in a turn's text (what ``context_token_entities`` /
``context_token_items`` and the placeholders rest on):

* **items**: every exact (case-sensitive) occurrence of a mention's words, longer
  mentions first, occurrences never overlapping -- the rule the placeholders have
  always followed, so corpora whose texts name items verbatim (ReDial's ``@123``,
  the demo) keep their tokens.  A mention with no exact occurrence falls back to
  case-insensitive whole-word occurrences (INSPIRED annotators write "Knives Out"
  where the text says "knives out").  Mentions still not found get no placeholder;
  they stay in ``context_items`` / ``context_entities`` and in the turn record's
  ``unplaced_items``.  Each placeholder token maps to its item and the item's entity node.
* **annotated entities** (``Turn.entities``): occurrences of the mention's words in
  the placeholder text (exact, else case-insensitive) that start and end on token
  boundaries, longer mentions first; tokens already tagged (items) keep their tag.
* **linker entities**: the linker's ``link_tokens(tokens)`` spans
  (:meth:`crs.interfaces.EntityLinker.link_tokens`; ``phrase_matcher`` implements it)
  tag the tokens still untagged.  A linker that does not implement it only adds
  nodes to ``context_entities``, as before.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Iterable, Sequence

from ..config.spec import SamplesSpec
from ..errors import ConfigError, check_choice
from ..interfaces import ItemIndex
from ..knowledge import IndexedGraph
from .samples import Sample
from .schema import RECOMMENDER, ROLES, SEEKER, Conversation, Mention, Turn
from .vocab import Vocabulary, item_token, tokenize_spans

#: English function words: never context words, never phrases on their own for linkers.
STOPWORDS = frozenset("""
a about above after again against all am an and any are aren't as at be because been before being below between
both but by can can't cannot could couldn't did didn't do does doesn't doing don't down during each few for from
further had hadn't has hasn't have haven't having he he'd he'll he's her here here's hers herself him himself his
how how's i i'd i'll i'm i've if in into is isn't it it's its itself let's me more most mustn't my myself no nor
not of off on once only or other ought our ours ourselves out over own same shan't she she'd she'll she's should
shouldn't so some such than that that's the their theirs them themselves then there there's these they they'd
they'll they're they've this those through to too under until up very was wasn't we we'd we'll we're we've were
weren't what what's when when's where where's which while who who's whom why why's with won't would wouldn't you
you'd you'll you're you've your yours yourself yourselves also just really yes yeah ok okay oh hi hello hey
thanks thank well will one get got lot lots like s t d ll m re ve anything something everything nothing
maybe please would shall
""".split())

NO_ENTITY, NO_ITEM = 0, -1  # per-token tags of tokens that name nothing (the fields' pad values)
_WORD_CHAR = re.compile(r"\w")


# ------------------------------------------------------------------ locating mentions
def _free(start: int, end: int, taken: Sequence[tuple[int, int, Any]]) -> bool:
    return all(end <= s or start >= e for s, e, _ in taken)


def _exact(text: str, surface: str, taken: Sequence[tuple[int, int, Any]]) -> list[tuple[int, int]]:
    """Non-overlapping exact occurrences of `surface`, left to right, clear of `taken` spans."""
    found, at = [], text.find(surface)
    while at >= 0:
        end = at + len(surface)
        if _free(at, end, taken):
            found.append((at, end))
            at = text.find(surface, end)
        else:
            at = text.find(surface, at + 1)
    return found


@lru_cache(maxsize=65536)
def whole_word_pattern(surface: str, ignore_case: bool = True) -> re.Pattern:
    """`surface` as a regex matching it only where it is not part of a longer word (no ``\\w`` on either side).

    Compiled once per surface (the per-turn paths search the same mention words again and again).
    """
    return re.compile(rf"(?<!\w){re.escape(surface)}(?!\w)", re.IGNORECASE if ignore_case else 0)


def _whole_words(text: str, surface: str, taken: Sequence[tuple[int, int, Any]]) -> list[tuple[int, int]]:
    """Case-insensitive occurrences of `surface` not inside a longer word, clear of `taken` spans."""
    return [(m.start(), m.end()) for m in whole_word_pattern(surface).finditer(text)
            if _free(m.start(), m.end(), taken)]


def item_spans(text: str, mentions: Iterable[Mention]) -> list[tuple[int, int, str]]:
    """``(start, end, item_id)`` of the item mentions found in `text`, sorted (rules in the module docstring)."""
    taken: list[tuple[int, int, str]] = []
    for mention in sorted(mentions, key=lambda m: len(m.text), reverse=True):
        if not mention.text:
            continue
        found = _exact(text, mention.text, taken) or _whole_words(text, mention.text, taken)
        taken += [(start, end, mention.id) for start, end in found]
    return sorted(taken)


def _placeholder_text(text: str, spans: Sequence[tuple[int, int, str]]) -> str:
    """`text` with each span replaced by its item's token, spaced off only where a word character touches it
    (so the token stays one token, and the text keeps its punctuation as written for text-level models)."""
    parts, pos = [], 0
    for start, end, item_id in spans:
        token = item_token(item_id)
        if (parts and start == pos) or (start > 0 and _WORD_CHAR.match(text[start - 1])):  # touches a token
            token = " " + token
        if end < len(text) and _WORD_CHAR.match(text[end]):
            token += " "
        parts += [text[pos:start], token]
        pos = end
    parts.append(text[pos:])
    return "".join(parts)


def replace_mentions(turn: Turn) -> str:
    """The turn text with each located item mention replaced by its placeholder token (:func:`item_token`)."""
    return _placeholder_text(turn.text, item_spans(turn.text, turn.items))


# ------------------------------------------------------------------ turns
@dataclass
class _TurnInfo:
    """What one turn contributes to the context of later turns."""

    text: str  # as written (context_text)
    record: dict  # the context_turns record; shared by every sample that sees the turn
    token_ids: list[int]
    token_entities: list[int]  # entity node per token, NO_ENTITY when none
    token_items: list[int]  # item index per token, NO_ITEM when none
    entities: list[int]
    words: list[int]
    items: list[int]


class SampleBuilder:
    """Holds the lookup tables of one pipeline; `conversation()` turns one conversation into samples."""

    def __init__(self, *, vocab: Vocabulary, items: ItemIndex, entity_graph: IndexedGraph | None,
                 word_graph: IndexedGraph | None, linker: Any, users: dict[str, int], spec: SamplesSpec,
                 stopwords: Iterable[str] | None = None):
        self.vocab, self.linker, self.users, self.spec = vocab, linker, users, spec
        self.item_position = {item_id: i for i, item_id in enumerate(items.ids)}
        self.item_of_token = items.token_index
        self.item_nodes = items.entity_nodes.tolist()
        self.entity_index = entity_graph.node_index if entity_graph is not None else {}
        self.word_index = word_graph.node_index if word_graph is not None else {}
        self.stopwords = frozenset(STOPWORDS if stopwords is None else stopwords)
        self.link_tokens = getattr(linker, "link_tokens", None)
        self.roles = check_roles(spec.roles)

    @staticmethod
    def _targets(turn: Turn) -> list[str]:
        """Item ids a sample of `turn` is scored on: what a recommender recommends, what a seeker mentions."""
        return turn.recommended if turn.role == RECOMMENDER else [m.id for m in turn.items]

    def _words(self, tokens: list[str]) -> list[int]:
        """Word-graph nodes named by single tokens or by two-token compounds ("science_fiction")."""
        found = []
        for i, tok in enumerate(tokens):
            if i + 1 < len(tokens):
                pair = self.word_index.get(f"{tok}_{tokens[i + 1]}")
                if pair is not None:
                    found.append(pair)
            node = self.word_index.get(tok)
            if node is not None and tok not in self.stopwords:
                found.append(node)
        return found

    def analyse(self, turn: Turn) -> _TurnInfo:
        text = replace_mentions(turn)
        spans = tokenize_spans(text)
        tokens = [tok for tok, _, _ in spans]
        index, unk = self.vocab.index, self.vocab.unk
        token_items = [self.item_of_token.get(tok, NO_ITEM) for tok in tokens]
        token_entities = [self.item_nodes[i] if i != NO_ITEM else NO_ENTITY for i in token_items]
        self._tag_entities(turn, text, spans, token_entities)
        items = [self.item_position[m.id] for m in turn.items if m.id in self.item_position]
        # entity nodes in the order the turn names them (mentions without words go last)
        located = []
        for m in turn.items:
            if m.id in self.item_position:
                located.append((self._position(turn.text, m.text), self.item_nodes[self.item_position[m.id]]))
        for m in turn.entities:
            node = self.entity_index.get(m.id)
            if node is not None:
                located.append((self._position(turn.text, m.text), node))
        entities = [node for _, node in sorted(located, key=lambda pair: pair[0])]
        if self.linker is not None:
            entities += self.linker.link(turn.text)
        words = self._words([t for t in tokens if not t.startswith("@")]) if self.word_index else []
        placed = [i for i in token_items if i != NO_ITEM]
        record = {"index": turn.index, "role": turn.role, "text": text, "items": placed,
                  "unplaced_items": [i for i in dict.fromkeys(items) if i not in placed]}
        return _TurnInfo(turn.text, record, [index.get(t, unk) for t in tokens], token_entities, token_items,
                         entities, words, items)

    def _tag_entities(self, turn: Turn, text: str, spans: list[tuple[str, int, int]], tags: list[int]) -> None:
        """Tag the tokens of annotated entity mentions, then of linker spans (see the module docstring)."""
        if turn.entities and spans:
            first_at = {start: i for i, (_, start, _) in enumerate(spans)}
            last_at = {end: i for i, (_, _, end) in enumerate(spans)}
            for m in sorted(turn.entities, key=lambda m: len(m.text), reverse=True):
                node = self.entity_index.get(m.id)
                if node is None or not m.text:
                    continue
                found = _exact(text, m.text, ()) or _whole_words(text, m.text, ())
                for start, end in found:
                    first, last = first_at.get(start), last_at.get(end)
                    if first is not None and last is not None and all(t == NO_ENTITY for t in tags[first:last + 1]):
                        tags[first:last + 1] = [node] * (last + 1 - first)
        if self.link_tokens is not None and spans:
            for first, end, node in self.link_tokens([tok for tok, _, _ in spans]):
                if all(t == NO_ENTITY for t in tags[first:end]):
                    tags[first:end] = [node] * (end - first)

    @staticmethod
    def _position(text: str, surface: str) -> int:
        at = text.find(surface) if surface else -1
        return at if at >= 0 else len(text)

    def conversation(self, conv: Conversation) -> list[Sample]:
        spec, vocab = self.spec, self.vocab
        roles = self.roles
        infos = [self.analyse(turn) for turn in conv.turns]
        user = self.users.get(conv.user_id, 0)
        samples = []
        for t, turn in enumerate(conv.turns):
            if turn.role not in roles or t == 0 or not turn.is_sample:  # is_sample: see crs.data.schema.Turn
                continue
            context = infos[max(0, t - spec.context_turns):t] if spec.context_turns > 0 else infos[:t]
            tokens: list[int] = []
            token_entities: list[int] = []
            token_items: list[int] = []
            for info in context:
                if tokens:
                    tokens.append(vocab.sep)
                    token_entities.append(NO_ENTITY)
                    token_items.append(NO_ITEM)
                tokens += info.token_ids
                token_entities += info.token_entities
                token_items += info.token_items
            if spec.max_context_tokens > 0:
                keep = slice(-spec.max_context_tokens, None)
                tokens, token_entities, token_items = tokens[keep], token_entities[keep], token_items[keep]
            # entity -> index (in context) of the turn naming it first; dict order = order of first mention
            first_turn: dict[int, int] = {}
            for k, info in enumerate(context):
                for node in info.entities:
                    first_turn.setdefault(node, k)
            entities = list(first_turn)
            if spec.max_context_entities > 0:
                entities = entities[-spec.max_context_entities:]
            reply = infos[t].token_ids
            if spec.max_response_tokens > 2:
                reply = reply[:spec.max_response_tokens - 2]
            samples.append(Sample(
                conv_id=conv.id,
                turn_index=turn.index,
                user_index=user,
                context_text=[info.text for info in context],
                context_turns=[info.record for info in context],
                context_tokens=tokens,
                context_token_entities=token_entities,
                context_token_items=token_items,
                context_entities=entities,
                context_entity_turns=[first_turn[node] for node in entities],
                context_words=_dedup_last((w for info in context for w in info.words), spec.max_context_words),
                context_items=_dedup_last((i for info in context for i in info.items), 0),
                target_items=list(dict.fromkeys(self.item_position[i] for i in self._targets(turn)
                                                if i in self.item_position)),
                response_tokens=[vocab.bos, *reply, vocab.eos],
                response_text=turn.text,
                response_turn=infos[t].record,
            ))
        return samples

    def next_turn_sample(self, turns: Sequence[Turn], conv_id: str = "chat", user_id: str = "") -> Sample:
        """The sample of the recommender turn that would follow `turns` (live chat, :mod:`crs.serving.session`).

        Built by :meth:`conversation`, exactly as training builds the sample of a recommender
        turn after these turns, with an empty reply and no targets (nothing was recommended yet).
        """
        upcoming = Turn(index=len(turns), role=RECOMMENDER, text="")
        samples = self.conversation(Conversation(conv_id, user_id, [*turns, upcoming]))
        if not turns or not samples or samples[-1].turn_index != upcoming.index:
            raise ValueError("a recommender turn needs at least one turn before it")
        return samples[-1]


def check_roles(roles: Sequence[str]) -> frozenset[str]:
    """``samples.roles`` as a set; a ConfigError when it is empty or names no speaker role."""
    if not roles:
        raise ConfigError("samples.roles", "no role is given, so no turn would become a sample",
                          f"use [{RECOMMENDER}] (the default) or [{SEEKER}, {RECOMMENDER}]")
    for i, role in enumerate(roles):
        check_choice(role, ROLES, f"samples.roles.{i}")
    return frozenset(roles)


def _dedup_last(values: Iterable[int], limit: int) -> list[int]:
    """Unique values in order of first occurrence, then the last `limit` of them (0 = all)."""
    unique = list(dict.fromkeys(values))
    return unique[-limit:] if limit > 0 else unique


def build_samples(conversations: Iterable[Conversation], *, vocab: Vocabulary, items: ItemIndex,
                  entity_graph: IndexedGraph | None, word_graph: IndexedGraph | None, linker: Any = None,
                  users: dict[str, int], spec: SamplesSpec, stopwords: Iterable[str] | None = None) -> list[Sample]:
    """One :class:`Sample` per turn of a ``spec.roles`` speaker (default: recommender) with index >= 1 that is
    not context only (``Turn.is_sample``; see crs.data.samples for the fields).

    :param linker: an fitted EntityLinker over `entity_graph`, or None; its nodes are added after a
        turn's annotated item / entity mentions.
    :param stopwords: tokens never used as context words (default :data:`STOPWORDS`).
    """
    builder = SampleBuilder(vocab=vocab, items=items, entity_graph=entity_graph, word_graph=word_graph,
                            linker=linker, users=users, spec=spec, stopwords=stopwords)
    return [sample for conv in conversations for sample in builder.conversation(conv)]
