"""The `unicrs_jsonl` dataset (INSPIRED) and the `unicrs_dbpedia` graph; counts on the shared data."""
import gzip
import json
import os
from pathlib import Path

import pytest

from crs.errors import ConfigError, DataError
from crs.interfaces import BuildDeps
from crs.plugins.datasets.graph_files import UniCRSDBpedia
from crs.plugins.datasets.unicrs import UniCRSJsonlDataset

SHARED = Path(os.environ.get("CRS_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
R = "<http://dbpedia.org/resource/"


def _turn(role, text, movies=(), entities=()):
    return {"role": role, "text": text, "movie": [n for _l, n in movies],
            "movie_link": [R + link + ">" for link, _n in movies], "movie_name": [n for _l, n in movies],
            "entity_link": [R + link + ">" for link, _n in entities], "entity_name": [n for _l, n in entities]}


DIALOGUE = [
    _turn("RECOMMENDER", "Hi! What do you like?"),
    _turn("SEEKER", "I loved Alien and horror", movies=[("Alien_(film)", "Alien")],
          entities=[("Horror_film", "horror")]),
    _turn("RECOMMENDER", "Try Aliens", movies=[("Aliens_(film)", "Aliens")]),
]


@pytest.fixture
def root(tmp_path):
    with gzip.open(tmp_path / "train.jsonl.gz", "wt") as out:
        out.write(json.dumps(DIALOGUE) + "\n")
    bad = [dict(DIALOGUE[1], movie_name=[])]
    (tmp_path / "test.jsonl").write_text(json.dumps([_turn("SEEKER", "x", movies=[("Alien_(film)", "Alien")])]) + "\n"
                                         + json.dumps(bad) + "\n")
    return tmp_path


def _load(root, **overrides):
    options = dict(root=str(root), train="train.jsonl.gz", valid=None, test="test.jsonl", on_error="skip")
    options.update(overrides)
    return UniCRSJsonlDataset(UniCRSJsonlDataset.Config(**options), BuildDeps(path="data")).load()


def test_recommended_movies_are_items_and_others_entities(root):
    corpus = _load(root)
    assert list(corpus.items) == [R + "Aliens_(film)>"]
    item = corpus.items[R + "Aliens_(film)>"]
    assert item.name == "Aliens" and item.entity == item.id
    conv = corpus.splits["train"][0]
    assert conv.id == "train-1" and conv.user_id == ""  # no user ids in the files, and none made up
    seeker, reply = conv.turns[1], conv.turns[2]
    assert seeker.role == "seeker" and seeker.items == [] and seeker.recommended == []
    assert [(m.id, m.text) for m in seeker.entities] == [(R + "Alien_(film)>", "Alien"), (R + "Horror_film>", "horror")]
    assert reply.recommended == [R + "Aliens_(film)>"] and [m.id for m in reply.items] == reply.recommended


def test_item_set_mentioned(root):
    corpus = _load(root, item_set="mentioned")
    assert set(corpus.items) == {R + "Alien_(film)>", R + "Aliens_(film)>"}
    assert [m.id for m in corpus.splits["train"][0].turns[1].items] == [R + "Alien_(film)>"]


def test_parallel_list_mismatch(root):
    corpus = _load(root)
    assert corpus.report["skipped"] == 1 and len(corpus.splits["test"]) == 1
    with pytest.raises(DataError, match=r"test.jsonl:2: turn 0: movie_link has 1 entries but movie_name has 0"):
        _load(root, on_error="raise")


def test_bad_item_set_is_config_error(registry):
    with pytest.raises(ConfigError, match="data.item_set"):
        registry.build("dataset", {"type": "unicrs_jsonl", "item_set": "all"}, "data")


@pytest.fixture(scope="module")
def inspired():
    folder = SHARED / "inspired" / "unicrs_dbpedia"
    if not folder.is_dir():
        pytest.skip("shared data not available")
    corpus = UniCRSJsonlDataset(UniCRSJsonlDataset.Config(root=str(folder)), BuildDeps(path="data")).load()
    graph = UniCRSDBpedia(UniCRSDBpedia.Config(root=str(folder)), BuildDeps(path="knowledge.entity_kg")).load(corpus)
    return corpus, graph


@pytest.mark.shared_data
def test_shared_inspired_counts(inspired):
    corpus, _graph = inspired
    assert corpus.report["conversations"] == {"train": 801, "valid": 99, "test": 99}
    assert corpus.report["turns"] == {"train": 16_982, "valid": 2_053, "test": 2_089}
    assert len(corpus.items) == 1_123  # = UniCRS's item_ids.json
    folder = SHARED / "inspired" / "unicrs_dbpedia"
    entity2id = json.loads((folder / "entity2id.json").read_text())
    item_ids = set(json.loads((folder / "item_ids.json").read_text()))
    released = {uri for uri, i in entity2id.items() if i in item_ids}
    assert set(corpus.items) == released


@pytest.mark.shared_data
def test_shared_inspired_graph(inspired):
    corpus, graph = inspired
    assert len(graph.nodes) == 17_320 and graph.num_edges == 38_903 and len(graph.relations) == 13
    nodes = set(graph.nodes)
    assert all(item.entity in nodes for item in corpus.items.values())
    assert graph.labels["<http://dbpedia.org/resource/Joker_(2019_film)>"] == ["joker"]
    without = UniCRSDBpedia(UniCRSDBpedia.Config(root=str(SHARED / "inspired" / "unicrs_dbpedia"), self_loops=False),
                            BuildDeps(path="k")).load(corpus)
    assert "self_loop" not in without.relations and len(without.relations) == 12
    assert without.num_edges < graph.num_edges and int(without.relation_ids.max()) == 11
