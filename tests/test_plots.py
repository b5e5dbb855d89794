"""crs plot and every run's curves.png (crs.plots): the pictures show the run's own numbers."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from crs.cli import main
from crs.plots import comparison_figure, curves_figure, mean_interval, popularity_figure
from crs.runner import run

TINY_DEMO = ["data=demo", "data.n_items=60", "data.n_people=30", "data.n_train=120", "data.n_valid=20",
             "data.n_test=30", "knowledge.entity_kg.n_items=60", "knowledge.entity_kg.n_people=30",
             "evaluation.generate=false", "threads=1"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A short KGSF recommendation run (early stopping restores its best epoch) and a popularity run."""
    root = tmp_path_factory.mktemp("plots")
    run(None, ["preset=kgsf", *TINY_DEMO, "stages.0.epochs=1", "stages.1.epochs=3", "~stages.2",
               "~model.generator"], run_dir=str(root / "kgsf"), progress=False)
    run(None, ["preset=popularity", *TINY_DEMO], run_dir=str(root / "pop"), progress=False)
    return root / "kgsf", root / "pop"


def _records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _lines(ax) -> dict[str, tuple[list, list]]:
    return {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in ax.get_lines()
            if not line.get_label().startswith("_")}


def test_a_run_draws_its_curves_with_its_own_numbers_and_the_restored_epoch(runs):
    kgsf, _ = runs
    assert (kgsf / "curves.png").stat().st_size > 10_000
    records = _records(kgsf)
    [restored] = [r for r in records if r["scope"] == "restored"]
    valid = [r for r in records if r["stage"] == "rec" and r["split"] == "valid" and r["scope"] == "epoch"]
    metric = next(k for k in restored if k.startswith("rec."))
    # the restored epoch is the first best epoch of the stopping metric, and the record says its value
    values = [r[metric] for r in valid]
    assert restored["epoch"] == 1 + values.index(max(values)) and restored[metric] == max(values)

    fig = curves_figure(kgsf)
    pretrain_loss, rec_loss, _, rec_metrics = fig.axes
    train = [r for r in records if r["stage"] == "rec" and r["split"] == "train" and r["scope"] == "epoch"]
    assert _lines(rec_loss)["train loss.rec"] == ([r["epoch"] for r in train], [r["loss.rec"] for r in train])
    assert _lines(rec_metrics)[metric] == ([r["epoch"] for r in valid], values)
    assert "epoch" not in _lines(rec_metrics) and "step" not in _lines(rec_metrics)  # bookkeeping is not a metric
    marks = [line for line in rec_metrics.get_lines() if line.get_label().startswith("_")]
    assert [list(line.get_xdata()) for line in marks] == [[restored["epoch"]] * 2]
    assert "train loss.mim" in _lines(pretrain_loss)


def test_the_comparison_shows_each_runs_reported_recall_inside_its_interval(runs):
    kgsf, pop = runs
    fig = comparison_figure([kgsf, pop], ks=(10, 50), resamples=500)
    bars = fig.axes[0].patches
    reported = [json.loads((r / "report.json").read_text())["metrics"]["crslab-v1"] for r in (kgsf, pop)]
    heights = [bar.get_height() for bar in bars]
    assert heights == pytest.approx([reported[0]["rec.recall@10"], reported[0]["rec.recall@50"],
                                     reported[1]["rec.recall@10"], reported[1]["rec.recall@50"]])


def test_mean_interval_brackets_the_mean_and_narrows_with_more_samples():
    rng = np.random.default_rng(0)
    small, large = rng.binomial(1, 0.3, 50).astype(float), rng.binomial(1, 0.3, 5000).astype(float)
    mean, low, high = mean_interval(small)
    assert low < mean < high and mean == pytest.approx(small.mean())
    _, low_l, high_l = mean_interval(large)
    assert high_l - low_l < (high - low) / 5  # ~1/sqrt(100) as wide
    assert mean_interval(np.ones(20))[1:] == (1.0, 1.0)


def test_recall_by_popularity_matches_a_hand_count(runs):
    kgsf, _ = runs
    report = json.loads((kgsf / "report.json").read_text())
    counts = report["extra"]["data"]["item_train_counts"]
    assert counts and all(isinstance(n, int) and n > 0 for n in counts.values())
    fig = popularity_figure([kgsf], k=10, buckets=2)
    [line] = fig.axes[0].get_lines()
    ranked = [json.loads(line) for line in (kgsf / "rankings.jsonl").read_text().splitlines()]
    popularity = np.array([counts.get(r["target"], 0) for r in ranked])
    hits = np.array([r["rank"] is not None and r["rank"] + r["ties"] / 2 <= 10 for r in ranked], dtype=float)
    median = np.quantile(popularity, 0.5)
    low_bucket, high_bucket = hits[popularity < median].mean(), hits[popularity >= median].mean()
    assert list(line.get_ydata()) == pytest.approx([low_bucket, high_bucket])
    assert not math.isclose(low_bucket, high_bucket)  # the buckets differ: the check can tell them apart


def test_crs_plot_writes_every_figure_and_refuses_a_missing_folder(runs, tmp_path, capsys):
    kgsf, pop = runs
    assert main(["plot", str(kgsf), str(pop), "--out", str(tmp_path / "plots")]) == 0
    written = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert written == ["comparison.png", "curves-kgsf.png", "popularity.png"]  # popularity trains nothing
    assert main(["plot", str(tmp_path / "nowhere")]) == 2
    assert "no such run folder" in capsys.readouterr().err
