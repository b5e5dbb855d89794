"""Tests that kill mutants mutmut left alive in core/evaluation (see TESTING.md).

They pin what ``crs compare`` prints (the table, p-values, the unmatched-sample lines) and the
arithmetic and messages of ranking, significance and report that only CLI tests reached before.
"""
from __future__ import annotations

import pytest

from crs.evaluation.significance import Comparison, Matching, format_comparisons, format_matching, format_p


# --------------------------------------------------------------------- crs compare's text
def test_the_comparison_table_is_laid_out_to_the_character():
    rows = [Comparison("crslab-v1", "recall@10", 252, 0.25, 0.125, -0.0625, 0.3, 0.0, 1000)]
    assert format_comparisons(rows, "runs/a", "runs/b").splitlines() == [
        "A = runs/a",
        "B = runs/b",
        "protocol        metric           n       A       B     A-B   95% CI                  p",
        "crslab-v1       recall@10      252   0.250   0.125  +0.125   [-0.062, +0.300]    < 1e-3",
    ]
    assert "   90% CI   " in format_comparisons(rows, "a", "b", level=0.9)


@pytest.mark.parametrize("p, resamples, text", [
    (0.001, 0, "0.001"),  # the smallest p printed with three decimals
    (0.0421, 0, "0.042"),
    (0.0009, 0, "9e-4"),
    (0.0, 0, "< 0.001"),  # resample count unknown (older callers)
    (0.0, 1, "< 1e0"),
    (0.0, 10_000, "< 1e-4"),
])
def test_p_values_print_as_documented(p, resamples, text):
    assert format_p(p, resamples) == text


def test_p_of_zero_without_a_resample_count_is_below_a_thousandth():
    assert format_p(0.0) == "< 0.001"


def test_unmatched_lines_name_the_run_that_lost_samples():
    only_b = Matching("fresh-v1", matched=100, only_a=0, only_b=9)
    info, warnings = format_matching([only_b], "runs/a", "runs/b")
    assert info == ["fresh-v1: 100 samples matched; dropped as unmatched: 0 of A's 100, 9 of B's 109"]
    assert warnings == ["warning: fresh-v1: 9 of 109 samples (8.3%) of B (runs/b) have no counterpart in the "
                        "other run and are left out, more than a few (> 5 or > 1%); the runs were probably not "
                        "evaluated on the same corpus, split or protocol settings"]
    info, warnings = format_matching([Matching("crslab-v1", 10, 0, 0)], "a", "b")
    assert (info, warnings) == (["crslab-v1: 10 samples matched"], [])


@pytest.mark.parametrize("matched, dropped, flagged", [
    (10_000, 5, False),  # five samples are "a few" ...
    (10_000, 6, True),  # ... six are not
    (99, 1, False),  # exactly 1% of the run's 100 samples is still a few
    (98, 2, True),
    (300, 3, False),  # 3 of the run's own 303, not of the 300 matched (which would be just over 1%)
])
def test_a_run_loses_a_few_samples_up_to_five_and_up_to_one_percent(matched, dropped, flagged):
    assert Matching("p", matched, dropped, 0).dropped_too_many() == (["A"] if flagged else [])
    assert Matching("p", matched, 0, dropped).dropped_too_many() == (["B"] if flagged else [])


# --------------------------------------------------------------------- generations.jsonl
def test_generations_file_is_utf8_json_lines_and_an_empty_pass_empties_it(tmp_path):
    import json

    import torch

    from crs.evaluation.report import write_generations

    records = [{"conv_id": "c1", "turn": 2, "generated": "très bien @7", "recommended": torch.tensor([7, 3])},
               {"conv_id": "c2", "turn": 0, "generated": "", "recommended": []}]
    path = write_generations(tmp_path, records)
    assert path == tmp_path / "generations.jsonl"
    raw = path.read_bytes()
    assert "très".encode("utf-8") in raw  # written as UTF-8 characters, not \\u escapes
    assert [json.loads(line) for line in raw.decode("utf-8").splitlines()] == [
        {"conv_id": "c1", "turn": 2, "generated": "très bien @7", "recommended": [7, 3]},
        {"conv_id": "c2", "turn": 0, "generated": "", "recommended": []}]
    assert raw.endswith(b"\n") and raw.count(b"\n") == 2
    write_generations(tmp_path, [])
    assert path.read_bytes() == b""
