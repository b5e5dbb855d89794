"""Lines skipped under `on_error: skip` are counted on the console, not only in report.json."""
from __future__ import annotations

import json

from test_ties import TEST, UNIFORM_TRAIN, write_corpus

from crs.runner import run


def test_skipped_lines_are_counted_in_the_run_header_and_the_report(tmp_path, capsys):
    overrides = write_corpus(tmp_path / "data", UNIFORM_TRAIN, TEST)
    train = tmp_path / "data" / "train.jsonl"
    train.write_text(train.read_text() + "{not json\n" + '{"id": "broken"}\n')  # two malformed lines
    overrides = [o.replace("test: test.jsonl}", "test: test.jsonl, on_error: skip}") for o in overrides]
    assert run(None, overrides, run_dir=str(tmp_path / "run"), progress=False) == 0
    out = capsys.readouterr().out
    assert "[crs] jsonl: skipped 2 malformed lines (on_error: skip) in train.jsonl 2" in out
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["extra"]["data"]["report"]["skipped"] == 2


def test_no_line_skipped_prints_nothing(tmp_path, capsys):
    assert run(None, write_corpus(tmp_path / "data", UNIFORM_TRAIN, TEST), run_dir=str(tmp_path / "run"),
               progress=False) == 0
    assert "malformed line" not in capsys.readouterr().out
