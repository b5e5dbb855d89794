"""Metric components against values computed by hand on tiny inputs."""
from __future__ import annotations

import math

import pluggy
import pytest
import torch

import crs.hookspecs
from crs.errors import ConfigError
from crs.evaluation.ranking import GAINS, apply_candidate_mask, rank_targets
from crs.interfaces import BuildDeps, Metric
from crs.plugins import metrics as metrics_plugin
from crs.plugins.metrics.conversation import BLEU, F1, Dist, ItemRatio, Perplexity
from crs.plugins.metrics.ranking import MRR, NDCG, Recall

INF = float("inf")


def build(cls, path="evaluation.metrics.0", **options):
    return cls(cls.Config(**options), BuildDeps(path=path))


# ------------------------------------------------------------------ ranking
SCORES = torch.tensor([
    [0.1, 0.5, 0.5, 0.2],    # target 2 ties with item 1: block of positions 1-2 -> mid rank 1.5
    [1.0, -INF, 0.0, 2.0],   # target 2: two strictly higher -> rank 3
    [0.3, 0.3, 0.3, 0.3],    # all tied: positions 1-4 -> mid rank 2.5
])
TARGETS = torch.tensor([2, 2, 1])


def test_rank_targets_ties_and_excluded_candidates():
    ranks, ties = rank_targets(SCORES, TARGETS)
    assert ranks.tolist() == [1.5, 3.0, 2.5] and ties.tolist() == [1.0, 0.0, 3.0]
    assert rank_targets(SCORES, TARGETS).ranks.tolist() == [1.5, 3.0, 2.5]
    # -inf candidates never outrank a target, even one with a very low score
    assert rank_targets(torch.tensor([[-INF, -5.0, -INF]]), torch.tensor([1])).ranks.tolist() == [1.0]
    # an excluded target (or NaN score) is a miss at every cut-off
    ranks = rank_targets(torch.tensor([[0.0, -INF], [float("nan"), 1.0]]), torch.tensor([1, 0])).ranks
    assert ranks.tolist() == [INF, INF]
    assert rank_targets(torch.tensor([[0.0, -INF, -INF]]), torch.tensor([1])).ties.tolist() == [0.0]


def test_gains_average_over_the_tied_block():
    # target tied with 3 others right after 2 better items: positions 3..6, mid rank 4.5
    ranks, ties = torch.tensor([4.5]), torch.tensor([3.0])
    assert GAINS["recall"](ranks, 4, ties).item() == pytest.approx(2 / 4)  # positions 3 and 4 of 4 count
    assert GAINS["recall"](ranks, 2, ties).item() == 0.0
    assert GAINS["recall"](ranks, 6, ties).item() == 1.0
    assert GAINS["mrr"](ranks, 10, ties).item() == pytest.approx((1 / 3 + 1 / 4 + 1 / 5 + 1 / 6) / 4)
    assert GAINS["ndcg"](ranks, 4, ties).item() == pytest.approx((1 / math.log2(4) + 1 / math.log2(5)) / 4)
    # without ties the plain definitions; an excluded target is a miss
    plain = torch.tensor([1.0, 4.0, 12.0, INF])
    assert GAINS["recall"](plain, 10).tolist() == [1.0, 1.0, 0.0, 0.0]
    assert GAINS["mrr"](plain, 10).tolist() == pytest.approx([1.0, 0.25, 0.0, 0.0])


def test_rank_targets_rejects_bad_targets():
    with pytest.raises(ValueError):
        rank_targets(SCORES, torch.tensor([0, 1, 4]))


def test_apply_candidate_mask_copies_and_masks():
    scores = torch.tensor([[1.0, 2.0, 3.0]])
    masked = apply_candidate_mask(scores, torch.tensor([[True, False, True]]))
    assert masked.tolist() == [[1.0, -INF, 3.0]]
    assert scores.tolist() == [[1.0, 2.0, 3.0]]  # the model's tensor is untouched
    assert apply_candidate_mask(scores, None).tolist() == [[1.0, 2.0, 3.0]]


def test_recall_mrr_ndcg_hand_values():
    recall, mrr, ndcg = (build(cls, ks=[1, 2, 10]) for cls in (Recall, MRR, NDCG))
    for metric in (recall, mrr, ndcg):
        metric.update(SCORES[:2], TARGETS[:2])  # two batches: accumulation across updates
        metric.update(SCORES[2:], TARGETS[2:])
    r, m, n = recall.compute(), mrr.compute(), ndcg.compute()
    # per row: the gain averaged over the target's tied block (positions 1-2; 3; 1-4)
    assert r == pytest.approx({"rec.recall@1": (1 / 2 + 0 + 1 / 4) / 3, "rec.recall@2": (1 + 0 + 2 / 4) / 3,
                               "rec.recall@10": 1.0})
    assert m == pytest.approx({"rec.mrr@1": (1 / 2 + 0 + 1 / 4) / 3, "rec.mrr@2": (3 / 4 + 0 + 3 / 8) / 3,
                               "rec.mrr@10": (3 / 4 + 1 / 3 + (1 + 1 / 2 + 1 / 3 + 1 / 4) / 4) / 3})
    dcg = [1 / math.log2(r + 1) for r in range(1, 5)]
    assert n["rec.ndcg@10"] == pytest.approx(((dcg[0] + dcg[1]) / 2 + dcg[2] + sum(dcg) / 4) / 3)
    assert n["rec.ndcg@2"] == pytest.approx(((dcg[0] + dcg[1]) / 2 + 0 + (dcg[0] + dcg[1]) / 4) / 3)


def test_k_larger_than_item_count_counts_every_ranked_target():
    recall = build(Recall, ks=[50])
    recall.update(torch.tensor([[0.0, 1.0, 2.0], [0.0, -INF, 1.0]]), torch.tensor([0, 1]))
    assert recall.compute() == {"rec.recall@50": 0.5}  # second target excluded: a miss


def test_rank_metric_reset_and_empty():
    recall = build(Recall, ks=[1])
    recall.update(SCORES, TARGETS)
    recall.reset()
    assert math.isnan(recall.compute()["rec.recall@1"])


def test_rank_metric_bad_cutoffs_name_the_yaml_path():
    with pytest.raises(ConfigError, match=r"evaluation\.metrics\.3\.ks"):
        build(Recall, path="evaluation.metrics.3", ks=[0, 10])
    with pytest.raises(ConfigError):
        build(MRR, ks=[])


# -------------------------------------------------------------- generation
HYPS = [["i", "like", "it"], ["i", "like", "this", "movie"]]


def test_dist_both_definitions_by_hand():
    dist = build(Dist)
    dist.update(HYPS, [[], []])
    values = dist.compute()
    # unigrams: {i, like, it, this, movie} = 5 distinct of 7, over 2 sentences
    assert values["gen.dist-1/sentences"] == pytest.approx(5 / 2)
    assert values["gen.dist-1/ngrams"] == pytest.approx(5 / 7)
    # bigrams: (i like) twice, (like it), (like this), (this movie): 4 distinct of 5
    assert values["gen.dist-2/sentences"] == pytest.approx(2.0)
    assert values["gen.dist-2/ngrams"] == pytest.approx(4 / 5)
    assert values["gen.dist-3/sentences"] == pytest.approx(1.5)
    assert values["gen.dist-4/sentences"] == pytest.approx(0.5)  # only the 4-word reply has a 4-gram
    assert values["gen.dist-4/ngrams"] == pytest.approx(1.0)


def test_dist_orders_from_config_and_empty():
    dist = build(Dist, ns=[2])
    assert set(dist.compute()) == {"gen.dist-2/sentences", "gen.dist-2/ngrams"}
    assert math.isnan(dist.compute()["gen.dist-2/sentences"])


@pytest.mark.parametrize("mode", ["sentence", "corpus"])
def test_bleu_identical_is_one_disjoint_is_zero(mode):
    same = build(BLEU, mode=mode)
    same.update([["a", "short", "reply"], ["ok"]], [["a", "short", "reply"], ["ok"]])
    assert same.compute() == pytest.approx({f"gen.bleu-{n}": 1.0 for n in (1, 2, 3, 4)})
    disjoint = build(BLEU, mode=mode)
    disjoint.update([["x", "y", "z"]], [["a", "b", "c"]])
    assert all(v == pytest.approx(0.0, abs=1e-9) for v in disjoint.compute().values())


def test_bleu_hand_values_smoothing_weights_and_brevity():
    hyp, ref = ["a", "b", "c", "d"], ["a", "b", "x", "d"]
    # p1 = 3/4; bigrams ab,bc,cd vs ab,bx,xd: 1 match -> BLEU+1: (1+1)/(3+1)
    cumulative = build(BLEU, ns=[2])
    cumulative.update([hyp], [ref])
    assert cumulative.compute()["gen.bleu-2"] == pytest.approx(math.sqrt(0.75 * 0.5))
    individual = build(BLEU, ns=[2], weights="individual")
    individual.update([hyp], [ref])
    assert individual.compute()["gen.bleu-2"] == pytest.approx(0.5)
    short = build(BLEU, ns=[1])
    short.update([["a", "b"]], [["a", "b", "c", "d"]])  # brevity penalty exp(1 - 4/2)
    assert short.compute()["gen.bleu-1"] == pytest.approx(math.exp(-1))


def test_bleu_sentence_average_differs_from_corpus():
    hyps, refs = [["a", "b"], ["c"]], [["a", "b"], ["d"]]
    sentence, corpus = build(BLEU, ns=[1]), build(BLEU, ns=[1], mode="corpus")
    sentence.update(hyps, refs)
    corpus.update(hyps, refs)
    assert sentence.compute()["gen.bleu-1"] == pytest.approx(0.5)  # mean of 1 and 0
    assert corpus.compute()["gen.bleu-1"] == pytest.approx(2 / 3)  # 2 of 3 unigrams, equal lengths


def test_bleu_bad_mode(registry):
    with pytest.raises(ConfigError, match="mode"):
        registry.build("metric", {"type": "bleu", "mode": "document"}, "evaluation.metrics.0")


def test_f1_parlai_normalisation_hand_example():
    f1 = build(F1)
    # articles and punctuation dropped: [cat sat on mat] vs [cat sat on hat] -> P = R = 3/4
    f1.update([["the", "cat", "sat", "on", "mat", "."], ["hello"]],
              [["a", "cat", "sat", "on", "the", "hat", "!"], ["bye"]])
    assert f1.compute()["gen.f1"] == pytest.approx((0.75 + 0.0) / 2)


def test_f1_counts_overlap_with_multiplicity():
    f1 = build(F1)
    f1.update([["yes", "yes", "yes"]], [["yes", "no"]])  # overlap 1: P = 1/3, R = 1/2
    assert f1.compute()["gen.f1"] == pytest.approx(2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2))


def test_item_ratio():
    ratio = build(ItemRatio)
    ratio.update([["try", "@12"], ["no"], ["@3", "@4"], []], [[]] * 4)
    assert ratio.compute() == {"gen.item_ratio": 0.5}


def test_perplexity_is_exp_of_token_mean_not_batch_mean():
    ppl = build(Perplexity)
    ppl.update(2.0, 4)
    ppl.update(4.0, 2)
    assert ppl.compute()["gen.ppl"] == pytest.approx(math.e)  # exp(6 / 6)
    ppl.reset()
    assert math.isnan(ppl.compute()["gen.ppl"])


# ----------------------------------------------------------------- plugin
def test_plugin_registers_every_metric_and_protocol_lazily():
    import importlib

    pm = pluggy.PluginManager("crs")
    pm.add_hookspecs(crs.hookspecs)
    pm.register(metrics_plugin)
    seen: dict[str, str] = {}
    pm.hook.crs_register_metrics(register=seen.__setitem__)
    assert set(seen) == {"recall", "mrr", "ndcg", "dist", "bleu", "f1", "item_ratio", "rer", "ppl"}
    tasks = {}
    for name, ref in seen.items():
        module, cls_name = ref.split(":")
        cls = getattr(importlib.import_module(module), cls_name)
        assert issubclass(cls, Metric)
        tasks[name] = cls.task
        build(cls)  # every Config has defaults
    assert tasks["recall"] == "rec" and tasks["bleu"] == "gen" and tasks["ppl"] == "nll"
    protocols: dict[str, str] = {}
    pm.hook.crs_register_evaluation_protocols(register=protocols.__setitem__)
    assert set(protocols) == {"crslab", "all_turns", "fresh", "cold_start", "user_adapt"}
