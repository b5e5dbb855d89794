"""Whole pipelines on the demo corpus: every preset builds, wires and trains every slot it lists,
KGSF beats popularity, the baseline trains and evaluates end to end, and a killed run resumes to
the same result."""
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
from mese_tiny import tiny_overrides

from crs.config.loader import find_registry_file, load_config
from crs.evaluation.significance import compare_runs
from crs.pipeline import build_pipeline
from crs.plugin_manager import get_plugin_manager
from crs.registry import Registry
from crs.runner import run
from crs.training.loop import weighted_objective
from crs.training.optim import build_optimizer
from crs.training.stage import plan_stage, train_only

ROOT = Path(__file__).resolve().parents[1]
PRESETS = sorted(yaml.safe_load(find_registry_file().read_text())["presets"])


@pytest.fixture(scope="module")
def registry():
    return Registry.from_plugin_manager(get_plugin_manager())


def _assert_every_trained_slot_gets_a_gradient(pipeline, plan, batch) -> None:
    """One backward of the stage's weighted objective on `batch`: each slot in `train:` gets a non-zero gradient.

    A slot whose gradient is all zero or None would never change: a detached output, a `train:`
    list naming a slot the objectives do not reach, an objective weighted 0.
    """
    model = pipeline.model
    model.train()
    with train_only(model, plan.parameters):
        model.zero_grad(set_to_none=True)
        total, _ = weighted_objective(model.compute(batch, plan.wanted), plan.objectives, plan.path)
        total.backward()
        for slot in plan.spec.train:
            grads = [p.grad for p in model.slot_parameters([slot]) if p.requires_grad]
            if not grads:  # a slot without parameters (KGSF's dot_product without item_bias): nothing to train
                continue
            assert any(g is not None and bool(g.abs().sum() > 0) for g in grads), \
                f"stage '{plan.name}' trains '{slot}', but its objectives give it no gradient"
    model.zero_grad(set_to_none=True)


def _assert_rec_loss_falls_on_a_repeated_batch(pipeline, plan, batch, steps: int = 5) -> None:
    """A few steps of the stage's own optimizer on one batch lower its loss.rec (measured in eval mode)."""
    model = pipeline.model

    def rec_loss() -> float:
        model.eval()
        with torch.no_grad():
            return float(model.compute(batch, ["loss.rec"])["loss.rec"])

    before = rec_loss()
    with train_only(model, plan.parameters):
        optimizer = build_optimizer(plan.spec.optimizer, plan.named_parameters, f"{plan.path}.optimizer")
        model.train()
        for _ in range(steps):
            total, _ = weighted_objective(model.compute(batch, plan.wanted), plan.objectives, plan.path)
            optimizer.zero_grad()
            total.backward()
            optimizer.step()
    after = rec_loss()
    # a cross-entropy over the items: never negative, so a loss running off to minus infinity fails too
    assert 0.0 <= after < before, f"stage '{plan.name}': loss.rec {before:.4f} -> {after:.4f} after {steps} steps"


@pytest.fixture(scope="module")
def preset_pipeline(registry, tmp_path_factory):
    """`preset_pipeline(name)` -> (spec, pipeline) on the demo corpus, built once for the tests of this module."""
    built: dict[str, tuple] = {}

    def get(preset: str) -> tuple:
        if preset not in built:
            run_dir = tmp_path_factory.mktemp(preset)
            spec, resolved = load_config(None, [f"preset={preset}", "data=demo", f"run_dir={run_dir}",
                                                *tiny_overrides(preset)],  # pretrained models: tiny random ones
                                         registry=registry)
            built[preset] = spec, build_pipeline(spec, registry, resolved)
        return built[preset]

    yield get
    built.clear()


def _first_batch(pipeline, stage) -> dict:
    return next(pipeline.batches(pipeline.task_samples("train", stage.task)[:8], 8, shuffle=False, seed=0))


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_builds_and_computes_its_objectives(preset, preset_pipeline):
    spec, pipeline = preset_pipeline(preset)
    model = pipeline.model
    for stage in spec.stages:
        wanted = [k if k.startswith("loss.") else f"loss.{k}" for k in stage.objectives]
        assert set(wanted) <= model.loss_keys(), (preset, stage.name)
        state = model.compute(_first_batch(pipeline, stage), wanted)
        for key in wanted:
            assert torch.isfinite(state[key]) and state[key].dim() == 0, (preset, stage.name, key)
    if model.has_recommender:
        batch = next(pipeline.batches(pipeline.task_samples("test", "rec")[:4], 4, shuffle=False, seed=0))
        assert model.compute(batch, ["scores"])["scores"].shape == (4, len(pipeline.items))


@pytest.mark.slow  # about 2-4 s a preset on a busy 2-core machine (the baseline's first optimizer step: 10 s)
@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_trains_each_slot_it_lists(preset, preset_pipeline):
    """One step of each stage reaches every slot in its `train:`; a few on one batch lower loss.rec.

    Finite losses alone let a broken preset through (issue 15): a slot whose output is detached,
    a `train:` list that names the wrong slots, a recommendation loss with the wrong sign.
    (Runs after the test above, on the same pipelines, and changes their weights.)
    """
    spec, pipeline = preset_pipeline(preset)
    for index, stage in enumerate(spec.stages):
        plan = plan_stage(pipeline, stage, index)
        batch = _first_batch(pipeline, stage)
        _assert_every_trained_slot_gets_a_gradient(pipeline, plan, batch)
        if "loss.rec" in plan.objectives:
            _assert_rec_loss_falls_on_a_repeated_batch(pipeline, plan, batch)


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


@pytest.mark.slow(minutes=2.2)  # alone on 2 cores; the longest tests start first (conftest.py)
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
