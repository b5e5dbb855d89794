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


# --------------------------------------------------------------------- the terminal table
def test_table_of_a_plain_dict_prints_missing_values_as_a_dash_and_nan_as_nan():
    from crs.evaluation.report import format_table

    table = format_table({"crslab-v1": {"rec.recall@1": 0.5, "gen.f1": float("nan")},
                          "fresh-v1": {"rec.recall@1": 0.25}}, digits=2)
    assert table.splitlines() == ["metric        crslab-v1  fresh-v1",
                                  "------------  ---------  --------",
                                  "rec.recall@1       0.50      0.25",
                                  "gen.f1              nan         -"]
    assert format_table({}) == "(no evaluation results)"


# --------------------------------------------------------------------- report.json
def test_report_json_holds_every_section_the_module_doc_lists(tmp_path):
    import datetime
    import json
    from pathlib import Path

    from crs.evaluation.evaluator import EvaluationResults
    from crs.evaluation.report import DEFINITIONS, write_report

    results = EvaluationResults({"crslab-v1": {"rec.recall@1": 0.5, "gen.ppl": 40.0, "gen.f1": float("inf")}})
    results.examples = [{"context": "hi", "reference": "yes", "hypothesis": "no"}]
    results.timings = {"rec/crslab-v1": 1.23456, "conv": 0.0004}
    results.sample_counts = {"crslab-v1": {"rec": 2, "conv": 3, "gen": 3}}
    results.withheld = {"crslab-v1": {"gen.ppl": "untrained"}}
    results.adaptation = {"user-adapt-v1": {"rec": {"tasks": 1}}}
    path = write_report(tmp_path, results, resolved_config={"seed": 1}, extra={"data": Path("d")})
    assert path == tmp_path / "report.json"
    report = json.loads(path.read_text(encoding="utf-8"))
    written = datetime.datetime.fromisoformat(report.pop("written_at"))
    assert written.tzinfo is not None and written.utcoffset() == datetime.timedelta(0) and written.microsecond == 0
    assert report == {
        "format": "crs-report/1",
        "protocols": ["crslab-v1"],
        "metrics": {"crslab-v1": {"rec.recall@1": 0.5, "gen.ppl": None, "gen.f1": None}},
        "sample_counts": {"crslab-v1": {"rec": 2, "conv": 3, "gen": 3}},
        "withheld": {"crslab-v1": {"gen.ppl": "untrained"}},
        "adaptation": {"user-adapt-v1": {"rec": {"tasks": 1}}},
        "definitions": DEFINITIONS,
        "config": {"seed": 1},
        "extra": {"data": "d", "examples": results.examples,
                  "evaluation_timings_s": {"rec/crslab-v1": 1.235, "conv": 0.0}},
    }


def test_report_keeps_the_callers_examples_and_timings_and_reads_plain_dicts(tmp_path):
    import json

    from crs.evaluation.evaluator import EvaluationResults
    from crs.evaluation.report import write_report

    results = EvaluationResults({"p": {"rec.mrr@10": 0.1}})
    results.examples, results.timings = [{"context": "ours"}], {"conv": 2.0}
    extra = {"examples": [{"context": "theirs"}], "evaluation_timings_s": {"conv": 9.0}}
    report = json.loads(write_report(tmp_path, results, resolved_config={}, extra=extra).read_text())
    assert report["extra"] == extra
    plain = json.loads(write_report(tmp_path, {"p": {"rec.mrr@10": 0.1}}, resolved_config={}).read_text())
    assert plain["extra"] == {} and plain["sample_counts"] == {}
    assert "withheld" not in plain and "adaptation" not in plain


def test_table_marks_withheld_values_and_lists_each_reason_once_with_its_protocols():
    from crs.evaluation.evaluator import EvaluationResults
    from crs.evaluation.report import format_table

    results = EvaluationResults({"crslab-v1": {"rec.recall@1": 0.5, "gen.ppl": 40.0},
                                 "user-adapt-v1": {"rec.recall@1": 0.123456, "gen.ppl": 41.0}})
    results.withheld = {"crslab-v1": {"gen.ppl": "untrained"},
                        "user-adapt-v1": {"gen.ppl": "untrained", "rec.recall@1": "keeps none"}}
    results.sample_counts = {"crslab-v1": {"rec": 12}, "user-adapt-v1": {}}
    assert format_table(results).splitlines() == [
        "metric         crslab-v1  user-adapt-v1",
        "-------------  ---------  -------------",
        "rec.recall@1      0.5000            n/a",
        "gen.ppl              n/a            n/a",
        "(rec samples)         12              -",
        "n/a gen.ppl: untrained",
        "n/a rec.recall@1: keeps none (user-adapt-v1)",
    ]
    three = EvaluationResults({"a": {"x": 1.0}, "b": {"x": 1.0}, "c": {"x": 1.0}})
    three.withheld = {"a": {"x": "why"}, "c": {"x": "why"}}
    assert format_table(three, digits=1).splitlines()[-1] == "n/a x: why (a, c)"


# --------------------------------------------------------------------- crs compare's numbers
def test_an_unknown_metric_lists_the_known_names():
    import numpy as np

    from crs.evaluation.significance import gains

    with pytest.raises(ValueError) as caught:
        gains(np.array([1.0]), "hits@10")
    assert str(caught.value) == "unknown metric 'hits@10': use NAME@k with NAME one of recall, mrr, ndcg"


def test_compare_runs_defaults_to_ten_thousand_resamples_from_seed_zero(tmp_path):
    from crs.evaluation import write_rankings
    from crs.evaluation.significance import compare_runs

    ranks_a, ranks_b = [1, 3, 20, 2, 8, 1, 60, 4], [2, 30, 1, 9, 11, 5, 2, 70]
    for name, ranks in (("a", ranks_a), ("b", ranks_b)):
        write_rankings(tmp_path / name, {"crslab-v1": [{"conv_id": f"c{i}", "turn": 1, "target": f"i{i}",
                                                        "rank": r, "top": []} for i, r in enumerate(ranks)]})
    default = compare_runs(tmp_path / "a", tmp_path / "b", metrics=["mrr@10"])
    assert [row.resamples for row in default] == [10_000]
    assert default == compare_runs(tmp_path / "a", tmp_path / "b", metrics=["mrr@10"], resamples=10_000, seed=0)
    assert default != compare_runs(tmp_path / "a", tmp_path / "b", metrics=["mrr@10"], resamples=10_000, seed=1)


# --------------------------------------------------------------------- rankings.jsonl as crs compare reads it
def _rankings_file(folder, lines):
    import json

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "rankings.jsonl"
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines),
                    encoding="utf-8")
    return path


def test_rankings_skip_blank_lines_anywhere_and_read_ties_only_for_ranked_targets(tmp_path):
    from crs.evaluation.significance import load_rankings

    _rankings_file(tmp_path, [
        {"protocol": "crslab-v1", "conv_id": "c1", "turn": 1, "target": "é", "rank": 2.5, "ties": 3},
        "",
        {"protocol": "crslab-v1", "conv_id": "c2", "turn": 3, "target": 7, "rank": None, "ties": 4},
        "   ",
        {"protocol": "fresh-v1", "conv_id": "c3", "turn": 0, "target": "x", "rank": 4},  # written before ties
    ])
    assert load_rankings(tmp_path) == {"crslab-v1": {("c1", 1, "é"): (2.5, 3.0), ("c2", 3, "7"): (float("inf"), 0.0)},
                                       "fresh-v1": {("c3", 0, "x"): (4.0, 0.0)}}


def test_rankings_errors_name_the_file_the_line_and_the_fix(tmp_path):
    from crs.errors import DataError
    from crs.evaluation.significance import load_rankings

    with pytest.raises(DataError) as caught:
        load_rankings(tmp_path / "empty")
    assert str(caught.value) == (f"{tmp_path / 'empty' / 'rankings.jsonl'}: no per-sample rankings in this run folder"
                                 "\n  fix: point at the run_dir of a finished `crs run` (it writes rankings.jsonl "
                                 "next to report.json); rerun older runs to get one")
    path = _rankings_file(tmp_path / "bad", [
        {"protocol": "p", "conv_id": "c", "turn": 1, "target": "t", "rank": 1},
        {"protocol": "p", "conv_id": "c", "turn": 2, "target": "t", "rank": 0.5, "ties": 0},
    ])
    with pytest.raises(DataError) as caught:
        load_rankings(tmp_path / "bad")
    assert str(caught.value) == (f"{path}:2: malformed ranking record (rank 0.5 / ties 0 out of range)"
                                 "\n  fix: the file is written by `crs run`; rerun the evaluation to rewrite it")
    _rankings_file(tmp_path / "negative", [{"protocol": "p", "conv_id": "c", "turn": 1, "target": "t", "rank": 3,
                                            "ties": -1}])
    with pytest.raises(DataError, match=r"rankings.jsonl:1: malformed ranking record \(rank 3 / ties -1 out"):
        load_rankings(tmp_path / "negative")


# --------------------------------------------------------------------- the paired bootstrap, exactly
def _documented_bootstrap(a, b, resamples, seed, level):
    """The module doc's procedure, written out: joint index draws from default_rng(seed) in chunks of
    1000 resamples, a percentile interval, and a p that counts zero differences half to each side."""
    import numpy as np

    rng = np.random.default_rng(seed)
    diffs = []
    for start in range(0, resamples, 1000):
        idx = rng.integers(0, len(a), size=(min(1000, resamples - start), len(a)))
        diffs.extend((a[idx] - b[idx]).mean(axis=1))
    diffs = np.array(diffs)
    low, high = np.quantile(diffs, [(1 - level) / 2, 1 - (1 - level) / 2])
    below, zero, above = (diffs < 0).mean(), (diffs == 0).mean(), (diffs > 0).mean()
    return float(low), float(high), min(1.0, 2 * min(below + zero / 2, above + zero / 2))


@pytest.mark.parametrize("a, b, level", [
    ([1.0, 0.0], [0.0, 0.0], 0.95),  # a quarter of the resamples differ by exactly 0
    ([1.0, 0.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 0.0, 0.0], 0.8),
    ([0.2, 0.9, 0.4, 0.1], [0.3, 0.1, 0.5, 0.6], 0.9),
])
def test_bootstrap_follows_the_documented_procedure(a, b, level):
    import numpy as np

    from crs.evaluation.significance import paired_bootstrap

    a, b = np.array(a), np.array(b)
    expected = _documented_bootstrap(a, b, 2500, 0, level)
    assert paired_bootstrap(a, b, resamples=2500, level=level) == pytest.approx(expected)
    assert paired_bootstrap(a, b, resamples=2500, level=level, seed=0) == pytest.approx(expected)
    assert paired_bootstrap(a, b, resamples=2500, level=level, seed=3) == pytest.approx(
        _documented_bootstrap(a, b, 2500, 3, level))


def test_bootstrap_p_of_the_half_zero_case_is_a_quarter_and_one_sample_is_enough():
    import numpy as np

    from crs.evaluation.significance import paired_bootstrap

    _, _, p = paired_bootstrap(np.array([1.0, 0.0]), np.array([0.0, 0.0]), resamples=20_000)
    assert p == pytest.approx(0.25, abs=0.02)  # 2 * (0 below + half of the 1/4 at zero)
    assert paired_bootstrap(np.array([0.5]), np.array([0.25]), resamples=10) == (0.25, 0.25, 0.0)


@pytest.mark.parametrize("a, b", [([1.0, 0.0], [1.0]), ([[1.0, 0.0]], [[0.0, 1.0]]), ([], [])])
def test_bootstrap_refuses_unpaired_two_dimensional_or_empty_input(a, b):
    import numpy as np

    from crs.evaluation.significance import paired_bootstrap

    with pytest.raises(ValueError) as caught:
        paired_bootstrap(np.array(a), np.array(b))
    assert str(caught.value) == "a and b must be non-empty 1-D arrays of the same length"


# --------------------------------------------------------------------- ranking arithmetic inputs
def test_rank_targets_takes_targets_of_any_integer_or_float_dtype():
    import torch

    from crs.evaluation.ranking import rank_targets

    scores = torch.tensor([[0.1, 0.9, 0.5], [0.3, 0.2, 0.1]])
    expected = rank_targets(scores, torch.tensor([2, 0]))
    assert expected.ranks.tolist() == [2.0, 1.0]
    for dtype in (torch.int32, torch.int16, torch.float32):
        got = rank_targets(scores, torch.tensor([2, 0], dtype=dtype))
        assert torch.equal(got.ranks, expected.ranks) and torch.equal(got.ties, expected.ties)


def test_rank_targets_messages_say_what_is_wrong():
    import torch

    from crs.evaluation.ranking import rank_targets

    with pytest.raises(ValueError) as caught:
        rank_targets(torch.zeros(3), torch.tensor([0]))
    assert str(caught.value) == "scores must be (B, n_items), got shape (3,)"
    with pytest.raises(ValueError) as caught:
        rank_targets(torch.zeros(2, 5), torch.tensor([0, 1, 2]))
    assert str(caught.value) == "3 targets for 2 score rows"
    with pytest.raises(ValueError) as caught:
        rank_targets(torch.zeros(1, 5), torch.tensor([5]))
    assert str(caught.value) == "target item index outside [0, 5)"


def test_candidate_masks_of_integer_dtype_mean_allowed_where_nonzero():
    import torch

    from crs.evaluation.ranking import apply_candidate_mask

    scores = torch.tensor([[1.0, 2.0, 3.0]])
    for dtype in (torch.int64, torch.uint8, torch.float32):
        masked = apply_candidate_mask(scores, torch.tensor([[1, 0, 2]], dtype=dtype))
        assert masked.tolist() == [[1.0, float("-inf"), 3.0]]
    with pytest.raises(ValueError) as caught:
        apply_candidate_mask(scores, torch.ones(1, 2, dtype=torch.bool))
    assert str(caught.value) == "candidate mask shape (1, 2) != scores shape (1, 3)"


def test_tied_gains_are_exact_float64_whatever_the_rank_dtype():
    import math

    import torch

    from crs.evaluation.ranking import mrr_gain, ndcg_gain, recall_gain

    # A target tied with two others at the top: block 1..3, mid rank 2, 2 ties.
    mrr = (1 + 1 / 2 + 1 / 3) / 3
    ndcg = (1 + 1 / math.log2(3) + 1 / math.log2(4)) / 3
    for ranks, ties in ((torch.tensor([2.0], dtype=torch.float32), torch.tensor([2.0], dtype=torch.float32)),
                        (torch.tensor([2]), torch.tensor([2])), ([2.0], [2.0])):
        for gain, expected in ((mrr_gain, mrr), (ndcg_gain, ndcg), (recall_gain, 2 / 3)):
            value = gain(ranks, 2 if gain is recall_gain else 10, ties)
            assert value.dtype == torch.float64
            assert value.item() == pytest.approx(expected, rel=1e-12, abs=0)


def test_compare_runs_uses_each_runs_ties_the_asked_protocols_and_bootstrap_settings(tmp_path):
    import numpy as np

    from crs.evaluation import write_rankings
    from crs.evaluation.significance import compare_runs, gains, paired_bootstrap

    def records(ranks, ties):
        return [{"conv_id": f"c{i}", "turn": 1, "target": "t", "rank": r, "ties": t, "top": []}
                for i, (r, t) in enumerate(zip(ranks, ties))]

    a = ([1.5, 4, 2, 9], [1, 0, 2, 0])
    b = ([2.5, 1, 3, 7], [3, 0, 0, 4])
    write_rankings(tmp_path / "a", {"crslab-v1": records(*a), "fresh-v1": records([1], [0])})
    write_rankings(tmp_path / "b", {"crslab-v1": records(*b), "fresh-v1": records([2], [0])})
    rows = compare_runs(tmp_path / "a", tmp_path / "b", metrics=["recall@2"], protocols=["crslab-v1"],
                        resamples=300, seed=5, level=0.8)
    ga, gb = gains(np.array(a[0], float), "recall@2", np.array(a[1], float)), gains(
        np.array(b[0], float), "recall@2", np.array(b[1], float))
    low, high, p = paired_bootstrap(ga, gb, resamples=300, seed=5, level=0.8)
    assert rows == [Comparison("crslab-v1", "recall@2", 4, float(ga.mean()), float(gb.mean()), low, high, p, 300)]
    assert gb.mean() != gains(np.array(b[0], float), "recall@2").mean()  # B's ties matter here


def test_compare_runs_errors_say_which_protocols_and_samples_are_missing(tmp_path):
    from crs.errors import DataError
    from crs.evaluation import write_rankings
    from crs.evaluation.significance import compare_runs

    row = [{"conv_id": "c", "turn": 1, "target": "t", "rank": 1, "top": []}]
    write_rankings(tmp_path / "a", {"crslab-v1": row})
    write_rankings(tmp_path / "b", {"crslab-v1": [{**row[0], "conv_id": "other"}]})
    a, b = tmp_path / "a", tmp_path / "b"
    with pytest.raises(DataError) as caught:
        compare_runs(a, b, protocols=["fresh-v1"])
    assert str(caught.value) == (f"{a}, {b}: protocol(s) fresh-v1 not ranked in both runs (shared: crslab-v1)"
                                 "\n  fix: compare runs evaluated under the same protocols, or pass --protocol")
    with pytest.raises(DataError) as caught:
        compare_runs(a, b, protocols=[])
    assert "protocol(s) (none) not ranked in both runs" in str(caught.value)
    with pytest.raises(DataError) as caught:
        compare_runs(a, b)
    assert str(caught.value) == (f"{a}, {b}: the two runs share no sample under crslab-v1 (A ranked 1, B 1; "
                                 "samples pair by conv_id, turn and target)"
                                 "\n  fix: compare runs evaluated on the same corpus and split")
    write_rankings(tmp_path / "c", {"fresh-v1": row})
    with pytest.raises(DataError, match=r"protocol\(s\) \(none\) not ranked in both runs \(shared: none\)"):
        compare_runs(a, tmp_path / "c")


def test_last_details_of_tables_bootstrap_and_gains():
    import math

    import numpy as np
    import torch

    from crs.evaluation.evaluator import EvaluationResults
    from crs.evaluation.ranking import ndcg_gain
    from crs.evaluation.report import format_table
    from crs.evaluation.significance import paired_bootstrap

    # A protocol without a sample count prints "-" in the (rec samples) row.
    results = EvaluationResults({"a": {"x": 1.0}, "b": {"x": 2.0}})
    results.sample_counts = {"a": {"rec": 3}}
    assert format_table(results, digits=0).splitlines()[-1] == "(rec samples)  3  -"
    # The warning names run A's label when A lost the samples.
    _, warnings = format_matching([Matching("p", 10, 9, 0)], "runs/first", "runs/second")
    assert warnings[0].startswith("warning: p: 9 of 19 samples (47.4%) of A (runs/first) have no counterpart")
    # The default resample count is 10,000.
    a, b = np.array([1.0, 0.0, 1.0]), np.array([0.0, 0.0, 1.0])
    assert paired_bootstrap(a, b) == paired_bootstrap(a, b, resamples=10_000)
    # Zero differences count half to each side when B is the better run too: p = 2 * (0 + 1/8).
    assert paired_bootstrap(np.array([0.0, 0.0]), np.array([1.0, 0.0]), resamples=20_000)[2] == pytest.approx(
        0.25, abs=0.02)
    # Untied float32 ranks still get float64 gains: 1 / log2(3) to the last digit.
    assert ndcg_gain(torch.tensor([2.0], dtype=torch.float32), 10).item() == 1 / math.log2(3)


def test_compare_runs_error_lists_several_protocols_comma_separated(tmp_path):
    from crs.errors import DataError
    from crs.evaluation import write_rankings
    from crs.evaluation.significance import compare_runs

    row = [{"conv_id": "c", "turn": 1, "target": "t", "rank": 1, "top": []}]
    for name in ("a", "b"):
        write_rankings(tmp_path / name, {"crslab-v1": row, "fresh-v1": row})
    with pytest.raises(DataError) as caught:
        compare_runs(tmp_path / "a", tmp_path / "b", protocols=["cold-start-v1", "user-adapt-v1"])
    assert ("protocol(s) cold-start-v1, user-adapt-v1 not ranked in both runs (shared: crslab-v1, fresh-v1)"
            in str(caught.value))
