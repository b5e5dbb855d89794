"""One conversation with a trained pipeline: typed text in, a reply and ranked items out.

:class:`ChatEngine` wraps one loaded pipeline (``load_pipeline(run_dir)``) and is shared
by every conversation; :class:`ChatSession` holds one conversation's turns.  A typed
utterance becomes a sample exactly as training builds samples
(:meth:`crs.data.build.SampleBuilder.next_turn_sample`: same vocabulary, item
placeholders, context limits, word and entity nodes), so the model sees what it was
trained on.  Only the mention annotation differs: a corpus annotates the items and
entities its turns name, typed text carries none, so :class:`MentionFinder` supplies them:

- **items**: an item's name (with or without its trailing ``(year)``; a one-word name without
  its year only as written, capitalised), or its placeholder token typed as is (``@m0042``),
  becomes an item mention, hence a placeholder token;
- **entities**: the run's linker when its config has one (the corpus bundle's own, e.g.
  ReDial's ``phrase_matcher``; the sample builder also adds its nodes, as in training), or
  else a ``phrase_matcher`` fitted on the run's entity graph (``FALLBACK_LINKER``) when that
  component is installed; a linked item node stays an entity mention (as in training).

One call of :meth:`ChatEngine.answer` runs the pipeline once for the scores, and the
generator (when the pipeline has one) for a reply of at most ``reply_tokens`` tokens.

**Excluded items**: items already named in the conversation (the sample's
``context_items``, by either speaker) are never recommended again: the rule of the
``fresh`` evaluation protocol.  A recommendation-only pipeline adds no turn of its own to
the conversation (the ranked list is shown, not said); a generated reply is a
recommender turn, and the items it names are excluded from then on.

**/why** (:class:`Why`): the context entities and words of the sample (with their names),
each with its *contribution*: how much the top recommendation's score falls when that
one entity or word is left out of ``context_entities`` / ``context_words`` (leave-one-out,
all variants scored in one batch).  It works through the model's inputs, so it applies to
every recommender; one that does not read those fields (a text-only one) shows 0.0 for all.

Threading: a model is not safe to call from several threads at once (its graph-encoder
cache is shared state), so every model call holds :attr:`ChatEngine.lock`.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
import re
import threading
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Sequence

from ..data.build import STOPWORDS
from ..data.schema import RECOMMENDER, SEEKER, Mention, Turn
from ..data.vocab import detokenize, tokenize, tokenize_spans
from ..errors import CRSError
from .limits import MAX_CHARS, REPLY_TOKENS, TOP_N

#: The linker fitted on the run's entity graph when its config names none.
FALLBACK_LINKER = {"type": "phrase_matcher"}
WHY_SHOWN = 10  # entities and words listed by /why
_YEAR = re.compile(r"\s*\(\d{4}\)\s*$")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u2028\u2029]")
_MIN_NAME_CHARS = 3


class InputError(CRSError):
    """An utterance that cannot be used (empty, too long); the message says what to type instead."""


def clean_utterance(text: str, max_chars: int = MAX_CHARS) -> str:
    """`text` normalised (NFC, control characters dropped, whitespace collapsed), or an InputError.

    Markup is kept as typed: it is only text to the model, and every output escapes it.
    """
    if not isinstance(text, str):
        raise InputError("an utterance must be text")
    text = " ".join(_CONTROL.sub(" ", unicodedata.normalize("NFC", text)).split())
    if not text:
        raise InputError("the utterance is empty: type what you would like to watch")
    if len(text) > max_chars:
        raise InputError(f"the utterance has {len(text)} characters, more than the {max_chars} accepted: "
                         "say it in shorter turns")
    return text


# ------------------------------------------------------------------ results
@dataclass
class Recommendation:
    item_id: str
    name: str
    score: float


@dataclass
class Evidence:
    """One context entity or word of the sample, with what leaving it out costs the top item's score."""

    kind: str  # "entity" or "word"
    node: str  # the graph node's name
    name: str  # readable: an item's name, or the node name without its kind prefix
    contribution: float


@dataclass
class Why:
    top_item: str | None  # the item the contributions are measured on (the first recommendation)
    evidence: list[Evidence] = field(default_factory=list)  # largest contribution first
    excluded: list[str] = field(default_factory=list)  # names of the items named in the conversation
    note: str = ("contribution: how much the top recommendation's score falls when that entity or word is "
                 "left out of the context (leave-one-out); excluded: items already named, never recommended")


@dataclass
class Answer:
    reply: str | None  # the generated reply with item names shown, or None (no generator / not asked)
    recommendations: list[Recommendation]
    why: Why | None
    linked: list[str]  # readable names of what the user's turn was linked to (items and entities)


# ------------------------------------------------------------------ mentions
class MentionFinder:
    """Items and entities named in typed text, as the :class:`Mention` s a corpus would annotate."""

    def __init__(self, items: Any, item_names: Sequence[str], entity_graph: Any, linker: Any):
        self.items, self.linker = items, linker
        self.entity_graph = entity_graph
        self.item_of_node = {node: i for i, node in enumerate(items.entity_nodes.tolist()) if node > 0}
        self.names: dict[tuple[str, ...], int] = {}
        # One-word names without their year ("Loved", "Heat") match only as written (capitalised): typed in
        # lower case they are everyday words ("I loved it").
        self.cased: dict[tuple[str, ...], str] = {}
        for index, name in enumerate(item_names):
            for form in dict.fromkeys((name, _YEAR.sub("", name))):
                tokens = tuple(tokenize(form))
                # a name made of function words only ("Her", "Up") would match everyday words
                if len(form) >= _MIN_NAME_CHARS and any(t.isalnum() and t not in STOPWORDS for t in tokens):
                    self.names.setdefault(tokens, index)
                    if len(tokens) == 1:
                        self.cased.setdefault(tokens, form.strip())
        self.longest = max((len(k) for k in self.names), default=0)

    def turn(self, index: int, role: str, text: str) -> Turn:
        """A turn of `text` with its item and entity mentions (item mentions also become ``recommended``
        for a recommender turn, as a corpus records what its recommender proposes)."""
        spans = tokenize_spans(text)
        tokens = [tok for tok, _, _ in spans]
        items: list[Mention] = []
        taken = [False] * len(tokens)

        def add_item(i: int, first: int, end: int) -> None:
            items.append(Mention(self.items.ids[i], text[spans[first][1]:spans[end - 1][2]]))
            taken[first:end] = [True] * (end - first)

        for k, tok in enumerate(tokens):  # placeholders typed (or generated) as they are
            i = self.items.item_of_token(tok) if tok.startswith("@") else -1
            if i >= 0:
                add_item(i, k, k + 1)
        k = 0
        while k < len(tokens):  # item names, greedy longest match
            for length in range(min(self.longest, len(tokens) - k), 0, -1):
                key = tuple(tokens[k:k + length])
                i = self.names.get(key, -1)
                if key in self.cased and text[spans[k][1]:spans[k][2]] != self.cased[key]:
                    continue
                if i >= 0 and not any(taken[k:k + length]):
                    add_item(i, k, k + length)
                    k += length - 1
                    break
            k += 1
        entities: list[Mention] = []
        link_tokens = getattr(self.linker, "link_tokens", None)
        if link_tokens is not None and self.entity_graph is not None:
            for first, end, node in link_tokens(tokens):
                if any(taken[first:end]):
                    continue
                # An item's node found by the linker stays an entity mention, as the run's linker made it in
                # training; items are what their names or placeholders say (above).
                if 0 < node < len(self.entity_graph.nodes):
                    entities.append(Mention(self.entity_graph.nodes[node], text[spans[first][1]:spans[end - 1][2]]))
        recommended = [m.id for m in items] if role == RECOMMENDER else []
        return Turn(index=index, role=role, text=text, items=items, entities=entities,
                    recommended=list(dict.fromkeys(recommended)), is_sample=False)


# ------------------------------------------------------------------ engine
class ChatEngine:
    """A loaded pipeline, ready to answer turns of any number of :class:`ChatSession` s."""

    def __init__(self, pipeline: Any, *, linker: Any = None):
        """:param linker: the entity linker for typed text; default: the run's, else :data:`FALLBACK_LINKER`."""
        from ..data.build import SampleBuilder

        self.pipeline, self.model = pipeline, pipeline.model
        self.lock = threading.Lock()
        spec = pipeline.spec
        # the graphs and featurizers the run's samples were built with
        entity_graph, word_graph = pipeline.entity_graph, pipeline.word_graph
        self.entity_graph = entity_graph
        self.item_names = list(pipeline.items.names)
        self.builder = SampleBuilder(vocab=pipeline.vocab, items=pipeline.items, entity_graph=entity_graph,
                                     word_graph=word_graph, linker=pipeline.linker, users=pipeline.users,
                                     spec=spec.samples)
        if linker is None:
            linker = pipeline.linker or _fallback_linker(pipeline, entity_graph)
        self.finder = MentionFinder(pipeline.items, self.item_names, entity_graph, linker)
        self.featurizers = list(pipeline.featurizers)
        self.word_names = list(word_graph.nodes) if word_graph is not None else []
        self.ids = itertools.count(1)

    @property
    def has_recommender(self) -> bool:
        return bool(self.model.has_recommender)

    @property
    def has_generator(self) -> bool:
        return bool(self.model.has_generator)

    def warm_up(self) -> None:
        """Answer one throw-away turn, so that the first user does not wait for the graph encoders (their
        outputs are computed once and cached while the model is in eval mode) and lazy initialisation."""
        self.answer([self.finder.turn(0, SEEKER, "hello")], top_n=1)

    def session(self) -> "ChatSession":
        return ChatSession(self, f"chat-{next(self.ids)}")

    # -------------------------------------------------------------- a turn
    def sample(self, turns: Sequence[Turn], conv_id: str = "chat") -> Any:
        """The sample of the recommender turn after `turns`, featurized like the run's samples."""
        from ..data.schema import Conversation

        sample = self.builder.next_turn_sample(turns, conv_id=conv_id)
        if self.featurizers:
            conv = Conversation(conv_id, "", [*turns, Turn(len(turns), RECOMMENDER, "")])
            for featurizer in self.featurizers:
                sample.features.update(featurizer.featurize(sample, conv))
        return sample

    def answer(self, turns: Sequence[Turn], *, top_n: int = TOP_N, reply: bool = True,
               reply_tokens: int = REPLY_TOKENS, why: bool = True, conv_id: str = "chat"
               ) -> tuple[Answer, str | None]:
        """Recommendations (and a reply) for the recommender turn after `turns`.

        :returns: the answer, and the reply as the model wrote it (item placeholders kept; None
            without one), which the session keeps as the next recommender turn.
        """
        import torch

        sample = self.sample(turns, conv_id)
        batch = self._collate([sample])
        recs: list[Recommendation] = []
        raw_reply: str | None = None
        explained: Why | None = None
        with self.lock, torch.no_grad():
            scores = None
            if self.has_recommender:
                scores = self.model(batch, ["scores"])["scores"][0].float()
                recs = self._top(scores, sample.context_items, top_n)
            if reply and self.has_generator:
                raw_reply = self._generate(batch, reply_tokens)
            if why and scores is not None and recs:
                explained = self._why(sample, scores, recs[0])
        shown = self.show_items(raw_reply) if raw_reply is not None else None
        position = self.builder.item_position
        linked = [*(self.item_names[position[m.id]] for m in turns[-1].items),
                  *(_readable(m.id) for m in turns[-1].entities)] if turns else []
        return Answer(shown, recs, explained, list(dict.fromkeys(linked))), raw_reply

    def _collate(self, samples: list) -> dict:
        return next(self.pipeline.batches(samples, len(samples), shuffle=False, seed=0))

    def _top(self, scores: Any, excluded: Sequence[int], top_n: int) -> list[Recommendation]:
        import torch

        masked = scores.clone()
        if excluded:
            masked[torch.tensor(list(excluded), dtype=torch.long, device=masked.device)] = float("-inf")
        k = min(max(int(top_n), 0), masked.shape[0])
        top = masked.topk(k)
        items = self.pipeline.items
        return [Recommendation(items.ids[i], self.item_names[i], round(float(v), 4))
                for v, i in zip(top.values.tolist(), top.indices.tolist()) if v != float("-inf")]

    def _generate(self, batch: dict, reply_tokens: int) -> str:
        if self.model.generates_text:
            return str(self.model.generate_text(batch, max_len=reply_tokens)[0])
        ids = self.model.generate(batch, max_len=reply_tokens)[0].tolist()
        return detokenize(self.pipeline.vocab.decode(ids))

    def _why(self, sample: Any, scores: Any, top: Recommendation) -> Why:
        """Leave-one-out contributions of the context entities and words to the top item's score."""
        target = self.builder.item_position[top.item_id]
        variants, evidence = [], []
        for position, node in enumerate(sample.context_entities):
            kept = [i for i in range(len(sample.context_entities)) if i != position]
            variants.append(dataclasses.replace(
                sample, context_entities=[sample.context_entities[i] for i in kept],
                context_entity_turns=[sample.context_entity_turns[i] for i in kept]))
            name = self.entity_graph.nodes[node] if self.entity_graph is not None else str(node)
            evidence.append(Evidence("entity", name, self._entity_name(node, name), 0.0))
        for position, node in enumerate(sample.context_words):
            variants.append(dataclasses.replace(sample, context_words=[w for i, w in enumerate(sample.context_words)
                                                                       if i != position]))
            name = self.word_names[node] if node < len(self.word_names) else str(node)
            evidence.append(Evidence("word", name, name, 0.0))
        if variants:
            left_out = self.model(self._collate(variants), ["scores"])["scores"][:, target].float()
            base = float(scores[target])
            for row, value in zip(evidence, left_out.tolist()):
                row.contribution = round(base - value, 4) if math.isfinite(value) else 0.0
        evidence.sort(key=lambda e: -e.contribution)
        excluded = [self.item_names[i] for i in sample.context_items]
        return Why(top.name, evidence[:WHY_SHOWN], excluded)

    def _entity_name(self, node: int, name: str) -> str:
        items = self.finder.item_of_node
        return self.item_names[items[node]] if node in items else _readable(name)

    def show_items(self, text: str) -> str:
        """`text` with every item placeholder token replaced by the item's name."""
        items = self.pipeline.items
        out, at = [], 0
        for tok, start, end in tokenize_spans(text):
            i = items.item_of_token(tok) if tok.startswith("@") else -1
            if i >= 0:
                out += [text[at:start], self.item_names[i]]
                at = end
        return "".join(out) + text[at:]


class ChatSession:
    """One conversation: its turns so far, answered by a shared :class:`ChatEngine`."""

    def __init__(self, engine: ChatEngine, conv_id: str = "chat"):
        self.engine, self.conv_id = engine, conv_id
        self.turns: list[Turn] = []
        self.last: Answer | None = None

    def reset(self) -> None:
        self.turns, self.last = [], None

    def say(self, text: str, *, top_n: int = TOP_N, reply: bool = True, reply_tokens: int = REPLY_TOKENS,
            max_chars: int = MAX_CHARS, why: bool = True) -> Answer:
        """Add the user's turn, answer it, and add the generated reply (if any) as the recommender's turn."""
        text = clean_utterance(text, max_chars)
        finder = self.engine.finder
        turns = [*self.turns, finder.turn(len(self.turns), SEEKER, text)]
        answer, raw_reply = self.engine.answer(turns, top_n=top_n, reply=reply, reply_tokens=reply_tokens,
                                               why=why, conv_id=self.conv_id)
        if raw_reply is not None and raw_reply.strip():
            turns.append(finder.turn(len(turns), RECOMMENDER, raw_reply))
        self.turns, self.last = turns, answer
        return answer


def _fallback_linker(pipeline: Any, entity_graph: Any) -> Any:
    """:data:`FALLBACK_LINKER` fitted on `entity_graph`, or None (no knowledge graph: only the item-only graph of a
    pipeline without one, whose items MentionFinder finds by name; or the component is not installed)."""
    if entity_graph is None or entity_graph.name not in pipeline.graphs:
        return None
    if FALLBACK_LINKER["type"] not in pipeline.registry:
        return None
    from ..interfaces import BuildDeps

    linker = pipeline.registry.build("entity_linker", dict(FALLBACK_LINKER), "linker", BuildDeps(path="linker"))
    linker.fit(entity_graph)
    return linker


def _readable(node: str) -> str:
    """A node name for people: ``person:Ann Lee`` -> ``Ann Lee``; DBpedia URIs -> their label."""
    from ..labels import uri_label

    text = re.sub(r"^[a-z_]+:(?!//)", "", node)
    return uri_label(text) if text.startswith("<") or "://" in text else text
