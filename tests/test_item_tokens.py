"""Item placeholder tokens for any item-id format (crs.data.vocab.item_token) and the vocabulary's counts."""
import gzip
import json
import pickle

import pytest
import torch

from crs.config.spec import SamplesSpec
from crs.data import build, prepare
from crs.data.schema import RECOMMENDER, SEEKER, Conversation, Corpus, Item, Mention, Turn
from crs.data.vocab import Vocabulary, item_token, item_token_index, tokenize
from crs.errors import DataError
from crs.interfaces import BuildDeps, ItemIndex
from crs.knowledge import ENTITY, WORD, IndexedGraph, KnowledgeGraph
from crs.plugins.datasets.unicrs import UniCRSJsonlDataset
from crs.plugins.kgsf.copy import entity_node_tokens
from crs.plugins.kgsf.decoder import KGSFDecoder

R = "<http://dbpedia.org/resource/"
HEAT, ALIEN, KNIVES = R + "Heat_(1995_film)>", R + "Alien_(film)>", R + "Knives_Out>"


def test_word_like_ids_keep_their_old_token():
    # ReDial and demo ids: the same tokens (hence vocabularies and figures) as before item_token existed
    assert item_token("123") == "@123" and item_token("m0042") == "@m0042" and item_token("item_7") == "@item_7"


@pytest.mark.parametrize("item_id", [HEAT, ALIEN, R + "Avengers:_Endgame>", R + "Amélie>", "a b", "@x", "",
                                     "tt-0113277", "http://example.org/movies#Heat"])
def test_any_id_gets_exactly_one_token(item_id):
    token = item_token(item_id)
    assert tokenize(f"I saw {token}, loved it") == ["i", "saw", token, ",", "loved", "it"]
    assert token == item_token(item_id)  # deterministic


def test_derived_tokens_are_readable_stable_and_distinct():
    assert item_token(HEAT) == "@Heat_1995_film_229fdc84"  # blake2b: the same on every machine and run
    # same slug, different ids -> different tokens
    similar = [HEAT, R + "Heat_1995_film>", R + "Heat_(1995 film)>", "Heat (1995 film)"]
    assert len({item_token(i) for i in similar}) == len(similar)
    assert item_token_index(similar) == {item_token(i): n for n, i in enumerate(similar)}


def test_two_items_with_one_token_are_a_data_error():
    clash = ["Heat_1995_film_229fdc84", HEAT]  # a word-like id equal to another id's derived token
    with pytest.raises(DataError, match="both map to the placeholder token '@Heat_1995_film_229fdc84'"):
        item_token_index(clash)


def _dialogue():
    turn = lambda role, text, movies=(), entities=(): {  # noqa: E731 - UniCRS jsonl turn
        "role": role, "text": text, "movie": [n for _, n in movies], "movie_link": [link for link, _ in movies],
        "movie_name": [n for _, n in movies], "entity_link": [link for link, _ in entities],
        "entity_name": [n for _, n in entities]}
    return [
        turn("RECOMMENDER", "Hi! What do you like?"),
        turn("SEEKER", "I loved Alien and heat (1995) too, anything with Al Pacino",
             movies=[(ALIEN, "Alien"), (HEAT, "Heat")], entities=[(R + "Al_Pacino>", "Al Pacino")]),
        turn("RECOMMENDER", "Then Knives Out! Or rewatch Heat.", movies=[(KNIVES, "Knives Out"), (HEAT, "Heat")]),
    ]


@pytest.fixture
def inspired_like(tmp_path):
    """A UniCRS-format corpus whose item ids are DBpedia URIs, and its pipeline pieces."""
    with gzip.open(tmp_path / "train.jsonl.gz", "wt") as out:
        out.write(json.dumps(_dialogue()) + "\n")
    (tmp_path / "test.jsonl").write_text(json.dumps(_dialogue()) + "\n")
    corpus = UniCRSJsonlDataset(UniCRSJsonlDataset.Config(root=str(tmp_path), train="train.jsonl.gz", valid=None,
                                                          test="test.jsonl", item_set="mentioned"),
                                BuildDeps(path="data")).load()
    kg = KnowledgeGraph(ENTITY, [ALIEN, HEAT, KNIVES, R + "Al_Pacino>"], ["starring"], [1], [0], [3])
    entity = IndexedGraph.from_graph("entity_kg", kg, prepare.item_entity_names(corpus))
    items = prepare.build_item_index(corpus, entity)
    vocab = prepare.build_vocab(corpus, 1, items)
    samples = build.build_samples(corpus.split("train"), vocab=vocab, items=items, entity_graph=entity,
                                  word_graph=None, users=prepare.build_user_index(corpus), spec=SamplesSpec())
    return corpus, entity, items, vocab, samples


def test_dbpedia_items_each_get_one_token_and_mentions_become_it(inspired_like):
    corpus, entity, items, vocab, samples = inspired_like
    assert sorted(items.ids) == sorted([ALIEN, HEAT, KNIVES])
    assert items.tokens == [item_token(i) for i in items.ids]
    assert all(token in vocab for token in items.tokens)
    assert not any(t in vocab for t in ("<", "http", "dbpedia", "resource", ">"))  # no URI fragments left
    seeker = corpus.split("train")[0].turns[1]
    text = build.replace_mentions(seeker)
    # exact "Alien"; "Heat" only appears as "heat": the case-insensitive whole-word fallback finds it
    assert text == f"I loved {item_token(ALIEN)} and {item_token(HEAT)} (1995) too, anything with Al Pacino"
    assert vocab.count(item_token(HEAT)) == 2 and vocab.count(item_token(KNIVES)) == 1
    (sample,) = samples
    tokens = vocab.decode(sample.context_tokens, strip_special=False)
    for token, item in zip(tokens, sample.context_token_items):
        assert item == (items.item_of_token(token) if token.startswith("@") else -1)
    placed = [items.ids[i] for i in sample.context_token_items if i >= 0]
    assert placed == [ALIEN, HEAT]
    pacino_node = entity.node_index[R + "Al_Pacino>"]
    pacino = [tok for tok, node in zip(tokens, sample.context_token_entities) if node == pacino_node]
    assert pacino == ["al", "pacino"]  # annotated entity located by its words
    assert sample.response_turn["items"] == [items.ids.index(KNIVES), items.ids.index(HEAT)]
    assert sample.response_turn["text"] == f"Then {item_token(KNIVES)}! Or rewatch {item_token(HEAT)}."


def test_token_index_is_the_inverse_of_item_token(inspired_like):
    _, _, items, vocab, _ = inspired_like
    assert {items.item_of_token(t) for t in items.tokens} == set(range(len(items)))
    assert items.item_of_token("@nothing") == -1 and items.item_of_token("heat") == -1
    # reading items back out of generated text
    generated = vocab.decode(vocab.encode(f"try {item_token(KNIVES)} or {item_token(ALIEN)} !"))
    assert [items.ids[i] for i in map(items.item_of_token, generated) if i >= 0] == [KNIVES, ALIEN]
    items.ids.append("new")  # items added later: the index follows
    assert items.item_of_token("@new") == len(items.ids) - 1


def test_kgsf_copy_maps_item_nodes_to_their_tokens(inspired_like):
    corpus, entity, items, vocab, _ = inspired_like
    tokens = entity_node_tokens(entity.num_nodes, items.ids, items.entity_nodes, vocab)
    for item_id, node in zip(items.ids, items.entity_nodes.tolist()):
        assert tokens[node] == vocab.index[item_token(item_id)] > vocab.sep
    assert tokens[entity.node_index[R + "Al_Pacino>"]] == 0  # not an item
    # and the decoder the KGSF preset builds carries the same map
    words = IndexedGraph.from_graph("word_kg", KnowledgeGraph(WORD, ["scary"], ["r"], [], [], []))
    deps = BuildDeps(path="model.generator", vocab=vocab, items=items, graphs={"word_kg": words, "entity_kg": entity})
    decoder = KGSFDecoder(KGSFDecoder.Config(dim=8, heads=2, layers=1, ffn_dim=8, word_dim=8, entity_dim=8), deps)
    assert torch.equal(decoder.entity_tokens, tokens)
    assert int((decoder.entity_tokens > 0).sum()) == len(items)


def test_vocabulary_keeps_counts_through_state_and_pickle():
    vocab = Vocabulary.build(["a b b", "b c", "@9 a"], min_freq=2, extra=["@9", "@10"])
    assert vocab.tokens[5:] == ["@9", "@10", "b", "a"]  # extras first, then by falling count
    assert [vocab.count(t) for t in ("b", "a", "@9", "@10", "c", "__pad__")] == [3, 2, 1, 0, 0, 0]
    assert len(vocab.counts) == len(vocab) and vocab.counts[vocab.index["b"]] == 3
    again = Vocabulary.from_state(json.loads(json.dumps(vocab.state())))
    assert again.tokens == vocab.tokens and again.counts == vocab.counts
    assert pickle.loads(pickle.dumps(vocab)).counts == vocab.counts
    with pytest.raises(DataError, match="not a crs Vocabulary.state"):
        Vocabulary.from_state({"tokens": ["x"], "counts": [1]})


def test_demo_ids_keep_their_vocabulary_order():
    """Word-like ids: build_vocab's item tokens are exactly the former `@<id>` strings, in item order."""
    turns = [Turn(0, SEEKER, "I liked Heat"),
             Turn(1, RECOMMENDER, "Try Alien", [Mention("m2", "Alien")], recommended=["m2"])]
    corpus = Corpus("c", {"train": [Conversation("c1", "u", turns)]},
                    {"m1": Item("m1", "Heat"), "m2": Item("m2", "Alien")})
    entity = IndexedGraph.from_graph("e", KnowledgeGraph(ENTITY, [], [], [], [], []), prepare.item_entity_names(corpus))
    items = prepare.build_item_index(corpus, entity)
    vocab = prepare.build_vocab(corpus, 1, items)
    assert vocab.tokens[5:7] == ["@m1", "@m2"]
    assert isinstance(items, ItemIndex) and items.token_index == {"@m1": 0, "@m2": 1}
