"""The `phrase_matcher` entity linker."""
from __future__ import annotations

from crs.interfaces import BuildDeps
from crs.knowledge import ENTITY, IndexedGraph, KnowledgeGraph
from crs.plugins.linking.phrase_matcher import PhraseMatcher, node_surface_forms


def _graph(nodes, labels=None) -> IndexedGraph:
    kg = KnowledgeGraph(ENTITY, list(nodes), [], [], [], [], labels=labels or {})
    return IndexedGraph.from_graph("entity_kg", kg, extra_nodes=["item:42"])


def _linker(graph, **options) -> PhraseMatcher:
    linker = PhraseMatcher(PhraseMatcher.Config(**options), BuildDeps(path="linker"))
    linker.fit(graph)
    return linker


def test_surface_forms_from_labels_and_names():
    assert node_surface_forms("<http://dbpedia.org/resource/Tom_Hanks>") == ["tom hanks"]
    assert node_surface_forms("<http://dbpedia.org/resource/The_Thin_Red_Line_(1998_film)>") == ["the thin red line"]
    assert node_surface_forms("genre:scifi", {"genre:scifi": ["Science Fiction", "sci-fi"]}) == \
           ["science fiction", "sci-fi", "scifi"]
    assert node_surface_forms("item:42") == []


def test_links_multi_word_labels_longest_first_in_order():
    graph = _graph(["<http://dbpedia.org/resource/Tom_Hanks>", "<http://dbpedia.org/resource/Tom_Jones_(singer)>",
                    "genre:scifi", "<http://dbpedia.org/resource/Science>", "<http://dbpedia.org/resource/Up_(2009_film)>"],
                   labels={"genre:scifi": ["science fiction"]})
    linker = _linker(graph)
    found = [graph.nodes[i] for i in linker.link("I like SCIENCE FICTION, Tom Jones and tom hanks. Also Tom Hanks!")]
    assert found == ["genre:scifi", "<http://dbpedia.org/resource/Tom_Jones_(singer)>",
                     "<http://dbpedia.org/resource/Tom_Hanks>"]
    # "science" alone still links when it is not part of a longer phrase
    assert [graph.nodes[i] for i in linker.link("pure science")] == ["<http://dbpedia.org/resource/Science>"]
    # "Up" is shorter than min_chars and would link every "up"
    assert linker.link("we ended up watching it") == []


def test_stopword_only_and_long_phrases_are_skipped():
    graph = _graph(["<http://dbpedia.org/resource/The_Who>", "<http://dbpedia.org/resource/It_(2017_film)>",
                    "<http://dbpedia.org/resource/A_Very_Long_Title_Of_Seven_Words>"])
    linker = _linker(graph, max_phrase_len=5)
    assert linker.link("the who is it") == []
    assert linker.link("a very long title of seven words") == []
    assert _linker(graph, max_phrase_len=7).link("A very long title of seven words") == [3]


def test_labels_only_mode():
    graph = _graph(["<http://dbpedia.org/resource/Tom_Hanks>", "genre:horror"], labels={"genre:horror": ["horror"]})
    linker = _linker(graph, use_node_names=False)
    assert linker.link("tom hanks horror") == [graph.node_index["genre:horror"]]


def test_registered_and_links_on_a_large_graph():
    """64,000 similar names; each text links to exactly its own.  (Speed: benchmarks/bench_linker.py.)"""
    from crs.plugin_manager import get_plugin_manager
    from crs.registry import Registry

    registry = Registry.from_plugin_manager(get_plugin_manager(load_entry_points=False,
                                                               builtins=("crs.plugins.linking",)))
    linker = registry.build("entity_linker", {"type": "phrase_matcher", "min_chars": 2}, "linker")
    names = [f"<http://dbpedia.org/resource/Person_{a}_{b}_Smith>" for a in range(250) for b in range(256)]
    graph = _graph(names)
    linker.fit(graph)
    pairs = [(n % 250, n * 7 % 256) for n in range(300)]
    texts = [f"have you seen person {a} {b} smith in that movie with the great ending" for a, b in pairs]
    linked = [[graph.nodes[i] for i in linker.link(t)] for t in texts]
    assert linked == [[f"<http://dbpedia.org/resource/Person_{a}_{b}_Smith>"] for a, b in pairs]
