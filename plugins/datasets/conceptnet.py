"""The `conceptnet_edges` word graph: a ConceptNet edge list ``relation<TAB>word1<TAB>word2`` (.gz ok).

KGSF builds its word graph from such a list restricted to its word set
(``key2index_3rd.json``); ``vocabulary`` does the same.  With a vocabulary the
nodes are its words in index order (isolated words included, so node i+1 of the
indexed graph is the word with key2index i+1 when indices are 1..N); without one,
nodes are the words in order of first appearance.  A ``word/pos`` suffix
("dog/n") is dropped as KGSF does.  Edges are kept once, in file order.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Optional

from crs.data.readers import OnError, RecordError, SkipLog, parse_lines, read_json
from crs.errors import DataError
from crs.interfaces import KnowledgeSource
from crs.knowledge import WORD, KnowledgeGraph
from crs.labels import word_label

from .common import config_file


def _word(token: str) -> str:
    return token.strip().split("/", 1)[0]


class ConceptNetEdges(KnowledgeSource):
    """ConceptNet edge list -> word :class:`KnowledgeGraph` (see the module docstring)."""

    @dataclass
    class Config:
        path: str = "../shared/data/redial/conceptnet_one_hop_shupeili/conceptnet_one_hop_edges.txt.gz"
        vocabulary: Optional[str] = None  # key2index json (word -> index) restricting the nodes
        relations: Optional[list[str]] = None  # keep only these relations; None = all
        min_degree: int = 0  # drop words with fewer edges (after the filters); 0 keeps isolated vocabulary words
        on_error: OnError = "raise"  # skip: drop lines without three tab-separated fields

    def load(self, corpus: Any = None) -> KnowledgeGraph:
        cfg = self.config
        path = config_file(cfg.path, f"{self.path}.path")
        vocab_words = self._vocabulary() if cfg.vocabulary else None
        allowed = set(cfg.relations) if cfg.relations else None

        def parse(_line: int, text: str) -> tuple[str, str, str]:
            parts = text.split("\t")
            if len(parts) != 3 or not all(p.strip() for p in parts):
                raise RecordError(f"expected relation<TAB>word1<TAB>word2, got {len(parts)} field(s)",
                                  "fix the line, or set on_error: skip")
            return parts[0].strip(), _word(parts[1]), _word(parts[2])

        kept: list[tuple[str, str, str]] = []
        for _line, (rel, head, tail) in parse_lines(path, parse, on_error=cfg.on_error, skipped=SkipLog()):
            if allowed is not None and rel not in allowed:
                continue
            if vocab_words is not None and (head not in vocab_words or tail not in vocab_words):
                continue
            kept.append((rel, head, tail))

        nodes = list(vocab_words) if vocab_words is not None else list(
            dict.fromkeys(w for _r, h, t in kept for w in (h, t)))
        if cfg.min_degree > 0:
            degree = Counter(w for _r, h, t in kept for w in (h, t))
            nodes = [w for w in nodes if degree[w] >= cfg.min_degree]
            keep = set(nodes)
            kept = [e for e in kept if e[1] in keep and e[2] in keep]
        index = {w: i for i, w in enumerate(nodes)}
        relations = sorted({r for r, _h, _t in kept})
        rel_index = {r: i for i, r in enumerate(relations)}
        return KnowledgeGraph(
            role=WORD, nodes=nodes, relations=relations,
            heads=[index[h] for _r, h, _t in kept], relation_ids=[rel_index[r] for r, _h, _t in kept],
            tails=[index[t] for _r, _h, t in kept],
            labels={w: [word_label(w)] for w in nodes if word_label(w)},
        )

    def _vocabulary(self) -> dict[str, int]:
        """key2index words ordered by index (a dict used as an ordered set)."""
        path = config_file(self.config.vocabulary, f"{self.path}.vocabulary")
        mapping = read_json(path)
        if not isinstance(mapping, dict) or not all(isinstance(v, int) for v in mapping.values()):
            raise DataError(str(path), "expected a JSON object word -> integer index", "use a key2index json")
        return {word: i for i, word in enumerate(sorted(mapping, key=lambda w: mapping[w]))}
