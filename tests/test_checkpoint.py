"""Checkpoints: atomic, complete, and a resumed run ends bit-for-bit like an uninterrupted one."""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import crs.io
from crs.config.spec import EarlyStoppingSpec, OptimizerSpec, ScheduleSpec
from crs.errors import ConfigError, DataError
from crs.training import Trainer
from crs.training.checkpoint import comparable_config, config_differences, load_checkpoint

TESTS_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS_DIR))  # the shared fake pipeline, whatever pytest's import mode
from test_training import ToyPipeline, make_stage, parameters_of  # noqa: E402


class SimulatedKill(Exception):
    """Stands for the process dying at a given batch."""


def two_stages() -> list:
    """A pretrain stage with early stopping (patience 0: keep best) then a stage with dropout and a schedule."""
    return [
        make_stage("pre", objectives={"aux": 1.0, "rec": 0.1}, epochs=2,
                   early_stopping=EarlyStoppingSpec(metric="loss", mode="min", patience=0)),
        make_stage("main", train=["encoder", "rec"], epochs=3, grad_clip=1.0,
                   optimizer=OptimizerSpec(type="adamw", lr=0.01, weight_decay=0.01),
                   schedule=ScheduleSpec(type="warmup_linear", warmup_steps=2)),
    ]


def run_to_end(run_dir: Path, kill_at_batch: int | None = None) -> ToyPipeline:
    """Train two_stages() in `run_dir`; with `kill_at_batch`, die there and then resume in a fresh pipeline."""
    pipeline = ToyPipeline(two_stages(), n_train=48)  # 3 batches per epoch, 15 in all
    if kill_at_batch is None:
        Trainer(pipeline, run_dir, progress=False, log_every=1).fit()
        return pipeline

    def die(count: int) -> None:
        if count == kill_at_batch:
            raise SimulatedKill()

    pipeline.on_train_batch = die
    with pytest.raises(SimulatedKill):
        Trainer(pipeline, run_dir, progress=False, log_every=1).fit()
    resumed = ToyPipeline(two_stages(), n_train=48)  # a new process would rebuild the pipeline from scratch
    Trainer(resumed, run_dir, resume=True, progress=False, log_every=1).fit()
    return resumed


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[dict, str, str]:
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    pipeline = run_to_end(run_dir)
    return (parameters_of(pipeline.model), (run_dir / "history.json").read_text(),
            (run_dir / "metrics.jsonl").read_text())


# Batch 2: mid-epoch 1 of stage 1; 6: last batch of stage 1; 7: first batch of stage 2; 11: mid stage 2.
@pytest.mark.parametrize("kill_at_batch", [2, 6, 7, 11])
def test_resume_after_kill_is_bitwise_identical(tmp_path: Path, uninterrupted, kill_at_batch: int) -> None:
    expected_params, expected_history, expected_metrics = uninterrupted
    resumed = run_to_end(tmp_path, kill_at_batch)
    final = parameters_of(resumed.model)
    assert final.keys() == expected_params.keys()
    assert all(torch.equal(final[key], expected_params[key]) for key in final)
    assert (tmp_path / "history.json").read_text() == expected_history
    assert (tmp_path / "metrics.jsonl").read_text() == expected_metrics


def test_sigkill_mid_epoch_then_resume_is_bitwise_identical(tmp_path: Path, uninterrupted) -> None:
    """A real SIGKILL: no finally block, no cleanup; the last checkpoint must be enough."""
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(TESTS_DIR)!r})
        from test_checkpoint import two_stages
        from test_training import ToyPipeline
        from crs.training import Trainer
        pipeline = ToyPipeline(two_stages(), n_train=48)
        def die(count):
            if count == 8:  # second batch of the second stage's first epoch
                os.kill(os.getpid(), signal.SIGKILL)
        pipeline.on_train_batch = die
        Trainer(pipeline, {str(tmp_path)!r}, progress=False, log_every=1).fit()
    """)
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert child.returncode == -signal.SIGKILL, child.stderr
    checkpoint = load_checkpoint(tmp_path)
    assert checkpoint["stage_index"] == 0 and checkpoint["stage_done"] and not checkpoint["done"]

    resumed = ToyPipeline(two_stages(), n_train=48)
    Trainer(resumed, tmp_path, resume=True, progress=False, log_every=1).fit()
    expected_params, expected_history, expected_metrics = uninterrupted
    final = parameters_of(resumed.model)
    assert all(torch.equal(final[key], expected_params[key]) for key in expected_params)
    assert (tmp_path / "history.json").read_text() == expected_history
    assert (tmp_path / "metrics.jsonl").read_text() == expected_metrics


def test_checkpoint_holds_the_full_state_and_loads_without_code(tmp_path: Path) -> None:
    pipeline = ToyPipeline([make_stage(epochs=2, early_stopping=EarlyStoppingSpec(patience=5))])

    def die_in_epoch_two(count: int) -> None:  # 6 batches per epoch: dies after epoch 1's checkpoint
        if count == 7:
            raise SimulatedKill()

    pipeline.on_train_batch = die_in_epoch_two
    with pytest.raises(SimulatedKill):
        Trainer(pipeline, tmp_path, progress=False).fit()
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)  # weights_only: no pickled code
    assert (state["stage_index"], state["epoch"], state["stage_done"], state["done"]) == (0, 0, False, False)
    assert state["optimizer"]["state"] and state["scheduler"]["last_epoch"] == 6 and state["global_step"] == 6
    assert set(state["rng"]) >= {"python", "numpy", "torch"}
    assert state["early_stopping"]["best_epoch"] == 1 and state["early_stopping"]["best_file"] == "best.pt"
    assert [r["epoch"] for r in state["history"]["rec"]] == [1]
    assert "run_dir" not in state["config"] and state["config"]["name"] == "toy"
    assert set(state["model"]) == set(pipeline.model.state_dict())
    # One model in the checkpoint: the best epoch's state is only in best.pt, which the checkpoint names.
    model_keys = set(pipeline.model.state_dict())
    assert _paths_of_model_copies(state, model_keys) == ["model"]
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    assert (best["stage_index"], best["epoch"]) == (0, 1) and set(best["model"]) == model_keys


def _paths_of_model_copies(node, model_keys: set, path: str = "") -> list[str]:
    """Where in a nested checkpoint a full model state dict (a dict with the model's keys) sits."""
    if isinstance(node, dict):
        if set(node) == model_keys:
            return [path]
        return [found for key, value in node.items()
                for found in _paths_of_model_copies(value, model_keys, f"{path}.{key}" if path else str(key))]
    if isinstance(node, (list, tuple)):
        return [found for i, value in enumerate(node)
                for found in _paths_of_model_copies(value, model_keys, f"{path}.{i}")]
    return []


def test_checkpoint_write_failure_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch) -> None:
    pipeline = ToyPipeline([make_stage(epochs=3)])
    real_save, saves = torch.save, []

    def failing_save(obj, handle, *args, **kwargs):
        saves.append(obj.get("epoch"))
        if len(saves) == 2:  # the second epoch's checkpoint: write half a file, then crash
            handle.write(b"partial checkpoint bytes")
            raise OSError("disk full")
        return real_save(obj, handle, *args, **kwargs)

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        Trainer(pipeline, tmp_path, progress=False).fit()
    monkeypatch.setattr(torch, "save", real_save)
    assert load_checkpoint(tmp_path)["epoch"] == 0  # epoch 1's checkpoint, intact
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".tmp")]


def test_resume_with_a_different_config_is_refused(tmp_path: Path) -> None:
    Trainer(ToyPipeline([make_stage(epochs=1)]), tmp_path, progress=False).fit()
    changed = ToyPipeline([make_stage(epochs=1, optimizer=OptimizerSpec(lr=0.5))])
    changed.resolved["run_dir"] = "somewhere/else"  # run_dir alone may differ
    with pytest.raises(ConfigError) as caught:
        Trainer(changed, tmp_path, resume=True, progress=False).fit()
    message = str(caught.value)
    assert "lr.0: 0.01 -> 0.5" in message and "new run_dir" in message
    assert "run_dir" not in caught.value.problem.split("checkpoint -> now")[1]


def test_resume_without_checkpoint_starts_fresh_with_a_notice(tmp_path: Path, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="crs.training"):
        history = Trainer(ToyPipeline([make_stage(epochs=1)]), tmp_path, resume=True, progress=False).fit()
    assert len(history["rec"]) == 1 and "starting a fresh run" in caplog.text


def test_resuming_a_finished_run_reloads_its_final_state(tmp_path: Path) -> None:
    finished = ToyPipeline([make_stage(epochs=2)])
    history = Trainer(finished, tmp_path, progress=False).fit()
    again = ToyPipeline([make_stage(epochs=2)])

    def no_training(count: int) -> None:
        raise AssertionError("a finished run must not train again")

    again.on_train_batch = no_training
    assert Trainer(again, tmp_path, resume=True, progress=False).fit() == history
    expected, final = parameters_of(finished.model), parameters_of(again.model)
    assert all(torch.equal(final[key], expected[key]) for key in expected)


def test_damaged_checkpoint_is_a_data_error(tmp_path: Path) -> None:
    crs.io.atomic_write_bytes(tmp_path / "checkpoint.pt", b"not a checkpoint")
    with pytest.raises(DataError, match="checkpoint.pt"):
        Trainer(ToyPipeline([make_stage(epochs=1)]), tmp_path, resume=True, progress=False).fit()


def test_comparable_config_drops_only_keys_a_resume_may_change() -> None:
    resolved = {"run_dir": "a", "seed": 1, "evaluation": {"max_samples": 5, "generate": True, "protocols": ["x"]}}
    assert comparable_config(resolved) == {"seed": 1, "evaluation": {"protocols": ["x"]}}


def test_config_differences_lists_each_changed_key() -> None:
    old = {"a": 1, "b": {"c": [1, 2], "d": "x"}, "gone": True}
    new = {"a": 1, "b": {"c": [1, 3], "d": "y"}, "added": None}
    assert config_differences(old, new) == [
        "added: (absent) -> null", "b.c.1: 2 -> 3", 'b.d: "x" -> "y"', "gone: true -> (removed)"]
    assert config_differences(old, json.loads(json.dumps(old))) == []
