"""The core pieces MESE needs: task ``dialogue`` and the ``rer`` / ``dist strip_punctuation`` metrics."""
from __future__ import annotations

import pytest

from crs.data.samples import Sample
from crs.evaluation.evaluator import evaluate, spread
from crs.interfaces import BuildDeps
from crs.pipeline.builder import dialogue_samples
from crs.plugins.metrics.conversation import Dist, RecommendationRate


def _turn(index: int, role: str, items=()) -> dict:
    return {"index": index, "role": role, "text": f"turn {index}", "items": list(items), "unplaced_items": []}


def _conversation(conv: str, n_turns: int, window: int) -> list:
    """Samples of one conversation alternating seeker/recommender turns, contexts cut to `window` turns (0: all)."""
    turns = [_turn(i, "seeker" if i % 2 == 0 else "recommender", [i]) for i in range(n_turns)]
    return [Sample(conv_id=conv, turn_index=t, context_turns=turns[max(0, t - window) if window else 0:t],
                   response_turn=turns[t],
                   target_items=[t]) for t in range(1, n_turns, 2)]


def test_dialogue_task_is_one_sample_per_conversation_carrying_every_turn_before_its_last_reply():
    samples = _conversation("a", 6, window=1) + _conversation("b", 4, window=0)  # "a": contexts of one turn only
    out = dialogue_samples(samples)
    assert [s.conv_id for s in out] == ["a", "b"]
    a, b = out
    assert a.turn_index == 5 and a.response_turn["index"] == 5 and a.target_items == [5]
    assert [t["index"] for t in a.context_turns] == [0, 1, 2, 3, 4]  # gathered across the samples' windows
    assert [t["role"] for t in a.context_turns] == ["seeker", "recommender"] * 2 + ["seeker"]
    assert [t["index"] for t in b.context_turns] == [0, 1, 2]
    assert samples[-1].context_turns[0]["index"] == 0  # the input samples are left as they were


def _rer(hyps, refs, **config):
    metric = RecommendationRate(RecommendationRate.Config(**config), BuildDeps(path="evaluation.metrics.0"))
    metric.update([h.split() for h in hyps], [r.split() for r in refs])
    return metric.compute()


def test_rer_counts_replies_naming_a_target_item():
    hyps = ["try @1 it is fun", "try @9 or @1", "hello there", "watch @2"]
    refs = ["you will like @1", "@1 is great", "@5 maybe", "bye"]
    out = _rer(hyps, refs)
    # 1: hit; 2: its first item @9 misses (official: only the first counts); 3: no item; 4: reference has none
    assert out["gen.rer"] == pytest.approx(1 / 4)
    assert out["gen.rer/rec_turns"] == pytest.approx(1 / 3)
    assert _rer(hyps, refs, first_only=False)["gen.rer"] == pytest.approx(2 / 4)


def test_dist_can_strip_punctuation_and_says_so_in_its_keys():
    hyps = [["hi", "!", "hi", "."], ["hi", "there", "!"]]
    plain = Dist(Dist.Config(ns=[1]), BuildDeps(path="m"))
    plain.update(hyps, hyps)
    stripped = Dist(Dist.Config(ns=[1], strip_punctuation=True), BuildDeps(path="m"))
    stripped.update(hyps, hyps)
    assert plain.compute()["gen.dist-1/sentences"] == 2.0  # hi ! . there -> 4 distinct / 2 sentences
    out = stripped.compute()
    assert set(out) == {"gen.dist-1/sentences/nopunct", "gen.dist-1/ngrams/nopunct"}
    assert out["gen.dist-1/sentences/nopunct"] == 1.0  # hi there -> 2 / 2
    assert out["gen.dist-1/ngrams/nopunct"] == pytest.approx(2 / 4)  # 4 words left


def test_spread_keeps_evenly_spaced_samples_in_order():
    assert spread(list(range(10)), 4) == [0, 2, 5, 7]
    assert spread(list(range(3)), 0) == [0, 1, 2] and spread(list(range(3)), 5) == [0, 1, 2]


def test_max_rec_samples_caps_the_scored_recommendation_samples():
    from test_evaluator import FakeModel, FakePipeline  # the evaluator tests' fake pipeline (3 crslab samples)

    pipeline = FakePipeline(FakeModel(), [{"type": "recall", "ks": [1]}], protocols=[{"type": "crslab"}])
    full = evaluate(pipeline, "test", tasks=("rec",))
    pipeline.spec.evaluation.max_rec_samples = 2
    capped = evaluate(pipeline, "test", tasks=("rec",))
    assert full.sample_counts["crslab-v1"]["rec"] == 3 and capped.sample_counts["crslab-v1"]["rec"] == 2
    assert full["crslab-v1"]["rec.recall@1"] == pytest.approx(2 / 3)
    assert capped["crslab-v1"]["rec.recall@1"] == 1.0  # samples 0 and 1 (both hit) of the three
    assert [r["turn"] for r in capped.rankings["crslab-v1"]] == [1, 1]
