"""Whole pipelines on the demo corpus: every preset builds and wires, KGSF beats popularity,
the baseline trains and evaluates end to end, and a killed run resumes to the same result."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from crs.config.loader import find_registry_file, load_config
from crs.evaluation.significance import compare_runs
from crs.pipeline import build_pipeline
from crs.plugin_manager import get_plugin_manager
from crs.registry import Registry
from crs.runner import run

ROOT = Path(__file__).resolve().parents[1]
PRESETS = sorted(yaml.safe_load(find_registry_file().read_text())["presets"])


@pytest.fixture(scope="module")
def registry():
    return Registry.from_plugin_manager(get_plugin_manager())


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_builds_and_computes_its_objectives(preset, registry, tmp_path):
    spec, resolved = load_config(None, [f"preset={preset}", "data=demo", f"run_dir={tmp_path}"], registry=registry)
    pipeline = build_pipeline(spec, registry, resolved)
    model = pipeline.model
    for stage in spec.stages:
        wanted = [k if k.startswith("loss.") else f"loss.{k}" for k in stage.objectives]
        assert set(wanted) <= model.loss_keys(), (preset, stage.name)
        samples = pipeline.task_samples("train", stage.task)[:8]
        state = model.compute(next(pipeline.batches(samples, 8, shuffle=False, seed=0)), wanted)
        for key in wanted:
            assert torch.isfinite(state[key]) and state[key].dim() == 0, (preset, stage.name, key)
    if model.has_recommender:
        batch = next(pipeline.batches(pipeline.task_samples("test", "rec")[:4], 4, shuffle=False, seed=0))
        assert model.compute(batch, ["scores"])["scores"].shape == (4, len(pipeline.items))


def _report(run_dir: Path) -> dict:
    return json.loads((run_dir / "report.json").read_text())


def test_kgsf_beats_popularity_on_the_demo_corpus(tmp_path):
    common = ["data=demo", "seed=7", "evaluation.generate=false"]
    run(None, ["preset=popularity", *common], run_dir=str(tmp_path / "pop"), progress=False)
    # KGSF's recommendation part only (MIM pretraining, then rec with the MIM regulariser), short schedule
    run(None, ["preset=kgsf", *common, "stages.0.epochs=1", "stages.1.epochs=3", "~stages.2", "~model.generator"],
        run_dir=str(tmp_path / "kgsf"), progress=False)
    popularity = _report(tmp_path / "pop")["metrics"]["crslab-v1"]["rec.recall@10"]
    kgsf = _report(tmp_path / "kgsf")["metrics"]["crslab-v1"]["rec.recall@10"]
    print(f"R@10 popularity {popularity:.3f}, KGSF {kgsf:.3f}")
    assert kgsf > popularity + 0.2
    # the per-sample rankings both runs wrote pair up, and the gap is far outside resampling noise
    [r10] = compare_runs(tmp_path / "kgsf", tmp_path / "pop", metrics=["recall@10"], protocols=["crslab-v1"],
                         resamples=2000)
    assert r10.samples == _report(tmp_path / "pop")["sample_counts"]["crslab-v1"]["rec"]
    assert r10.a == pytest.approx(kgsf) and r10.b == pytest.approx(popularity)
    assert r10.low > 0.1 and r10.p_value < 0.001


def test_baseline_pipeline_trains_and_reports_both_tasks(tmp_path, capsys):
    run("examples/baseline.yaml" if Path("examples/baseline.yaml").exists() else str(ROOT / "examples/baseline.yaml"),
        ["samples.max_train_conversations=200", "stages.0.epochs=1", "stages.1.epochs=1",
         "evaluation.max_samples=40"], run_dir=str(tmp_path), progress=False)
    report = _report(tmp_path)
    metrics = report["metrics"]["crslab-v1"]
    assert 0.0 <= metrics["rec.recall@10"] <= 1.0 and metrics["rec.recall@50"] >= metrics["rec.recall@10"]
    assert metrics["gen.ppl"] > 1.0 and "gen.dist-2/sentences" in metrics and "gen.dist-2/ngrams" in metrics
    assert report["config"]["name"] == "baseline" and report["protocols"]
    assert "crslab-v1" in capsys.readouterr().out  # the table was printed
    for name in ("checkpoint.pt", "best.pt", "metrics.jsonl", "history.json", "config.yaml"):
        assert (tmp_path / name).exists(), name


RESUME_ARGS = ["examples/baseline.yaml", "samples.max_train_conversations=150", "stages.0.epochs=2",
               "stages.1.epochs=3", "~stages.0.early_stopping", "~stages.1.early_stopping",
               "evaluation.generate=false", "threads=1", "--no-progress"]


def _crs_run(run_dir: Path, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "crs.cli", "run", *RESUME_ARGS, f"--run-dir={run_dir}", *extra],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_final_metrics(tmp_path):
    whole = _crs_run(tmp_path / "whole")
    out, _ = whole.communicate(timeout=600)
    assert whole.returncode == 0, out

    killed_dir = tmp_path / "killed"
    killed = _crs_run(killed_dir)
    metrics = killed_dir / "metrics.jsonl"
    deadline = time.time() + 600
    # kill inside the conversation stage's second epoch: its first epoch has been logged, and a
    # conv epoch takes a few seconds, so a short pause lands mid-epoch
    while time.time() < deadline and killed.poll() is None:
        lines = metrics.read_text().splitlines() if metrics.exists() else []
        if any('"stage": "conv"' in line and '"scope": "epoch"' in line for line in lines):
            time.sleep(0.5)
            break
        time.sleep(0.05)
    assert killed.poll() is None, "the run finished before it could be killed; make it longer"
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert not (killed_dir / "report.json").exists()

    resumed = _crs_run(killed_dir, "--resume")
    out, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, out
    assert _report(killed_dir)["metrics"] == _report(tmp_path / "whole")["metrics"]
    assert (killed_dir / "history.json").read_text() == (tmp_path / "whole" / "history.json").read_text()
