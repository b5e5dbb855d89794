"""Build one corpus's samples with an earlier ``crs.data.build`` and with the current one; count what differs.

    python benchmarks/compare_sample_builders.py --corpus demo      # the README's demo, phrase linker on
    python benchmarks/compare_sample_builders.py --corpus redial    # no graphs: items and words only
    python benchmarks/compare_sample_builders.py --corpus inspired  # DBpedia + ConceptNet, as benchmarked

The earlier module is read from git (``--before``, default: the commit before item tokens) and
imported beside the current one; its vocabulary is rebuilt the way ``build_vocab`` built it then
(``@<id>`` extras).  Prints whether the vocabularies agree and, per split, how many samples differ
in each field both versions have.  Run from the repository root.
"""
from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIELDS = ("context_text", "context_tokens", "context_entities", "context_words", "context_items", "target_items",
          "response_tokens", "response_text", "user_index", "turn_index")


def _earlier_build(commit: str):
    source = subprocess.run(["git", "show", f"{commit}:core/data/build.py"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "build_before.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("crs.data._build_before", path)  # relative imports: crs.data
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


def _corpus(name: str):
    """(corpus, entity graph, word graph, linker) as the benchmark configs build them."""
    from crs.data import prepare
    from crs.interfaces import BuildDeps
    from crs.knowledge import ENTITY, IndexedGraph, KnowledgeGraph

    if name == "demo":
        from crs.plugins.demo.corpus import DemoConfig, demo_concept_graph, demo_corpus, demo_entity_graph
        from crs.plugins.linking.phrase_matcher import PhraseMatcher

        config = DemoConfig()
        corpus = demo_corpus(config)
        entity = IndexedGraph.from_graph("entity_kg", demo_entity_graph(config), prepare.item_entity_names(corpus))
        linker = PhraseMatcher(PhraseMatcher.Config(), BuildDeps(path="linker"))
        linker.fit(entity)
        return corpus, entity, IndexedGraph.from_graph("word_kg", demo_concept_graph()), linker
    if name == "redial":
        from crs.plugins.datasets.redial import RedialDataset

        corpus = RedialDataset(RedialDataset.Config(), BuildDeps(path="data")).load()
        empty = KnowledgeGraph(ENTITY, [], [], [], [], [])
        return corpus, IndexedGraph.from_graph("items", empty, prepare.item_entity_names(corpus)), None, None
    from crs.plugin_manager import get_plugin_manager
    from crs.registry import Registry

    # the components registry.yaml's `inspired` bundle names, with their default files
    registry = Registry.from_plugin_manager(get_plugin_manager())
    corpus = registry.build("dataset", {"type": "unicrs_jsonl"}, "data").load()
    kg = registry.build("knowledge_source", {"type": "unicrs_dbpedia"}, "knowledge.entity_kg").load(corpus)
    words = registry.build("knowledge_source", {"type": "conceptnet_edges"}, "knowledge.word_kg").load(corpus)
    return (corpus, IndexedGraph.from_graph("entity_kg", kg, prepare.item_entity_names(corpus)),
            IndexedGraph.from_graph("word_kg", words), None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", required=True, choices=["demo", "redial", "inspired"])
    parser.add_argument("--before", default="5b5b6ab", help="commit whose core/data/build.py is compared")
    args = parser.parse_args(argv)

    from crs.config.spec import SamplesSpec
    from crs.data import build, prepare
    from crs.data.vocab import Vocabulary

    before = _earlier_build(args.before)
    corpus, entity, words, linker = _corpus(args.corpus)
    corpus = prepare.ensure_valid_split(corpus, 0.1, 42)
    items = prepare.build_item_index(corpus, entity)
    vocab_now = prepare.build_vocab(corpus, 1, items)
    vocab_then = Vocabulary.build((before.replace_mentions(t) for c in corpus.split("train") for t in c.turns),
                                  1, [f"@{i}" for i in items.ids])
    print(f"{args.corpus}: vocabulary {len(vocab_then)} -> {len(vocab_now)} tokens, "
          f"{'identical' if vocab_then.tokens == vocab_now.tokens else 'different'}")
    users = prepare.build_user_index(corpus)
    uri_pieces = {"http", "dbpedia", "org", "resource", "film"}
    for split, conversations in corpus.splits.items():
        kwargs = dict(items=items, entity_graph=entity, word_graph=words, linker=linker, users=users,
                      spec=SamplesSpec())
        then = before.build_samples(conversations, vocab=vocab_then, **kwargs)
        now = build.build_samples(conversations, vocab=vocab_now, **kwargs)
        assert len(then) == len(now), "the two versions build different numbers of samples"
        differ = {f: sum(getattr(a, f) != getattr(b, f) for a, b in zip(then, now)) for f in FIELDS}
        line = ", ".join(f"{f} {n}" for f, n in differ.items())
        print(f"  {split}: {len(now)} samples; differing: {line}")
        if words is not None:
            named = Counter(words.nodes[w] for s in then for w in set(s.context_words)
                            if words.nodes[w] in uri_pieces)
            with_pieces = sum(any(words.nodes[w] in uri_pieces for w in s.context_words) for s in then)
            print(f"    before: {with_pieces} samples had context word nodes from URI pieces {dict(named)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
