"""Per-turn samples -> conversations, for the `jsonl` dataset's ``format: sample_per_line``.

Many CRS corpora are released as one JSON line per recommendation turn: the dialogue history as a
list of plain strings, the entities (and items) mentioned anywhere in that history as one pool, the
recommended items and the reply.  This module turns such lines back into :class:`Conversation` s:

* **speakers** alternate, counted back from the last history string, whose speaker is
  ``last_speaker`` (seeker by default: the reply answers the seeker); the reply is the recommender's.
  Blank history strings are dropped after the speakers are assigned;
* **one sample per line**: the reply is a sample turn with the line's recommended items; history turns
  are context only (``Turn.is_sample = False``), so a recommender turn of the history that no line
  answers makes no sample of its own;
* **grouping** (``group_samples``, default on): a line whose history starts with a whole earlier
  conversation (its history *and* reply, same speakers) continues that conversation instead of
  repeating its turns, so the samples of one dialogue become one conversation (one unit for the
  validation split and for user-level models, texts counted once in the vocabulary).  With
  ``fields.conversation_id`` only lines of the same id group; without it, lines group by content
  alone, so a dialogue that opens with exactly the turns of another one joins it -- which changes no
  sample's context.  A line that repeats an existing turn (same history, same reply; corpora that
  write one line per recommended item) adds its recommended items to that turn.  A line whose history
  is not such a continuation (a truncated window, a branch) starts a conversation of its own, which
  holds its full history;
* **pooled mentions** (``fields.entities``, ``fields.items``) are attached to turns so that every
  sample's context holds its line's pool: ``pooled_mentions: first_mention`` (default) puts each on the
  first turn whose text names it (by its text, id, id with underscores as spaces, or a URI's label;
  whole words, case-insensitive; names without a letter never match) and the rest on the last history
  turn; ``last_turn`` puts them all on the last history turn, i.e. keeps them pooled.  Only turns that
  no earlier line's sample has in its context are searched (for a continuing line: the previous reply
  and the new turns), so a continuing line never changes an earlier sample (a line repeating a turn adds
  what that turn's context lacks, which later turns then see too); a mention already on an earlier turn
  of the conversation is not repeated.  A line without history keeps its pool on the reply turn
  (such a line has no context, so it makes no sample);
* conversation ids: the ``conversation_id`` value, else ``<split>-<first line>``; a second conversation
  with the same id gets ``#2``, ``#3`` ...; users: ``user_id``, else the ``conversation_id`` value, else
  the conversation's id.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal, Optional

from crs.data.build import whole_word_pattern
from crs.data.schema import RECOMMENDER, SEEKER, Conversation, Mention, Turn
from crs.labels import uri_label

PooledMentions = Literal["first_mention", "last_turn"]
_LETTER = re.compile(r"[^\W\d_]")


@dataclass
class SampleLine:
    """One parsed line: what the file says, before it is placed in a conversation."""

    line: int
    history: list[str]
    reply: str
    recommended: list[Mention] = field(default_factory=list)
    entities: list[Mention] = field(default_factory=list)  # pooled over the history
    items: list[Mention] = field(default_factory=list)  # items the history mentions, pooled
    conversation_id: Optional[str] = None
    user_id: Optional[str] = None


@dataclass
class _Dialogue:
    id: str
    user_id: str
    turns: list[Turn]
    # kind ("entities" / "items") -> mention id -> position of the turn it is attached to (kept, not re-scanned:
    # a dialogue of n lines would otherwise cost n^2)
    attached: dict[str, dict[str, int]] = field(default_factory=lambda: {"entities": {}, "items": {}})


@lru_cache(maxsize=65536)
def _surfaces(ident: str, text: str) -> tuple[tuple[str, str], ...]:
    forms = [text, ident, ident.replace("_", " ")]
    if ident.startswith("<") or "/" in ident:
        forms.append(uri_label(ident))
    return tuple((form, form.casefold()) for form in dict.fromkeys(f.strip() for f in forms)
                 if form and _LETTER.search(form))


def named_in(text: str, mention: Mention, folded: Optional[str] = None) -> Optional[str]:
    """The words of `text` that name `mention` (as written there), or None.

    :param folded: ``text.casefold()`` when the caller has it (a turn is searched for many mentions).
    """
    folded = text.casefold() if folded is None else folded
    for surface, surface_folded in _surfaces(mention.id, mention.text):
        if surface_folded not in folded:  # the cheap test first: most surfaces are not in most turns
            continue
        if len(folded) != len(text):  # casefolding changed the length ("ß" -> "ss"): positions differ
            found = whole_word_pattern(surface).search(text)
            if found:
                return found.group(0)
            continue
        # same positions in `text` and `folded`: the casefolded match gives the words as written
        found = whole_word_pattern(surface_folded, ignore_case=False).search(folded)
        if found:
            return text[found.start():found.end()]
    return None


class DialogueAssembler:
    """Collects the lines of one split (in file order) and returns their conversations."""

    def __init__(self, split: str, *, last_speaker: str = SEEKER, pooled_mentions: str = "first_mention",
                 group: bool = True):
        self.split, self.last_speaker, self.pooled, self.group = split, last_speaker, pooled_mentions, group
        self.dialogues: list[_Dialogue] = []
        self._ends: dict[int, tuple[_Dialogue, int]] = {}  # chain hash of turns[:pos + 1] -> (dialogue, pos)
        self._ids: dict[str, int] = {}
        self.counts = {"lines": 0, "lines_continuing_a_conversation": 0, "lines_repeating_a_turn": 0,
                       "lines_without_history": 0, "pooled_mentions_not_found_in_text": 0}

    # ------------------------------------------------------------------ public
    def add(self, sample: SampleLine) -> None:
        self.counts["lines"] += 1
        history = self._speakers(sample.history)
        if not history:
            self.counts["lines_without_history"] += 1
        full = [*history, (RECOMMENDER, sample.reply)]
        hashes = self._chain(sample.conversation_id, full)
        if self.group and self._repeat(sample, full, hashes):
            return
        if self.group:
            for k in range(len(history), 0, -1):
                hit = self._ends.get(hashes[k - 1])
                if hit is None or not self._same(hit[0], full[:k]):
                    continue
                dialogue, pos = hit
                if pos == len(dialogue.turns) - 1:  # the conversation ends there: continue it
                    self.counts["lines_continuing_a_conversation"] += 1
                    self._append(dialogue, sample, full, start=k, hashes=hashes)
                    return
                break  # it goes on differently there: a branch, kept as a conversation of its own
        dialogue = _Dialogue(self._new_id(sample), "", [])
        dialogue.user_id = sample.user_id or sample.conversation_id or dialogue.id
        self.dialogues.append(dialogue)
        self._append(dialogue, sample, full, start=0, hashes=hashes)

    def conversations(self) -> list[Conversation]:
        out = []
        for dialogue in self.dialogues:
            for index, turn in enumerate(dialogue.turns):
                turn.index = index
            out.append(Conversation(id=dialogue.id, user_id=dialogue.user_id, turns=dialogue.turns))
        return out

    # ------------------------------------------------------------------ placing
    def _speakers(self, history: list[str]) -> list[tuple[str, str]]:
        other = RECOMMENDER if self.last_speaker == SEEKER else SEEKER
        last = len(history) - 1
        turns = [(self.last_speaker if (last - p) % 2 == 0 else other, text) for p, text in enumerate(history)]
        return [(role, text) for role, text in turns if text.strip()]

    @staticmethod
    def _chain(conversation_id: Optional[str], turns: list[tuple[str, str]]) -> list[int]:
        """Hash of each prefix ``turns[:i + 1]`` (seeded by the conversation id), built incrementally."""
        value, out = hash(("conversation", conversation_id)), []
        for role, text in turns:
            value = hash((value, role, text))
            out.append(value)
        return out

    @staticmethod
    def _same(dialogue: _Dialogue, turns: list[tuple[str, str]]) -> bool:
        return len(dialogue.turns) >= len(turns) and all(
            (t.role, t.text) == pair for t, pair in zip(dialogue.turns, turns))

    def _repeat(self, sample: SampleLine, full: list[tuple[str, str]], hashes: list[int]) -> bool:
        """A line whose history and reply are a turn already placed: add its items to that turn."""
        hit = self._ends.get(hashes[-1])
        if hit is None or not self._same(hit[0], full):
            return False
        dialogue, pos = hit
        turn = dialogue.turns[pos]
        self.counts["lines_repeating_a_turn"] += 1
        turn.is_sample = True
        turn.recommended += [m.id for m in sample.recommended if m.id not in turn.recommended]
        known = {m.id for m in turn.items}
        turn.items += [m for m in self._located(turn.text, sample.recommended) if m.id not in known]
        self._attach(dialogue, sample, start=0, end=pos)
        return True

    def _append(self, dialogue: _Dialogue, sample: SampleLine, full: list[tuple[str, str]], *, start: int,
                hashes: list[int]) -> None:
        for role, text in full[start:-1]:
            dialogue.turns.append(Turn(index=0, role=role, text=text, is_sample=False))
        reply = Turn(index=0, role=RECOMMENDER, text=sample.reply,
                     items=self._located(sample.reply, sample.recommended),
                     recommended=list(dict.fromkeys(m.id for m in sample.recommended)))
        dialogue.turns.append(reply)
        for pos in range(start, len(full)):
            self._ends[hashes[pos]] = (dialogue, pos)
        # the turn before the new ones is the previous line's reply: no earlier sample has it in its context
        self._attach(dialogue, sample, start=max(start - 1, 0), end=len(full) - 1)

    def _attach(self, dialogue: _Dialogue, sample: SampleLine, *, start: int, end: int) -> None:
        """Put the line's pooled mentions on turns ``start .. end - 1`` (its history), see the module docstring."""
        turns, folded = dialogue.turns, {}
        for kind, pool in (("entities", sample.entities), ("items", sample.items)):
            if not pool:
                continue
            attached = dialogue.attached[kind]
            # what the line's history already holds; every attachment lies before `end` unless a turn is repeated
            limit = max(end, 1)  # the turns the line's pool may already be on (the reply turn when it has no history)
            present = set(attached) if end == len(turns) - 1 else {i for i, at in attached.items() if at < limit}
            for mention in pool:
                if mention.id in present:
                    continue
                present.add(mention.id)
                target, words = max(end - 1, 0), None  # no history: the pool stays on the reply turn
                if end and self.pooled == "first_mention":
                    for pos in range(start, end):
                        if pos not in folded:
                            folded[pos] = turns[pos].text.casefold()
                        words = named_in(turns[pos].text, mention, folded[pos])
                        if words is not None:
                            target = pos
                            break
                    else:
                        self.counts["pooled_mentions_not_found_in_text"] += 1
                else:
                    words = named_in(turns[target].text, mention)
                getattr(turns[target], kind).append(Mention(mention.id, words if words is not None else mention.text))
                attached.setdefault(mention.id, target)

    @staticmethod
    def _located(text: str, mentions: list[Mention]) -> list[Mention]:
        """`mentions` (unique ids) with their text set to the words of `text` that name them, where it does."""
        out: dict[str, Mention] = {}
        for m in mentions:
            if m.id not in out:
                words = named_in(text, m)
                out[m.id] = Mention(m.id, words if words is not None else m.text)
        return list(out.values())

    def _new_id(self, sample: SampleLine) -> str:
        base = sample.conversation_id if sample.conversation_id is not None else f"{self.split}-{sample.line}"
        seen = self._ids.get(base, 0) + 1
        self._ids[base] = seen
        return base if seen == 1 else f"{base}#{seen}"


def assemble(split: str, lines: list[SampleLine], **options: Any) -> tuple[list[Conversation], dict[str, int]]:
    """Conversations of `lines` (file order) and the counts the corpus report keeps."""
    assembler = DialogueAssembler(split, **options)
    for sample in lines:
        assembler.add(sample)
    return assembler.conversations(), dict(assembler.counts)
