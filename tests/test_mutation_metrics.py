"""Tests that kill mutants mutmut left alive in plugins/metrics and evaluation/text.py (see TESTING.md).

Each test pins a value or a message that a surviving mutant changed without any other test noticing:
BLEU's defaults and edge guards, the brevity penalty above the reference length, the individual
weights of orders above 2, strict pairing of hypotheses and references, the item-ratio error.
"""
from __future__ import annotations

import math

import pytest
import torch

from crs.errors import ConfigError
from crs.evaluation.text import bleu_from_counts, sentence_bleu
from crs.interfaces import BuildDeps
from crs.plugins.metrics.conversation import BLEU, F1, Dist, ItemRatio, Perplexity
from crs.plugins.metrics.protocols import FreshProtocol, UserAdaptProtocol


def build(cls, path="evaluation.metrics.0", **options):
    return cls(cls.Config(**options), BuildDeps(path=path))


# --------------------------------------------------------------------- BLEU arithmetic
def test_bleu_defaults_to_the_cumulative_geometric_mean():
    # p1 = 3/4, p2 = (1 + 1) / (3 + 1) = 1/2: the geometric mean, not p2 alone.
    assert bleu_from_counts([3, 1], [4, 3], 4, 4) == pytest.approx(math.sqrt(0.75 * 0.5))
    assert sentence_bleu(["a", "b", "c", "d"], ["a", "b", "x", "d"], 2) == pytest.approx(math.sqrt(0.75 * 0.5))


def test_individual_bleu_uses_the_highest_order_alone():
    # Three orders with different precisions: the individual score is p3, neither p1 nor p2.
    p2, p3 = (2 + 1) / (3 + 1), (0 + 1) / (2 + 1)
    assert bleu_from_counts([4, 2, 0], [4, 3, 2], 4, 4, cumulative=False) == pytest.approx(p3)
    assert p2 != pytest.approx(p3)


def test_bleu_of_an_empty_hypothesis_or_no_unigram_is_zero_without_dividing():
    assert bleu_from_counts([1], [1], 0, 3) == 0.0  # hyp_len 0 alone: the brevity penalty would divide by it
    assert bleu_from_counts([1], [0], 2, 2) == 0.0  # no unigram counted: the precision would divide by 0


def test_no_brevity_penalty_for_a_hypothesis_longer_than_the_reference():
    # hyp 3 words, ref 2; p1 = 2/3. A penalty exp(1 - 2/3) (or any factor) would change the value.
    assert bleu_from_counts([2], [3], 3, 2) == pytest.approx(2 / 3)
    assert sentence_bleu(["a", "b", "c"], ["a", "b"], 1) == pytest.approx(2 / 3)


def test_bleu_metric_refuses_unpaired_hypotheses_and_references():
    for mode in ("sentence", "corpus"):
        bleu = build(BLEU, ns=[1], mode=mode)
        with pytest.raises(ValueError):
            bleu.update([["a"], ["b"]], [["a"]])
    f1 = build(F1)
    with pytest.raises(ValueError):
        f1.update([["a"]], [["a"], ["b"]])


def test_corpus_bleu_sums_reference_lengths_and_keeps_the_weights():
    # Two replies of 2 and 1 words against references of 2 and 3: corpus lengths 3 vs 5, so the brevity
    # penalty is exp(1 - 5/3); unigram precision 3/3 (every hypothesis word is in its reference).
    hyps, refs = [["a", "b"], ["c"]], [["a", "b"], ["c", "d", "e"]]
    cumulative = build(BLEU, ns=[1], mode="corpus")
    cumulative.update(hyps, refs)
    assert cumulative.compute()["gen.bleu-1"] == pytest.approx(math.exp(1 - 5 / 3))
    # Individual weights in corpus mode: the bigram precision alone, (1 + 1) / (1 + 1) = 1, times the penalty.
    individual = build(BLEU, ns=[2], mode="corpus", weights="individual")
    individual.update(hyps, refs)
    assert individual.compute()["gen.bleu-2"] == pytest.approx(math.exp(1 - 5 / 3))
    both = build(BLEU, ns=[2], mode="corpus")
    both.update(hyps, refs)
    assert both.compute()["gen.bleu-2"] == pytest.approx(math.exp(1 - 5 / 3))  # sqrt(1 * 1) as well
    # A unigram miss separates the two weightings: p1 = 2/3, p2 = (1 + 1) / (1 + 1).
    hyps, refs = [["a", "b"], ["x"]], [["a", "b"], ["c", "d", "e"]]
    for weights, expected in (("cumulative", math.sqrt(2 / 3)), ("individual", 1.0)):
        metric = build(BLEU, ns=[2], mode="corpus", weights=weights)
        metric.update(hyps, refs)
        assert metric.compute()["gen.bleu-2"] == pytest.approx(expected * math.exp(1 - 5 / 3))


@pytest.mark.parametrize("cls, fix", [(Dist, "e.g. `ns: [2, 3, 4]`"), (BLEU, "e.g. `ns: [1, 2, 3, 4]`")])
def test_bad_orders_are_a_config_error_at_the_ns_key(cls, fix):
    with pytest.raises(ConfigError) as caught:
        build(cls, path="evaluation.metrics.2", ns=[0])
    assert caught.value.path == "evaluation.metrics.2.ns"
    assert caught.value.fix == fix
    assert build(cls, ns=[3, 1]).config.ns == [3, 1]  # the component keeps its config as given


# --------------------------------------------------------------------- item ratio, dist, ppl
def test_item_ratio_with_an_empty_prefix_is_a_config_error_at_its_key():
    with pytest.raises(ConfigError) as caught:
        build(ItemRatio, path="evaluation.metrics.3", prefix="")
    assert caught.value.path == "evaluation.metrics.3.prefix"
    assert caught.value.problem == "the item-token prefix is empty"
    assert caught.value.fix == "use `prefix: '@'`"


def test_item_ratio_before_any_reply_is_nan_and_counts_a_custom_prefix():
    ratio = build(ItemRatio, prefix="#")
    assert math.isnan(ratio.compute()["gen.item_ratio"])
    ratio.update([["#7", "x"], ["@7"], ["y"]], [[]] * 3)
    assert ratio.compute()["gen.item_ratio"] == pytest.approx(1 / 3)


def test_perplexity_overflows_to_inf_only_from_a_mean_of_700():
    ppl = build(Perplexity)
    ppl.update(699.0, 1)
    assert ppl.compute()["gen.ppl"] == pytest.approx(math.exp(699.0))
    ppl.reset()
    ppl.update(700.0, 1)
    assert ppl.compute()["gen.ppl"] == float("inf")


def test_dist_counts_each_sentence_once_for_every_order():
    dist = build(Dist, ns=[1, 2])
    dist.update([["a", "b", "a"], ["c"]], [[], []])
    # 1-grams: {a, b, c} of 4; 2-grams: {ab, ba} of 2; two sentences.
    assert dist.compute() == {"gen.dist-1/sentences": 1.5, "gen.dist-1/ngrams": 0.75,
                              "gen.dist-2/sentences": 1.0, "gen.dist-2/ngrams": 1.0}


# --------------------------------------------------------------------- protocols
def test_fresh_mask_leaves_other_rows_and_unmentioned_items_alone():
    protocol = FreshProtocol(FreshProtocol.Config(), BuildDeps(path="evaluation.protocols.0"))
    batch = {"batch.context_items": torch.tensor([[3, 0], [1, 2]]),
             "batch.context_items_mask": torch.tensor([[1, 0], [1, 1]])}
    mask = protocol.candidate_mask(batch, 5)
    assert mask.dtype == torch.bool
    assert mask.tolist() == [[True, True, True, False, True], [True, False, False, True, True]]


def _user_adapt(**blocks):
    from crs.plugins.metrics.protocols import ConvAdaptConfig, RecAdaptConfig

    config = UserAdaptProtocol.Config(rec_adapt=RecAdaptConfig(**blocks.get("rec", {})),
                                      conv_adapt=ConvAdaptConfig(**blocks.get("conv", {})))
    return UserAdaptProtocol(config, BuildDeps(path="evaluation.protocols.1"))


@pytest.mark.parametrize("blocks, path, problem, fix", [
    ({"rec": {"steps": -1}}, "rec_adapt.steps", "must be >= 0 (0 = no adaptation), got -1", ""),
    ({"conv": {"steps": -2}}, "conv_adapt.steps", "must be >= 0 (0 = no adaptation), got -2", ""),
    ({"rec": {"lr": 0.0}}, "rec_adapt.lr", "must be a positive number, got 0.0",
     "CCRS uses 0.006 (rec) and 3e-4 (conv)"),
    ({"conv": {"lr": float("nan")}}, "conv_adapt.lr", "must be a positive number, got nan",
     "CCRS uses 0.006 (rec) and 3e-4 (conv)"),
    ({"rec": {"lr": float("inf")}}, "rec_adapt.lr", "must be a positive number, got inf",
     "CCRS uses 0.006 (rec) and 3e-4 (conv)"),
    ({"conv": {"inner": []}}, "conv_adapt.inner", "no parameter pattern is given",
     "list globs over <slot>.<param>, e.g. ['*'] or ['generator.encoder.*']"),
])
def test_user_adapt_checks_each_block_and_names_its_key(blocks, path, problem, fix):
    with pytest.raises(ConfigError) as caught:
        _user_adapt(**blocks)
    assert (caught.value.path, caught.value.problem, caught.value.fix) == (f"evaluation.protocols.1.{path}",
                                                                            problem, fix)


def test_user_adapt_accepts_zero_steps_and_keeps_its_defaults():
    protocol = _user_adapt(rec={"steps": 0}, conv={"steps": 0})
    assert protocol.adapts is True and protocol.id == "user-adapt-v1"
    config = UserAdaptProtocol.Config()
    assert (config.rec_adapt.steps, config.rec_adapt.lr, config.rec_adapt.inner, config.rec_adapt.objectives) == (
        1, 0.006, ["*"], {"rec": 1.0})
    assert (config.conv_adapt.lr, config.conv_adapt.objectives) == (3e-4, {"gen": 1.0})
    assert (config.split.order, config.split.single, config.split.unit) == ("conversation_id", "query_only", "user")


class _Recorder:
    """Stands in for UserAdaptProtocol._adapt: records (task block, start, path), returns named fast weights."""

    def __init__(self):
        self.calls = []

    def __call__(self, pipeline, samples, cfg, start, path):
        self.calls.append((samples, start, path))
        return {f"{path.rsplit('.', 1)[-1]}.w": samples}


def _adapt_with(protocol, support, task, has_recommender=True):
    from types import SimpleNamespace

    recorder = _Recorder()
    protocol._adapt = recorder
    pipeline = SimpleNamespace(model=SimpleNamespace(has_recommender=has_recommender))
    return protocol.adapt(pipeline, support, task), recorder.calls


def test_user_adapt_runs_the_rec_steps_then_the_conv_steps_from_them():
    protocol = _user_adapt()
    support = {"rec": ["r"], "conv": ["c"]}
    params, calls = _adapt_with(protocol, support, "rec")
    assert params == {"rec_adapt.w": ["r"]}
    assert calls == [(["r"], None, "evaluation.protocols.1.rec_adapt")]
    params, calls = _adapt_with(protocol, support, "conv")
    assert params == {"rec_adapt.w": ["r"], "conv_adapt.w": ["c"]}
    assert calls == [(["r"], None, "evaluation.protocols.1.rec_adapt"),
                     (["c"], {"rec_adapt.w": ["r"]}, "evaluation.protocols.1.conv_adapt")]


@pytest.mark.parametrize("blocks, support, task, has_recommender, adapted", [
    ({"rec": {"steps": 0}}, {"rec": ["r"], "conv": ["c"]}, "conv", True, ["conv_adapt"]),
    ({}, {"rec": [], "conv": ["c"]}, "conv", True, ["conv_adapt"]),
    ({}, {"rec": ["r"], "conv": ["c"]}, "conv", False, ["conv_adapt"]),  # no recommender to adapt
    ({"conv": {"steps": 0}}, {"rec": ["r"], "conv": ["c"]}, "conv", True, ["rec_adapt"]),
    ({}, {"rec": ["r"], "conv": []}, "conv", True, ["rec_adapt"]),
    ({}, {"rec": [], "conv": ["c"]}, "rec", True, []),
    ({"rec": {"steps": 0}}, {"rec": ["r"], "conv": ["c"]}, "rec", True, []),
])
def test_user_adapt_adapts_only_what_has_steps_support_and_a_slot(blocks, support, task, has_recommender, adapted):
    params, calls = _adapt_with(_user_adapt(**blocks), support, task, has_recommender)
    assert [path.rsplit(".", 1)[-1] for _, _, path in calls] == adapted
    if not adapted:
        assert params is None


# --------------------------------------------------------------------- rank metric cut-offs
@pytest.mark.parametrize("ks", [[True], [2.0], [], [3, 0]])
def test_cutoffs_must_be_real_integers_of_at_least_one(ks):
    from crs.plugins.metrics.ranking import Recall

    with pytest.raises(ConfigError) as caught:
        build(Recall, path="evaluation.metrics.5", ks=ks)
    assert (caught.value.path, caught.value.problem, caught.value.fix) == (
        "evaluation.metrics.5.ks", f"expected a non-empty list of integers >= 1, got {ks}", "e.g. `ks: [1, 10, 50]`")


def test_rank_metric_keeps_its_config_and_sorts_unique_cutoffs():
    from crs.plugins.metrics.ranking import MRR

    metric = build(MRR, ks=[10, 1, 10])
    assert metric.ks == [1, 10] and metric.config.ks == [10, 1, 10]
    metric.update(torch.tensor([[0.1, 0.9, 0.5]]), torch.tensor([2]))
    assert metric.compute() == {"rec.mrr@1": 0.0, "rec.mrr@10": 0.5}


# --------------------------------------------------------------------- the last few
def test_cold_start_skips_a_warm_turn_and_goes_on_to_later_cold_ones():
    from crs.data.samples import Sample
    from crs.plugins.metrics.protocols import ColdStartProtocol

    def sample(conv, context_items, target_items):
        return Sample(conv_id=conv, turn_index=1, user_index=0, context_text=["hi"], context_tokens=[5],
                      context_entities=[], context_words=[], context_items=list(context_items),
                      target_items=list(target_items), response_tokens=[2, 3], response_text="")

    protocol = ColdStartProtocol(ColdStartProtocol.Config(), BuildDeps(path="evaluation.protocols.0"))
    kept = protocol.rec_samples([sample("warm", [1], [4]), sample("cold", [], [3])])
    assert [(s.conv_id, s.target_item) for s in kept] == [("cold", 3)]


def test_f1_and_perplexity_keep_their_config_and_f1_of_nothing_is_nan():
    f1, ppl = build(F1), build(Perplexity)
    assert f1.config == F1.Config() and ppl.config == Perplexity.Config()
    assert math.isnan(f1.compute()["gen.f1"])


# ------------------------------------------------------------------ ReR (MESE) and Dist without punctuation
def test_rer_counts_the_first_item_a_reply_names_against_the_items_its_reference_names():
    from crs.plugins.metrics.conversation import RecommendationRate

    metric = build(RecommendationRate)
    assert all(math.isnan(value) for value in metric.compute().values())  # nothing scored yet
    hyps = ["try @1 now", "@ @2", "@9 or @1", "no item", "#3 here"]
    refs = ["@1 is good", "@2 then", "@1", "@4", "@ alone"]  # "@" alone is no item: the last reference has none
    metric.update([h.split() for h in hyps], [r.split() for r in refs])
    # hits: reply 1 (@1), reply 2 (@2; the bare "@" is skipped, not taken as its first item); reply 3 names @9 first
    assert metric.compute() == {"gen.rer": 2 / 5, "gen.rer/rec_turns": 2 / 4}
    metric.reset()
    metric.update([["@7"]], [["@7"]])
    assert metric.compute() == {"gen.rer": 1.0, "gen.rer/rec_turns": 1.0}
    hashed = build(RecommendationRate, prefix="#", first_only=False)
    hashed.update([["#9", "#3"], ["@3"]], [["#3"], ["#3"]])
    assert hashed.compute() == {"gen.rer": 1 / 2, "gen.rer/rec_turns": 1 / 2}
    with pytest.raises(ValueError):  # replies and references must pair up
        hashed.update([["#3"]], [])


def test_stripping_punctuation_drops_marks_inside_tokens_and_tokens_left_empty():
    from crs.plugins.metrics.conversation import strip_punctuation

    assert strip_punctuation(["hi!", "...", "don't", "@12", "ok"]) == ["hi", "dont", "12", "ok"]
    assert strip_punctuation(["é", "-"]) == ["é"]  # ASCII punctuation only


def test_dist_without_punctuation_scores_the_stripped_replies_under_its_own_keys():
    plain, stripped = build(Dist, ns=[1]), build(Dist, ns=[1], strip_punctuation=True)
    hyps = [["hi", "!"], ["hi", "there", "."]]
    for metric in (plain, stripped):
        metric.update(hyps, hyps)
    assert plain.compute() == {"gen.dist-1/sentences": 4 / 2, "gen.dist-1/ngrams": 4 / 5}
    assert stripped.compute() == {"gen.dist-1/sentences/nopunct": 2 / 2, "gen.dist-1/ngrams/nopunct": 2 / 3}


def test_linked_items_are_those_whose_entity_node_is_a_real_graph_node():
    from types import SimpleNamespace

    from crs.data.prepare import UNLINKED_PREFIX
    from crs.knowledge import ENTITY
    from crs.plugins.metrics.protocols import linked_items

    graph = SimpleNamespace(role=ENTITY, nodes=["<pad>", "<dbpedia:A>", f"{UNLINKED_PREFIX}7", "<dbpedia:B>"])
    items = SimpleNamespace(entity_nodes=torch.tensor([1, 2, 0, 3, 4]))  # 0: the padding node; 4: past the end
    deps = SimpleNamespace(require=lambda name: items, graphs={"kg": graph})
    linked = linked_items(deps, "evaluation.protocols.0.items")
    assert linked.dtype == torch.bool and linked.tolist() == [True, False, False, True, False]
    deps.graphs = {"kg": graph, "other": SimpleNamespace(role=ENTITY, nodes=[])}
    with pytest.raises(ConfigError) as err:
        linked_items(deps, "evaluation.protocols.0.items")
    assert str(err.value) == ("config key 'evaluation.protocols.0.items': 'linked' needs the one entity graph that "
                              "links items, and the pipeline has 2\n  fix: use items: all, or keep one entity graph "
                              "under `knowledge:`")


class _Shift(torch.nn.Module):
    """loss.a = mean over the batch of (w + v + u - y)^2; a batch marked `missing` outputs no loss."""

    def __init__(self):
        super().__init__()
        self.w, self.v, self.u = (torch.nn.Parameter(torch.zeros(())) for _ in range(3))

    def loss_keys(self):
        return {"loss.a"}

    def forward(self, batch, wanted):
        if batch.get("missing"):
            return {}
        return {"loss.a": ((self.w + self.v + self.u - batch["y"]) ** 2).mean()}


def test_adaptation_starts_from_the_earlier_fast_weights_and_keeps_the_rest_of_them_fixed():
    from types import SimpleNamespace

    from crs.plugins.metrics.protocols import RecAdaptConfig

    model = _Shift()
    batches_of = {"ok": [{"y": torch.tensor([1.0]), "batch.samples": [0]}], "missing": [{"missing": True,
                                                                                          "batch.samples": [0]}]}
    pipeline = SimpleNamespace(model=model, spec=SimpleNamespace(evaluation=SimpleNamespace(batch_size=4)),
                               batches=lambda samples, size, shuffle, seed: iter(batches_of[samples]))
    cfg = RecAdaptConfig(steps=1, lr=0.25, outer_only=["u"], objectives={"a": 1.0})
    start = {"w": torch.tensor(2.0), "u": torch.tensor(5.0)}  # an earlier (rec) adaptation's fast weights
    fast = UserAdaptProtocol._adapt(None, pipeline, "ok", cfg, start, "evaluation.protocols.0.conv_adapt")
    # w starts at 2 and u is 5, so w + v + u - y = 6: each of w and v moves by 0.25 * 2 * 6 = 3
    assert {name: float(value) for name, value in fast.items()} == {"w": 2.0 - 3.0, "v": -3.0}
    with pytest.raises(ConfigError) as err:
        UserAdaptProtocol._adapt(None, pipeline, "missing", cfg, None, "evaluation.protocols.0.rec_adapt")
    assert err.value.path == "evaluation.protocols.0.rec_adapt.objectives"


def test_the_all_turns_protocol_keeps_its_config():
    from crs.plugins.metrics.protocols import AllTurnsConfig, AllTurnsProtocol

    config = AllTurnsConfig()
    assert AllTurnsProtocol(config, BuildDeps(path="evaluation.protocols.0")).config is config
