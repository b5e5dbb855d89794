"""`crs.evaluation.evaluator` behaviour the mutation run (TESTING.md) found untested: the exact refusals of
check_evaluable and of protocols the samples settings make wrong, generation budgets across batches, the
untrained-generator reason, capped rec evaluation, timings and the ranking records' edge cases.  Built on the
fake pipeline of tests/test_evaluator.py."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from test_evaluator import ALL_METRICS, SAMPLES, FakeModel, FakePipeline, make_sample

from crs.config.spec import SamplesSpec
from crs.errors import ConfigError, DataError
from crs.evaluation import evaluate
from crs.evaluation.evaluator import EXAMPLES, EvaluationResults, check_evaluable, spread

DATA_FIX = ("check the data files and filters (data.*, samples.max_train_conversations), or evaluate another "
            "split (evaluation.split, crs eval --split)")


def data_error(where: str, problem: str) -> str:
    return f"{where}: {problem}\n  fix: {DATA_FIX}"


def with_samples(samples, model=None, **kwargs):
    pipeline = FakePipeline(model or FakeModel(), ALL_METRICS, **kwargs)
    pipeline.samples = {"test": samples}
    return pipeline


# ------------------------------------------------------------------ refusals
def test_a_split_without_samples_is_refused_naming_the_corpus_and_split():
    pipeline = with_samples([])
    pipeline.corpus = SimpleNamespace(name="redial")
    with pytest.raises(DataError) as err:
        check_evaluable(pipeline, "test")
    assert str(err.value) == data_error(
        "redial corpus, split 'test'", "no samples to evaluate on; every metric would be an average over nothing")
    pipeline.corpus = None  # no corpus name: the split alone
    with pytest.raises(DataError) as err:
        evaluate(pipeline, "test")
    assert str(err.value).startswith("split 'test': no samples")


def test_a_split_where_no_sample_recommends_is_refused_for_a_recommender_only():
    silent = [make_sample("cold", [], [], "i like it")]
    with pytest.raises(DataError) as err:
        check_evaluable(with_samples(silent), "test")
    assert str(err.value) == data_error(
        "split 'test'", "none of its 1 samples recommends an item, so there is nothing to rank")
    check_evaluable(with_samples(silent, FakeModel(recommender=False)), "test")  # a generator alone is fine
    check_evaluable(with_samples(silent), "test", tasks=("conv",))


def test_a_split_without_replies_is_refused_for_a_generator_only():
    mute = [make_sample("cold", [], [0], "")]  # BOS + EOS: nothing to score
    with pytest.raises(DataError) as err:
        check_evaluable(with_samples(mute), "test")
    assert str(err.value) == data_error("split 'test'",
                                        "none of its 1 samples has a reply to score the generator on")
    check_evaluable(with_samples(mute, FakeModel(generator=False)), "test")
    check_evaluable(with_samples(mute), "test", tasks=("rec",))


def _spec_pipeline(roles=("recommender",), support_to_train=False, protocols=({"type": "crslab"},)):
    pipeline = FakePipeline(FakeModel(), ALL_METRICS, protocols=list(protocols))
    pipeline.spec.samples = SamplesSpec(roles=list(roles), test_support_to_train=support_to_train)
    pipeline.spec.evaluation.split = "test"
    return pipeline


def test_a_protocol_scoring_turns_the_samples_do_not_make_is_refused_with_the_fix():
    pipeline = _spec_pipeline(protocols=[{"type": "crslab"}, {"type": "all_turns"}])
    with pytest.raises(ConfigError) as err:
        evaluate(pipeline, "test")
    assert str(err.value) == (
        "config key 'evaluation.protocols.1': protocol 'all-turns-v1' scores seeker and recommender turns, but "
        "samples.roles makes samples of recommender turns only\n"
        "  fix: set samples.roles: [seeker, recommender] (other protocols still score recommender turns only), "
        "or drop the protocol")


def test_support_in_train_refuses_a_protocol_that_scores_every_sample_of_the_evaluated_split_only():
    pipeline = _spec_pipeline(support_to_train=True, protocols=[{"type": "fresh"}])
    with pytest.raises(ConfigError) as err:
        check_evaluable(pipeline, "test")
    assert str(err.value) == (
        "config key 'evaluation.protocols.0': protocol 'fresh-v1' scores every test sample, but "
        "samples.test_support_to_train put the test users' support conversations in train, so it would score the "
        "model on samples it was trained on\n"
        "  fix: score with a per-user protocol only (e.g. {type: user_adapt, rec_adapt: {steps: 0}}), or set "
        "samples.test_support_to_train: false")
    pipeline.spec.evaluation.split = "valid"  # the support in train belongs to another split's users
    check_evaluable(pipeline, "test")
    check_evaluable(_spec_pipeline(support_to_train=False, protocols=[{"type": "fresh"}]), "test")


def test_two_protocols_with_one_id_are_refused_before_any_work():
    model = FakeModel()
    pipeline = FakePipeline(model, ALL_METRICS, protocols=[{"type": "crslab"}, {"type": "crslab"}])
    with pytest.raises(ConfigError) as err:
        evaluate(pipeline, "test")
    assert str(err.value) == ("config key 'evaluation.protocols': two protocols share the id 'crslab-v1'\n"
                              "  fix: list each protocol once")
    assert model.calls == []


def test_a_metric_with_an_unknown_task_is_refused_naming_its_position():
    pipeline = FakePipeline(FakeModel(), [{"type": "recall"}, {"type": "f1"}])
    built = pipeline.build

    def build(kind, node, path):
        metric = built(kind, node, path)
        if node["type"] == "f1":
            metric.task = "retrieval"
        return metric

    pipeline.build = build
    with pytest.raises(ConfigError) as err:
        evaluate(pipeline, "test")
    assert str(err.value) == ("config key 'evaluation.metrics.1': metric declares unknown task 'retrieval'\n"
                              "  fix: a Metric's task must be one of: rec, gen, nll")


# ------------------------------------------------------------------ what is scored
@pytest.mark.parametrize("limit,expected", [(0, list(range(10))), (-1, list(range(10))), (10, list(range(10))),
                                            (11, list(range(10))), (1, [0]), (4, [0, 2, 5, 7]), (9, [0, 1, 2, 3,
                                                                                                      4, 5, 6, 7, 8])])
def test_spread_keeps_evenly_spaced_samples_in_order(limit, expected):
    samples = list(range(10))
    kept = spread(samples, limit)
    assert kept == expected and kept is not samples


def test_max_rec_samples_scores_an_evenly_spread_subset():
    pipeline = FakePipeline(FakeModel(generator=False), protocols=[{"type": "crslab"}])
    pipeline.spec.evaluation.max_rec_samples = 1
    results = evaluate(pipeline, "test")
    assert [r["target"] for r in results.rankings["crslab-v1"]] == ["a"]
    assert results.sample_counts["crslab-v1"] == {"rec": 1}


def _replies(monkeypatch, names):
    import test_evaluator

    for name in names:
        monkeypatch.setitem(test_evaluator.REPLIES, name, "i like it")
        monkeypatch.setitem(test_evaluator.TOKEN_NLL, name, 1.0)


def test_the_generation_budget_holds_across_batches_of_several_replies(monkeypatch):
    _replies(monkeypatch, [f"c{i}" for i in range(5)])
    samples = [make_sample(f"c{i}", [], [0], "i like it") for i in range(5)]
    model = FakeModel(recommender=False)
    pipeline = with_samples(samples, model, protocols=[{"type": "crslab"}])
    pipeline.spec.evaluation.batch_size = 2
    results = evaluate(pipeline, "test", max_samples=3)
    assert results.sample_counts["crslab-v1"] == {"conv": 5, "gen": 3}
    assert len(results.generations) == 3 and len(results.examples) == 3
    # without a perplexity metric nothing counts as a perplexity sample
    pipeline = with_samples(samples, FakeModel(recommender=False), protocols=[{"type": "crslab"}])
    pipeline.spec.evaluation.metrics = [{"type": "f1"}]
    assert evaluate(pipeline, "test").sample_counts["crslab-v1"] == {"conv": 0, "gen": 5}


def test_at_most_five_examples_are_kept(monkeypatch):
    _replies(monkeypatch, [f"e{i}" for i in range(EXAMPLES + 2)])
    samples = [make_sample(f"e{i}", [], [0], "i like it") for i in range(EXAMPLES + 2)]
    results = evaluate(with_samples(samples, FakeModel(recommender=False), protocols=[{"type": "crslab"}]), "test")
    assert len(results.examples) == EXAMPLES == 5
    assert len(results.generations) == EXAMPLES + 2


def test_timings_are_the_seconds_each_pass_took():
    import time

    before = time.perf_counter()
    results = evaluate(FakePipeline(FakeModel(), ALL_METRICS, protocols=[{"type": "crslab"}]), "test")
    elapsed = time.perf_counter() - before
    assert set(results.timings) == {"conv", "rec/crslab-v1"}
    assert all(0.0 <= seconds <= elapsed for seconds in results.timings.values())


def test_results_are_a_plain_dict_of_protocols_with_empty_side_attributes():
    results = EvaluationResults({"p": {"m": 1.0}})
    assert dict(results) == {"p": {"m": 1.0}}
    assert (results.examples, results.sample_counts, results.timings, results.rankings, results.generations,
            results.adaptation, results.withheld) == ([], {}, {}, {}, [], {}, {})
    assert EvaluationResults(p={"m": 2.0})["p"] == {"m": 2.0}


# ------------------------------------------------------------------ untrained generator
class _SlotModel(FakeModel):
    """FakeModel with one named generator slot holding a parameter, as trained_by_stages reads it."""

    generator_slot = "generator"

    def __init__(self):
        super().__init__()
        self.slots = {"generator": torch.nn.Linear(1, 1)}

    def slot_parameters(self, names):
        return list(self.slots["generator"].parameters()) if "generator" in names else []


def test_the_perplexity_of_a_generator_no_stage_trains_is_withheld_with_the_reason():
    pipeline = FakePipeline(_SlotModel(), ALL_METRICS, protocols=[{"type": "crslab"}])
    pipeline.spec.stages = [SimpleNamespace(epochs=3, train=["recommender"])]
    results = evaluate(pipeline, "test")
    reason = ("no stage trains the generator slot 'generator', so this is the perplexity of its initial weights "
              "(add a stage that trains it, e.g. train: [generator])")
    assert results.withheld == {"crslab-v1": {"gen.ppl": reason}}
    assert results["crslab-v1"]["gen.ppl"] > 0  # the value is kept beside the reason
    pipeline.spec.stages = [SimpleNamespace(epochs=3, train=["generator"])]
    assert evaluate(pipeline, "test").withheld == {}
    pipeline.spec.stages = None  # a stand-in without stages: nothing to judge by
    assert evaluate(pipeline, "test").withheld == {}
    rec_only = evaluate(pipeline, "test", tasks=("rec",))
    assert rec_only.withheld == {} and "gen.ppl" not in rec_only["crslab-v1"]


# ------------------------------------------------------------------ ranking records
class _MasksItemB:
    """A protocol that scores every sample with item b excluded from the candidates."""

    id, adapts = "no-b", False

    def rec_samples(self, samples):  # one sample per recommended item, as every protocol scores them
        return [sample.for_item(item) for sample in samples for item in sample.target_items]

    def candidate_mask(self, batch, n_items):
        mask = torch.ones(len(batch["batch.samples"]), n_items, dtype=torch.bool)
        mask[:, 1] = False
        return mask


def test_a_target_the_protocol_masks_has_no_rank_and_masked_items_are_not_listed():
    pipeline = FakePipeline(FakeModel(generator=False))
    results = evaluate(pipeline, "test", protocols=[_MasksItemB()])
    cold, warm_b, warm_c = results.rankings["no-b"]
    assert warm_b["target"] == "b" and warm_b["rank"] is None
    assert warm_b["top"] == ["d", "c", "a"] and cold["top"] == ["a", "c", "d"]
    assert warm_c["rank"] == 2.0 and "adapted" not in warm_c


def test_the_shared_conversation_pass_runs_once_for_every_plain_protocol():
    model = FakeModel()
    results = evaluate(FakePipeline(model, ALL_METRICS), "test")
    assert sum(1 for wanted, _ in model.calls if wanted == ("generate",)) == len(SAMPLES)
    assert results.timings.keys() == {"conv", "rec/crslab-v1", "rec/fresh-v1", "rec/cold-start-v1"}


# ------------------------------------------------------------------ adapting protocols
class _PerConversation:
    """An adapting protocol whose tasks are single samples; adapt() moves nothing (returns {})."""

    id, adapts = "per-conversation", True

    def __init__(self):
        self.adapted_on = []

    def rec_samples(self, samples):
        return [sample.for_item(item) for sample in samples for item in sample.target_items]

    def candidate_mask(self, batch, n_items):
        return None

    def tasks(self, samples):
        for i, sample in enumerate(samples):
            support = [sample] if i == 2 else []
            yield support, [sample], ({"unit": "conversation"} if i else {})

    def adapt(self, pipeline, by_task, task):
        self.adapted_on.append((task, [s.conv_id for s in by_task[task]]))
        return {}


def test_an_adapting_protocol_scores_every_task_and_counts_tasks_support_and_units():
    silent = make_sample("cold", [], [], "i like it")  # recommends nothing: no rec task, still a conv task
    samples = [silent, *SAMPLES, make_sample("cold", [], [2], "i like it")]
    protocol = _PerConversation()
    results = evaluate(with_samples(samples), "test", protocols=[protocol])
    assert [(r["conv_id"], r["target"], r["adapted"]) for r in results.rankings["per-conversation"]] == [
        ("cold", "a", False), ("warm", "b", False), ("warm", "c", False), ("cold", "c", False)]
    # the first task has a reply but nothing to rank; the third has a support, on which adapt() moved nothing
    assert results.adaptation["per-conversation"] == {
        "rec": {"tasks": 3, "adapted": 0, "support": 2, "query": 4, "units": {"conversation": 3}},
        "conv": {"tasks": 4, "adapted": 0, "support": 1, "query": 4, "units": {"task": 1, "conversation": 3}}}
    assert protocol.adapted_on == [("conv", ["warm"]), ("rec", ["warm", "warm"])]
    assert set(results.timings) == {"conv/per-conversation", "rec/per-conversation"}  # no shared conv pass
    assert results.sample_counts["per-conversation"] == {"conv": 4, "gen": 4, "rec": 4}


def test_without_a_generator_an_adapting_protocol_gives_no_reply_to_its_support():
    protocol = _PerConversation()
    evaluate(with_samples(list(SAMPLES) + [make_sample("cold", [], [2], "i like it")],
                          FakeModel(generator=False)), "test", protocols=[protocol])
    assert protocol.adapted_on == [("rec", ["cold"])]


# ------------------------------------------------------------------ smaller contracts
class _NoAdaptsAttribute:
    """A duck-typed third-party protocol that does not declare `adapts`: it scores plainly."""

    id = "plain"

    def rec_samples(self, samples):
        return [sample.for_item(item) for sample in samples for item in sample.target_items]

    def candidate_mask(self, batch, n_items):
        return None


def test_a_protocol_without_an_adapts_attribute_is_a_plain_one():
    model = FakeModel()
    results = evaluate(FakePipeline(model, ALL_METRICS), "test", protocols=[_NoAdaptsAttribute()])
    assert "conv" in results.timings and results.sample_counts["plain"] == {"rec": 3, "conv": 2, "gen": 2}
    assert all("adapted" not in record for record in results.rankings["plain"])


def test_a_rec_only_evaluation_does_not_need_replies():
    mute = [make_sample("cold", [], [0], "")]
    results = evaluate(with_samples(mute), "test", tasks=("rec",))
    assert results.sample_counts["crslab-v1"] == {"rec": 1}


def test_a_bad_metric_setting_names_the_metrics_position():
    pipeline = FakePipeline(FakeModel(), [{"type": "f1"}, {"type": "recall", "ks": [0]}])
    with pytest.raises(ConfigError) as err:
        evaluate(pipeline, "test")
    assert err.value.path == "evaluation.metrics.1.ks"


def test_a_progress_bar_passes_every_item_through():
    from crs.evaluation.evaluator import _bar

    items = [1, 2, 3]
    assert _bar(items, False, "rec") is items
    assert list(_bar(items, True, "rec")) == items


def test_a_reply_naming_the_first_item_lists_it(monkeypatch):
    import test_evaluator

    from crs.data.vocab import Vocabulary

    vocab = Vocabulary(["i", "like", "it", "@a", "@c", "movie"])
    monkeypatch.setattr(test_evaluator, "VOCAB", vocab)
    monkeypatch.setitem(test_evaluator.REPLIES, "cold", "i like @a and @c")
    pipeline = with_samples([make_sample("cold", [], [0], "i like it")], protocols=[{"type": "crslab"}])
    pipeline.vocab = vocab
    results = evaluate(pipeline, "test")
    assert results.generations[0]["items_in_reply"] == ["a", "c"]


@pytest.mark.parametrize("text", [False, True], ids=["token-generator", "text-generator"])
def test_replies_to_an_adapted_users_queries_are_written_with_the_fast_weights(text):
    from adapt_toys import make_model, make_pipeline, user_samples

    model, deps = make_model(text=text)
    with torch.no_grad():  # the toy generator repeats its top token: keep it off EOS, which every reply ends with
        model.slots["generator"].logits[deps.vocab.eos] = -100.0
    pipeline = make_pipeline(model, deps, user_samples(deps.vocab))
    adapt = {"type": "user_adapt", "rec_adapt": {"steps": 1, "lr": 20.0}, "conv_adapt": {"steps": 1, "lr": 20.0}}
    still = {"type": "user_adapt", "rec_adapt": {"steps": 0}, "conv_adapt": {"steps": 0}}

    def replies(node):
        protocol = pipeline.build("evaluation_protocol", node, "evaluation.protocols.0")
        results = evaluate(pipeline, "test", protocols=[protocol])  # no plain protocol: replies come from here
        return {(r["conv_id"], r["turn"]): r for r in results.generations}

    adapted_users = {"3", "20", "41", "100", "7", "8", "9"}  # users 1 and 2 (tests/test_user_adapt.py)
    for metrics in (None, [{"type": "f1"}]):  # with a perplexity pass, and without one to share its scores
        if metrics:
            pipeline.spec.evaluation.metrics = metrics
        adapted, plain = replies(adapt), replies(still)
        assert adapted.keys() == plain.keys() and adapted
        for field in ("generated", "recommended"):  # the reply, and the items the adapted recommender ranks top
            changed = {conv for (conv, turn), r in adapted.items() if r[field] != plain[(conv, turn)][field]}
            assert changed and changed <= adapted_users, field


def test_a_stand_in_pipeline_without_settings_skips_the_protocol_checks():
    stand_in = SimpleNamespace(samples={"test": SAMPLES}, model=FakeModel(), task_samples=lambda split, task: SAMPLES)
    check_evaluable(stand_in, "test")


class _ThreeRoles:
    id, adapts, roles = "three-roles", False, ("seeker", "recommender", "narrator")


class _NoRoles:
    id, adapts = "no-roles", False


def test_the_roles_check_lists_every_role_the_samples_have_and_skips_protocols_without_roles():
    pipeline = _spec_pipeline(roles=("seeker", "recommender"), protocols=[{"type": "no_roles"}, {"type": "three"}])
    pipeline.build = lambda kind, node, path: _NoRoles() if node["type"] == "no_roles" else _ThreeRoles()
    with pytest.raises(ConfigError) as err:
        check_evaluable(pipeline, "test")
    assert str(err.value).startswith(
        "config key 'evaluation.protocols.1': protocol 'three-roles' scores seeker and recommender and narrator "
        "turns, but samples.roles makes samples of seeker and recommender turns only\n"
        "  fix: set samples.roles: [seeker, recommender, narrator]")


def test_protocols_are_built_at_their_position_in_the_config():
    pipeline = FakePipeline(FakeModel(), ALL_METRICS)
    built, build = [], pipeline.build
    pipeline.build = lambda kind, node, path: built.append((kind, path)) or build(kind, node, path)
    evaluate(pipeline, "test")
    assert [path for kind, path in built if kind == "evaluation_protocol"] == [
        "evaluation.protocols.0", "evaluation.protocols.1", "evaluation.protocols.2"]


def test_a_withheld_perplexity_carries_the_generators_unit():
    model = _SlotModel()
    model.nll_unit = "subtoken"
    pipeline = FakePipeline(model, ALL_METRICS, protocols=[{"type": "crslab"}])
    pipeline.spec.stages = [SimpleNamespace(epochs=1, train=["recommender"])]
    results = evaluate(pipeline, "test")
    assert list(results.withheld["crslab-v1"]) == ["gen.ppl/subtoken"]
    assert "gen.ppl/subtoken" in results["crslab-v1"] and "gen.ppl" not in results["crslab-v1"]
