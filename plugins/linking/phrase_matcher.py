"""`phrase_matcher`: greedy longest-match linking of graph-node surface forms in text.

Surface forms come from the graph's `labels` and from the node names themselves
(DBpedia URIs and "kind:Name" style names turned into words, disambiguation
qualifiers such as "(film)" dropped).  The index is a dict from token tuples to
node indices plus, per first token, the longest phrase starting with it, so that
linking costs a few dict look-ups per token (ReDial: 64k nodes index in seconds,
tens of thousands of utterances per second).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from crs.data.build import STOPWORDS
from crs.data.vocab import tokenize
from crs.interfaces import BuildDeps, EntityLinker
from crs.knowledge import PAD_NODE, IndexedGraph
from crs.labels import uri_label

_KIND_PREFIX = re.compile(r"^[a-z_]+:(?!//)")  # "movie:Heat (1995)" -> "Heat (1995)"; not "http://"
_UNLINKED_ITEM = "item:"  # crs.data.prepare names unlinked items "item:<id>": no words to match


def node_surface_forms(node: str, labels: dict[str, list[str]] | None = None) -> list[str]:
    """Lower-case surface forms of a graph node: its labels first, then words derived from its name.

    >>> node_surface_forms("<http://dbpedia.org/resource/Tom_Hanks>")
    ['tom hanks']
    >>> node_surface_forms("movie:Heat (1995)", {"movie:Heat (1995)": ["Heat"]})
    ['heat']
    """
    forms = [label.lower().strip() for label in (labels or {}).get(node, [])]
    if node != PAD_NODE and not node.startswith(_UNLINKED_ITEM):
        forms.append(uri_label(_KIND_PREFIX.sub("", node)))
    return [f for f in dict.fromkeys(forms) if f]


class PhraseMatcher(EntityLinker):
    """Links every phrase of up to `max_phrase_len` tokens that names a graph node (case-insensitive)."""

    @dataclass
    class Config:
        max_phrase_len: int = 5  # longest phrase (in tokens) that is indexed
        min_chars: int = 3  # shorter surface forms are ambiguous ("it", "up") and skipped
        use_node_names: bool = True  # also index words derived from node names, not only labels

    def __init__(self, config: "PhraseMatcher.Config", deps: BuildDeps):
        super().__init__(config, deps)
        self.phrases: dict[tuple[str, ...], int] = {}
        self.longest_from: dict[str, int] = {}  # first token -> longest indexed phrase starting with it

    def _keep(self, tokens: tuple[str, ...], surface: str) -> bool:
        if not tokens or len(tokens) > self.config.max_phrase_len or len(surface) < self.config.min_chars:
            return False
        # a phrase made only of function words and punctuation names nothing
        return any(t not in STOPWORDS and any(ch.isalnum() for ch in t) for t in tokens)

    def fit(self, graph: IndexedGraph) -> None:
        """Index the surface forms of every node of `graph` (the first node claiming a phrase keeps it)."""
        phrases: dict[tuple[str, ...], int] = {}
        labels = graph.labels or {}
        for index, node in enumerate(graph.nodes):
            if self.config.use_node_names:
                forms = node_surface_forms(node, labels)
            else:
                forms = [label.lower().strip() for label in labels.get(node, [])]
            for surface in forms:
                tokens = tuple(tokenize(surface))
                if self._keep(tokens, surface):
                    phrases.setdefault(tokens, index)
        longest: dict[str, int] = {}
        for tokens in phrases:
            if len(tokens) > longest.get(tokens[0], 0):
                longest[tokens[0]] = len(tokens)
        self.phrases, self.longest_from = phrases, longest

    def link(self, text: str) -> list[int]:
        """Node indices named in `text`, in order of first mention, greedy longest match."""
        return list(dict.fromkeys(node for _, _, node in self.link_tokens(tokenize(text))))

    def link_tokens(self, tokens: list[str]) -> list[tuple[int, int, int]]:
        """``(start, end, node)`` token spans of the phrases in `tokens` (``crs.data.vocab.tokenize``
        output), left to right, greedy longest match; the sample builder tags context tokens with them."""
        phrases, longest_from = self.phrases, self.longest_from
        found: list[tuple[int, int, int]] = []
        i, n = 0, len(tokens)
        while i < n:
            longest = longest_from.get(tokens[i], 0)
            step = 1
            for length in range(min(longest, n - i), 0, -1):
                node = phrases.get(tuple(tokens[i:i + length]))
                if node is not None:
                    found.append((i, i + length, node))
                    step = length
                    break
            i += step
        return found
