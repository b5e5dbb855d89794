"""Writes the demo corpus to disk in the generic formats (`crs data demo --out DIR`).

Files: ``train.jsonl`` / ``valid.jsonl`` / ``test.jsonl`` (one conversation per
line: {"id", "user_id", "turns": [{"index", "role", "text", "items": [{"id", "text"}],
"entities": [{"id", "text"}], "recommended": [ids]}]}), ``items.jsonl`` ({"id",
"name", "entity", "meta"}), ``kg.tsv`` and ``concepts.tsv`` (head, relation, tail
per line), ``reviews.jsonl`` ({"id", "texts"}).
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from crs.data.schema import Conversation
from crs.knowledge import KnowledgeGraph

from .corpus import DemoConfig, demo_concept_graph, demo_corpus, demo_entity_graph, demo_reviews


def conversation_record(conv: Conversation) -> dict:
    return {
        "id": conv.id,
        "user_id": conv.user_id,
        "turns": [{"index": t.index, "role": t.role, "text": t.text,
                   "items": [asdict(m) for m in t.items], "entities": [asdict(m) for m in t.entities],
                   "recommended": list(t.recommended)} for t in conv.turns],
    }


def _write_tsv(path: Path, graph: KnowledgeGraph) -> None:
    with path.open("w", encoding="utf-8") as out:
        for h, r, t in zip(graph.heads.tolist(), graph.relation_ids.tolist(), graph.tails.tolist()):
            out.write(f"{graph.nodes[h]}\t{graph.relations[r]}\t{graph.nodes[t]}\n")


def write_demo_corpus(out_dir: str | Path, seed: int = 0, config: DemoConfig | None = None) -> dict[str, Path]:
    """Write the corpus of `seed` (or of `config`) under `out_dir`; returns {file kind: path}."""
    config = config or DemoConfig(seed=seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    corpus = demo_corpus(config)
    written: dict[str, Path] = {}
    for split, conversations in corpus.splits.items():
        path = out / f"{split}.jsonl"
        with path.open("w", encoding="utf-8") as f:
            for conv in conversations:
                f.write(json.dumps(conversation_record(conv), ensure_ascii=False) + "\n")
        written[split] = path
    with (out / "items.jsonl").open("w", encoding="utf-8") as f:
        for item in corpus.items.values():
            f.write(json.dumps({"id": item.id, "name": item.name, "entity": item.entity, "meta": item.meta},
                               ensure_ascii=False) + "\n")
    written["items"] = out / "items.jsonl"
    _write_tsv(out / "kg.tsv", demo_entity_graph(config))
    written["kg"] = out / "kg.tsv"
    _write_tsv(out / "concepts.tsv", demo_concept_graph())
    written["concepts"] = out / "concepts.tsv"
    with (out / "reviews.jsonl").open("w", encoding="utf-8") as f:
        for item_id, texts in demo_reviews(config).texts.items():
            f.write(json.dumps({"id": item_id, "texts": texts}, ensure_ascii=False) + "\n")
    written["reviews"] = out / "reviews.jsonl"
    return written
