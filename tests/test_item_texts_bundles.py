"""Item texts in the corpus bundles: key_map, absent (not empty) texts, fallback coverage, vocab_item_texts,
the missing-source error, and the measured coverage on the shared data (issue 8, part C)."""
from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from types import SimpleNamespace

import pytest

from crs import cli
from crs.config.spec import SamplesSpec
from crs.data import build, prepare
from crs.data.schema import RECOMMENDER, SEEKER, Conversation, Corpus, Item, Mention, Turn
from crs.data.text_coverage import TextLookups, coverage_lines, text_coverage
from crs.errors import ConfigError, DataError
from crs.interfaces import BuildDeps
from crs.knowledge import ENTITY, IndexedGraph, ItemTexts, KnowledgeGraph
from crs.plugins.datasets.item_texts import ItemMetadataJson, RevCoreReviews

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CRS_SHARED_DATA") or REPO.parent / "shared" / "data")
needs_shared = pytest.mark.skipif(not (SHARED / "redial").is_dir() or not (SHARED / "inspired").is_dir(),
                                  reason="shared data not available")
URI = "<http://dbpedia.org/resource/{}>"


def _deps(path: str = "knowledge.x") -> BuildDeps:
    return BuildDeps(path=path)


@pytest.fixture
def text_files(tmp_path):
    """ReDial-keyed reviews and metadata, and a movieId -> URI map like KGSF's id2entity.pkl."""
    (tmp_path / "reviews.pkl").write_bytes(pickle.dumps({
        "1": ["a", "fine", "film"], "2": [" ", " "], "3": ["dull"], "4": ["loud", "!"]}))
    (tmp_path / "info.json").write_text(json.dumps({
        "1": {"name": "One (1990)", "plot": "A dog finds home."}, "2": {"name": "Two", "plot": ""},
        "3": {"name": "Three", "plot": "Space."}}))
    (tmp_path / "link.pkl").write_bytes(pickle.dumps({1: URI.format("One"), 2: URI.format("Two"), 3: None,
                                                      4: URI.format("One")}))
    return tmp_path


def test_blank_reviews_are_absent_not_empty(text_files):
    texts = RevCoreReviews(RevCoreReviews.Config(path=str(text_files / "reviews.pkl")), _deps()).load()
    assert texts.texts == {"1": ["a fine film"], "3": ["dull"], "4": ["loud !"]}  # "2" is 20 blanks in the real file
    assert texts.kind == "review" and texts.label == "RevCore review snippets"


def test_metadata_plot_only_without_field_names(text_files):
    config = ItemMetadataJson.Config(path=str(text_files / "info.json"), fields=["plot"], field_names=False)
    texts = ItemMetadataJson(config, _deps()).load()
    assert texts.texts == {"1": ["A dog finds home."], "3": ["Space."]}  # "Two" has no plot: absent
    assert texts.label == "item metadata: plot"
    named = ItemMetadataJson(ItemMetadataJson.Config(path=str(text_files / "info.json"), fields=["name", "plot"]),
                             _deps()).load()
    assert named.texts["1"] == ["One (1990). plot: A dog finds home."]


def test_key_map_rekeys_texts_to_corpus_item_ids(text_files):
    reviews = RevCoreReviews(RevCoreReviews.Config(path=str(text_files / "reviews.pkl"),
                                                   key_map=str(text_files / "link.pkl")), _deps()).load()
    # 1 and 4 both link to One: their texts pool; 3 links to nothing; 2 has no text
    assert reviews.texts == {URI.format("One"): ["a fine film", "loud !"]}
    metadata = ItemMetadataJson(ItemMetadataJson.Config(path=str(text_files / "info.json"), fields=["plot"],
                                                        field_names=False, key_map=str(text_files / "link.pkl")),
                                _deps()).load()
    assert metadata.texts == {URI.format("One"): ["A dog finds home."]}


def test_a_key_map_that_is_no_mapping_is_a_data_error(text_files):
    (text_files / "bad.json").write_text("[1, 2]")
    with pytest.raises(DataError, match="key -> corpus item id") as err:
        RevCoreReviews(RevCoreReviews.Config(path=str(text_files / "reviews.pkl"),
                                             key_map=str(text_files / "bad.json")), _deps("knowledge.reviews")).load()
    assert "knowledge.reviews.key_map" in str(err.value)


# ------------------------------------------------------------------ coverage and fallback order
TEXTS = {
    "reviews": ItemTexts("review", {"a": ["great"], "b": ["meh"]}, label="snippets"),
    "metadata": ItemTexts("metadata", {"b": ["plot b"], "c": ["plot c"]}, label="item metadata: plot"),
}


def _samples(*contexts):
    return [SimpleNamespace(context_items=list(items)) for items in contexts]


def test_coverage_counts_items_and_context_items_in_fallback_order():
    ids = ["a", "b", "c", "d"]  # "d" has no text anywhere
    samples = {"test": _samples([0, 3], [1, 2], [3], [])}  # context items: a d | b c | d | -
    report = text_coverage(TEXTS, ids, samples, {"model.enc": ["reviews", "metadata"], "model.other": ["metadata",
                                                                                                       "reviews"]})
    reviews = report["sources"]["reviews"]
    assert (reviews["items_with_text"], reviews["items"], reviews["label"]) == (2, 4, "snippets")
    assert reviews["splits"]["test"]["context_items_with_text"] == 0.4  # a, b of a d b c d
    assert report["sources"]["metadata"]["splits"]["test"]["context_items_with_text"] == 0.4  # b, c
    first = report["readers"]["model.enc"]["splits"]["test"]
    assert first["context_items_with_text"] == 0.6 and first["samples_with_text"] == 0.5  # a b c; samples 1, 2
    assert first["by_source"] == {"reviews": 0.4, "metadata": 0.2}  # b's review wins over its plot
    assert report["readers"]["model.other"]["splits"]["test"]["by_source"] == {"metadata": 0.4, "reviews": 0.2}
    line = coverage_lines(report, "test")[2]
    assert line.startswith("model.enc reads reviews > metadata: 60.0% of test context items have a text")


def test_lookups_note_the_sources_a_component_reads_in_order():
    deps = BuildDeps(path="model.enc", item_texts=TextLookups(TEXTS))
    assert deps.texts("metadata") is TEXTS["metadata"]
    deps.item_texts.get("reviews")
    deps.texts("metadata")
    assert deps.item_texts.names == ["metadata", "reviews"]


def test_a_missing_source_names_the_key_and_the_fix():
    deps = BuildDeps(path="model.review_encoder", item_texts=TextLookups({"metadata": TEXTS["metadata"]}))
    with pytest.raises(ConfigError) as err:
        deps.texts("reviews", key="sources.0")
    assert "model.review_encoder.sources.0" in str(err.value) and "fix: name one of: metadata" in str(err.value)
    assert "add `reviews` under `knowledge:`" in str(err.value)
    with pytest.raises(ConfigError) as by_samples:  # `samples:` and components say it in the same words
        prepare.item_text_sources(["reviews"], {"metadata": TEXTS["metadata"]}, "samples.vocab_item_texts")
    assert (by_samples.value.problem, by_samples.value.fix) == (err.value.problem, err.value.fix)
    with pytest.raises(ConfigError) as err:
        prepare.item_text_sources(["metadata", "reveiws"], TEXTS, "samples.vocab_item_texts")
    message = str(err.value)
    assert "samples.vocab_item_texts.1" in message and "Did you mean 'reviews'" in message and "fix:" in message


def test_a_run_naming_an_absent_source_fails_at_load_time(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CRS_REGISTRY", str(REPO / "registry.yaml"))
    code = cli.main(["run", "--run-dir", str(tmp_path / "run"), "preset=popularity", "data=demo",
                     "~knowledge.reviews", "samples.vocab_item_texts=[reviews]"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "Traceback" not in err, err
    assert "samples.vocab_item_texts.0" in err and "no item-text source named 'reviews'" in err and "fix:" in err
    assert not (tmp_path / "run" / "report.json").exists()


# ------------------------------------------------------------------ vocab_item_texts
def _corpus() -> tuple[Corpus, IndexedGraph]:
    conv = Conversation("c1", "u", [
        Turn(0, SEEKER, "I liked Alien, it was scary", [Mention("i1", "Alien")]),
        Turn(1, RECOMMENDER, "Then watch Heat", [Mention("i2", "Heat")], recommended=["i2"]),
    ])
    corpus = Corpus("tiny", {"train": [conv], "test": [conv]}, {"i1": Item("i1", "Alien"), "i2": Item("i2", "Heat")})
    empty = KnowledgeGraph(ENTITY, [], [], [], [], [])
    return corpus, IndexedGraph.from_graph("items", empty, extra_nodes=prepare.item_entity_names(corpus))


def test_vocab_item_texts_appends_the_words_of_the_corpus_items_texts():
    corpus, graph = _corpus()
    items = prepare.build_item_index(corpus, graph)
    plain = prepare.build_vocab(corpus, 1, items)
    texts = [ItemTexts("review", {"i1": ["A gory xenomorph, gory and scary @i9"], "i2": ["Pacino heist"],
                                  "other": ["unrelated words"]})]
    vocab = prepare.build_vocab(corpus, 1, items, texts)
    assert vocab.tokens[:len(plain)] == plain.tokens  # train ids are unchanged
    assert vocab.tokens[len(plain):] == ["gory", "a", "and", "heist", "pacino", "xenomorph"]  # by count, then name
    assert "unrelated" not in vocab and "@i9" not in vocab  # other items' texts; "@" is for item tokens
    assert vocab.count("gory") == 0 and vocab.count("scary") == plain.count("scary") == 1  # counts stay train counts
    frequent = prepare.build_vocab(corpus, 2, items)
    assert prepare.build_vocab(corpus, 2, items, texts).tokens[len(frequent):] == ["gory"]  # min_word_freq applies
    samples = build.build_samples(corpus.split("train"), vocab=vocab, items=items, entity_graph=graph,
                                  word_graph=None, users={}, spec=SamplesSpec(vocab_item_texts=["reviews"]))
    assert vocab.unk not in samples[0].context_tokens


# ------------------------------------------------------------------ shared data
@pytest.mark.shared_data
@pytest.mark.slow
@needs_shared
def test_shared_inspired_items_map_to_redial_texts():
    from crs.plugins.datasets.unicrs import UniCRSJsonlDataset

    corpus = UniCRSJsonlDataset(UniCRSJsonlDataset.Config(), BuildDeps(path="data")).load()
    link = str(SHARED / "redial" / "kgsf" / "id2entity.pkl")
    reviews = RevCoreReviews(RevCoreReviews.Config(key_map=link), _deps()).load()
    plots = ItemMetadataJson(ItemMetadataJson.Config(fields=["plot"], field_names=False, key_map=link), _deps()).load()
    items = set(corpus.items)
    assert len(items) == 1_123
    # spec section 5 says 165 with a snippet: two of those snippets are 20 blank tokens, so no text
    assert len(items & set(reviews.texts)) == 163 and len(items & set(plots.texts)) == 512
    mapped = {str(uri) for uri in pickle.loads((SHARED / "redial" / "kgsf" / "id2entity.pkl").read_bytes()).values()}
    assert len(items & mapped) == 518
    assert len(items & (set(reviews.texts) | set(plots.texts))) == 515  # 3 items have a snippet but no plot


@pytest.mark.shared_data
@pytest.mark.slow
@needs_shared
def test_shared_redial_coverage():
    from crs.plugins.datasets.redial import RedialDataset

    corpus = RedialDataset(RedialDataset.Config(), BuildDeps(path="data")).load()
    reviews = RevCoreReviews(RevCoreReviews.Config(), _deps()).load()
    plots = ItemMetadataJson(ItemMetadataJson.Config(fields=["plot"], field_names=False), _deps()).load()
    empty = KnowledgeGraph(ENTITY, [], [], [], [], [])
    graph = IndexedGraph.from_graph("items", empty, extra_nodes=prepare.item_entity_names(corpus))
    items = prepare.build_item_index(corpus, graph)
    vocab = prepare.build_vocab(corpus, 1, items)
    test = build.build_samples(corpus.split("test"), vocab=vocab, items=items, entity_graph=graph, word_graph=None,
                               users={}, spec=SamplesSpec())
    report = text_coverage({"reviews": reviews, "metadata": plots}, items.ids, {"test": test},
                           {"model.review_encoder": ["reviews", "metadata"]})
    assert len(items.ids) == 6_924
    assert report["sources"]["reviews"]["items_with_text"] == 2_693
    assert report["sources"]["metadata"]["items_with_text"] == 6_451
    reader = report["readers"]["model.review_encoder"]["splits"]["test"]
    # measured 2026-12-01 (test split, recommender-turn samples): snippets for 29.5% of the context items, a plot
    # stands in for 69.9% more; 0.6% have neither
    assert reader["by_source"] == pytest.approx({"reviews": 0.295, "metadata": 0.699}, abs=0.002)
    assert reader["context_items_with_text"] == pytest.approx(0.994, abs=0.002)
