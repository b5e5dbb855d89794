"""The `redial` dataset: the official ReDial jsonl release format.

Each line is one conversation with ``messages`` (text with ``@<movieId>``
placeholders, ``senderWorkerId``), ``movieMentions`` (movieId -> name),
``initiatorWorkerId`` / ``respondentWorkerId`` and the two questionnaires.

Conventions (the same as KGSF and CRSLab, so results stay comparable):

* initiator = seeker, respondent = recommender; ``user_id`` = ``initiatorWorkerId``;
* consecutive messages of one speaker are merged into one turn (texts joined by a
  space), because both models treat a burst of messages as one utterance;
* ``Turn.items`` = the movies a turn mentions, as ``Mention(id, "@<id>")``; a
  ``@<digits>`` token that is neither in ``movies_csv`` nor in the conversation's
  ``movieMentions`` is left as text and counted in ``report["unknown_mentions"]``;
* ``Turn.recommended`` = every movie a *recommender* turn mentions (CRSLab's rule;
  ReDial has no explicit "recommended" flag per message);
* ``Turn.entities`` stay empty: non-item words are linked later by the pipeline's
  phrase linker.

Items: every movie of ``movies_csv`` (plus any mentioned movie missing there),
``Item.entity`` from ``movie_linking`` (KGSF's ``id2entity.pkl``: movieId ->
DBpedia URI or None), ``Item.meta`` from ``metadata`` (iEvaLM's ``id2info.json``).
"""
from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from crs.data.readers import (
    OnError,
    RecordError,
    SkipLog,
    expect,
    expect_text,
    iter_jsonl,
    open_text,
    read_json,
)
from crs.data.safe_pickle import load_plain_pickle
from crs.data.schema import RECOMMENDER, SEEKER, Conversation, Corpus, Item, Mention, Turn
from crs.errors import DataError
from crs.interfaces import Dataset

from .common import clean_name, data_file, resolve_root

_MENTION = re.compile(r"@(\d+)")
_REQUIRED = ("conversationId", "messages", "initiatorWorkerId", "respondentWorkerId")


@dataclass
class _RawTurn:
    role: str
    texts: list[str]
    messages: int


class RedialDataset(Dataset):
    """ReDial conversations -> :class:`Corpus` (see the module docstring for the conventions)."""

    @dataclass
    class Config:
        root: str = "../shared/data/redial"
        train: str = "train_subsets/train_available_merged.jsonl.gz"
        valid: Optional[str] = None  # None: the pipeline carves a validation split from train
        test: str = "raw/test_data.jsonl.gz"
        movie_linking: Optional[str] = "kgsf/id2entity.pkl"  # movieId -> DBpedia URI | None (pickle)
        movies_csv: Optional[str] = "raw/movies_with_mentions.csv"  # movieId,movieName,nbMentions
        metadata: Optional[str] = "ievalm_metadata_kg/id2info.json.gz"  # movieId -> {name, genre, plot, ...}
        on_error: OnError = "raise"  # skip: drop malformed lines (counted in the report)
        max_conversations: int = 0  # per split; 0 = all

    # ------------------------------------------------------------------ public
    def load(self) -> Corpus:
        cfg, root = self.config, resolve_root(self.config.root)
        items = self._catalogue(root)
        known = set(items)
        skipped = SkipLog()
        report: dict[str, Any] = {"conversations": {}, "messages": {}, "turns": {}, "unknown_mentions": 0}
        splits: dict[str, list[Conversation]] = {}
        for split in ("train", "valid", "test"):
            name = getattr(cfg, split)
            if name is None:
                continue
            path = data_file(root, name, f"{self.path}.{split}")
            convs, messages = [], 0
            for _line, parsed in iter_jsonl(path, self._parse_record, on_error=cfg.on_error, skipped=skipped):
                record, raw_turns = parsed
                conv, unknown = self._conversation(record, raw_turns, known, items)
                convs.append(conv)
                messages += sum(t.messages for t in raw_turns)
                report["unknown_mentions"] += unknown
                if cfg.max_conversations and len(convs) >= cfg.max_conversations:
                    break
            splits[split] = convs
            report["conversations"][split] = len(convs)
            report["messages"][split] = messages
            report["turns"][split] = sum(len(c.turns) for c in convs)
        report.update(skipped.as_report())
        report["items"] = len(items)
        report["linked_items"] = sum(1 for item in items.values() if item.entity)
        return Corpus(name="redial", splits=splits, items=items, report=report)

    # --------------------------------------------------------------- records
    @staticmethod
    def _parse_record(record: Any) -> tuple[dict, list[_RawTurn]]:
        """Check one conversation's shape and merge consecutive messages of a speaker."""
        expect(record, dict, "a line", "each line must be one JSON object (a ReDial conversation)")
        missing = [key for key in _REQUIRED if key not in record]
        if missing:
            raise RecordError(f"conversation lacks {', '.join(missing)}",
                              "this is not the ReDial release format; use the `jsonl` dataset with a field mapping")
        ids = {key: expect_text(record[key], f"field '{key}'", f"give every conversation a '{key}' (a string or "
                                                                  "number)") for key in _REQUIRED if key != "messages"}
        seeker, recommender = ids["initiatorWorkerId"], ids["respondentWorkerId"]
        turns: list[_RawTurn] = []
        for n, message in enumerate(expect(record["messages"], list, "field 'messages'",
                                           "write 'messages' as a list of message objects")):
            expect(message, dict, f"messages[{n}]", "each message must be an object with text and senderWorkerId")
            missing = [key for key in ("text", "senderWorkerId") if key not in message]
            if missing:
                raise RecordError(f"messages[{n}] lacks field {' and '.join(repr(key) for key in missing)}",
                                  "every ReDial message has `text` and `senderWorkerId`")
            sender = expect_text(message["senderWorkerId"], f"messages[{n}] field 'senderWorkerId'",
                                 "write the sender as the worker id (a number)")
            if sender not in (seeker, recommender):
                raise RecordError(f"messages[{n}] field 'senderWorkerId' is {sender}, neither the initiator "
                                  f"({seeker}) nor the respondent ({recommender})",
                                  "fix the line's worker ids, or set on_error: skip")
            role = SEEKER if sender == seeker else RECOMMENDER
            text = expect_text(message["text"], f"messages[{n}] field 'text'", "write the message as a string").strip()
            if turns and turns[-1].role == role:
                turns[-1].texts.append(text)
                turns[-1].messages += 1
            else:
                turns.append(_RawTurn(role, [text], 1))
        return record, turns

    @staticmethod
    def _conversation(record: dict, raw_turns: list[_RawTurn], known: set[str],
                      items: dict[str, Item]) -> tuple[Conversation, int]:
        mentions = record.get("movieMentions") or {}
        mentions = mentions if isinstance(mentions, dict) else {}
        unknown = 0
        turns = []
        for index, raw in enumerate(raw_turns):
            text = " ".join(t for t in raw.texts if t)
            ids: list[str] = []
            for movie in _MENTION.findall(text):
                if movie not in known:
                    if movie not in mentions:
                        unknown += 1
                        continue
                    # mentioned but absent from movies_csv: keep it as an item with the dialogue's name
                    items[movie] = Item(id=movie, name=clean_name(mentions[movie] or f"@{movie}"))
                    known.add(movie)
                if movie not in ids:
                    ids.append(movie)
            turns.append(Turn(index=index, role=raw.role, text=text,
                              items=[Mention(movie, f"@{movie}") for movie in ids],
                              recommended=list(ids) if raw.role == RECOMMENDER else []))
        meta = {
            "respondent_id": str(record["respondentWorkerId"]),
            "movie_mentions": {str(k): v for k, v in mentions.items()},
            "initiator_questions": record.get("initiatorQuestions") or {},
            "respondent_questions": record.get("respondentQuestions") or {},
        }
        conv = Conversation(id=str(record["conversationId"]), user_id=str(record["initiatorWorkerId"]),
                            turns=turns, meta=meta)
        return conv, unknown

    # ----------------------------------------------------------------- items
    def _catalogue(self, root: Path) -> dict[str, Item]:
        cfg = self.config
        items: dict[str, Item] = {}
        if cfg.movies_csv:
            items = read_movies_csv(data_file(root, cfg.movies_csv, f"{self.path}.movies_csv"))
        if cfg.movie_linking:
            path = data_file(root, cfg.movie_linking, f"{self.path}.movie_linking")
            linking = load_plain_pickle(path)
            if not isinstance(linking, dict):
                raise DataError(str(path), f"expected a dict movieId -> DBpedia URI, got {type(linking).__name__}",
                                "point movie_linking at KGSF's id2entity.pkl")
            for movie, uri in linking.items():
                item = items.get(str(movie))
                if item is None:  # linked but not in the csv: still a recommendable movie
                    item = items[str(movie)] = Item(id=str(movie), name=f"@{movie}")
                item.entity = str(uri) if uri else None
        if cfg.metadata:
            path = data_file(root, cfg.metadata, f"{self.path}.metadata")
            info = read_json(path)
            if not isinstance(info, dict):
                raise DataError(str(path), "expected a JSON object movieId -> {name, genre, ...}",
                                "point `metadata` at iEvaLM's id2info.json, or set it to null")
            for movie, fields in info.items():
                if str(movie) in items and isinstance(fields, dict):
                    items[str(movie)].meta = dict(fields)
        return items


def read_movies_csv(path: Path) -> dict[str, Item]:
    """``movieId,movieName,nbMentions`` -> items keyed by movieId (names with spaces collapsed)."""
    items: dict[str, Item] = {}
    with open_text(path) as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if not header or header[:2] != ["movieId", "movieName"]:
            raise DataError(str(path), f"unexpected header {header}", "expected `movieId,movieName,nbMentions`", line=1)
        for row in reader:
            if not row:
                continue
            if len(row) < 2 or not row[0].strip():
                raise DataError(str(path), f"expected movieId,movieName,... got {row}",
                                "repair the line (names with commas must be quoted), or re-download the file",
                                line=reader.line_num)
            items[row[0].strip()] = Item(id=row[0].strip(), name=clean_name(row[1]), meta={})
    return items
