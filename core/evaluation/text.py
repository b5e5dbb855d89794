"""Word-level text statistics behind the generation metrics (Dist-n, BLEU, F1).

Everything works on lists of word tokens (``crs.data.vocab.tokenize`` output or
``Vocabulary.decode``), never on characters.  Implemented here rather than taken
from nltk so that the exact definitions (smoothing, normalisation) are visible
and stable.
"""
from __future__ import annotations

import math
import re
import string
from collections import Counter
from typing import Sequence

Tokens = Sequence[str]


def ngrams(tokens: Tokens, n: int) -> list[tuple[str, ...]]:
    """All contiguous word n-grams of ``tokens`` (empty when ``len(tokens) < n``)."""
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


# ----------------------------------------------------------------------- BLEU
def clipped_matches(hyp: Tokens, ref: Tokens, n: int) -> tuple[int, int]:
    """(matched, total) hypothesis n-grams; a match counts at most as often as in ``ref``."""
    hyp_counts = Counter(ngrams(hyp, n))
    ref_counts = Counter(ngrams(ref, n))
    matched = sum(min(count, ref_counts[gram]) for gram, count in hyp_counts.items())
    return matched, sum(hyp_counts.values())


def bleu_from_counts(matched: Sequence[int], total: Sequence[int], hyp_len: int, ref_len: int,
                     *, cumulative: bool = True) -> float:
    """BLEU-N from per-order match counts (index 0 = unigrams, N = ``len(matched)``).

    Smoothing is "BLEU+1" (Lin & Och 2004): orders n >= 2 use ``(m + 1) / (t + 1)``
    so that short sentences without any 4-gram do not score 0; unigram precision
    is left unsmoothed, so a hypothesis sharing no word with the reference scores
    exactly 0.  ``cumulative``: geometric mean of orders 1..N (standard BLEU-N);
    otherwise the order-N precision alone (the "individual" BLEU-N some toolkits,
    e.g. CRSLab, report).  The brevity penalty applies in both cases.
    """
    if hyp_len == 0 or total[0] == 0 or matched[0] == 0:
        return 0.0
    precisions = [matched[0] / total[0]]
    precisions += [(m + 1) / (t + 1) for m, t in zip(matched[1:], total[1:])]
    if cumulative:
        score = math.exp(sum(math.log(p) for p in precisions) / len(precisions))
    else:
        score = precisions[-1]
    brevity = 1.0 if hyp_len > ref_len else math.exp(1.0 - ref_len / hyp_len)
    return brevity * score


def sentence_bleu(hyp: Tokens, ref: Tokens, max_n: int, *, cumulative: bool = True) -> float:
    """Smoothed BLEU-``max_n`` of one hypothesis against one reference (see :func:`bleu_from_counts`)."""
    counts = [clipped_matches(hyp, ref, n) for n in range(1, max_n + 1)]
    return bleu_from_counts([m for m, _ in counts], [t for _, t in counts], len(hyp), len(ref),
                            cumulative=cumulative)


# ------------------------------------------------------------------------- F1
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = re.compile(f"[{re.escape(string.punctuation)}]")


def normalize_for_f1(tokens: Tokens) -> list[str]:
    """ParlAI's answer normalisation: lower case, drop punctuation and articles."""
    text = " ".join(tokens).lower()
    text = _PUNCTUATION.sub(" ", text)
    text = _ARTICLES.sub(" ", text)
    return text.split()


def token_f1(hyp: Tokens, ref: Tokens) -> float:
    """Unigram F1 between hypothesis and reference after :func:`normalize_for_f1` (0 if no overlap)."""
    hyp_words, ref_words = normalize_for_f1(hyp), normalize_for_f1(ref)
    overlap = sum((Counter(hyp_words) & Counter(ref_words)).values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(hyp_words), overlap / len(ref_words)
    return 2 * precision * recall / (precision + recall)
