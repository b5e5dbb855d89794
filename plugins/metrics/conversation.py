"""Conversation metrics: Dist-n, BLEU-n, token F1, item ratio, ReR (task ``gen``) and perplexity (``nll``).

``gen`` metrics are fed ``update(hyps, refs)`` with lists of word-token lists
(decoded by the pipeline vocabulary, special tokens removed); ``ppl`` is fed
``update(nll_sum, count)`` with summed token negative log-likelihoods.  With no
input seen, values are NaN (``null`` in report.json).
"""
from __future__ import annotations

import math
import string
from dataclasses import dataclass, field
from typing import Literal

from crs.errors import ConfigError
from crs.evaluation.text import bleu_from_counts, clipped_matches, ngrams, sentence_bleu, token_f1
from crs.interfaces import BuildDeps, EmptyConfig, Metric

from .ranking import positive_ints

NAN = float("nan")


class Dist(Metric):
    """Dist-n over WORD n-grams of the generated replies, under both definitions in use.

    - ``gen.dist-<n>/sentences``: distinct n-grams over the whole generated set
      divided by the number of generated sentences (KGSF / CRSLab convention; it
      grows with reply length and can exceed 1);
    - ``gen.dist-<n>/ngrams``: distinct n-grams divided by the total number of
      n-grams generated (the original Li et al. 2016 ratio, in [0, 1]).

    Papers rarely say which one they report and the two differ by roughly the
    mean reply length, so both are always written, each named.

    ``strip_punctuation: true`` counts words with their punctuation characters
    removed (tokens left empty are dropped), as the official MESE evaluation does;
    the keys then read ``gen.dist-<n>/sentences/nopunct`` (and ``/ngrams/nopunct``)
    so that the two conventions are never compared unawares.
    """

    task = "gen"

    @dataclass
    class Config:
        ns: list[int] = field(default_factory=lambda: [1, 2, 3, 4])  # n-gram orders
        strip_punctuation: bool = False  # MESE's Dist: punctuation removed from words first

    def __init__(self, config: "Dist.Config", deps: BuildDeps):
        super().__init__(config, deps)
        self.ns = positive_ints(config.ns, f"{deps.path}.ns", "e.g. `ns: [2, 3, 4]`")
        self.reset()

    def reset(self) -> None:
        self._distinct: dict[int, set] = {n: set() for n in self.ns}
        self._totals = {n: 0 for n in self.ns}
        self._sentences = 0

    def update(self, hyps: list[list[str]], refs: list[list[str]]) -> None:
        for hyp in hyps:
            if self.config.strip_punctuation:
                hyp = strip_punctuation(hyp)
            for n in self.ns:
                grams = ngrams(hyp, n)
                self._distinct[n].update(grams)
                self._totals[n] += len(grams)
            self._sentences += 1

    def compute(self) -> dict[str, float]:
        out = {}
        tail = "/nopunct" if self.config.strip_punctuation else ""
        for n in self.ns:
            distinct = len(self._distinct[n])
            out[f"gen.dist-{n}/sentences{tail}"] = distinct / self._sentences if self._sentences else NAN
            out[f"gen.dist-{n}/ngrams{tail}"] = distinct / self._totals[n] if self._totals[n] else NAN
        return out


_PUNCTUATION = str.maketrans("", "", string.punctuation)


def strip_punctuation(tokens: list[str]) -> list[str]:
    """`tokens` with ASCII punctuation removed from each; tokens left empty are dropped."""
    stripped = (token.translate(_PUNCTUATION) for token in tokens)
    return [token for token in stripped if token]


class BLEU(Metric):
    """BLEU-n against the single reference reply, smoothed with BLEU+1 (Lin & Och 2004).

    ``mode: sentence`` (default, like CRSLab): the mean of per-reply BLEU;
    ``mode: corpus``: n-gram counts and lengths summed over all replies first
    (Papineni et al.).  ``weights: cumulative`` (default) is the geometric mean of
    the 1..n-gram precisions; ``weights: individual`` uses the n-gram precision
    alone, as CRSLab's ``bleu@n`` does.  Smoothing details:
    :func:`crs.evaluation.text.bleu_from_counts`.  Keys ``gen.bleu-<n>``.
    """

    task = "gen"
    Mode = Literal["sentence", "corpus"]
    Weights = Literal["cumulative", "individual"]

    @dataclass
    class Config:
        ns: list[int] = field(default_factory=lambda: [1, 2, 3, 4])  # reported orders
        mode: BLEU.Mode = "sentence"  # sentence: mean of per-reply BLEU; corpus: counts summed first
        weights: BLEU.Weights = "cumulative"  # individual: the n-gram precision alone (CRSLab's bleu@n)

    def __init__(self, config: "BLEU.Config", deps: BuildDeps):
        super().__init__(config, deps)
        self.ns = positive_ints(config.ns, f"{deps.path}.ns", "e.g. `ns: [1, 2, 3, 4]`")
        self.cumulative = config.weights == "cumulative"
        self.reset()

    def reset(self) -> None:
        self._sentence_sums = {n: 0.0 for n in self.ns}
        self._sentences = 0
        top = max(self.ns)
        self._matched, self._total = [0] * top, [0] * top
        self._hyp_len = self._ref_len = 0

    def update(self, hyps: list[list[str]], refs: list[list[str]]) -> None:
        top = max(self.ns)
        for hyp, ref in zip(hyps, refs, strict=True):
            if self.config.mode == "sentence":
                for n in self.ns:
                    self._sentence_sums[n] += sentence_bleu(hyp, ref, n, cumulative=self.cumulative)
            else:
                for order in range(1, top + 1):
                    matched, total = clipped_matches(hyp, ref, order)
                    self._matched[order - 1] += matched
                    self._total[order - 1] += total
                self._hyp_len += len(hyp)
                self._ref_len += len(ref)
            self._sentences += 1

    def compute(self) -> dict[str, float]:
        if not self._sentences:
            return {f"gen.bleu-{n}": NAN for n in self.ns}
        if self.config.mode == "sentence":
            return {f"gen.bleu-{n}": self._sentence_sums[n] / self._sentences for n in self.ns}
        return {f"gen.bleu-{n}": bleu_from_counts(self._matched[:n], self._total[:n], self._hyp_len,
                                                  self._ref_len, cumulative=self.cumulative)
                for n in self.ns}


class F1(Metric):
    """Token-level F1 between each reply and its reference, averaged over replies (ParlAI style:
    lower-cased, punctuation and articles removed, unigram overlap counted with multiplicity).
    Key ``gen.f1``."""

    task = "gen"
    Config = EmptyConfig

    def __init__(self, config: EmptyConfig, deps: BuildDeps):
        super().__init__(config, deps)
        self.reset()

    def reset(self) -> None:
        self._sum, self._count = 0.0, 0

    def update(self, hyps: list[list[str]], refs: list[list[str]]) -> None:
        for hyp, ref in zip(hyps, refs, strict=True):
            self._sum += token_f1(hyp, ref)
            self._count += 1

    def compute(self) -> dict[str, float]:
        return {"gen.f1": self._sum / self._count if self._count else NAN}


@dataclass
class ItemTokenConfig:
    prefix: str = "@"  # tokens starting with this are item placeholders


class ItemTokenMetric(Metric):
    """A ``gen`` metric over the item placeholder tokens (``@<id>``) of replies: the ``prefix`` key, never empty."""

    task = "gen"
    Config = ItemTokenConfig

    def __init__(self, config: ItemTokenConfig, deps: BuildDeps):
        super().__init__(config, deps)
        if not config.prefix:
            raise ConfigError(f"{deps.path}.prefix", "the item-token prefix is empty", "use `prefix: '@'`")
        self.reset()


class ItemRatio(ItemTokenMetric):
    """Share of generated replies that mention at least one item placeholder token (``@<id>``);
    KGSF 5.1.3 uses the item ratio to reward informative replies.  Key ``gen.item_ratio``."""

    def reset(self) -> None:
        self._with_item, self._count = 0, 0

    def update(self, hyps: list[list[str]], refs: list[list[str]]) -> None:
        for hyp in hyps:
            self._with_item += any(tok.startswith(self.config.prefix) for tok in hyp)
            self._count += 1

    def compute(self) -> dict[str, float]:
        return {"gen.item_ratio": self._with_item / self._count if self._count else NAN}


class RecommendationRate(ItemTokenMetric):
    """ReR (MESE §4.3): share of generated replies that mention an item of the turn's targets.

    The targets of a reply are the item tokens (``@<id>``) of its reference reply (the items the
    recommender actually named).  ``gen.rer`` divides by every reply, as the paper's ReR does;
    ``gen.rer/rec_turns`` only by replies whose reference names an item.  Like the official code's
    ``response_movie_recall_cal``, only the first item a reply names counts (a reply listing the
    whole catalogue would otherwise always hit); ``first_only: false`` counts any of them.
    """

    @dataclass
    class Config(ItemTokenConfig):
        first_only: bool = True  # official: only the first item token of a reply is checked

    def reset(self) -> None:
        self._hits, self._count, self._rec_turns = 0, 0, 0

    def update(self, hyps: list[list[str]], refs: list[list[str]]) -> None:
        prefix = self.config.prefix
        for hyp, ref in zip(hyps, refs, strict=True):
            targets = {tok for tok in ref if tok.startswith(prefix) and len(tok) > len(prefix)}
            named = [tok for tok in hyp if tok.startswith(prefix) and len(tok) > len(prefix)]
            if self.config.first_only:
                named = named[:1]
            self._hits += any(tok in targets for tok in named)
            self._count += 1
            self._rec_turns += bool(targets)

    def compute(self) -> dict[str, float]:
        return {"gen.rer": self._hits / self._count if self._count else NAN,
                "gen.rer/rec_turns": self._hits / self._rec_turns if self._rec_turns else NAN}


class Perplexity(Metric):
    """Perplexity of the reference replies under teacher forcing: exp(total NLL / total tokens),
    summed over every non-pad target token of the split (not a mean of per-batch perplexities).
    Key ``gen.ppl``."""

    task = "nll"
    Config = EmptyConfig

    def __init__(self, config: EmptyConfig, deps: BuildDeps):
        super().__init__(config, deps)
        self.reset()

    def reset(self) -> None:
        self._nll, self._tokens = 0.0, 0.0

    def update(self, nll_sum: float, count: float) -> None:
        self._nll += float(nll_sum)
        self._tokens += float(count)

    def compute(self) -> dict[str, float]:
        if not self._tokens:
            return {"gen.ppl": NAN}
        mean = self._nll / self._tokens
        return {"gen.ppl": math.exp(mean) if mean < 700 else float("inf")}
