"""How many item mentions become item tokens, before and after crs.data.vocab.item_token (BENCHMARKS.md).

    python benchmarks/item_tokens.py --corpus inspired

"before" replays the former rule inside this script (mention words replaced case-sensitively by
``@<item_id>``, which the tokenizer splits into pieces when the id is not a word); "after" is the
pipeline's own code (``crs.data.build``).  Counted on the test split's recommender replies, the
targets KGSF's copy mechanism is trained and scored on: item tokens per reply token, replies with
an item token, and the share of reply item tokens whose item node is among the sample's context
entities (what the copy distribution can point at).
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_OLD_TOKEN = re.compile(r"@\w+|[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]", re.IGNORECASE)


def _old_text(turn) -> str:
    text = turn.text
    for mention in sorted(turn.items, key=lambda m: len(m.text), reverse=True):
        if mention.text and mention.text in text:
            text = text.replace(mention.text, f" @{mention.id} ")
    return text


def _old_tokens(text: str) -> list[str]:
    return [t if t.startswith("@") else t.lower() for t in _OLD_TOKEN.findall(text)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", default="inspired", choices=["inspired"])
    parser.add_argument("--split", default="test")
    args = parser.parse_args(argv)

    from crs.config.spec import SamplesSpec
    from crs.data import build, prepare
    from crs.data.schema import RECOMMENDER
    from crs.data.vocab import tokenize
    from crs.knowledge import IndexedGraph
    from crs.plugin_manager import get_plugin_manager
    from crs.registry import Registry

    # the components registry.yaml's `inspired` bundle names, with their default files
    registry = Registry.from_plugin_manager(get_plugin_manager())
    corpus = registry.build("dataset", {"type": "unicrs_jsonl"}, "data").load()
    kg = registry.build("knowledge_source", {"type": "unicrs_dbpedia"}, "knowledge.entity_kg").load(corpus)
    entity = IndexedGraph.from_graph("entity_kg", kg, extra_nodes=prepare.item_entity_names(corpus))
    items = prepare.build_item_index(corpus, entity)
    vocab = prepare.build_vocab(corpus, 1, items)
    old_item_tokens = {f"@{i}" for i in items.ids}

    mentions = located = located_before = 0
    for conv in corpus.split(args.split):
        for turn in conv.turns:
            mentions += len(turn.items)
            located += len({s[2] for s in build.item_spans(turn.text, turn.items)})
            located_before += sum(bool(m.text) and m.text in turn.text for m in turn.items)
    replies = [t for conv in corpus.split(args.split) for t in conv.turns if t.role == RECOMMENDER and t.index > 0]
    rows = []
    for label, tokens_of, is_item in (
        ("before", lambda t: _old_tokens(_old_text(t)), lambda tok: tok in old_item_tokens),
        ("after", lambda t: tokenize(build.replace_mentions(t)), lambda tok: items.item_of_token(tok) >= 0),
    ):
        tokens = [tokens_of(t) for t in replies]
        n_tokens = sum(map(len, tokens))
        n_items = sum(is_item(tok) for toks in tokens for tok in toks)
        with_item = sum(any(is_item(tok) for tok in toks) for toks in tokens)
        rows.append((label, n_tokens, n_items, with_item))

    samples = build.build_samples(corpus.split(args.split), vocab=vocab, items=items, entity_graph=entity,
                                  word_graph=None, users=prepare.build_user_index(corpus), spec=SamplesSpec())
    reply_items = copyable = 0
    for sample in samples:
        context = set(sample.context_entities)
        for token in sample.response_tokens:
            item = items.item_of_token(vocab.tokens[token])
            if item >= 0:
                reply_items += 1
                copyable += int(items.entity_nodes[item]) in context

    print(f"INSPIRED {args.split}: {len(replies)} recommender replies, {mentions} annotated item mentions (words "
          f"found in the text: {located_before} by the former case-sensitive rule, {located} by the current one)")
    print("| rule | reply tokens | item tokens | share | replies with an item token |")
    print("|---|---|---|---|---|")
    for label, n_tokens, n_items, with_item in rows:
        print(f"| {label} | {n_tokens} | {n_items} | {n_items / n_tokens:.2%} | {with_item} "
              f"({with_item / len(replies):.1%}) |")
    print(f"after: {reply_items} item tokens in the replies of {len(samples)} samples; {copyable} "
          f"({copyable / max(1, reply_items):.1%}) have their item node among the context entities (copyable)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
