"""Knowledge sources: KGSF DBpedia (relation filter), ConceptNet edges, metadata, reviews; URI labels."""
import gzip
import json
import os
import pickle
from collections import defaultdict
from pathlib import Path

import pytest

from crs.errors import DataError
from crs.interfaces import BuildDeps
from crs.knowledge import ENTITY, WORD, IndexedGraph, KnowledgeGraph
from crs.labels import uri_label
from crs.plugins.datasets.conceptnet import ConceptNetEdges
from crs.plugins.datasets.dbpedia import KGSFDBpedia
from crs.plugins.datasets.item_texts import ItemMetadataJson, RevCoreReviews

SHARED = Path(os.environ.get("CRS_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
needs_shared = pytest.mark.skipif(not (SHARED / "redial").is_dir(), reason="shared data not available")


def _deps():
    return BuildDeps(path="knowledge.x")


@pytest.mark.parametrize("uri, label", [
    ("<http://dbpedia.org/resource/Tom_Hanks>", "tom hanks"),
    ("<http://dbpedia.org/resource/The_Thin_Red_Line_(1998_film)>", "the thin red line"),
    ("<http://dbpedia.org/resource/Alien_(film)>", "alien"),
    ("<http://dbpedia.org/resource/Amélie>", "amélie"),
    ("<http://dbpedia.org/resource/Schindler%27s_List>", "schindler's list"),
    ("<http://dbpedia.org/resource/Paris,_Texas>", "paris, texas"),
    ("find_information", "find information"),
])
def test_uri_label(uri, label):
    assert uri_label(uri) == label


def _kgsf_files(tmp_path, n_a=3, n_b=2):
    """Relation 1 has n_a edges, relation 2 n_b; one self-edge and one edge of reserved relation 185."""
    uris = [f"<http://dbpedia.org/resource/E{i}_(film)>" for i in range(8)]
    (tmp_path / "e2id.pkl").write_bytes(pickle.dumps({u: i for i, u in enumerate(uris)}))
    subkg = defaultdict(list)
    for i in range(n_a):
        subkg[i].append((1, i + 1))
    for i in range(n_b):
        subkg[5].append((2, 6 + i))
    subkg[4].append((1, 4))  # self-edge: dropped like KGSF does
    subkg[3].append((185, 2))  # KGSF's reserved self-loop relation: dropped
    (tmp_path / "subkg.pkl").write_bytes(pickle.dumps(subkg))
    (tmp_path / "movies.pkl").write_bytes(pickle.dumps([0, 1]))
    return dict(root=str(tmp_path), subkg="subkg.pkl", entity2id="e2id.pkl", movie_ids="movies.pkl")


def test_kgsf_relation_filter_counts_reverse_edges(tmp_path):
    files = _kgsf_files(tmp_path)
    # relation 1: 3 edges -> 6 with reverses; relation 2: 2 -> 4.  Threshold 5 keeps only relation 1.
    graph = KGSFDBpedia(KGSFDBpedia.Config(min_relation_edges=5, **files), _deps()).load(None)
    assert graph.role == ENTITY and len(graph.nodes) == 8
    assert graph.relations == ["dbpedia:1"]
    assert list(zip(graph.heads, graph.tails)) == [(0, 1), (1, 2), (2, 3)]
    assert graph.labels["<http://dbpedia.org/resource/E3_(film)>"] == ["e3"]
    both = KGSFDBpedia(KGSFDBpedia.Config(min_relation_edges=3, **files), _deps()).load(None)
    assert both.relations == ["dbpedia:1", "dbpedia:2"] and both.num_edges == 5


def test_kgsf_self_loops_on_request(tmp_path):
    files = _kgsf_files(tmp_path)
    graph = KGSFDBpedia(KGSFDBpedia.Config(min_relation_edges=5, self_loops=True, **files), _deps()).load(None)
    assert graph.relations == ["self_loop", "dbpedia:1"]  # KGSF's order: entity 0's self-loop comes first
    loops = [(h, t) for h, r, t in zip(graph.heads, graph.relation_ids, graph.tails) if r == 0]
    assert loops == [(n, n) for n in range(8)]


def test_kgsf_bad_files(tmp_path):
    files = _kgsf_files(tmp_path)
    (tmp_path / "e2id.pkl").write_bytes(pickle.dumps({"<a>": 0, "<b>": 5}))
    with pytest.raises(DataError, match="e2id.pkl.*distinct integers"):
        KGSFDBpedia(KGSFDBpedia.Config(**files), _deps()).load(None)
    _kgsf_files(tmp_path)
    with pytest.raises(DataError, match="knowledge.x.subkg"):
        KGSFDBpedia(KGSFDBpedia.Config(root=str(tmp_path), subkg="none.pkl", entity2id="e2id.pkl"), _deps()).load(None)
    (tmp_path / "movies.pkl").write_bytes(pickle.dumps([0, 99]))
    with pytest.raises(DataError, match="movies.pkl.*within 0..7"):
        KGSFDBpedia(KGSFDBpedia.Config(**files), _deps()).load(None)


@pytest.mark.parametrize("pair, edge", [
    ((185, 99), "edge (3, 185, 99)"),  # checked as stored: an edge of the dropped relation 185 too
    ((1, 2**70), f"edge (3, 1, {2**70})"),  # beyond int64: still a DataError, not an OverflowError
])
def test_kgsf_edge_outside_the_entity_ids_names_the_file(tmp_path, pair, edge):
    files = _kgsf_files(tmp_path)
    subkg = pickle.loads((tmp_path / "subkg.pkl").read_bytes())
    subkg[3].append(pair)
    (tmp_path / "subkg.pkl").write_bytes(pickle.dumps(subkg))
    with pytest.raises(DataError) as err:
        KGSFDBpedia(KGSFDBpedia.Config(**files), _deps()).load(None)
    assert str(err.value).startswith(f"{tmp_path / 'subkg.pkl'}: {edge} is outside the id ranges (nodes 0..7)\n")
    assert "entity2id files must come from the same release" in str(err.value)


def test_an_indexed_graph_refuses_edges_outside_it():
    graph = KnowledgeGraph(ENTITY, ["a", "b"], ["r"], heads=[0, 1, 0], relation_ids=[0, 0, 1], tails=[1, 2, 1])
    with pytest.raises(DataError) as err:
        IndexedGraph.from_graph("kg", graph)
    assert str(err.value).startswith("knowledge graph 'kg': edge (1, 0, 2) is outside the id ranges "
                                     "(nodes 0..1, relations 0..0); 2 edges are out of range\n")


def test_roots_under_shared_data_are_read_from_the_folder_the_shared_data_check_checks(monkeypatch, tmp_path):
    from crs.data.shared_folder import shared_folder
    from crs.plugins.datasets.common import resolve_root

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CRS_SHARED_DATA", raising=False)
    assert resolve_root("../shared/data/redial/kgsf") == tmp_path / "../shared/data/redial/kgsf"
    assert resolve_root("data/redial") == tmp_path / "data/redial"
    monkeypatch.setenv("CRS_SHARED_DATA", "~/corpora")  # `~` expanded, as check_shared_data always did
    assert resolve_root("../shared/data/redial/kgsf") == Path.home() / "corpora/redial/kgsf" == \
        shared_folder() / "redial/kgsf"
    assert resolve_root("../shared/data") == Path.home() / "corpora"
    assert resolve_root("../shared/other") == tmp_path / "../shared/other"


def _edges(tmp_path, lines):
    path = tmp_path / "edges.txt.gz"
    with gzip.open(path, "wt") as out:
        out.write("".join(line + "\n" for line in lines))
    return str(path)


def test_conceptnet_filters(tmp_path):
    path = _edges(tmp_path, ["RelatedTo\twolf\tdog", "IsA\tdog/n\tanimal", "RelatedTo\tcat\tanimal",
                             "Synonym\twolf\tlobo"])
    graph = ConceptNetEdges(ConceptNetEdges.Config(path=path), _deps()).load()
    assert graph.role == WORD and graph.nodes == ["wolf", "dog", "animal", "cat", "lobo"] and graph.num_edges == 4
    vocab = tmp_path / "key2index.json"
    vocab.write_text(json.dumps({"dog": 2, "wolf": 1, "animal": 3, "tree": 4}))
    restricted = ConceptNetEdges(ConceptNetEdges.Config(path=path, vocabulary=str(vocab)), _deps()).load()
    assert restricted.nodes == ["wolf", "dog", "animal", "tree"]  # index order, isolated words kept
    assert restricted.num_edges == 2 and restricted.relations == ["IsA", "RelatedTo"]
    only = ConceptNetEdges(ConceptNetEdges.Config(path=path, relations=["RelatedTo"], min_degree=1), _deps()).load()
    assert only.nodes == ["wolf", "dog", "cat", "animal"] and only.relations == ["RelatedTo"]
    dense = ConceptNetEdges(ConceptNetEdges.Config(path=path, min_degree=2), _deps()).load()
    assert dense.nodes == ["wolf", "dog", "animal"] and dense.num_edges == 2  # cat and lobo have degree 1


def test_conceptnet_malformed_line(tmp_path):
    path = _edges(tmp_path, ["RelatedTo\twolf\tdog", "RelatedTo wolf dog"])
    with pytest.raises(DataError, match=r"edges.txt.gz:2: expected relation<TAB>word1<TAB>word2"):
        ConceptNetEdges(ConceptNetEdges.Config(path=path), _deps()).load()
    assert ConceptNetEdges(ConceptNetEdges.Config(path=path, on_error="skip"), _deps()).load().num_edges == 1


def test_metadata_and_reviews(tmp_path):
    info = {"7": {"name": "Up (2009)", "genre": ["animation", "comedy"], "plot": "A house flies.", "director": [],
                  "star": ["Ed Asner"], "imdb_id": "tt1"}}
    with gzip.open(tmp_path / "id2info.json.gz", "wt") as out:
        json.dump(info, out)
    texts = ItemMetadataJson(ItemMetadataJson.Config(path=str(tmp_path / "id2info.json.gz")), _deps()).load()
    assert texts.kind == "metadata"
    assert texts.texts == {"7": ["Up (2009). genre: animation, comedy. star: Ed Asner. plot: A house flies."]}
    (tmp_path / "rev.pkl").write_bytes(pickle.dumps({"7": ["so", "good"], "8": [["meh"], ["fine", "film"]]}))
    reviews = RevCoreReviews(RevCoreReviews.Config(path=str(tmp_path / "rev.pkl")), _deps()).load()
    assert reviews.kind == "review" and reviews.texts == {"7": ["so good"], "8": ["meh", "fine film"]}


@pytest.fixture(scope="module")
def kgsf_graph():
    if not (SHARED / "redial" / "kgsf").is_dir():
        pytest.skip("shared data not available")
    return KGSFDBpedia(KGSFDBpedia.Config(root=str(SHARED / "redial" / "kgsf"), self_loops=True), _deps()).load(None)


@pytest.mark.shared_data
def test_shared_kgsf_graph(kgsf_graph):
    assert len(kgsf_graph.nodes) == 64_362
    assert len(kgsf_graph.relations) == 35  # KGSF's filter: 34 DBpedia relations + its self-loop relation
    loops = int((kgsf_graph.relation_ids == kgsf_graph.relations.index("self_loop")).sum())
    assert loops == 64_362
    assert kgsf_graph.num_edges - loops < 165_696  # the filtered stored edges
    assert kgsf_graph.labels["<http://dbpedia.org/resource/The_Thin_Red_Line_(1998_film)>"] == ["the thin red line"]


@pytest.mark.shared_data
@needs_shared
def test_shared_kgsf_default_has_no_self_loops():
    graph = KGSFDBpedia(KGSFDBpedia.Config(root=str(SHARED / "redial" / "kgsf")), _deps()).load(None)
    assert len(graph.relations) == 34 and "self_loop" not in graph.relations
    assert not (graph.heads == graph.tails).any()


@pytest.mark.shared_data
@needs_shared
def test_shared_conceptnet_metadata_reviews():
    folder = SHARED / "redial" / "conceptnet_one_hop_shupeili"
    edges = str(folder / "conceptnet_one_hop_edges.txt.gz")
    assert ConceptNetEdges(ConceptNetEdges.Config(path=edges), _deps()).load().num_edges == 47_023
    kgsf_words = str(SHARED / "redial" / "kgsf" / "key2index_3rd.json")
    restricted = ConceptNetEdges(ConceptNetEdges.Config(path=edges, vocabulary=kgsf_words), _deps()).load()
    assert len(restricted.nodes) == 29_308 and restricted.num_edges == 29_725
    metadata = ItemMetadataJson(ItemMetadataJson.Config(
        path=str(SHARED / "redial" / "ievalm_metadata_kg" / "id2info.json.gz")), _deps()).load()
    assert len(metadata.texts) == 6_583
    reviews = RevCoreReviews(RevCoreReviews.Config(
        path=str(SHARED / "redial" / "reviews_revcore" / "movie2tokenreview_helpful.pkl")), _deps()).load()
    assert len(reviews.texts) == 2_693  # the file has 2,711 movies, 18 of them with 20 blank tokens: no text
    assert reviews.texts["185055"][0].startswith("Towards the climax of `` Seed of Chucky ''")
