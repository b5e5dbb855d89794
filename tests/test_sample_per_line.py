"""`format: sample_per_line`: a per-turn corpus written here, loaded and trained on from YAML alone.

The corpus imitates the per-turn releases of CRS corpora: one JSON line per recommendation turn with
the history as plain strings, entities pooled over the history, the recommended items and the reply.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import yaml

from crs.config.loader import load_config
from crs.config.spec import SamplesSpec
from crs.data import prepare
from crs.data.build import build_samples
from crs.data.schema import RECOMMENDER, SEEKER, Mention
from crs.errors import ConfigError, DataError
from crs.interfaces import BuildDeps
from crs.knowledge import ENTITY, IndexedGraph, KnowledgeGraph
from crs.plugin_manager import get_plugin_manager
from crs.plugins.datasets.generic_jsonl import JsonlDataset
from crs.plugins.datasets.sample_lines import named_in
from crs.registry import Registry
from crs.runner import run

ROOT = Path(__file__).resolve().parents[1]
MAPPING = {"conversation_id": "dialog", "user_id": "", "history": "context", "reply": "resp",
           "recommended": "rec", "entities": "entity", "items": ""}

# --------------------------------------------------------------------------- a small world
GENRES = ["horror", "comedy", "animation", "crime"]
DIRECTORS = ["Stanley Kubrick", "Pete Docter", "Michael Mann", "Edgar Wright"]
MOVIES = [(f"{genre.title()} Movie {n} ({2000 + n})", genre, DIRECTORS[(i + n) % 4])
          for i, genre in enumerate(GENRES) for n in range(4)]
NOT_IN_KG = "Lost Reel (1921)"  # recommended, but the KG has no node for it


def node(name: str) -> str:
    """KG node names spell names with underscores (and keep the case), as DBpedia-style graphs do."""
    return name.replace(" ", "_")


def write_kg(path: Path) -> Path:
    rows = [f"{node(title)}\thas_genre\t{genre}\n{node(title)}\tdirected_by\t{node(director)}\n"
            for title, genre, director in MOVIES]
    path.write_text("".join(rows))
    return path


def dialogue_lines(rng: random.Random, dialog: str) -> list[dict]:
    """Two recommendation turns of one dialogue, written as two per-turn lines sharing a history prefix."""
    genre = rng.choice(GENRES)
    picks = rng.sample([m for m in MOVIES if m[1] == genre], 2)
    director = picks[0][2]
    history = [f"Hi! I want a {genre} film tonight.", "Sure, any favourite director?",
               f"I like {director}."]
    first = {"dialog": dialog, "context": list(history), "entity": [genre, node(director)],
             "rec": [picks[0][0]], "resp": f"Then watch {picks[0][0]}!"}
    history += [first["resp"], "Seen it. Another one?"]
    second = {"dialog": dialog, "context": list(history), "entity": [genre, node(director), node(picks[0][0])],
              "rec": [picks[1][0]], "resp": f"Try {picks[1][0]}."}
    return [first, second]


def write_corpus(folder: Path, train: int = 24, test: int = 8, seed: int = 0) -> Path:
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", train), ("test", test)):
        lines = [line for d in range(count) for line in dialogue_lines(rng, f"{split}{d}")]
        lines[-1]["rec"].append(NOT_IN_KG)
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    write_kg(folder / "kg.tsv")
    return folder


def _load(folder: Path, **options):
    options = {"root": str(folder), "train": "train.jsonl", "test": "test.jsonl", "format": "sample_per_line",
               "fields": dict(MAPPING), **options}
    return JsonlDataset(JsonlDataset.Config(**options), BuildDeps(path="data")).load()


def _samples(corpus):
    items = prepare.build_item_index(corpus, IndexedGraph.from_graph(
        "e", KnowledgeGraph(ENTITY, [], [], [], [], []), prepare.item_entity_names(corpus)))
    vocab = prepare.build_vocab(corpus, 1, items)
    return build_samples(corpus.split("train"), vocab=vocab, items=items, entity_graph=None, word_graph=None,
                         users=prepare.build_user_index(corpus), spec=SamplesSpec())


# --------------------------------------------------------------------------- reading
def test_lines_of_a_dialogue_become_one_conversation_with_one_sample_per_line(tmp_path):
    corpus = _load(write_corpus(tmp_path))
    train = corpus.split("train")
    assert len(train) == 24  # 48 lines, grouped by their shared history
    conv = train[0]
    assert conv.id == "train0" and conv.user_id == "train0"
    # speakers alternate back from the last history string (the seeker's); replies are the recommender's
    assert [t.role for t in conv.turns] == [SEEKER, RECOMMENDER, SEEKER, RECOMMENDER, SEEKER, RECOMMENDER]
    assert [t.is_sample for t in conv.turns] == [False, False, False, True, False, True]
    # each reply keeps its line's recommended items, located in its text
    first, second = (json.loads(line) for line in (tmp_path / "train.jsonl").read_text().splitlines()[:2])
    assert conv.turns[3].text == first["resp"] and conv.turns[3].recommended == first["rec"]
    assert conv.turns[3].items[0].text == first["rec"][0]
    assert conv.turns[5].recommended == second["rec"]
    # one sample per line: history recommender turns ("Sure, any favourite director?") make none
    samples = _samples(corpus)
    assert len(samples) == 48
    assert [s.response_text for s in samples[:2]] == [first["resp"], second["resp"]]
    assert samples[1].context_text == second["context"]
    report = corpus.report["sample_per_line"]
    assert report["lines"] == 64 and report["lines_continuing_a_conversation"] == 32


def test_pooled_entities_go_to_the_first_turn_naming_them_or_stay_pooled(tmp_path):
    write_corpus(tmp_path)
    first = json.loads((tmp_path / "train.jsonl").read_text().splitlines()[0])
    genre, director = first["entity"]
    conv = _load(tmp_path).split("train")[0]
    # "I want a horror film" names the genre; "I like Stanley Kubrick" names Stanley_Kubrick (underscores as spaces)
    assert [(m.id, m.text) for m in conv.turns[0].entities] == [(genre, genre)]
    assert [(m.id, m.text) for m in conv.turns[2].entities] == [(director, director.replace("_", " "))]
    # the second line's new entity (the movie it recommended first) is named by that earlier reply
    assert [m.id for m in conv.turns[3].entities] == [node(first["rec"][0])]

    pooled = _load(tmp_path, pooled_mentions="last_turn").split("train")[0]
    assert not pooled.turns[0].entities
    assert [m.id for m in pooled.turns[2].entities] == [genre, director]  # the whole pool on the last history turn
    assert [(m.id, m.text) for m in pooled.turns[2].entities][1] == (director, director.replace("_", " "))


def test_options_ungrouped_last_speaker_and_repeated_lines(tmp_path):
    write_corpus(tmp_path)
    ungrouped = _load(tmp_path, group_samples=False)
    convs = ungrouped.split("train")
    assert len(convs) == 48 and convs[1].id == "train0#2"  # unique ids, each line its full history
    assert len(_samples(ungrouped)) == 48  # still one sample per line
    assert len(convs[1].turns) == 6 and convs[1].turns[3].is_sample is False

    flipped = _load(tmp_path, last_speaker="recommender").split("train")[0]
    assert [t.role for t in flipped.turns[:3]] == [RECOMMENDER, SEEKER, RECOMMENDER]

    # a corpus writing one line per recommended item: the repeated turn gathers the items
    line = {"context": ["any comedy?"], "resp": "Comedy Movie 0 (2000) or Comedy Movie 1 (2001)",
            "rec": ["Comedy Movie 0 (2000)"], "entity": []}
    rows = [line, dict(line, rec=["Comedy Movie 1 (2001)"])]
    (tmp_path / "rep.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    corpus = _load(tmp_path, train="rep.jsonl", test="rep.jsonl", fields=dict(MAPPING, conversation_id=""))
    [conv] = corpus.split("train")
    assert conv.id == "train-1" and [t.role for t in conv.turns] == [SEEKER, RECOMMENDER]
    assert conv.turns[1].recommended == ["Comedy Movie 0 (2000)", "Comedy Movie 1 (2001)"]
    assert corpus.report["sample_per_line"]["lines_repeating_a_turn"] == 2


@pytest.mark.parametrize("text, mention, words", [
    ("I like Stanley Kubrick.", Mention("Stanley_Kubrick"), "Stanley Kubrick"),  # underscores as spaces
    ("i like stanley kubrick", Mention("Stanley_Kubrick"), "stanley kubrick"),  # any case; the text's own words
    ("more horrors", Mention("horror"), None),  # whole words only
    ("a horror_film", Mention("horror"), None),
    ("watch The Shining", Mention("<http://dbpedia.org/resource/The_Shining_(film)>"), "The Shining"),  # URI label
    ("it was 1980", Mention("1980"), None),  # names without a letter never match
    ("that one", Mention("Q42", "that one"), "that one"),  # the mention's own text first
])
def test_a_turn_names_a_mention_by_whole_words(text, mention, words):
    assert named_in(text, mention) == words


@pytest.mark.parametrize("record, problem, key", [
    ({"context": ["hi"], "resp": None, "rec": []}, "field 'resp' (mapped by fields.reply) should be a string", "reply"),
    ({"context": ["hi", ["a", "b"]], "resp": "x", "rec": []},
     "entry 1 of field 'context' (mapped by fields.history) should be a string or a number, got a JSON list",
     "history"),
    ({"context": "hi", "resp": "x", "rec": []},
     "field 'context' (mapped by fields.history) should be a JSON list, got a string", "history"),
    ({"context": ["hi"], "resp": "x", "rec": [[1, 2]]},
     "entry 0 of field 'rec' (mapped by fields.recommended) should be a string or a number, got a JSON list "
     "([1, 2])", "recommended"),
    ({"context": ["hi"], "resp": "x", "rec": [None]},
     "entry 0 of field 'rec' (mapped by fields.recommended) should be a string or a number, got null",
     "recommended"),
    ({"context": ["hi"], "resp": "x", "rec": [{"id": None}]},
     "the id 'id' (fields.item_id) of entry 0 of field 'rec' (mapped by fields.recommended) should be", "item_id"),
    ({"context": ["hi"], "rec": []}, "field 'resp' (mapped by fields.reply) is missing", "reply"),
])
def test_malformed_lines_are_data_errors_naming_file_line_and_mapping_key(tmp_path, record, problem, key):
    good = {"context": ["hi"], "resp": "fine", "rec": ["Up"], "entity": []}
    (tmp_path / "train.jsonl").write_text(json.dumps(good) + "\n" + json.dumps(record) + "\n")
    with pytest.raises(DataError) as err:
        _load(tmp_path, test="train.jsonl", fields=dict(MAPPING, conversation_id=""))
    message = str(err.value)
    assert f"train.jsonl:2: {problem}" in message and f"fields.{key}" in message
    assert "\n  fix: " in message
    assert "None" not in message.split("\n")[0].replace("null", "")


def test_bad_options_are_config_errors(tmp_path):
    registry = Registry.from_plugin_manager(get_plugin_manager())
    node = {"type": "jsonl", "root": str(tmp_path), "train": "train.jsonl", "test": "test.jsonl",
            "format": "sample_per_line"}
    with pytest.raises(ConfigError, match="data.last_speaker"):
        registry.build("dataset", {**node, "last_speaker": "user"}, "data")
    with pytest.raises(ConfigError, match="data.pooled_mentions"):
        registry.build("dataset", {**node, "pooled_mentions": "pooled"}, "data")


# --------------------------------------------------------------------------- YAML only
@pytest.mark.slow  # about a second of its own; the first training of a session also imports torch's optimizers
def test_example_yaml_trains_and_evaluates_on_a_corpus_written_here(tmp_path, capsys):
    """examples/sample-per-line.yaml, its paths pointed at the corpus: items link to the triple KG by name."""
    folder = write_corpus(tmp_path / "corpus")
    config = yaml.safe_load((ROOT / "examples/sample-per-line.yaml").read_text())
    config["data"]["root"] = str(folder)
    config["knowledge"]["entity_kg"]["path"] = str(folder / "kg.tsv")
    config["stages"][0].update(epochs=2, batch_size=16)
    run_file = tmp_path / "run.yaml"
    run_file.write_text(yaml.safe_dump(config))
    assert run(str(run_file), [], run_dir=str(tmp_path / "run"), progress=False) == 0

    header = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("[crs] sample-per-line"))
    assert "17 items (1 unlinked from the entity KG)" in header
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    data = report["extra"]["data"]["report"]
    assert data["items_linked_by_name"] == 16 and data["items_unlinked_from_kg"] == 1
    assert data["sample_per_line"]["lines"] == 64
    samples = report["extra"]["data"]["samples"]
    assert samples["test"] == 16 and samples["train"] + samples["valid"] == 48


def test_items_link_by_name_only_without_an_items_file(tmp_path):
    """The same names with an items file that gives no entity: the file is the authority, nothing links."""
    folder = write_corpus(tmp_path)
    (folder / "items.jsonl").write_text("".join(json.dumps({"id": title, "name": title}) + "\n"
                                                for title, _g, _d in MOVIES))
    registry = Registry.from_plugin_manager(get_plugin_manager())
    from crs.pipeline import build_pipeline

    common = [f"data.root={folder}", f"knowledge.entity_kg.path={folder / 'kg.tsv'}", f"run_dir={tmp_path / 'r'}"]
    spec, resolved = load_config(str(ROOT / "examples/sample-per-line.yaml"), common, registry=registry)
    linked = build_pipeline(spec, registry, resolved)
    assert linked.corpus.report["items_unlinked_from_kg"] == 1
    graph = linked.graphs["entity_kg"]
    title = MOVIES[0][0]
    position = linked.items.ids.index(title)
    assert graph.nodes[int(linked.items.entity_nodes[position])] == node(title)

    spec, resolved = load_config(str(ROOT / "examples/sample-per-line.yaml"), [*common, "data.items=items.jsonl"],
                                 registry=registry)
    unlinked = build_pipeline(spec, registry, resolved)
    assert unlinked.corpus.report["items_unlinked_from_kg"] == 17
    assert "items_linked_by_name" not in unlinked.corpus.report


def test_a_name_two_graph_nodes_share_links_nothing():
    """"The_Matrix" and "the matrix" are one name to the linker: an item so named stays unlinked and is counted."""
    from crs.data.item_links import link_items
    from crs.data.schema import Corpus, Item

    items = {"m1": Item(id="m1", name="The Matrix"), "m2": Item(id="m2", name="Heat (1995)")}
    corpus = Corpus(name="c", splits={}, items=items, report={}, link_items_by_name=True)
    nodes = ["The_Matrix", "the matrix", "Heat_(1995)"]
    graph = KnowledgeGraph(ENTITY, nodes, [], [], [], [])
    linked, names = link_items(corpus, graph)
    assert linked.items["m1"].entity is None and linked.items["m2"].entity == "Heat_(1995)"
    assert names == ["item:m1", "Heat_(1995)"] == prepare.item_entity_names(linked)
    assert linked.report == {"items_linked_by_name": 1, "items_with_ambiguous_names": 1, "items_unlinked_from_kg": 1}
