"""Samples from conversations: one per recommender turn, with its dialogue context.

Each turn is analysed once (tokens, item / entity / word nodes) and the context of
every later recommender turn is assembled from those pieces, so building stays
linear in the number of turns times the context length (ReDial: ~100k turns in
seconds).  Item mentions become one `@<item_id>` token each, so that generators can
emit items and the vocabulary stays independent of how titles are spelt.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from ..config.spec import SamplesSpec
from ..interfaces import ItemIndex
from ..knowledge import IndexedGraph
from .samples import Sample
from .schema import RECOMMENDER, Conversation, Turn
from .vocab import Vocabulary, tokenize

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


def replace_mentions(turn: Turn) -> str:
    """The turn text with each item mention's words replaced by its `@<item_id>` token.

    Longer surface forms go first so a title inside another title is not split;
    mentions whose words are absent (ReDial text already says "@123") are left alone.
    """
    text = turn.text
    for mention in sorted(turn.items, key=lambda m: len(m.text), reverse=True):
        if mention.text and mention.text in text:
            text = text.replace(mention.text, f" @{mention.id} ")
    return text


@dataclass
class _TurnInfo:
    """What one turn contributes to the context of later turns."""

    text: str
    token_ids: list[int]
    entities: list[int]
    words: list[int]
    items: list[int]


def _dedup_last(values: Iterable[int], limit: int) -> list[int]:
    """Unique values in order of first occurrence, then the last `limit` of them (0 = all)."""
    unique = list(dict.fromkeys(values))
    return unique[-limit:] if limit > 0 else unique


class SampleBuilder:
    """Holds the lookup tables of one pipeline; `conversation()` turns one conversation into samples."""

    def __init__(self, *, vocab: Vocabulary, items: ItemIndex, entity_graph: IndexedGraph | None,
                 word_graph: IndexedGraph | None, linker: Any, users: dict[str, int], spec: SamplesSpec,
                 stopwords: Iterable[str] | None = None):
        self.vocab, self.linker, self.users, self.spec = vocab, linker, users, spec
        self.item_position = {item_id: i for i, item_id in enumerate(items.ids)}
        self.item_nodes = items.entity_nodes.tolist()
        self.entity_index = entity_graph.node_index if entity_graph is not None else {}
        self.word_index = word_graph.node_index if word_graph is not None else {}
        self.stopwords = frozenset(STOPWORDS if stopwords is None else stopwords)

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
        tokens = tokenize(text)
        index, unk = self.vocab.index, self.vocab.unk
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
        return _TurnInfo(turn.text, [index.get(t, unk) for t in tokens], entities, words, items)

    @staticmethod
    def _position(text: str, surface: str) -> int:
        at = text.find(surface) if surface else -1
        return at if at >= 0 else len(text)

    def conversation(self, conv: Conversation) -> list[Sample]:
        spec, vocab = self.spec, self.vocab
        infos = [self.analyse(turn) for turn in conv.turns]
        user = self.users.get(conv.user_id, 0)
        samples = []
        for t, turn in enumerate(conv.turns):
            if turn.role != RECOMMENDER or t == 0:
                continue
            context = infos[max(0, t - spec.context_turns):t] if spec.context_turns > 0 else infos[:t]
            tokens: list[int] = []
            for info in context:
                if tokens:
                    tokens.append(vocab.sep)
                tokens += info.token_ids
            if spec.max_context_tokens > 0:
                tokens = tokens[-spec.max_context_tokens:]
            reply = infos[t].token_ids
            if spec.max_response_tokens > 2:
                reply = reply[:spec.max_response_tokens - 2]
            samples.append(Sample(
                conv_id=conv.id,
                turn_index=turn.index,
                user_index=user,
                context_text=[info.text for info in context],
                context_tokens=tokens,
                context_entities=_dedup_last((e for info in context for e in info.entities),
                                             spec.max_context_entities),
                context_words=_dedup_last((w for info in context for w in info.words), spec.max_context_words),
                context_items=_dedup_last((i for info in context for i in info.items), 0),
                target_items=list(dict.fromkeys(self.item_position[i] for i in turn.recommended
                                                if i in self.item_position)),
                response_tokens=[vocab.bos, *reply, vocab.eos],
                response_text=turn.text,
            ))
        return samples


def build_samples(conversations: Iterable[Conversation], *, vocab: Vocabulary, items: ItemIndex,
                  entity_graph: IndexedGraph | None, word_graph: IndexedGraph | None, linker: Any = None,
                  users: dict[str, int], spec: SamplesSpec, stopwords: Iterable[str] | None = None) -> list[Sample]:
    """One :class:`Sample` per recommender turn with index >= 1 (see crs.data.samples for the fields).

    :param linker: an fitted EntityLinker over `entity_graph`, or None; its nodes are added after a
        turn's annotated item / entity mentions.
    :param stopwords: tokens never used as context words (default :data:`STOPWORDS`).
    """
    builder = SampleBuilder(vocab=vocab, items=items, entity_graph=entity_graph, word_graph=word_graph,
                            linker=linker, users=users, spec=spec, stopwords=stopwords)
    return [sample for conv in conversations for sample in builder.conversation(conv)]
