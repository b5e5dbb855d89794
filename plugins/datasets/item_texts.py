"""Item texts: movie metadata (`item_metadata_json`) and RevCore review snippets (`revcore_reviews`).

Both return :class:`crs.knowledge.ItemTexts` keyed by the dataset's item ids
(ReDial movieIds as strings), and keep every item of the file: the pipeline looks
texts up by item id, so entries for items a corpus lacks are simply unused.  An item
without text (no review tokens, empty fields) gets no key at all, never an empty
string: readers mask absent items.

``key_map`` re-keys a file written for another corpus: a JSON object or plain pickle
file key -> corpus item id.  INSPIRED names its items by DBpedia URI, and KGSF's
``id2entity.pkl`` maps ReDial movieIds to those URIs, so the ReDial texts serve the
INSPIRED items it links (518 of 1,123: 163 with a snippet, 512 with a plot).  Keys the
map lacks, or maps to None, are dropped; two keys mapped to one item pool their texts.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from crs.data.readers import read_json
from crs.data.safe_pickle import load_plain_pickle
from crs.errors import DataError
from crs.interfaces import KnowledgeSource
from crs.knowledge import ItemTexts

from .common import config_file


def remap_keys(texts: dict[str, list[str]], key_map: str | None, config_key: str) -> dict[str, list[str]]:
    """`texts` keyed by the corpus item ids the ``key_map`` file gives (see the module docstring); as is if None."""
    if not key_map:
        return texts
    path = config_file(key_map, config_key)
    mapping = load_plain_pickle(path) if path.suffix == ".pkl" else read_json(path)
    if not isinstance(mapping, dict):
        raise DataError(str(path), f"expected a mapping file key -> corpus item id, got {type(mapping).__name__}",
                        f"point `{config_key}` at a JSON object or pickle dict such as KGSF's id2entity.pkl")
    remapped: dict[str, list[str]] = {}
    for key, item in mapping.items():
        if item is None or str(key) not in texts:
            continue
        if not isinstance(item, (str, int)):
            raise DataError(str(path), f"key '{key}' maps to {type(item).__name__}, not an item id",
                            "map each key to one item id (a string), or to null when it has none")
        remapped.setdefault(str(item), []).extend(texts[str(key)])
    return remapped


def describe(info: dict, fields: list[str], field_names: bool = True) -> str:
    """One text per item: the name first, then "field: value" parts (lists comma-joined).

    e.g. ``Friends with Benefits (2011). genre: comedy, romance. director: Will Gluck. plot: ...``
    MESE encodes such a flattened record with a PLM; the field names stay in the
    text so the encoder can tell a genre from a person.  ``field_names=False`` leaves
    them out (a plot alone reads as the plot, not as "plot: ...").
    """
    parts = []
    for name in fields:
        value = info.get(name)
        if value in (None, "", []):
            continue
        text = ", ".join(str(v) for v in value) if isinstance(value, (list, tuple)) else str(value)
        parts.append(text.strip() if name == "name" or not field_names else f"{name}: {text.strip()}")
    return ". ".join(p.rstrip(".") for p in parts) + ("." if parts else "")


class ItemMetadataJson(KnowledgeSource):
    """``id2info.json(.gz)``: item id -> {name, genre, plot, director, writer, star, ...} -> ItemTexts("metadata").

    Items whose chosen fields are all empty get no text (absent, not "").
    """

    @dataclass
    class Config:
        path: str = "../shared/data/redial/ievalm_metadata_kg/id2info.json.gz"
        fields: list[str] = field(default_factory=lambda: ["name", "genre", "director", "writer", "star", "plot"])
        field_names: bool = True  # "genre: comedy" (True) or "comedy" (False); the name never gets one
        key_map: Optional[str] = None  # file key -> corpus item id (see the module docstring)

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
            text = describe(record, list(self.config.fields), self.config.field_names)
            if text:
                texts[str(item)] = [text]
        texts = remap_keys(texts, self.config.key_map, f"{self.path}.key_map")
        return ItemTexts(kind="metadata", texts=texts, label=f"item metadata: {', '.join(self.config.fields)}")


class RevCoreReviews(KnowledgeSource):
    """RevCore's ``movie2tokenreview_helpful.pkl``: movieId -> review tokens -> ItemTexts("review").

    A value that is a list of tokens is one review (tokens joined by spaces); a list
    of token lists or strings is several reviews.  Blank reviews are dropped, and a
    movie left without any gets no key.  The shared file holds the first 20 tokens of
    one helpful IMDb review per movie: snippets, and the label says so.
    """

    @dataclass
    class Config:
        path: str = "../shared/data/redial/reviews_revcore/movie2tokenreview_helpful.pkl"
        key_map: Optional[str] = None  # file key -> corpus item id (see the module docstring)
        label: str = "RevCore review snippets"  # what the texts are, for run reports

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
            kept = [t for t in found if t.strip()]
            if kept:
                texts[str(item)] = kept
        texts = remap_keys(texts, self.config.key_map, f"{self.path}.key_map")
        return ItemTexts(kind="review", texts=texts, label=self.config.label)
