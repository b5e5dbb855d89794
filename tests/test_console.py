"""What a researcher sees while a run trains: one line per epoch, events in the order they happened
(in a terminal or a log file), no debug dictionaries, progress bars only on a terminal, and a header
that says why the report counts fewer recommendation samples than the test split has."""
from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from crs import cli
from crs.config.spec import EarlyStoppingSpec
from crs.training import Trainer
from crs.training.run_log import epoch_line, setup_console

TESTS_DIR = Path(__file__).resolve().parent
ROOT = TESTS_DIR.parent
sys.path.insert(0, str(TESTS_DIR))  # the shared fake pipeline, whatever pytest's import mode
from test_training import ToyPipeline, make_stage  # noqa: E402

SMALL = ["data.n_train=60", "data.n_valid=20", "data.n_test=20", "threads=1"]


@pytest.fixture(autouse=True)
def _console_off_afterwards():
    yield
    logger = logging.getLogger("crs")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    logger.setLevel(logging.NOTSET)


def test_epoch_line_shows_stage_epoch_losses_metric_mark_and_time() -> None:
    line = epoch_line("rec", 3, 12, {"loss.rec": 3.5176, "loss": 3.5176}, {"loss": 3.4, "rec.recall@10": 0.69123},
                      "rec.recall@10", True, 11.23)
    assert line == "rec 3/12  loss.rec 3.52  valid rec.recall@10 0.6912*  11.2s"
    # several objectives: the weighted total first, then each part; no validation: no valid field
    line = epoch_line("pretrain", 1, 3, {"loss.rec": 2.0, "loss.mim": 0.81234, "loss": 2.02}, None, None, False, 4.0)
    assert line == "pretrain 1/3  loss 2.02  loss.rec 2.00  loss.mim 0.812  4.0s"
    # without early stopping the valid loss is shown, unmarked; NaN stays readable
    line = epoch_line("conv", 2, 5, {"loss.gen": float("nan"), "loss": float("nan")}, {"loss": 123.456}, None,
                      False, 0.04)
    assert line == "conv 2/5  loss.gen nan  valid loss 123.5  0.0s"


def test_one_line_per_epoch_then_early_stop_then_the_restored_epoch(tmp_path, capsys) -> None:
    setup_console(debug=False)
    # the valid loss falls every epoch, so with mode max epoch 1 stays best and patience 1 stops after epoch 2
    stage = make_stage(epochs=5, early_stopping=EarlyStoppingSpec(metric="loss", mode="max", patience=1))
    Trainer(ToyPipeline([stage]), tmp_path, progress=False, tensorboard=False).fit()
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4, lines
    assert re.fullmatch(r"rec 1/5  loss\.rec [\d.]+  valid loss [\d.]+\*  \d+\.\ds", lines[0]), lines[0]
    assert re.fullmatch(r"rec 2/5  loss\.rec [\d.]+  valid loss [\d.]+  \d+\.\ds", lines[1]), lines[1]
    assert lines[2].startswith("stage 'rec': early stop after epoch 2")
    assert lines[3].startswith("stage 'rec': restored the best epoch (1, loss = ")


def test_starting_over_in_a_used_folder_hints_with_the_cli_flag(tmp_path, caplog) -> None:
    Trainer(ToyPipeline([make_stage(epochs=1)]), tmp_path, progress=False).fit()
    with caplog.at_level(logging.WARNING, logger="crs.training"):
        Trainer(ToyPipeline([make_stage(epochs=1)]), tmp_path, progress=False).fit()
    assert "--resume" in caplog.text and "resume=True" not in caplog.text


def test_warnings_and_lines_stay_in_order_in_a_log_file(tmp_path) -> None:
    # a child process, so that its stdout is a real file with the buffering a user's shell gives it
    script = textwrap.dedent("""
        import logging
        from crs.training import run_log
        run_log.setup_console(debug=False)
        print("[crs] header")  # not flushed: a log file's stdout is block-buffered
        logging.getLogger("crs.data").warning("12 lines skipped")
        logging.getLogger("crs.training").info("rec 1/2  loss.rec 1.00  0.1s")
        print("table")
        logging.getLogger("crs.pipeline").debug("pipeline built: {'load_data_s': 1.0}")
    """)
    log_file = tmp_path / "run.log"
    with log_file.open("w") as handle:
        # buffered as a user's shell leaves it (PYTHONUNBUFFERED would hide a missing flush)
        env = {key: value for key, value in os.environ.items() if key != "PYTHONUNBUFFERED"}
        subprocess.run([sys.executable, "-c", script], stdout=handle, stderr=subprocess.STDOUT, check=True,
                       timeout=120, env=env)
    assert log_file.read_text().splitlines() == ["[crs] header", "warning: 12 lines skipped",
                                                 "rec 1/2  loss.rec 1.00  0.1s", "table"]


def test_evaluation_progress_bars_are_drawn_only_on_a_terminal(monkeypatch) -> None:
    from crs.evaluation.evaluator import _bar

    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    bar = _bar(iter(range(3)), True, "rec")
    assert getattr(bar, "disable", False) is True and list(bar) == [0, 1, 2]
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    bar = _bar(iter(range(3)), True, "rec")
    assert bar.disable is False
    bar.close()
    assert list(_bar(iter(range(2)), False, "rec")) == [0, 1]  # --no-progress


def test_the_header_explains_the_scored_counts_and_debug_stays_off_the_console(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("CRS_DEBUG", raising=False)
    run_dir = tmp_path / "run"
    code = cli.main(["run", str(ROOT / "examples/popularity.yaml"), *SMALL, "--run-dir", str(run_dir),
                     "--no-progress"])
    captured = capsys.readouterr()
    assert code == 0
    report = json.loads((run_dir / "report.json").read_text())
    scored = report["sample_counts"]["crslab-v1"]["rec"]
    test_turns = report["extra"]["data"]["samples"]["test"]
    assert scored != test_turns  # the difference the header explains
    header = captured.out.splitlines()[:3]
    assert header[0].startswith("[crs] popularity: demo corpus, ") and f"run folder {run_dir}" in header[0]
    assert header[1].startswith("[crs] samples (one per recommender turn): train ")
    assert header[2] == (f"[crs] test: {test_turns} turns; rec.* ranks {scored} recommended items (one per item a "
                         "turn recommends, none for a turn that recommends nothing)")
    assert "pipeline built" not in captured.out + captured.err
    assert not re.search(r"\{'\w+': ", captured.out + captured.err)  # no dict reprs anywhere

    monkeypatch.setenv("CRS_DEBUG", "1")  # the timings are still there for whoever asks
    assert cli.main(["run", str(ROOT / "examples/popularity.yaml"), *SMALL, "--run-dir", str(tmp_path / "dbg"),
                     "--no-progress"]) == 0
    assert "pipeline built: {" in capsys.readouterr().out
