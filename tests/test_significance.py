"""`crs compare`: per-sample rankings written by a run, paired bootstrap between two runs."""
from __future__ import annotations

import numpy as np
import pytest

from crs.cli import main
from crs.errors import DataError
from crs.evaluation import write_rankings
from crs.evaluation.significance import compare_runs, gains, load_rankings, paired_bootstrap


def records(ranks, conv_prefix="c"):
    return [{"conv_id": f"{conv_prefix}{i}", "turn": 2, "target": f"item{i}", "rank": r, "top": []}
            for i, r in enumerate(ranks)]


def test_gains_for_recall_mrr_and_ndcg():
    ranks = np.array([1.0, 4.0, 12.0, np.inf])
    assert gains(ranks, "recall@10").tolist() == [1.0, 1.0, 0.0, 0.0]
    assert gains(ranks, "mrr@10").tolist() == [1.0, 0.25, 0.0, 0.0]
    assert gains(ranks, "ndcg@10") == pytest.approx([1.0, 1 / np.log2(5), 0.0, 0.0])
    with pytest.raises(ValueError, match="unknown metric"):
        gains(ranks, "hits@10")


def test_bootstrap_separates_a_clear_gap_and_not_a_tie():
    rng = np.random.default_rng(1)
    b = (rng.random(300) < 0.15).astype(float)
    a = np.maximum(b, (rng.random(300) < 0.2).astype(float))  # A hits whatever B hits, and more
    low, high, p = paired_bootstrap(a, b, resamples=2000)
    assert 0 < low < a.mean() - b.mean() < high and p < 0.01
    low, high, p = paired_bootstrap(b, b, resamples=2000)
    assert low == high == 0.0 and p == 1.0
    # a small gap on few samples: the interval straddles zero
    low, high, p = paired_bootstrap(np.array([1.0, 0, 0, 0, 0, 0]), np.array([0.0, 0, 0, 0, 0, 0]), resamples=2000)
    assert low <= 0 < high and p > 0.05


def test_compare_runs_pairs_samples_by_key_not_by_position(tmp_path):
    a_ranks = [1, 2, 30, 5, 1, 80, None]
    write_rankings(tmp_path / "a", {"crslab-v1": records(a_ranks)})
    # B lists the same samples in reverse order, plus one A never ranked
    b = records([20, 20, 20, 20, 20, 20, 20])[::-1] + records([1], conv_prefix="only-b")
    write_rankings(tmp_path / "b", {"crslab-v1": b})
    assert load_rankings(tmp_path / "a")["crslab-v1"][("c6", 2, "item6")] == (float("inf"), 0.0)  # (rank, ties)
    [r10] = compare_runs(tmp_path / "a", tmp_path / "b", metrics=["recall@10"], resamples=500)
    assert (r10.protocol, r10.samples) == ("crslab-v1", 7)
    assert r10.a == pytest.approx(4 / 7) and r10.b == 0.0 and r10.diff == pytest.approx(4 / 7)


def test_missing_or_malformed_rankings_name_the_file(tmp_path):
    with pytest.raises(DataError, match="rankings.jsonl: no per-sample rankings"):
        load_rankings(tmp_path)
    (tmp_path / "rankings.jsonl").write_text('{"protocol": "p", "conv_id": "c", "turn": 1, "target": "x", '
                                             '"rank": 1}\n{"protocol": "p"}\n')
    with pytest.raises(DataError, match=r"rankings.jsonl:2: malformed ranking record"):
        load_rankings(tmp_path)


def test_compare_runs_refuses_runs_without_a_shared_protocol(tmp_path):
    write_rankings(tmp_path / "a", {"crslab-v1": records([1])})
    write_rankings(tmp_path / "b", {"fresh-v1": records([1])})
    with pytest.raises(DataError, match="not ranked in both runs"):
        compare_runs(tmp_path / "a", tmp_path / "b")


def test_cli_compare_prints_the_table_and_rejects_bad_metrics(tmp_path, capsys):
    write_rankings(tmp_path / "a", {"crslab-v1": records([1, 1, 1, 60])})
    write_rankings(tmp_path / "b", {"crslab-v1": records([60, 60, 1, 60])})
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--resamples", "500"]) == 0
    out = capsys.readouterr().out
    assert "recall@10" in out and "+0.500" in out and "95% CI" in out
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--metric", "hits10"]) == 2
    assert "--metric" in capsys.readouterr().err
