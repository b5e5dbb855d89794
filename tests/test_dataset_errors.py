"""Dataset errors name the mapped key and give a fix; null / list / object ids and texts are data errors."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from crs.errors import DataError
from crs.interfaces import BuildDeps
from crs.plugins.datasets.generic_jsonl import JsonlDataset
from crs.plugins.datasets.redial import RedialDataset
from crs.plugins.datasets.unicrs import UniCRSJsonlDataset

DATASETS = Path(__file__).resolve().parents[1] / "plugins" / "datasets"


def test_every_data_error_raised_by_a_dataset_plugin_carries_a_fix():
    """Static: each DataError(file, problem, fix) / RecordError(problem, fix) in plugins/datasets has its fix."""
    missing = []
    for path in sorted(DATASETS.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("DataError", "RecordError"):
                needed = 3 if node.func.id == "DataError" else 2
                if len(node.args) < needed and not any(k.arg == "fix" for k in node.keywords):
                    missing.append(f"{path.name}:{node.lineno}")
    assert not missing, f"errors without a fix: {missing}"


def _jsonl(tmp_path, rows, **options):
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    config = JsonlDataset.Config(root=str(tmp_path), train="train.jsonl", test="train.jsonl", **options)
    return JsonlDataset(config, BuildDeps(path="data"))


GOOD = {"id": "c1", "user_id": "u1",
        "turns": [{"index": 0, "role": "seeker", "text": "hi", "items": [], "entities": [], "recommended": []}]}


@pytest.mark.parametrize("turns, problem, key", [
    (["hi", "hello"], "turn 0 of field 'turns' (mapped by fields.turns) should be a JSON object, got a string",
     "fields.turns"),
    ([{"role": "seeker", "text": None}], "field 'text' (mapped by fields.text) should be a string or a number, "
                                         "got null", "fields.text"),
    ([{"role": "seeker", "text": "hi", "items": [[1, 2]]}],
     "entry 0 of field 'items' (mapped by fields.items) should be a string or a number, got a JSON list ([1, 2])",
     "fields.items"),
    ([{"role": "seeker", "text": "hi", "items": [{"id": {"x": 1}}]}],
     "the id 'id' (fields.item_id) of entry 0 of field 'items' (mapped by fields.items) should be a string or a "
     "number, got a JSON object", "fields.item_id"),
    ([{"role": "seeker", "text": "hi", "entities": [None]}],
     "entry 0 of field 'entities' (mapped by fields.entities) should be a string or a number, got null",
     "fields.entities"),
    ([{"role": ["seeker"], "text": "hi"}], "the role of turn 0 (field 'role', mapped by fields.role) should be a "
                                           "string or a number", "fields.role"),
])
def test_generic_jsonl_turn_errors(tmp_path, turns, problem, key):
    dataset = _jsonl(tmp_path, [GOOD, {"id": "c2", "turns": turns}])
    with pytest.raises(DataError) as err:
        dataset.load()
    message = str(err.value)
    assert f"train.jsonl:2: {problem}" in message and key in message and "\n  fix: " in message


def test_null_conversation_id_and_items_file_entries(tmp_path):
    with pytest.raises(DataError, match=r"train.jsonl:1: field 'id' \(mapped by fields.conversation_id\) should be "
                                        r"a string or a number, got null"):
        _jsonl(tmp_path, [dict(GOOD, id=None)]).load()
    (tmp_path / "items.jsonl").write_text(json.dumps({"id": "a", "name": "A"}) + "\n" + json.dumps({"id": None}) + "\n")
    with pytest.raises(DataError, match=r"items.jsonl:2: field 'id' \(mapped by item_fields.id\) should be"):
        _jsonl(tmp_path, [GOOD], items="items.jsonl").load()
    (tmp_path / "items.jsonl").write_text(json.dumps({"id": 1, "name": None, "entity": None}) + "\n")
    corpus = _jsonl(tmp_path, [GOOD], items="items.jsonl").load()
    assert (corpus.items["1"].name, corpus.items["1"].entity) == ("1", None)  # null name: the id; null entity: none


def test_unicrs_turn_errors(tmp_path):
    good = [{"role": "SEEKER", "text": "hi", "movie_link": [], "movie_name": [], "entity_link": [], "entity_name": []}]
    rows = [good, [dict(good[0], text=None)], [dict(good[0], movie_link=[["<x>"]], movie_name=["x"])], ["hi"]]
    for n, row in enumerate(rows[1:], start=2):
        (tmp_path / "test.jsonl").write_text(json.dumps(good) + "\n" + json.dumps(row) + "\n")
        config = UniCRSJsonlDataset.Config(root=str(tmp_path), train="test.jsonl", valid=None, test="test.jsonl")
        with pytest.raises(DataError) as err:
            UniCRSJsonlDataset(config, BuildDeps(path="data")).load()
        message = str(err.value)
        assert "test.jsonl:2: " in message and "\n  fix: " in message, message
        assert {2: "turn 0 field 'text' should be a string or a number, got null",
                3: "entry 0 of turn 0 field 'movie_link' should be a string or a number, got a JSON list",
                4: "turn 0 should be a JSON object, got a string"}[n] in message


def test_redial_message_errors(tmp_path):
    record = {"conversationId": 1, "initiatorWorkerId": 7, "respondentWorkerId": 8, "movieMentions": {},
              "messages": [{"senderWorkerId": 7, "text": None}]}
    (tmp_path / "test.jsonl").write_text(json.dumps(record) + "\n")
    config = RedialDataset.Config(root=str(tmp_path), train="test.jsonl", test="test.jsonl", movie_linking=None,
                                  movies_csv=None, metadata=None)
    with pytest.raises(DataError, match=r"test.jsonl:1: messages\[0\] field 'text' should be a string or a number, "
                                        r"got null\n  fix: "):
        RedialDataset(config, BuildDeps(path="data")).load()
    record.update(messages=[{"senderWorkerId": 7, "text": "hi"}], conversationId=None)
    (tmp_path / "test.jsonl").write_text(json.dumps(record) + "\n")
    with pytest.raises(DataError, match=r"test.jsonl:1: field 'conversationId' should be a string or a number"):
        RedialDataset(config, BuildDeps(path="data")).load()
