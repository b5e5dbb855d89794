"""Generic knowledge-graph readers: `kg_triples` (TSV / JSONL triples) and `kg_json` (alias `unicrs_dbpedia`)."""
from __future__ import annotations

import json

import pytest

from crs.errors import ConfigError, DataError
from crs.interfaces import BuildDeps
from crs.knowledge import WORD
from crs.plugin_manager import get_plugin_manager
from crs.registry import Registry


@pytest.fixture(scope="module")
def registry():
    return Registry.from_plugin_manager(get_plugin_manager())


def _load(registry, **node):
    return registry.build("knowledge_source", node, "knowledge.kg", BuildDeps(path="knowledge.kg")).load()


def _triples(graph) -> list[tuple[str, str, str]]:
    return [(graph.nodes[h], graph.relations[r], graph.nodes[t])
            for h, r, t in zip(graph.heads.tolist(), graph.relation_ids.tolist(), graph.tails.tolist())]


TRIPLES = [("The_Shining_(1980)", "directed_by", "Stanley_Kubrick"), ("The_Shining_(1980)", "has_genre", "horror"),
           ("Barry_Lyndon", "directed_by", "Stanley_Kubrick")]


# --------------------------------------------------------------------------- kg_triples
def test_tsv_by_position_and_by_header_name(registry, tmp_path):
    (tmp_path / "kg.tsv").write_text("".join(f"{h}\t{r}\t{t}\n" for h, r, t in TRIPLES))
    graph = _load(registry, type="kg_triples", path=str(tmp_path / "kg.tsv"))
    assert _triples(graph) == TRIPLES
    assert graph.nodes == ["The_Shining_(1980)", "Stanley_Kubrick", "horror", "Barry_Lyndon"]  # first appearance
    assert graph.labels["The_Shining_(1980)"] == ["the shining"]
    assert graph.labels["Stanley_Kubrick"] == ["stanley kubrick"]

    # another column order, named by a header line, comma-separated, gzip-free .csv name
    (tmp_path / "kg.csv").write_text("rel,src,dst,weight\n" + "".join(f"{r},{h},{t},1\n" for h, r, t in TRIPLES))
    graph = _load(registry, type="kg_triples", path=str(tmp_path / "kg.csv"), header=True, delimiter=",",
                  head="src", relation="rel", tail="dst")
    assert _triples(graph) == TRIPLES
    # ... or by position, without reading the header as a triple
    graph = _load(registry, type="kg_triples", path=str(tmp_path / "kg.csv"), header=True, delimiter=",",
                  head=1, relation=0, tail=2, role="word")
    assert _triples(graph) == TRIPLES and graph.role == WORD and graph.labels["Barry_Lyndon"] == ["barry lyndon"]


def test_jsonl_with_mapped_keys(registry, tmp_path):
    rows = [{"s": h, "p": r, "o": t, "extra": 1} for h, r, t in TRIPLES]
    (tmp_path / "kg.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    graph = _load(registry, type="kg_triples", path=str(tmp_path / "kg.jsonl"), head="s", relation="p", tail="o")
    assert _triples(graph) == TRIPLES
    (tmp_path / "plain.jsonl").write_text("".join(json.dumps(dict(zip(("head", "relation", "tail"), t))) + "\n"
                                                  for t in TRIPLES))
    assert _triples(_load(registry, type="kg_triples", path=str(tmp_path / "plain.jsonl"))) == TRIPLES


@pytest.mark.parametrize("line, problem", [
    ({"head": None, "relation": "r", "tail": "t"}, "the head (key 'head', `knowledge.kg.head`) should be a string or "
                                                   "a number, got null"),
    ({"head": ["a", "b"], "relation": "r", "tail": "t"}, "the head (key 'head', `knowledge.kg.head`) should be a "
                                                         "string or a number, got a JSON list"),
    ({"head": "h", "tail": "t"}, "the relation (key 'relation', `knowledge.kg.relation`) is missing"),
    ({"head": "h", "relation": "r", "tail": " "}, "the tail (key 'tail', `knowledge.kg.tail`) is empty"),
    (["h", "r", "t"], "a line should be a JSON object, got a JSON list"),
])
def test_malformed_jsonl_triples_name_file_line_and_key(registry, tmp_path, line, problem):
    path = tmp_path / "kg.jsonl"
    path.write_text(json.dumps({"head": "a", "relation": "r", "tail": "b"}) + "\n" + json.dumps(line) + "\n")
    with pytest.raises(DataError) as err:
        _load(registry, type="kg_triples", path=str(path))
    assert f"kg.jsonl:2: {problem}" in str(err.value) and "\n  fix: " in str(err.value)
    skipped = _load(registry, type="kg_triples", path=str(path), on_error="skip")
    assert skipped.num_edges == 1


def test_tsv_mistakes(registry, tmp_path):
    path = tmp_path / "kg.tsv"
    path.write_text("a\tr\tb\nc\td\n")
    with pytest.raises(DataError, match=r"kg.tsv:2: expected at least 3 columns separated by '\\t', got 2"):
        _load(registry, type="kg_triples", path=str(path))
    with pytest.raises(ConfigError, match=r"'knowledge.kg.head': 'src' names a column, but `header` is false"):
        _load(registry, type="kg_triples", path=str(path), head="src")
    with pytest.raises(DataError, match=r"kg.tsv:1: the header has no column 'src' \(`knowledge.kg.head`\)"):
        _load(registry, type="kg_triples", path=str(path), header=True, head="src")
    with pytest.raises(ConfigError, match="'knowledge.kg.head': 0 is a column position"):
        _load(registry, type="kg_triples", path=str(tmp_path / "kg.jsonl"), format="jsonl", head=0)
    with pytest.raises(ConfigError, match="knowledge.kg.role"):
        _load(registry, type="kg_triples", path=str(path), role="concept")
    with pytest.raises(DataError, match="knowledge.kg.path"):
        _load(registry, type="kg_triples", path=str(tmp_path / "absent.tsv"))


def test_the_demo_corpus_export_reads_back_as_the_demo_graph(registry, tmp_path):
    from crs.plugins.demo.corpus import demo_entity_graph
    from crs.plugins.demo.export import write_demo_corpus

    files = write_demo_corpus(tmp_path)
    graph = _load(registry, type="kg_triples", path=str(files["kg"]))
    assert sorted(_triples(graph)) == sorted(_triples(demo_entity_graph()))


# --------------------------------------------------------------------------- kg_json
def _write_kg_json(folder, kg=None):
    folder.mkdir(exist_ok=True)
    (folder / "entity2id.json").write_text(json.dumps({"Pari (1995)": 0, "drama": 1, "Ali Mosaffa": 2}))
    (folder / "relation2id.json").write_text(json.dumps({"genre": 0, "star": 1, "self_loop": 2}))
    (folder / "kg.json").write_text(json.dumps(kg or {"0": [[0, 1], [1, 2], [2, 0]], "1": [[2, 1]]}))
    return folder


def test_kg_json_reads_any_graph_of_that_layout_and_unicrs_dbpedia_is_an_alias(registry, tmp_path):
    folder = _write_kg_json(tmp_path / "g")
    graph = _load(registry, type="kg_json", root=str(folder))
    assert _triples(graph) == [("Pari (1995)", "genre", "drama"), ("Pari (1995)", "star", "Ali Mosaffa"),
                               ("Pari (1995)", "self_loop", "Pari (1995)"), ("drama", "self_loop", "drama")]
    assert graph.labels["Pari (1995)"] == ["pari"]
    without = _load(registry, type="kg_json", root=str(folder), self_loops=False)
    assert without.relations == ["genre", "star"] and without.num_edges == 2
    (folder / "dbpedia_subkg.json").write_text((folder / "kg.json").read_text())
    alias = _load(registry, type="unicrs_dbpedia", root=str(folder))
    assert _triples(alias) == _triples(graph)
    assert registry.get("unicrs_dbpedia").cls.Config().kg == "dbpedia_subkg.json"  # INSPIRED's file names


@pytest.mark.parametrize("kg, problem", [
    ({"0": [[0, True]]}, "head '0': expected [relation id, tail id] pairs, got [0, true]"),
    ({"0": [[0]]}, "head '0': expected [relation id, tail id] pairs, got [0]"),
    ({"x": [[0, 1]]}, "head 'x': expected a JSON object head id"),
    ({"0": [[0, 9]]}, "edge (0, 0, 9) is outside the id ranges (nodes 0..2, relations 0..2)"),
])
def test_kg_json_mistakes(registry, tmp_path, kg, problem):
    folder = _write_kg_json(tmp_path / "g", kg)
    with pytest.raises(DataError) as err:
        _load(registry, type="kg_json", root=str(folder))
    assert problem in str(err.value) and "\n  fix: " in str(err.value)


@pytest.mark.parametrize("entity2id, problem", [
    ({"a": 0, "b": True}, "'b' has id True"),  # a boolean is no id (it used to become id 1)
    ({"a": 0, "b": 0}, "'b' has id 0"),
    (["a", "b"], "expected a mapping URI -> id, got list"),
])
def test_kg_json_id_file_mistakes(registry, tmp_path, entity2id, problem):
    folder = _write_kg_json(tmp_path / "g")
    (folder / "entity2id.json").write_text(json.dumps(entity2id))
    with pytest.raises(DataError) as err:
        _load(registry, type="kg_json", root=str(folder))
    assert problem in str(err.value) and "entity2id.json" in str(err.value) and "\n  fix: " in str(err.value)
