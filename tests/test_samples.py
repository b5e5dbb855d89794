"""Corpus preparation (splits, items, vocab, users) and sample building."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from crs.config.spec import SamplesSpec
from crs.data import build, prepare
from crs.data.schema import RECOMMENDER, SEEKER, Conversation, Corpus, Item, Mention, Turn
from crs.errors import ConfigError
from crs.knowledge import ENTITY, WORD, IndexedGraph, KnowledgeGraph
from crs.plugins.demo.corpus import DemoConfig, demo_concept_graph, demo_corpus, demo_entity_graph

SMALL = DemoConfig(seed=3, n_items=80, n_people=40, n_users=20, n_train=120, n_valid=20, n_test=20)


def _tiny_corpus() -> Corpus:
    """Two hand-written conversations with known mentions; item "i9" has no KG node."""
    c1 = Conversation("c1", "alice", [
        Turn(0, SEEKER, "Hi! I loved Alien and anything scary.", [Mention("i1", "Alien")],
             [Mention("genre:horror", "scary")]),
        Turn(1, RECOMMENDER, "Then watch The Thing, it is a classic.", [Mention("i2", "The Thing")],
             recommended=["i2"]),
        Turn(2, SEEKER, "Seen it! Anything with Sigourney Weaver?", [], [Mention("person:weaver", "Sigourney Weaver")]),
        Turn(3, RECOMMENDER, "Try Aliens or Ghostbusters.", [Mention("i3", "Aliens"), Mention("i9", "Ghostbusters")],
             recommended=["i3", "i9"]),
    ])
    c2 = Conversation("c2", "bob", [
        Turn(0, RECOMMENDER, "Hello, what do you like?"),
        Turn(1, SEEKER, "Something funny please, maybe science fiction."),
        Turn(2, RECOMMENDER, "Ghostbusters is funny.", [Mention("i9", "Ghostbusters")], recommended=["i9"]),
    ])
    items = {"i1": Item("i1", "Alien", "movie:alien"), "i2": Item("i2", "The Thing", "movie:thing"),
             "i3": Item("i3", "Aliens", "movie:aliens"), "i9": Item("i9", "Ghostbusters")}
    return Corpus("tiny", {"train": [c1, c2], "test": [c2]}, items)


def _tiny_graphs(corpus: Corpus):
    nodes = ["movie:alien", "movie:thing", "movie:aliens", "genre:horror", "person:weaver"]
    kg = KnowledgeGraph(ENTITY, nodes, ["r"], [0, 1, 2], [0, 0, 0], [3, 3, 4])
    entity = IndexedGraph.from_graph("entity_kg", kg, prepare.item_entity_names(corpus))
    words = KnowledgeGraph(WORD, ["scary", "funny", "classic", "anything", "science_fiction"], ["RelatedTo"],
                           [0], [0], [1])
    return entity, IndexedGraph.from_graph("word_kg", words)


def _build(corpus, spec=SamplesSpec(), linker=None, split="train"):
    entity, word = _tiny_graphs(corpus)
    items = prepare.build_item_index(corpus, entity)
    vocab = prepare.build_vocab(corpus, 1, items)
    samples = build.build_samples(corpus.split(split), vocab=vocab, items=items, entity_graph=entity,
                                  word_graph=word, linker=linker, users=prepare.build_user_index(corpus), spec=spec)
    return samples, vocab, items, entity, word


def test_item_index_vocab_and_users():
    corpus = _tiny_corpus()
    assert prepare.item_entity_names(corpus) == ["movie:alien", "movie:thing", "movie:aliens", "item:i9"]
    entity, _ = _tiny_graphs(corpus)
    items = prepare.build_item_index(corpus, entity)
    assert items.ids == ["i1", "i2", "i3", "i9"] and items.names[3] == "Ghostbusters"
    assert [entity.nodes[n] for n in items.entity_nodes.tolist()] == prepare.item_entity_names(corpus)
    assert items.train_counts.tolist() == [0.0, 1.0, 1.0, 2.0]
    vocab = prepare.build_vocab(corpus, 1, items)
    assert all(f"@{i}" in vocab for i in items.ids)
    assert "alien" not in vocab and "ghostbusters" not in vocab  # titles became item tokens
    assert prepare.build_user_index(corpus) == {"alice": 1, "bob": 2}


def test_one_sample_per_recommender_turn_with_context():
    samples, vocab, items, entity, word = _build(_tiny_corpus())
    # c1 turns 1 and 3; c2 turn 0 has no context, so only turn 2
    assert [(s.conv_id, s.turn_index) for s in samples] == [("c1", 1), ("c1", 3), ("c2", 2)]
    first, second, third = samples
    assert vocab.decode(first.context_tokens) == ["hi", "!", "i", "loved", "@i1", "and", "anything", "scary", "."]
    assert second.context_tokens.count(vocab.sep) == 2  # three context turns joined by SEP
    assert first.target_items == [items.ids.index("i2")]
    assert second.target_items == [items.ids.index("i3"), items.ids.index("i9")]
    assert second.context_items == [items.ids.index("i1"), items.ids.index("i2")]
    assert [entity.nodes[e] for e in second.context_entities] == \
           ["movie:alien", "genre:horror", "movie:thing", "person:weaver"]
    # word nodes: no stopwords ("anything" is one), in order, deduplicated
    assert [word.nodes[w] for w in first.context_words] == ["scary"]
    assert [word.nodes[w] for w in second.context_words] == ["scary", "classic"]
    assert first.response_tokens[0] == vocab.bos and first.response_tokens[-1] == vocab.eos
    assert vocab.decode(first.response_tokens)[:3] == ["then", "watch", "@i2"]
    assert first.response_text == "Then watch The Thing, it is a classic."
    assert first.context_text == ["Hi! I loved Alien and anything scary."]
    assert (first.user_index, third.user_index) == (1, 2)
    assert third.context_items == [] and third.context_entities == []  # cold start
    assert [word.nodes[w] for w in third.context_words] == ["funny", "science_fiction"]  # compounds too
    assert first.target_item == -1 and first.for_item(5).target_item == 5


def test_limits_are_honoured():
    spec = SamplesSpec(context_turns=1, max_context_tokens=4, max_response_tokens=5, max_context_entities=1,
                       max_context_words=1)
    samples, vocab, *_ = _build(_tiny_corpus(), spec)
    second = samples[1]
    assert len(second.context_text) == 1 and second.context_text[0].startswith("Seen it")
    assert len(second.context_tokens) == 4 and vocab.decode(second.context_tokens)[-1] == "?"
    assert len(second.context_entities) == 1
    assert all(len(s.response_tokens) == 5 and s.response_tokens[-1] == vocab.eos for s in samples)


def test_linker_nodes_are_added():
    class FakeLinker:
        def __init__(self, node):
            self.node = node

        def link(self, text):
            return [self.node] if "funny" in text else []

    corpus = _tiny_corpus()
    entity, _ = _tiny_graphs(corpus)
    samples, *_ = _build(corpus, linker=FakeLinker(entity.node_index["genre:horror"]))
    assert entity.node_index["genre:horror"] in samples[2].context_entities


def test_valid_split_is_carved_stably():
    corpus = demo_corpus(SMALL)
    no_valid = replace(corpus, splits={"train": corpus.splits["train"], "test": corpus.splits["test"]})
    a = prepare.ensure_valid_split(no_valid, 0.2, seed=1)
    b = prepare.ensure_valid_split(no_valid, 0.2, seed=1)
    assert [c.id for c in a.splits["valid"]] == [c.id for c in b.splits["valid"]]
    assert 10 <= len(a.splits["valid"]) <= 40
    assert len(a.splits["train"]) + len(a.splits["valid"]) == 120
    assert "valid" not in no_valid.splits and len(no_valid.splits["train"]) == 120  # input untouched
    # membership depends on the id only: dropping conversations does not move the others
    fewer = replace(no_valid, splits={**no_valid.splits, "train": no_valid.splits["train"][::2]})
    carved = {c.id for c in prepare.ensure_valid_split(fewer, 0.2, seed=1).splits["valid"]}
    assert carved == {c.id for c in a.splits["valid"]} & {c.id for c in fewer.splits["train"]}
    assert {c.id for c in prepare.ensure_valid_split(no_valid, 0.2, seed=2).splits["valid"]} != \
           {c.id for c in a.splits["valid"]}
    assert prepare.ensure_valid_split(corpus, 0.2, seed=1) is corpus  # an existing valid split is kept
    with pytest.raises(ConfigError, match="samples.valid_fraction"):
        prepare.ensure_valid_split(no_valid, 1.5, seed=1)
    limited = prepare.limit_train(corpus, 10)
    assert [c.id for c in limited.splits["train"]] == [c.id for c in corpus.splits["train"][:10]]


def test_demo_samples_cover_every_recommender_turn():
    corpus = demo_corpus(SMALL)
    entity = IndexedGraph.from_graph("entity_kg", demo_entity_graph(SMALL), prepare.item_entity_names(corpus))
    word = IndexedGraph.from_graph("word_kg", demo_concept_graph())
    items = prepare.build_item_index(corpus, entity)
    vocab = prepare.build_vocab(corpus, 1, items)
    samples = build.build_samples(corpus.split("train"), vocab=vocab, items=items, entity_graph=entity,
                                  word_graph=word, users=prepare.build_user_index(corpus), spec=SamplesSpec())
    expected = sum(t.role == RECOMMENDER and t.index >= 1 for c in corpus.split("train") for t in c.turns)
    assert len(samples) == expected
    with_targets = [s for s in samples if s.target_items]
    assert len(with_targets) > len(corpus.split("train"))  # about two recommendations per dialogue
    assert np.mean([bool(s.context_words) for s in samples]) > 0.8
    assert all(len(s.context_entities) == len(set(s.context_entities)) for s in samples)
    assert all(vocab.unk not in s.response_tokens for s in samples)  # train texts are all in vocab


# ------------------------------------------------------------------ turn records and per-token tags
def test_turn_records_entity_turns_and_token_tags():
    samples, vocab, items, entity, _ = _build(_tiny_corpus())
    first, second, third = samples
    assert second.context_turns == [
        {"index": 0, "role": SEEKER, "text": "Hi! I loved @i1 and anything scary.", "items": [0], "unplaced_items": []},
        {"index": 1, "role": RECOMMENDER, "text": "Then watch @i2, it is a classic.", "items": [1],
         "unplaced_items": []},
        {"index": 2, "role": SEEKER, "text": "Seen it! Anything with Sigourney Weaver?", "items": [],
         "unplaced_items": []},
    ]
    assert second.response_turn == {"index": 3, "role": RECOMMENDER, "text": "Try @i3 or @i9.", "items": [2, 3],
                                    "unplaced_items": []}
    assert first.context_turns == second.context_turns[:1]  # records are per turn, shared by later samples
    assert [entity.nodes[e] for e in second.context_entities] == \
           ["movie:alien", "genre:horror", "movie:thing", "person:weaver"]
    assert second.context_entity_turns == [0, 0, 1, 2]
    assert third.context_entity_turns == [] and third.context_turns[0]["role"] == RECOMMENDER
    for sample in samples:
        n = len(sample.context_tokens)
        assert len(sample.context_token_entities) == len(sample.context_token_items) == n
        assert len(sample.context_entity_turns) == len(sample.context_entities)
        for token, node, item in zip(vocab.decode(sample.context_tokens, strip_special=False),
                                     sample.context_token_entities, sample.context_token_items):
            if token.startswith("@"):
                assert item == items.item_of_token(token) and node == items.entity_nodes[item]
            else:
                assert item == -1
            if token == "__sep__":
                assert node == 0
    tags = {tok: entity.nodes[node] for tok, node in zip(vocab.decode(second.context_tokens, strip_special=False),
                                                          second.context_token_entities) if node}
    # item placeholders, and annotated entity mentions located by their words ("scary", "Sigourney Weaver")
    assert tags == {"@i1": "movie:alien", "scary": "genre:horror", "@i2": "movie:thing",
                    "sigourney": "person:weaver", "weaver": "person:weaver"}


def test_token_tags_and_entity_turns_follow_truncation():
    spec = SamplesSpec(max_context_tokens=6, max_context_entities=2)
    samples, vocab, items, entity, _ = _build(_tiny_corpus(), spec)
    full, *_ = _build(_tiny_corpus())
    second, whole = samples[1], full[1]
    assert second.context_tokens == whole.context_tokens[-6:]
    assert second.context_token_entities == whole.context_token_entities[-6:]
    assert second.context_token_items == whole.context_token_items[-6:]
    # the last two entities, each with the (full-context) index of the turn that first named it
    assert [entity.nodes[e] for e in second.context_entities] == ["movie:thing", "person:weaver"]
    assert second.context_entity_turns == [1, 2]
    window, *_ = _build(_tiny_corpus(), SamplesSpec(context_turns=2))
    # with a two-turn window the indices count within the window (index 0 = the window's first turn)
    assert [t["index"] for t in window[1].context_turns] == [1, 2]
    assert window[1].context_entity_turns == [0, 1]


def test_linker_spans_tag_tokens_and_unlocated_mentions_are_unplaced():
    class SpanLinker:
        def __init__(self, node):
            self.node = node

        def link(self, text):
            return [self.node] if "classic" in text else []

        def link_tokens(self, tokens):
            return [(i, i + 1, self.node) for i, tok in enumerate(tokens) if tok == "classic"]

    corpus = _tiny_corpus()
    c1 = corpus.splits["train"][0]
    c1.turns[2].items.append(Mention("i3", "the sequel"))  # words the text does not contain
    entity, _ = _tiny_graphs(corpus)
    weaver = entity.node_index["person:weaver"]
    samples, vocab, items, *_ = _build(corpus, linker=SpanLinker(weaver))
    second = samples[1]
    tags = dict(zip(vocab.decode(second.context_tokens, strip_special=False), second.context_token_entities))
    assert tags["classic"] == weaver
    assert second.context_turns[2]["items"] == [] and second.context_turns[2]["unplaced_items"] == [2]
    assert items.ids.index("i3") in second.context_items  # still a context item


# ------------------------------------------------------------------ validation by user
def _users(convs):
    return {c.user_id for c in convs}


def test_valid_by_user_holds_out_whole_users():
    corpus = demo_corpus(SMALL)
    no_valid = replace(corpus, splits={"train": corpus.splits["train"], "test": corpus.splits["test"]})
    carved = prepare.ensure_valid_split(no_valid, 0.2, seed=1, by="user")
    train, valid = carved.splits["train"], carved.splits["valid"]
    assert valid and not _users(train) & _users(valid)
    assert len(train) + len(valid) == 120
    assert carved.report["valid_by"] == "user" and carved.report["valid_users"] == len(_users(valid))
    assert carved.report["valid_by_conversation_fallback"] == 0
    assert 1 <= len(_users(valid)) < len(_users(no_valid.splits["train"]))
    # membership depends on (seed, user id) only: other users' conversations do not move anyone
    some = set(sorted(_users(train))[::2]) | _users(valid)
    kept = [c for c in no_valid.splits["train"] if c.user_id in some]
    fewer = prepare.ensure_valid_split(replace(no_valid, splits={**no_valid.splits, "train": kept}), 0.2, 1, "user")
    assert _users(fewer.splits["valid"]) == _users(valid)
    with pytest.raises(ConfigError, match="samples.valid_by"):
        prepare.ensure_valid_split(no_valid, 0.2, seed=1, by="speaker")


def test_valid_by_user_falls_back_per_conversation_without_user_ids():
    corpus = demo_corpus(SMALL)
    train = [replace(c, user_id="") if i % 3 == 0 else c for i, c in enumerate(corpus.splits["train"])]
    no_valid = replace(corpus, splits={"train": train, "test": corpus.splits["test"]})
    by_user = prepare.ensure_valid_split(no_valid, 0.3, seed=4, by="user")
    by_conv = prepare.ensure_valid_split(no_valid, 0.3, seed=4)
    assert by_user.report["valid_by_conversation_fallback"] == 40
    anonymous = lambda split: {c.id for c in split if not c.user_id}  # noqa: E731
    # anonymous conversations are carved exactly as per-conversation carving carves them
    assert anonymous(by_user.splits["valid"]) == anonymous(by_conv.splits["valid"])
    named = {c.user_id for c in by_user.splits["train"] if c.user_id}
    assert not named & {c.user_id for c in by_user.splits["valid"] if c.user_id}
    # a corpus whose user id is the conversation id (INSPIRED) is carved the same way both ways
    own = replace(no_valid, splits={**no_valid.splits, "train": [replace(c, user_id=c.id) for c in train]})
    assert [c.id for c in prepare.ensure_valid_split(own, 0.3, 4, "user").splits["valid"]] == \
           [c.id for c in prepare.ensure_valid_split(own, 0.3, 4).splits["valid"]]
