"""Word-level tokenizer, item placeholder tokens and the vocabulary shared by word-level encoders and generators.

Item placeholders: every item mention in a text becomes one token, :func:`item_token`
of the item's id.  That function is the only place an item's token is spelt; the
vocabulary's extra tokens, mention replacement (``crs.data.build``), KGSF's copy map
and every reverse look-up (:func:`item_token_index`, ``ItemIndex.token_index``) call it,
so they cannot disagree.
"""
from __future__ import annotations

import hashlib
import re
from collections import Counter
from typing import Iterable, Mapping, Sequence

from ..errors import DataError

PAD, UNK, BOS, EOS, SEP = "__pad__", "__unk__", "__start__", "__end__", "__sep__"
SPECIALS = (PAD, UNK, BOS, EOS, SEP)
ITEM_PREFIX = "@"  # every item token starts with it (and no word token does)

# Item placeholders stay one token (`@123`), words are lower-cased, punctuation split off.
_TOKEN = re.compile(r"@\w+|[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]", re.IGNORECASE)
_WORD = re.compile(r"\w+")
_ALNUM = re.compile(r"[^\W_]+")  # runs of letters and digits: the words of a slug
_SLUG_CHARS = 40  # readable part of a derived item token; the hash keeps it unique
_HASH_BYTES = 4  # 8 hex digits: two ids with the same slug collide with probability 2^-32


def tokenize(text: str) -> list[str]:
    return [t if t.startswith(ITEM_PREFIX) else t.lower() for t in _TOKEN.findall(text)]


def tokenize_spans(text: str) -> list[tuple[str, int, int]]:
    """:func:`tokenize` with each token's character span: ``(token, start, end)``."""
    return [(m.group() if m.group().startswith(ITEM_PREFIX) else m.group().lower(), m.start(), m.end())
            for m in _TOKEN.finditer(text)]


def detokenize(tokens: Iterable[str]) -> str:
    out = ""
    for tok in tokens:
        if out and (tok[0].isalnum() or tok[0] in "@_("):
            out += " "
        out += tok
    return out


# ------------------------------------------------------------------ item tokens
def item_token(item_id: str) -> str:
    """The one vocabulary token that stands for item `item_id` in every text.

    An id that is already a word (``\\w+``: ReDial's ``123``, the demo's ``m0042``)
    gives ``@<id>``, exactly as before this function existed, so those corpora keep
    their vocabularies and figures.  Any other id (INSPIRED's DBpedia URIs such as
    ``<http://dbpedia.org/resource/Heat_(1995_film)>``) would fall apart into
    punctuation and words under :func:`tokenize`; it gets a readable slug of its last
    path segment plus a stable hash of the whole id:
    ``@Heat_1995_film_<8 hex digits>``.  The hash is blake2b, so the token is the
    same on every machine and run; :func:`item_token_index` rejects the (2^-32)
    case of two ids of one item set sharing a token.
    """
    item_id = str(item_id)
    if _WORD.fullmatch(item_id):
        return f"{ITEM_PREFIX}{item_id}"
    segment = item_id.strip("<>").rstrip("/#")
    segment = re.split(r"[/#]", segment)[-1] or item_id
    slug = "_".join(_ALNUM.findall(segment))[:_SLUG_CHARS].strip("_") or "item"
    digest = hashlib.blake2b(item_id.encode("utf-8"), digest_size=_HASH_BYTES).hexdigest()
    return f"{ITEM_PREFIX}{slug}_{digest}"


def item_token_index(item_ids: Sequence[str]) -> dict[str, int]:
    """Item token -> position in `item_ids` (the inverse of :func:`item_token` over one item set).

    Raises a DataError naming both ids if two items would share a token.
    """
    index: dict[str, int] = {}
    for position, item_id in enumerate(item_ids):
        token = item_token(item_id)
        if token in index:
            raise DataError("<item index>", f"items '{item_ids[index[token]]}' and '{item_id}' both map to the "
                            f"placeholder token '{token}'",
                            "rename one of the two items (their ids must differ in more than letters that "
                            "crs.data.vocab.item_token drops)")
        index[token] = position
    return index


# ------------------------------------------------------------------ vocabulary
class Vocabulary:
    """Token <-> index, with PAD=0, UNK=1, BOS=2, EOS=3, SEP=4, and each token's corpus count.

    ``counts[i]`` is how often token ``i`` occurred in the texts the vocabulary was
    built from (:meth:`build`: the train split, after mention replacement); 0 for the
    special tokens and for extra tokens (items) that never occurred.  Frequency-based
    losses and token weights read it instead of re-counting the corpus.
    """

    def __init__(self, tokens: Iterable[str], counts: Mapping[str, int] | None = None):
        self.tokens: list[str] = list(SPECIALS)
        seen = set(self.tokens)
        for tok in tokens:
            if tok not in seen:
                seen.add(tok)
                self.tokens.append(tok)
        self.index = {t: i for i, t in enumerate(self.tokens)}
        self.pad, self.unk, self.bos, self.eos, self.sep = (self.index[t] for t in SPECIALS)
        counts = counts or {}
        self.counts: list[int] = [0 if tok in SPECIALS else int(counts.get(tok, 0)) for tok in self.tokens]

    @classmethod
    def build(cls, texts: Iterable[str], min_freq: int = 1, extra: Iterable[str] = ()) -> "Vocabulary":
        counts = Counter(tok for text in texts for tok in tokenize(text))
        frequent = sorted((t for t, c in counts.items() if c >= min_freq), key=lambda t: (-counts[t], t))
        return cls([*extra, *frequent], counts)

    def count(self, token: str) -> int:
        """How often `token` occurred in the build texts (0 when unknown)."""
        i = self.index.get(token)
        return self.counts[i] if i is not None else 0

    def state(self) -> dict:
        """Plain-data form (tokens in id order and their counts), for saving next to a model."""
        return {"tokens": list(self.tokens), "counts": list(self.counts)}

    @classmethod
    def from_state(cls, state: Mapping) -> "Vocabulary":
        """The vocabulary :meth:`state` described, with the same ids and counts."""
        tokens, counts = list(state["tokens"]), list(state.get("counts") or [])
        if tokens[:len(SPECIALS)] != list(SPECIALS) or (counts and len(counts) != len(tokens)):
            raise DataError("<vocabulary state>", "the saved vocabulary is not a crs Vocabulary.state()",
                            "save it with Vocabulary.state() and load it with Vocabulary.from_state()")
        return cls(tokens, dict(zip(tokens, counts)))

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, token: str) -> bool:
        return token in self.index

    def encode(self, text: str) -> list[int]:
        return [self.index.get(t, self.unk) for t in tokenize(text)]

    def decode(self, ids: Iterable[int], strip_special: bool = True) -> list[str]:
        out = []
        for i in ids:
            tok = self.tokens[int(i)]
            if strip_special and tok in SPECIALS:
                if tok == EOS:
                    break
                continue
            out.append(tok)
        return out
