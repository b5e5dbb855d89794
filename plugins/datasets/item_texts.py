"""Item texts: movie metadata (`item_metadata_json`) and RevCore review snippets (`revcore_reviews`).

Both return :class:`crs.knowledge.ItemTexts` keyed by the dataset's item ids
(ReDial movieIds as strings), and keep every item of the file: the pipeline looks
texts up by item id, so entries for items a corpus lacks are simply unused.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from crs.data.readers import read_json
from crs.data.safe_pickle import load_plain_pickle
from crs.errors import DataError
from crs.interfaces import KnowledgeSource
from crs.knowledge import ItemTexts

from .common import config_file


def describe(info: dict, fields: list[str]) -> str:
    """One text per item: the name first, then "field: value" parts (lists comma-joined).

    e.g. ``Friends with Benefits (2011). genre: comedy, romance. director: Will Gluck. plot: ...``
    MESE encodes such a flattened record with a PLM; the field names stay in the
    text so the encoder can tell a genre from a person.
    """
    parts = []
    for name in fields:
        value = info.get(name)
        if value in (None, "", []):
            continue
        text = ", ".join(str(v) for v in value) if isinstance(value, (list, tuple)) else str(value)
        parts.append(text.strip() if name == "name" else f"{name}: {text.strip()}")
    return ". ".join(p.rstrip(".") for p in parts) + ("." if parts else "")


class ItemMetadataJson(KnowledgeSource):
    """``id2info.json(.gz)``: item id -> {name, genre, plot, director, writer, star, ...} -> ItemTexts("metadata")."""

    @dataclass
    class Config:
        path: str = "../shared/data/redial/ievalm_metadata_kg/id2info.json.gz"
        fields: list[str] = field(default_factory=lambda: ["name", "genre", "director", "writer", "star", "plot"])

    def load(self, corpus: Any = None) -> ItemTexts:
        path = config_file(self.config.path, f"{self.path}.path")
        info = read_json(path)
        if not isinstance(info, dict):
            raise DataError(str(path), "expected a JSON object item id -> {name, genre, ...}",
                            f"point `{self.path}.path` at an id2info.json-style file")
        texts = {}
        for item, record in info.items():
            if not isinstance(record, dict):
                raise DataError(str(path), f"item '{item}': expected an object of fields, got {type(record).__name__}",
                                "write each item as an object such as {\"name\": ..., \"genre\": [...]}")
            text = describe(record, list(self.config.fields))
            if text:
                texts[str(item)] = [text]
        return ItemTexts(kind="metadata", texts=texts)


class RevCoreReviews(KnowledgeSource):
    """RevCore's ``movie2tokenreview_helpful.pkl``: movieId -> review tokens -> ItemTexts("review").

    A value that is a list of tokens is one review (tokens joined by spaces); a list
    of token lists or strings is several reviews.
    """

    @dataclass
    class Config:
        path: str = "../shared/data/redial/reviews_revcore/movie2tokenreview_helpful.pkl"

    def load(self, corpus: Any = None) -> ItemTexts:
        path = config_file(self.config.path, f"{self.path}.path")
        reviews = load_plain_pickle(path)
        if not isinstance(reviews, dict):
            raise DataError(str(path), f"expected a dict movieId -> review tokens, got {type(reviews).__name__}",
                            f"point `{self.path}.path` at RevCore's movie2tokenreview_helpful.pkl")
        texts = {}
        for item, value in reviews.items():
            if isinstance(value, str):
                found = [value]
            elif isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
                found = [" ".join(value)]
            elif isinstance(value, (list, tuple)):
                found = [" ".join(v) if isinstance(v, (list, tuple)) else str(v) for v in value]
            else:
                raise DataError(str(path), f"movie '{item}': expected review tokens, got {type(value).__name__}",
                                "write each review as a string or a list of tokens")
            texts[str(item)] = [t for t in found if t.strip()]
        return ItemTexts(kind="review", texts=texts)
