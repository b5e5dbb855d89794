"""The `jsonl` dataset: canonical export by default, any similar corpus through a field mapping."""
import gzip
import json

import pytest

from crs.errors import ConfigError, DataError
from crs.interfaces import BuildDeps
from crs.plugins.datasets.generic_jsonl import FieldMap, ItemFileFields, JsonlDataset


def _write(path, rows, gz=False):
    text = "".join(json.dumps(r) + "\n" for r in rows)
    if gz:
        with gzip.open(path, "wt") as out:
            out.write(text)
    else:
        path.write_text(text)
    return path


CANONICAL = {
    "id": "c1", "user_id": "u9",
    "turns": [
        {"index": 1, "role": "recommender", "text": "try Up", "items": [{"id": "up", "text": "Up"}],
         "entities": ["pixar"], "recommended": ["up"]},
        {"index": 0, "role": "seeker", "text": "a cartoon?", "items": [],
         "entities": [{"id": "cartoon", "text": "cartoon"}],
         "recommended": []},
    ],
}


def _dataset(**options):
    return JsonlDataset(JsonlDataset.Config(**options), BuildDeps(path="data"))


def test_canonical_export_reads_with_defaults(tmp_path):
    _write(tmp_path / "train.jsonl", [CANONICAL])
    _write(tmp_path / "test.jsonl", [dict(CANONICAL, id="c2")])
    corpus = _dataset(root=str(tmp_path), train="train.jsonl", test="test.jsonl").load()
    conv = corpus.splits["train"][0]
    assert (conv.id, conv.user_id) == ("c1", "u9")
    assert [t.role for t in conv.turns] == ["seeker", "recommender"]  # ordered by `index`
    assert [t.index for t in conv.turns] == [0, 1]
    assert [(m.id, m.text) for m in conv.turns[0].entities] == [("cartoon", "cartoon")]
    assert [m.id for m in conv.turns[1].entities] == ["pixar"]
    assert conv.turns[1].recommended == ["up"] and corpus.items["up"].name == "Up"
    assert corpus.report["conversations"] == {"train": 1, "test": 1}


def _invented_corpus(tmp_path):
    """Turn-per-line rows, other field names, nested user, string turn numbers, gzip."""
    rows = [
        {"dialog": 7, "n": "10", "speaker": 1, "utt": "see Heat", "meta": {"user": "w1"},
         "movies": [{"mid": 55, "title": "Heat"}], "recs": [{"mid": 55}]},
        {"dialog": 7, "n": "9", "speaker": 0, "utt": "crime films?", "meta": {"user": "w1"}, "movies": []},
        {"dialog": 8, "n": "0", "speaker": 0, "utt": "hello", "movies": [{"mid": 56, "title": "Ronin"}]},
    ]
    _write(tmp_path / "train.jsonl.gz", rows, gz=True)
    _write(tmp_path / "test.jsonl.gz", rows[:1], gz=True)
    _write(tmp_path / "items.jsonl", [{"key": 55, "label": "Heat (1995)", "kg": "<Heat>"},
                                      {"key": 99, "label": "Other"}])
    fields = {"conversation_id": "dialog", "turn_index": "n", "role": "speaker", "text": "utt", "user_id": "meta.user",
              "items": "movies", "item_id": "mid", "item_text": "title", "recommended": "recs", "entities": ""}
    return dict(root=str(tmp_path), train="train.jsonl.gz", test="test.jsonl.gz", format="turn_per_line",
                fields=FieldMap(**fields), roles={"0": "seeker", "1": "recommender"},
                items="items.jsonl", item_fields=ItemFileFields(id="key", name="label", entity="kg"))


def test_invented_turn_per_line_corpus(tmp_path):
    corpus = _dataset(**_invented_corpus(tmp_path)).load()
    first, second = corpus.splits["train"]
    assert (first.id, first.user_id, second.user_id) == ("7", "w1", "8")  # no user -> own id
    assert [t.text for t in first.turns] == ["crime films?", "see Heat"]  # "9" before "10"
    assert first.turns[1].recommended == ["55"] and first.turns[1].items[0].text == "Heat"
    assert corpus.items["55"].name == "Heat (1995)" and corpus.items["55"].entity == "<Heat>"
    assert corpus.items["99"].entity is None
    assert corpus.items["56"].name == "Ronin" and corpus.report["unlisted_items"] == 1


def test_recommended_derived_when_unmapped(tmp_path):
    options = _invented_corpus(tmp_path)
    options["fields"].recommended = ""
    corpus = _dataset(**options).load()
    assert corpus.splits["train"][0].turns[1].recommended == ["55"]
    assert corpus.splits["train"][1].turns[0].recommended == []  # seeker turn


def test_missing_required_field_names_mapping_key(tmp_path):
    options = _invented_corpus(tmp_path)
    options["fields"].text = "utterance"
    with pytest.raises(DataError) as err:
        _dataset(**options).load()
    message = str(err.value)
    assert "train.jsonl.gz:1" in message and "'utterance'" in message and "fields.text" in message


def test_misspelt_optional_field_is_reported(tmp_path):
    options = _invented_corpus(tmp_path)
    options["fields"].items = "movie"
    with pytest.raises(DataError, match=r"no record has field 'movie' \(mapped by fields.items\)"):
        _dataset(**options).load()


def test_unmapped_role_and_bad_config(tmp_path, registry):
    options = _invented_corpus(tmp_path)
    options["roles"] = {"0": "seeker"}
    with pytest.raises(DataError, match=r"train.jsonl.gz:1: turn 0 has role 1, which `roles` does not map"):
        _dataset(**options).load()
    with pytest.raises(ConfigError, match="data.roles.1"):
        _dataset(train="a", test="b", roles={"1": "agent"})
    with pytest.raises(ConfigError, match="data.format"):
        registry.build("dataset", {"type": "jsonl", "train": "a", "test": "b", "format": "table"}, "data")
    with pytest.raises(ConfigError, match="data.fields.speaker"):
        _dataset(train="a", test="b", fields={"speaker": "x"})


def test_skip_mode_counts_bad_rows(tmp_path):
    _write(tmp_path / "train.jsonl", [CANONICAL, {"id": "c3", "turns": "oops"}])
    (tmp_path / "train.jsonl").write_text((tmp_path / "train.jsonl").read_text() + "{broken\n")
    _write(tmp_path / "test.jsonl", [CANONICAL])
    corpus = _dataset(root=str(tmp_path), train="train.jsonl", test="test.jsonl", on_error="skip").load()
    assert len(corpus.splits["train"]) == 1 and corpus.report["skipped"] == 2
