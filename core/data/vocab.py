"""Word-level tokenizer and vocabulary shared by word-level encoders and generators."""
from __future__ import annotations

import re
from collections import Counter
from typing import Iterable

PAD, UNK, BOS, EOS, SEP = "__pad__", "__unk__", "__start__", "__end__", "__sep__"
SPECIALS = (PAD, UNK, BOS, EOS, SEP)

# Item placeholders stay one token (`@123`), words are lower-cased, punctuation split off.
_TOKEN = re.compile(r"@\w+|[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]", re.IGNORECASE)


def tokenize(text: str) -> list[str]:
    return [t if t.startswith("@") else t.lower() for t in _TOKEN.findall(text)]


def detokenize(tokens: Iterable[str]) -> str:
    out = ""
    for tok in tokens:
        if out and (tok[0].isalnum() or tok[0] in "@_("):
            out += " "
        out += tok
    return out


class Vocabulary:
    """Token <-> index, with PAD=0, UNK=1, BOS=2, EOS=3, SEP=4."""

    def __init__(self, tokens: Iterable[str]):
        self.tokens: list[str] = list(SPECIALS)
        seen = set(self.tokens)
        for tok in tokens:
            if tok not in seen:
                seen.add(tok)
                self.tokens.append(tok)
        self.index = {t: i for i, t in enumerate(self.tokens)}
        self.pad, self.unk, self.bos, self.eos, self.sep = (self.index[t] for t in SPECIALS)

    @classmethod
    def build(cls, texts: Iterable[str], min_freq: int = 1, extra: Iterable[str] = ()) -> "Vocabulary":
        counts = Counter(tok for text in texts for tok in tokenize(text))
        frequent = sorted((t for t, c in counts.items() if c >= min_freq), key=lambda t: (-counts[t], t))
        return cls([*extra, *frequent])

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

