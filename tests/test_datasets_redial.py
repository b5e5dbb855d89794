"""The `redial` dataset: release format, turn merging, items, errors; counts on the shared data."""
import gzip
import json
import os
import pickle
from pathlib import Path

import pytest

from crs.errors import ConfigError, DataError
from crs.interfaces import BuildDeps
from crs.plugins.datasets.redial import RedialDataset

SHARED = Path(os.environ.get("CRS_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")


def _conversation(conv_id, seeker=1, rec=2):
    messages = [
        (seeker, "hi, I liked @100"), (seeker, "and @101 too"),
        (rec, "then try @200"), (rec, "or @201 and @200"),
        (seeker, "thanks, what about @999?"),
    ]
    return {
        "conversationId": str(conv_id), "initiatorWorkerId": seeker, "respondentWorkerId": rec,
        "movieMentions": {"100": "Alpha  (1990)", "101": "Beta (1991)", "200": "Gamma (1992)", "201": "Delta"},
        "initiatorQuestions": {"100": {"liked": 1}}, "respondentQuestions": {},
        "messages": [{"text": t, "senderWorkerId": s, "messageId": i, "timeOffset": i}
                     for i, (s, t) in enumerate(messages)],
    }


def _write_jsonl_gz(path, lines):
    with gzip.open(path, "wt", encoding="utf-8") as out:
        for line in lines:
            out.write((line if isinstance(line, str) else json.dumps(line)) + "\n")


@pytest.fixture
def root(tmp_path):
    _write_jsonl_gz(tmp_path / "train.jsonl.gz", [_conversation(1), _conversation(2, seeker=7, rec=8)])
    _write_jsonl_gz(tmp_path / "test.jsonl.gz", [_conversation(3), "{not json", {"conversationId": "5"}])
    (tmp_path / "movies.csv").write_text('movieId,movieName,nbMentions\n100,Alpha  (1990),3\n'
                                         '101,"Beta, The (1991)",1\n200,Gamma (1992),2\n')
    (tmp_path / "link.pkl").write_bytes(pickle.dumps({100: "<http://dbpedia.org/resource/Alpha>", 101: None,
                                                      200: "<x:Gamma>"}))
    (tmp_path / "info.json").write_text(json.dumps({"100": {"name": "Alpha (1990)", "genre": ["drama"]}}))
    return tmp_path


def _dataset(root, **overrides):
    options = dict(root=str(root), train="train.jsonl.gz", test="test.jsonl.gz", movie_linking="link.pkl",
                   movies_csv="movies.csv", metadata="info.json", on_error="skip")
    options.update(overrides)
    return RedialDataset(RedialDataset.Config(**options), BuildDeps(path="data"))


def test_turns_are_merged_and_roles_items_recommended_set(root):
    corpus = _dataset(root).load()
    conv = corpus.splits["train"][0]
    assert conv.id == "1" and conv.user_id == "1"
    assert [t.role for t in conv.turns] == ["seeker", "recommender", "seeker"]
    assert [t.index for t in conv.turns] == [0, 1, 2]
    assert conv.turns[0].text == "hi, I liked @100 and @101 too"
    assert [(m.id, m.text) for m in conv.turns[0].items] == [("100", "@100"), ("101", "@101")]
    assert conv.turns[0].recommended == []
    assert conv.turns[1].recommended == ["200", "201"]  # each movie once, in order of mention
    assert conv.turns[2].items == []  # @999 is no known movie
    assert all(t.entities == [] for t in conv.turns)
    assert corpus.splits["train"][1].user_id == "7"
    assert corpus.report["messages"]["train"] == 10 and corpus.report["turns"]["train"] == 6
    assert corpus.report["unknown_mentions"] == 3  # @999 in each of the three conversations
    assert "valid" not in corpus.splits


def test_items_from_csv_linking_metadata_and_mentions(root):
    items = _dataset(root).load().items
    assert items["100"].name == "Alpha (1990)" and items["101"].name == "Beta, The (1991)"
    assert items["100"].entity == "<http://dbpedia.org/resource/Alpha>" and items["101"].entity is None
    assert items["100"].meta["genre"] == ["drama"] and items["200"].meta == {}
    assert items["201"].name == "Delta"  # only in the conversation's movieMentions


def test_malformed_lines_skipped_and_counted(root):
    corpus = _dataset(root).load()
    assert len(corpus.splits["test"]) == 1
    assert corpus.report["skipped"] == 2
    assert any("test.jsonl.gz:3" in example and "initiatorWorkerId" in example
               for example in corpus.report["skipped_examples"])


def test_malformed_line_raises_with_file_and_line(root):
    with pytest.raises(DataError) as err:
        _dataset(root, on_error="raise").load()
    assert "test.jsonl.gz:2" in str(err.value) and "invalid JSON" in str(err.value)
    assert "fix:" in str(err.value)


def test_config_errors_and_missing_files(root, registry):
    with pytest.raises(ConfigError, match="data.on_error"):
        registry.build("dataset", {"type": "redial", "root": str(root), "on_error": "ignore"}, "data")
    with pytest.raises(DataError, match="data.test"):
        _dataset(root, test="absent.jsonl").load()


def test_max_conversations_and_plain_sibling(root):
    # a config naming x.jsonl.gz reads x.jsonl when only the plain file exists (downloaded copies)
    with gzip.open(root / "train.jsonl.gz", "rt") as src:
        (root / "plain.jsonl").write_text(src.read())
    corpus = _dataset(root, train="plain.jsonl.gz", max_conversations=1).load()
    assert len(corpus.splits["train"]) == 1


@pytest.fixture(scope="module")
def shared_corpus():
    if not (SHARED / "redial" / "raw").is_dir():
        pytest.skip("shared data not available")
    return RedialDataset(RedialDataset.Config(root=str(SHARED / "redial")), BuildDeps(path="data")).load()


@pytest.mark.shared_data
def test_shared_redial_counts(shared_corpus):
    report = shared_corpus.report
    assert report["conversations"] == {"train": 3_455, "test": 1_342}
    assert report["messages"] == {"train": 62_600, "test": 23_952}
    assert report["skipped"] == 0
    assert len(shared_corpus.items) == 6_924
    assert sum(1 for item in shared_corpus.items.values() if item.entity) == 6_112
    assert sum(1 for item in shared_corpus.items.values() if item.meta) == 6_583
    mentioned = {split: {m.id for c in convs for t in c.turns for m in t.items}
                 for split, convs in shared_corpus.splits.items()}
    assert len(mentioned["test"]) == 2_007 and len(mentioned["train"]) == 3_704  # PROVENANCE's distinct movies
    assert report["unknown_mentions"] == 0


@pytest.mark.shared_data
def test_shared_redial_turns_alternate(shared_corpus):
    for conv in shared_corpus.splits["test"][:200]:
        roles = [t.role for t in conv.turns]
        assert all(a != b for a, b in zip(roles, roles[1:]))
        assert all(t.recommended == [m.id for m in t.items] for t in conv.turns if t.role == "recommender")
