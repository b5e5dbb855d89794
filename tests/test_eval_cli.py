"""`crs eval` and `crs.serving.load_pipeline`: a finished run is rebuilt from its folder and
evaluated again without training, under other splits and protocols, and every way of
pointing it at the wrong thing ends in one `error:` paragraph with exit code 2."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from crs import cli
from crs.errors import ConfigError, DataError
from crs.evaluation import evaluate, format_table
from crs.evaluation.report import GENERATIONS_NAME, write_generations
from crs.runner import run
from crs.serving import load_pipeline
from crs.training.checkpoint import with_checksum

ROOT = Path(__file__).resolve().parents[1]
# The baseline pipeline (TextCNN + Transformer, both tasks) at toy size: about 5 s of training.
TINY = ["samples.max_train_conversations=60", "stages.0.epochs=1", "stages.1.epochs=1",
        "model.recommender.embedding_dim=16", "model.recommender.filters=8", "model.generator.dim=16",
        "model.generator.heads=2", "model.generator.layers=1", "model.generator.ffn_dim=32",
        "evaluation.max_samples=12", "threads=1"]
GENERATION_KEYS = {"conv_id", "turn", "context", "reference", "generated", "recommended", "items_in_reply"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("runs") / "baseline"
    torch.set_num_threads(1)  # the suite's per-test fixture is not active in module fixtures
    assert run(str(ROOT / "examples/baseline.yaml"), TINY, run_dir=str(run_dir), progress=False) == 0
    return run_dir


@pytest.fixture
def copy_of(trained, tmp_path):
    """copy_of(*names) -> a new run folder holding only those files of the trained run."""
    def make(*names: str) -> Path:
        target = tmp_path / "copy"
        target.mkdir()
        for name in names:
            shutil.copy(trained / name, target / name)
        return target
    return make


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _eval(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(["eval", *argv, "--no-progress"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ------------------------------------------------------------------ evaluating
def test_eval_with_the_runs_own_config_reproduces_its_report(trained, capsys):
    training_report = (trained / "report.json").read_text()
    code, out, _ = _eval(capsys, str(trained))
    assert code == 0
    folder = trained / "eval" / "test"
    report = _json(folder / "report.json")
    # the rebuilt model, data and samples are the trained ones: every metric and rank comes out equal
    assert report["metrics"] == _json(trained / "report.json")["metrics"]
    assert report["sample_counts"] == _json(trained / "report.json")["sample_counts"]
    assert _lines(folder / "rankings.jsonl") == _lines(trained / "rankings.jsonl")
    assert (folder / GENERATIONS_NAME).read_text() == (trained / GENERATIONS_NAME).read_text()
    assert report["extra"]["evaluated_run"] == str(trained) and report["config"]["run_dir"] == str(trained)
    assert report["config"]["preset"] == "baseline"
    assert (trained / "report.json").read_text() == training_report  # never overwritten
    assert "crslab-v1" in out and f"[crs] report: {folder / 'report.json'}" in out


def test_eval_under_another_split_and_protocols_matches_evaluate_on_the_rebuilt_pipeline(trained, tmp_path, capsys):
    overrides = ["evaluation.protocols=[{type: fresh}, {type: cold_start}]", "evaluation.max_samples=5"]
    out_dir = tmp_path / "valid-eval"
    code, out, _ = _eval(capsys, str(trained), "--split", "valid", *overrides, "--out", str(out_dir))
    assert code == 0
    report = _json(out_dir / "report.json")
    assert report["protocols"] == ["fresh-v1", "cold-start-v1"] and report["config"]["evaluation"]["split"] == "valid"

    pipeline = load_pipeline(trained, [*overrides, "evaluation.split=valid"])
    saved = torch.load(trained / "checkpoint.pt", map_location="cpu", weights_only=True)["model"]
    state = pipeline.model.state_dict()
    assert state.keys() == saved.keys() and all(torch.equal(state[k], saved[k]) for k in saved)
    expected = evaluate(pipeline, "valid", generate=True, max_samples=5)
    assert report["metrics"] == {p: {k: None if math.isnan(v) else v for k, v in m.items()}
                                 for p, m in expected.items()}
    assert report["sample_counts"]["fresh-v1"]["gen"] == 5
    assert format_table(expected) in out  # the same table `crs run` prints
    ranked = _lines(out_dir / "rankings.jsonl")
    assert {r["protocol"] for r in ranked} == {"fresh-v1", "cold-start-v1"}
    assert len(ranked) == sum(report["sample_counts"][p]["rec"] for p in report["protocols"])
    assert not (trained / "eval" / "valid").exists()  # --out was used instead of the default


def test_every_evaluation_writes_generations_beside_rankings(trained):
    counts = _json(trained / "report.json")["sample_counts"]["crslab-v1"]
    records = _lines(trained / GENERATIONS_NAME)
    assert counts["gen"] > 0 and len(records) == counts["gen"]  # one line per generated reply
    assert all(set(record) == GENERATION_KEYS for record in records)


def test_resume_reads_the_checkpoint_once(trained, copy_of, monkeypatch, capsys):
    from crs.training import checkpoint as checkpoint_module

    run_dir = copy_of("config.yaml", "checkpoint.pt")  # a finished run without its report: --resume evaluates it
    read, reads = checkpoint_module._read_verified, []
    monkeypatch.setattr(checkpoint_module, "_read_verified",
                        lambda path, what: reads.append(path.name) or read(path, what))
    assert run(str(ROOT / "examples/baseline.yaml"), TINY, run_dir=str(run_dir), resume=True, progress=False) == 0
    assert reads == ["checkpoint.pt"]  # checked before the data loads, then handed to the trainer, not read again
    assert _json(run_dir / "report.json")["metrics"] == _json(trained / "report.json")["metrics"]


def test_write_generations_is_one_json_line_per_sample_and_replaces_the_file(tmp_path):
    records = [{"conv_id": "c1", "turn": 3, "context": ["hi", "any sci-fi?"], "reference": "try Alien !",
                "generated": "try “Heat” !", "recommended": ["item2"], "items_in_reply": ["item2"]},
               {"conv_id": "c2", "turn": 1, "context": [], "reference": "", "generated": "",
                "recommended": torch.tensor([1, 2]), "items_in_reply": [], "score": float("nan")}]
    path = write_generations(tmp_path, records)
    assert path == tmp_path / GENERATIONS_NAME
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2 and "“Heat”" in lines[0]  # readable UTF-8, not \u escapes
    assert json.loads(lines[0]) == records[0]
    assert json.loads(lines[1])["recommended"] == [1, 2] and json.loads(lines[1])["score"] is None
    write_generations(tmp_path, [])  # a later evaluation without generation leaves no stale lines
    assert path.read_text() == "" and [p.name for p in tmp_path.iterdir()] == [GENERATIONS_NAME]


def test_a_run_without_a_preset_slot_reloads_without_it(copy_of):
    # config.yaml names its preset; expanding it again would bring back a slot the run deleted
    run_dir = copy_of("config.yaml", "checkpoint.pt")
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    del config["model"]["generator"]
    config["stages"] = config["stages"][:1]  # the rec stage only, as `~model.generator ~stages.1` trains
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    checkpoint["model"] = {k: v for k, v in checkpoint["model"].items() if not k.startswith("slots.generator.")}
    assert len(checkpoint["model"]) < len(torch.load(run_dir / "checkpoint.pt", weights_only=True)["model"])
    torch.save(with_checksum(checkpoint), run_dir / "checkpoint.pt")  # edited on purpose: sealed again
    pipeline = load_pipeline(run_dir)
    assert "generator" not in pipeline.spec.model and not pipeline.model.has_generator
    assert pipeline.spec.preset == "baseline" and pipeline.spec.run_dir == str(run_dir)
    assert not pipeline.model.training


# ------------------------------------------------------------------ errors
def _error(capsys, *argv: str) -> str:
    code, _, err = _eval(capsys, *argv)
    assert code == 2 and err.startswith("error: ") and "Traceback" not in err, err
    return err


def test_missing_folder_names_it_and_the_closest_run(trained, capsys):
    err = _error(capsys, str(trained.parent / "baselin"))
    assert "baselin: no such run directory. Did you mean 'baseline'?" in err and "fix:" in err


def test_a_file_instead_of_the_folder_points_at_the_folder(trained, capsys):
    err = _error(capsys, str(trained / "checkpoint.pt"))
    assert "is a file, not a run directory" in err and f"pass the folder that holds it: {trained}" in err


def test_folder_without_config(tmp_path, capsys):
    err = _error(capsys, str(tmp_path))
    assert f"{tmp_path / 'config.yaml'}: not found" in err and "fix: pass the run_dir" in err


def test_run_without_checkpoint(copy_of, capsys):
    run_dir = copy_of("config.yaml")
    err = _error(capsys, str(run_dir))
    assert f"{run_dir / 'checkpoint.pt'}: not found" in err and "never finished an epoch" in err


def test_unfinished_run_suggests_resume(copy_of, capsys):
    run_dir = copy_of("config.yaml", "checkpoint.pt")
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    torch.save(with_checksum({**checkpoint, "done": False}), run_dir / "checkpoint.pt")
    err = _error(capsys, str(run_dir))
    assert f"{run_dir / 'checkpoint.pt'}: the run has not finished" in err and "--resume" in err


def test_state_that_does_not_fit_the_config_names_the_keys(copy_of, capsys):
    run_dir = copy_of("config.yaml", "checkpoint.pt")
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    config["model"]["generator"]["ffn_dim"] = 24  # edited after training
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    err = _error(capsys, str(run_dir))
    assert f"{run_dir / 'checkpoint.pt'}: the saved model does not fit the model its config.yaml builds" in err
    assert "of another shape: slots.generator." in err and "(saved [32, 16], built [24, 16])" in err


def test_config_that_no_longer_validates_points_at_its_line(copy_of, capsys):
    run_dir = copy_of("config.yaml", "checkpoint.pt")
    text = (run_dir / "config.yaml").read_text().replace("type: text_cnn", "type: text_cn")
    (run_dir / "config.yaml").write_text(text)
    err = _error(capsys, str(run_dir))
    assert f"{run_dir / 'config.yaml'}:" in err and "unknown model component 'text_cn'" in err


@pytest.mark.parametrize("override", ["model.generator.dim=8", "samples.context_turns=2", "~model.generator",
                                      "seed=1", "preset=kgsf"])
def test_overrides_outside_evaluation_are_refused(trained, capsys, override):
    err = _error(capsys, str(trained), override)
    assert "`crs eval` takes only evaluation.* overrides" in err and override in err


def test_unquoted_override_value_split_by_the_shell(trained, capsys):
    err = _error(capsys, str(trained), "evaluation.protocols=[{type:", "fresh}]")
    assert "malformed override 'fresh}]'" in err and "quote an override" in err


def test_out_may_not_be_a_training_run(trained, capsys):
    err = _error(capsys, str(trained), "--out", str(trained))
    assert "is a training run's folder; its report.json would be overwritten" in err


def test_unknown_split(trained, capsys):
    err = _error(capsys, str(trained), "--split", "validation")
    assert "has no split 'validation'. Did you mean 'valid'?" in err and "use one of: train, valid, test" in err


def test_load_pipeline_refuses_a_preset_override(trained):
    with pytest.raises(ConfigError, match="a preset cannot be layered"):
        load_pipeline(trained, ["preset=kgsf"])
    with pytest.raises(DataError, match="no such run directory"):
        load_pipeline(trained / "nothing")
