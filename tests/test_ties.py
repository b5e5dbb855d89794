"""Degenerate data never scores well: tied scores do not favour the target, and evaluating
on nothing (no test sample, a popularity model fitted on no train recommendation) is refused."""
from __future__ import annotations

import json
import math

import pytest
import torch

from crs.cli import main
from crs.evaluation.significance import compare_runs
from crs.interfaces import BuildDeps, ItemIndex
from crs.plugins.baselines.popularity import PopularityRecommender
from crs.plugins.metrics.ranking import MRR, NDCG, Recall
from crs.runner import run

ITEMS = ["heat", "ronin", "alien", "up", "jaws"]


def conversation(conv_id: str, recommended: list[str]) -> dict:
    """A seeker turn, then a recommender turn naming (and recommending) `recommended`."""
    return {"id": conv_id, "user_id": f"u-{conv_id}", "turns": [
        {"index": 0, "role": "seeker", "text": "any good film to watch tonight?", "items": [], "entities": [],
         "recommended": []},
        {"index": 1, "role": "recommender", "text": "you could watch " + " or ".join(recommended or ["anything"]),
         "items": [{"id": i, "text": i} for i in recommended], "entities": [], "recommended": recommended}]}


def write_corpus(root, train: list[dict], test: list[dict]) -> list[str]:
    """The files and the overrides that read them as a `jsonl` corpus with a popularity recommender."""
    root.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train", train), ("test", test)):
        (root / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return [f"data={{type: jsonl, root: '{root}', train: train.jsonl, test: test.jsonl}}", "samples.valid_fraction=0",
            "model={recommender: {type: popularity}}", "stages=[]", "evaluation.generate=false",
            "evaluation.metrics=[{type: recall, ks: [1, 2, 10]}, {type: mrr, ks: [10]}]"]


# Every item recommended exactly once in train: popularity gives all items one score.
UNIFORM_TRAIN = [conversation(f"t{i}", [item]) for i, item in enumerate(ITEMS)]
TEST = [conversation("q0", ["alien"]), conversation("q1", ["heat"]), conversation("q2", ["jaws"])]


def test_all_tied_scores_never_rank_the_target_first():
    n = len(ITEMS)
    items = ItemIndex(ids=ITEMS, names=ITEMS, entity_nodes=torch.zeros(n, dtype=torch.long),
                      train_counts=torch.full((n,), 3.0))  # a uniform train
    popularity = PopularityRecommender(PopularityRecommender.Config(), BuildDeps(path="model.recommender", items=items))
    scores = popularity({"like": torch.zeros(n, dtype=torch.long)})["scores"]
    targets = torch.arange(n)  # every item once: the mean is what any single target gets
    values = {}
    for cls in (Recall, MRR, NDCG):
        metric = cls(cls.Config(ks=[1, 2, 10]), BuildDeps(path="m"))
        metric.update(scores, targets)
        values.update(metric.compute())
    assert values["rec.recall@1"] == pytest.approx(1 / n)  # not 1.0: the target is not ranked first
    assert values["rec.recall@2"] == pytest.approx(2 / n)
    assert values["rec.recall@10"] == 1.0  # k >= n: every ranked target counts
    assert values["rec.mrr@10"] == pytest.approx(sum(1 / r for r in range(1, n + 1)) / n)
    assert values["rec.ndcg@1"] == pytest.approx(1 / n)
    assert values["rec.ndcg@10"] == pytest.approx(sum(1 / math.log2(r + 1) for r in range(1, n + 1)) / n)


def test_popularity_on_a_uniform_train_reports_chance_and_compare_agrees(tmp_path, capsys):
    overrides = write_corpus(tmp_path / "data", UNIFORM_TRAIN, TEST)
    assert run(None, ["name=ties", *overrides], run_dir=str(tmp_path / "run"), progress=False) == 0
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    n = report["extra"]["data"]["items"]
    assert n == len(ITEMS)
    metrics = report["metrics"]["crslab-v1"]
    assert metrics["rec.recall@1"] == pytest.approx(1 / n)  # was 1.0 when ties favoured the target
    assert metrics["rec.recall@2"] == pytest.approx(2 / n)
    assert metrics["rec.mrr@10"] == pytest.approx(sum(1 / r for r in range(1, n + 1)) / n)
    records = [json.loads(line) for line in (tmp_path / "run" / "rankings.jsonl").read_text().splitlines()]
    assert len(records) == len(TEST)
    assert all(r["rank"] == (n + 1) / 2 and r["ties"] == n - 1 for r in records)  # the mid rank, never 1
    assert "ties never favour the target" in report["definitions"]["rec.rank"]
    # `crs compare` computes its gains from rank and ties with the metrics' own functions: same means
    rows = compare_runs(tmp_path / "run", tmp_path / "run", metrics=["recall@1", "mrr@10"], resamples=200)
    assert [r.a for r in rows] == pytest.approx([metrics["rec.recall@1"], metrics["rec.mrr@10"]])


def test_popularity_fitted_on_no_train_recommendation_is_refused(tmp_path, capsys):
    # The train split recommends nothing: every item would score 0 and tie.
    overrides = write_corpus(tmp_path / "data", [conversation("t0", []), conversation("t1", [])],
                             [conversation("q0", ["alien"]), conversation("q1", ["heat"])])
    assert main(["run", "--no-progress", "--run-dir", str(tmp_path / "run"), *overrides]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: train split: the popularity baseline (model.recommender)") and "fix:" in err
    assert "Traceback" not in err
    assert not (tmp_path / "run" / "report.json").exists()


@pytest.mark.parametrize("test_rows, problem", [
    ([], "no samples to evaluate on"),
    ([conversation("q0", []), conversation("q1", [])], "nothing to rank"),
])
def test_evaluating_on_nothing_is_refused_before_training(tmp_path, capsys, test_rows, problem):
    overrides = write_corpus(tmp_path / "data", UNIFORM_TRAIN, test_rows)
    assert main(["run", "--no-progress", "--run-dir", str(tmp_path / "run"), *overrides]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "split 'test'" in err and problem in err and "fix:" in err
    assert not (tmp_path / "run" / "report.json").exists() and not (tmp_path / "run" / "rankings.jsonl").exists()


def test_a_protocol_that_keeps_no_sample_reports_null_with_the_reason(tmp_path, capsys):
    # Each test seeker names the item then recommended: `fresh` (targets not mentioned before) keeps none.
    test = [conversation("q0", ["alien"]), conversation("q1", ["heat"])]
    for conv in test:
        seeker = conv["turns"][0]
        seeker["items"] = conv["turns"][1]["items"]
        seeker["text"] = "i loved " + seeker["items"][0]["id"]
    overrides = write_corpus(tmp_path / "data", UNIFORM_TRAIN, test)
    assert run(None, [*overrides, "evaluation.protocols=[{type: crslab}, {type: fresh}]"],
               run_dir=str(tmp_path / "run"), progress=False) == 0
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["sample_counts"]["fresh-v1"]["rec"] == 0 and report["sample_counts"]["crslab-v1"]["rec"] == 2
    assert set(report["metrics"]["fresh-v1"].values()) == {None}
    assert report["withheld"]["fresh-v1"]["rec.recall@1"] == "fresh-v1 keeps none of the split's recommendation samples"
    assert "crslab-v1" not in report["withheld"] and report["metrics"]["crslab-v1"]["rec.recall@1"] is not None
    out = capsys.readouterr().out
    assert "n/a rec.recall@1: fresh-v1 keeps none of the split's recommendation samples (fresh-v1)" in out
