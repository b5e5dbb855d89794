"""With the `tensorboard` extra installed (it is part of the `test` extra), a run writes TensorBoard event files
holding the same values as metrics.jsonl.  Without it the test skips, and runs write metrics.jsonl only."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed: pip install -e '.[tensorboard]'")

SMALL_BASELINE = ["preset=baseline", "data=demo", "data.n_items=30", "data.n_people=12", "data.n_users=6",
                  "data.n_train=24", "data.n_valid=6", "data.n_test=6", "stages.0.epochs=2", "~stages.1",
                  "~model.generator", "evaluation.generate=false", "evaluation.metrics=[{type: recall}]"]


def test_a_run_writes_event_files_with_the_logged_metrics(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from crs.runner import run

    run_dir = tmp_path / "run"
    assert run(None, SMALL_BASELINE, run_dir=str(run_dir), progress=False) == 0
    events = sorted((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert events, "no TensorBoard event file in RUN_DIR/tensorboard"
    accumulator = EventAccumulator(str(run_dir / "tensorboard"))
    accumulator.Reload()
    tags = accumulator.Tags()["scalars"]
    # every value of metrics.jsonl, tagged <stage>/<split>/<key> (per step) or <stage>/<split>_epoch/<key>
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any(r["scope"] == "epoch" and r["split"] == "valid" for r in records)
    checked = 0
    for record in records:
        for key, value in record.items():
            if key in ("stage", "epoch", "step", "split", "scope") or not isinstance(value, (int, float)):
                continue
            split = record["split"] if record["scope"] == "step" else f"{record['split']}_{record['scope']}"
            tag = f"{record['stage']}/{split}/{key}"
            assert tag in tags, (tag, tags)
            logged = {event.step: event.value for event in accumulator.Scalars(tag)}
            assert logged[record["step"]] == pytest.approx(value, rel=1e-6), tag
            checked += 1
    assert checked >= 4  # train loss and valid recall, two epochs
