"""Corpus-level preparation before samples are built: splits, item index, vocabulary, users.

Nothing here mutates the corpus it is given (dataset components may cache and
share one corpus object); functions that change splits return a new Corpus.
"""
from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import replace
from typing import Sequence

import torch

from ..errors import ConfigError, DataError, check_choice
from ..interfaces import ItemIndex
from ..knowledge import IndexedGraph, ItemTexts, item_texts_named
from .schema import Conversation, Corpus
from .vocab import ITEM_PREFIX, Vocabulary, tokenize

UNLINKED_PREFIX = "item:"  # entity-graph node name of an item the KG does not know


def _unit_hash(text: str) -> float:
    """A stable number in [0, 1) for `text` (same on every machine and Python run, unlike hash())."""
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


VALID_BY = ("conversation", "user")


def ensure_valid_split(corpus: Corpus, fraction: float, seed: int, by: str = "conversation") -> Corpus:
    """Carve a "valid" split out of train when the corpus has none (or an empty one).

    ``by="conversation"``: each train conversation goes to valid when a hash of
    (seed, conversation id) falls below `fraction`.  ``by="user"``: the same test on
    (seed, user id) moves all conversations of a user together, so validation users
    are disjoint from train users (what user-level models such as CCRS are judged
    on); conversations without a user id are hashed by conversation id instead, and
    the corpus report counts them (``valid_by_conversation_fallback``).

    Membership depends only on the hash, so adding or removing other conversations
    never moves one between train and valid.  At least one conversation (or user) is
    carved when `fraction` > 0 and train has two or more of them.
    """
    check_choice(by, VALID_BY, "samples.valid_by")
    if corpus.split("valid"):
        return corpus
    if not 0.0 <= fraction < 1.0:
        raise ConfigError("samples.valid_fraction", f"{fraction} is not in [0, 1)",
                          "use e.g. 0.1 to hold out 10% of train for validation")
    train = corpus.split("train")
    # the unit each conversation is carved with: its user, or itself
    units = [f"user:{conv.user_id}" if by == "user" and conv.user_id else f"conversation:{conv.id}"
             for conv in train]
    distinct = list(dict.fromkeys(units))
    if fraction == 0.0 or len(distinct) < 2:
        return replace(corpus, splits={**corpus.splits, "valid": []})
    # the hashed text is "<seed>:<id>" for both units, as it always was for conversations
    keys = {unit: _unit_hash(f"{seed}:{unit.partition(':')[2]}") for unit in distinct}
    chosen = {unit for unit, key in keys.items() if key < fraction}
    if not chosen:
        chosen = {min(distinct, key=keys.__getitem__)}
    splits = dict(corpus.splits)
    splits["train"] = [c for c, unit in zip(train, units) if unit not in chosen]
    splits["valid"] = [c for c, unit in zip(train, units) if unit in chosen]
    report = {**corpus.report, "valid_carved_from_train": len(splits["valid"])}
    if by == "user":
        report["valid_by"] = "user"
        report["valid_users"] = sum(unit.startswith("user:") for unit in chosen)
        report["valid_by_conversation_fallback"] = sum(not conv.user_id for conv in train)
    return replace(corpus, splits=splits, report=report)


def limit_train(corpus: Corpus, n: int) -> Corpus:
    """Keep the first `n` train conversations (0 = all), for quick runs."""
    if n <= 0 or len(corpus.split("train")) <= n:
        return corpus
    report = {**corpus.report, "train_limited_to": n}
    return replace(corpus, splits={**corpus.splits, "train": corpus.splits["train"][:n]}, report=report)


def _item_ids(corpus: Corpus) -> list[str]:
    """Every item id of the corpus (declared or mentioned), in sorted order: the item index order."""
    ids = set(corpus.items)
    for conversations in corpus.splits.values():
        for conv in conversations:
            for turn in conv.turns:
                ids.update(m.id for m in turn.items)
                ids.update(turn.recommended)
    return sorted(ids)


def item_entity_names(corpus: Corpus) -> list[str]:
    """Entity-graph node name of each item, in item-index order ("item:<id>" when unlinked).

    The pipeline passes these as extra nodes when indexing the entity graph, so
    every item has a node even when the KG lacks it.
    """
    names = []
    for item_id in _item_ids(corpus):
        item = corpus.items.get(item_id)
        names.append(item.entity if item is not None and item.entity else f"{UNLINKED_PREFIX}{item_id}")
    return names


def build_item_index(corpus: Corpus, entity_graph: IndexedGraph) -> ItemIndex:
    """Items in sorted id order with their entity-graph nodes and train recommendation counts."""
    ids = _item_ids(corpus)
    names_by_id: dict[str, str] = {}
    for conversations in corpus.splits.values():  # fall back to a mention's words for undeclared items
        for conv in conversations:
            for turn in conv.turns:
                for m in turn.items:
                    names_by_id.setdefault(m.id, m.text or m.id)
    names = [corpus.items[i].name if i in corpus.items else names_by_id.get(i, i) for i in ids]
    nodes = []
    for item_id, node_name in zip(ids, item_entity_names(corpus)):
        node = entity_graph.node_index.get(node_name)
        if node is None:
            raise DataError(f"<entity graph '{entity_graph.name}'>", f"item '{item_id}' has no node '{node_name}'",
                            "index the entity graph with extra_nodes=item_entity_names(corpus)")
        nodes.append(node)
    position = {item_id: i for i, item_id in enumerate(ids)}
    counts = torch.zeros(len(ids), dtype=torch.float)
    for conv in corpus.split("train"):
        for turn in conv.turns:
            for item_id in turn.recommended:
                counts[position[item_id]] += 1
    return ItemIndex(ids=ids, names=names, entity_nodes=torch.tensor(nodes, dtype=torch.long), train_counts=counts)


def build_vocab(corpus: Corpus, min_freq: int, items: ItemIndex,
                item_texts: Sequence[ItemTexts] = ()) -> Vocabulary:
    """Vocabulary of the train texts, item mentions replaced by placeholder tokens, plus every item's token.

    Item tokens come first (ids 5 .. 4 + n_items, in item order), then words by falling
    count; the vocabulary keeps each token's train count (``Vocabulary.counts``).

    `item_texts` (``samples.vocab_item_texts``): the words of these sources' texts about the
    corpus's items (texts of other items are unused) that occur at least `min_freq` times
    there and are not yet in the vocabulary are appended last, by falling count.  Their
    counts stay train counts (0 for words no train turn has), so frequency-based token
    weights still describe the replies the generator learns from.  Without it a review
    encoder would read many ``__unk__``: 10.4% of the words of ReDial's review snippets are
    outside the train vocabulary of the shared data, 16.8% of its plots' (0% with both sources here).
    """
    from .build import replace_mentions

    texts = (replace_mentions(turn) for conv in corpus.split("train") for turn in conv.turns)
    vocab = Vocabulary.build(texts, min_freq=max(1, min_freq), extra=list(items.token_index))
    if not item_texts:
        return vocab
    text_counts = Counter(tok for source in item_texts for item_id in items.ids
                          for text in source.texts.get(item_id, ()) for tok in tokenize(text)
                          if not tok.startswith(ITEM_PREFIX))  # "@..." is reserved for item placeholders
    new = sorted((t for t, c in text_counts.items() if c >= max(1, min_freq) and t not in vocab),
                 key=lambda t: (-text_counts[t], t))
    return Vocabulary([*vocab.tokens, *new], dict(zip(vocab.tokens, vocab.counts)))


def item_text_sources(names: Sequence[str], item_texts: dict[str, ItemTexts], key: str) -> list[ItemTexts]:
    """The item-text sources `names` (knowledge names) names; a ConfigError at `key`.i for one that is not loaded."""
    return [item_texts_named(item_texts, name, f"{key}.{i}") for i, name in enumerate(names)]


def build_user_index(corpus: Corpus) -> dict[str, int]:
    """User id -> index over all splits, starting at 1 (0 = unknown / no user id)."""
    users = sorted({conv.user_id for convs in corpus.splits.values() for conv in convs if conv.user_id})
    return {user: i + 1 for i, user in enumerate(users)}


def conversations(corpus: Corpus) -> list[Conversation]:
    """All conversations of all splits, in split order (for statistics)."""
    return [conv for convs in corpus.splits.values() for conv in convs]
