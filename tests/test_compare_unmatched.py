"""`crs compare` says how many samples it matched and dropped, warns when a run loses more than a few,
and prints a bootstrap p of 0 as a bound (``< 1e-4``), never as ``0.000``."""
from __future__ import annotations

import pytest

from crs.cli import main
from crs.evaluation import write_rankings
from crs.evaluation.significance import FEW_SAMPLES, FEW_SHARE, Matching, compare_runs, format_p


def records(ranks, conv_prefix="c"):
    return [{"conv_id": f"{conv_prefix}{i}", "turn": 1, "target": f"item{i}", "rank": r, "ties": 0, "top": []}
            for i, r in enumerate(ranks)]


def compare(tmp_path, capsys, a, b, *args):
    write_rankings(tmp_path / "a", {"crslab-v1": a})
    write_rankings(tmp_path / "b", {"crslab-v1": b})
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--resamples", "1000", *args]) == 0
    return capsys.readouterr()


def test_matched_and_dropped_counts_are_printed_without_a_warning_for_a_few(tmp_path, capsys):
    # A ranked 1000 samples, B 999: B lacks 3 of A's and has 2 A lacks (0.3% and 0.2%, at most 5 each)
    a = records([1] * 1000)
    b = records([5] * 997) + records([1, 1], conv_prefix="only-b")
    out = compare(tmp_path, capsys, a, b)
    assert "crslab-v1: 997 samples matched; dropped as unmatched: 3 of A's 1000, 2 of B's 999" in out.out
    assert "warning" not in out.err


def test_all_matched_says_so(tmp_path, capsys):
    out = compare(tmp_path, capsys, records([1, 2, 3]), records([3, 2, 1]))
    assert "crslab-v1: 3 samples matched\n" in out.out and "dropped" not in out.out and out.err == ""


@pytest.mark.parametrize("n_a, n_b, dropped_from", [
    (200, 190, "A"),  # 10 dropped from A: more than 5 samples
    (100, 98, "A"),  # 2 dropped from A: only 2 samples, but 2% of A's
])
def test_more_than_a_few_unmatched_samples_warn(tmp_path, capsys, n_a, n_b, dropped_from):
    out = compare(tmp_path, capsys, records([1] * n_a), records([2] * n_b))
    dropped = n_a - n_b
    assert f"dropped as unmatched: {dropped} of A's {n_a}, 0 of B's {n_b}" in out.out
    [warning] = out.err.strip().splitlines()
    assert warning.startswith(f"warning: crslab-v1: {dropped} of {n_a} samples") and f"of {dropped_from} (" in warning


def test_matching_counts_from_the_api(tmp_path):
    write_rankings(tmp_path / "a", {"crslab-v1": records([1] * 10)})
    write_rankings(tmp_path / "b", {"crslab-v1": records([1] * 4) + records([1], conv_prefix="x")})
    matchings = []
    compare_runs(tmp_path / "a", tmp_path / "b", metrics=["recall@1"], resamples=100, matchings=matchings)
    assert matchings == [Matching("crslab-v1", matched=4, only_a=6, only_b=1)]
    assert matchings[0].dropped_too_many() == ["A", "B"]  # 6 > FEW_SAMPLES; 1 of 5 > FEW_SHARE
    assert FEW_SAMPLES == 5 and FEW_SHARE == 0.01


def test_p_of_zero_prints_as_a_bound(tmp_path, capsys):
    assert format_p(0.0, 10_000) == "< 1e-4" and format_p(0.0, 2000) == "< 5e-4"
    assert format_p(0.0002, 10_000) == "2e-4" and format_p(0.042) == "0.042" and format_p(1.0) == "1.000"
    write_rankings(tmp_path / "a", {"crslab-v1": records([1] * 60)})
    write_rankings(tmp_path / "b", {"crslab-v1": records([90] * 60)})
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--metric", "recall@10"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("crslab-v1") and "recall@10" in line)
    assert row.endswith("< 1e-4") and "0.000" not in row.split("]")[-1]
