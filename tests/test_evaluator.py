"""evaluate / format_table / write_report against a tiny fake pipeline with hand-computed results."""
from __future__ import annotations

import importlib
import json
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from crs.config.spec import EvaluationSpec
from crs.data.samples import Sample
from crs.data.vocab import Vocabulary
from crs.errors import ConfigError
from crs.evaluation import evaluate, format_table, write_report
from crs.interfaces import BuildDeps, ItemIndex
from crs.plugins.metrics import METRICS, PROTOCOLS

VOCAB = Vocabulary(["i", "like", "it", "@0", "movie"])
# per conversation: item scores, per-token NLL of the reference, and the reply the fake model generates
SCORES = {"cold": [3.0, 2.0, 1.0, 0.0], "warm": [0.0, 5.0, 1.0, 4.0]}
TOKEN_NLL = {"cold": 1.0, "warm": 2.0}
REPLIES = {"cold": "i like it", "warm": "@0"}


def make_sample(conv, context_items, targets, response):
    tokens = [VOCAB.bos, *VOCAB.encode(response), VOCAB.eos]
    return Sample(conv_id=conv, turn_index=1, user_index=0, context_text=["hello", f"{conv} context"],
                  context_tokens=[5], context_entities=[], context_words=[], context_items=context_items,
                  target_items=targets, response_tokens=tokens, response_text=response)


SAMPLES = [make_sample("cold", [], [0], "i like it"),  # 4 target tokens (3 words + EOS)
           make_sample("warm", [1], [1, 2], "@0 movie")]  # 3 target tokens


class FakeModel(nn.Module):
    """Scores, NLL and replies looked up by conversation id; records the mode it was called in."""

    def __init__(self, recommender=True, generator=True):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.has_recommender, self.has_generator = recommender, generator
        self.calls: list[tuple[tuple[str, ...], bool]] = []

    def compute(self, batch, wanted):
        self.calls.append((tuple(wanted), self.training))
        convs = [s.conv_id for s in batch["batch.samples"]]
        state = dict(batch)
        if "scores" in wanted:
            state["scores"] = torch.tensor([SCORES[c] for c in convs])
        if "nll_sum" in wanted:
            counts = [len(s.response_tokens) - 1 for s in batch["batch.samples"]]
            state["nll_sum"] = torch.tensor(sum(TOKEN_NLL[c] * n for c, n in zip(convs, counts)))
            state["nll_count"] = torch.tensor(float(sum(counts)))
        return state

    def generate(self, batch, max_len):
        self.calls.append((("generate",), self.training))
        rows = [[*VOCAB.encode(REPLIES[s.conv_id]), VOCAB.eos][:max_len] for s in batch["batch.samples"]]
        width = max(len(r) for r in rows)
        return torch.tensor([r + [VOCAB.pad] * (width - len(r)) for r in rows])


def pad(rows):
    width = max(1, max(len(r) for r in rows))
    return (torch.tensor([r + [0] * (width - len(r)) for r in rows]),
            torch.tensor([[True] * len(r) + [False] * (width - len(r)) for r in rows]))


class FakePipeline:
    """The subset of crs.pipeline.Pipeline that evaluate() uses."""

    def __init__(self, model, metrics=None, protocols=None):
        evaluation = EvaluationSpec(batch_size=1, max_gen_tokens=10,
                                    protocols=protocols or [{"type": "crslab"}, {"type": "fresh"},
                                                            {"type": "cold_start"}])
        if metrics is not None:
            evaluation.metrics = metrics
        self.spec = SimpleNamespace(evaluation=evaluation)
        self.model, self.vocab = model, VOCAB
        self.items = ItemIndex(ids=["a", "b", "c", "d"], names=["A", "B", "C", "D"],
                               entity_nodes=torch.arange(4), train_counts=torch.zeros(4))
        self.samples = {"test": SAMPLES}

    def build(self, kind, node, path):
        refs = METRICS if kind == "metric" else PROTOCOLS
        module, name = refs[node["type"]].split(":")
        cls = getattr(importlib.import_module(module), name)
        options = {k: v for k, v in node.items() if k != "type"}
        return cls(cls.Config(**options), BuildDeps(path=path))

    def task_samples(self, split, task):
        assert task == "conv"
        return [s for s in self.samples[split] if len(s.response_tokens) > 2]

    def batches(self, samples, batch_size, *, shuffle, seed, group_by_length=False):
        assert not shuffle
        for start in range(0, len(samples), batch_size):
            chunk = samples[start:start + batch_size]
            items, items_mask = pad([s.context_items for s in chunk])
            response, response_mask = pad([s.response_tokens for s in chunk])
            yield {"batch.samples": chunk, "batch.target_item": torch.tensor([s.target_item for s in chunk]),
                   "batch.context_items": items, "batch.context_items_mask": items_mask,
                   "batch.response_tokens": response, "batch.response_tokens_mask": response_mask,
                   "batch.context_text": [s.context_text for s in chunk]}


ALL_METRICS = [{"type": "recall", "ks": [1, 2, 50]}, {"type": "mrr", "ks": [10]}, {"type": "dist", "ns": [1]},
               {"type": "bleu", "ns": [1]}, {"type": "f1"}, {"type": "ppl"}, {"type": "item_ratio"}]


def test_evaluate_per_protocol_rec_metrics_and_shared_conv_metrics():
    model = FakeModel()
    results = evaluate(FakePipeline(model, ALL_METRICS), "test")
    assert list(results) == ["crslab-v1", "fresh-v1", "cold-start-v1"]
    crslab, fresh, cold = results.values()
    # crslab: cold/0 rank 1, warm/1 rank 1, warm/2 rank 3 (items 1 and 3 score higher)
    assert crslab["rec.recall@1"] == pytest.approx(2 / 3)
    assert crslab["rec.recall@2"] == pytest.approx(2 / 3)
    assert crslab["rec.mrr@10"] == pytest.approx((1 + 1 + 1 / 3) / 3)
    # fresh: warm/1 dropped (mentioned); item 1 masked so warm/2 rises to rank 2
    assert fresh["rec.recall@1"] == pytest.approx(1 / 2)
    assert fresh["rec.recall@2"] == pytest.approx(1.0)
    assert cold["rec.recall@1"] == 1.0 and cold["rec.recall@50"] == 1.0
    assert results.sample_counts == {"crslab-v1": {"rec": 3, "conv": 2, "gen": 2},
                                     "fresh-v1": {"rec": 2, "conv": 2, "gen": 2},
                                     "cold-start-v1": {"rec": 1, "conv": 2, "gen": 2}}
    for values in results.values():  # conversation metrics copied into every protocol
        assert values["gen.ppl"] == pytest.approx(math.exp((4 * 1.0 + 3 * 2.0) / 7))
        # "i like it" == reference; "@0" vs "@0 movie": P = 1, R = 1/2
        assert values["gen.f1"] == pytest.approx((1 + 2 / 3) / 2)
        assert values["gen.item_ratio"] == pytest.approx(0.5)
        assert values["gen.dist-1/sentences"] == pytest.approx(4 / 2)
        assert values["gen.dist-1/ngrams"] == pytest.approx(4 / 4)
    assert [k for k in crslab if k.startswith("gen.")] == [  # configured order
        "gen.dist-1/sentences", "gen.dist-1/ngrams", "gen.bleu-1", "gen.f1", "gen.ppl", "gen.item_ratio"]
    assert results.examples[0] == {"context": "hello | cold context", "reference": "i like it",
                                   "hypothesis": "i like it"}
    # the per-sample records behind the averages, with item ids, in sample order
    assert results.rankings["crslab-v1"] == [
        {"conv_id": "cold", "turn": 1, "user": 0, "target": "a", "rank": 1.0, "ties": 0, "top": ["a", "b", "c", "d"]},
        {"conv_id": "warm", "turn": 1, "user": 0, "target": "b", "rank": 1.0, "ties": 0, "top": ["b", "d", "c", "a"]},
        {"conv_id": "warm", "turn": 1, "user": 0, "target": "c", "rank": 3.0, "ties": 0, "top": ["b", "d", "c", "a"]}]
    # fresh masks the mentioned item b: it is neither ranked nor listed
    assert results.rankings["fresh-v1"][1] == {"conv_id": "warm", "turn": 1, "user": 0, "target": "c", "rank": 2.0,
                                               "ties": 0, "top": ["d", "c", "a"]}
    # one record per generated reply, with the recommender's top items (unmasked) and the items it names
    assert results.generations == [
        {"conv_id": "cold", "turn": 1, "context": ["hello", "cold context"], "reference": "i like it",
         "generated": "i like it", "recommended": ["a", "b", "c", "d"], "items_in_reply": []},
        {"conv_id": "warm", "turn": 1, "context": ["hello", "warm context"], "reference": "@0 movie",
         "generated": "@0", "recommended": ["b", "d", "c", "a"], "items_in_reply": []}]  # no item has id "0"


def test_evaluate_runs_in_eval_mode_and_restores_training_mode():
    model = FakeModel()
    model.train()
    evaluate(FakePipeline(model), "test")
    assert model.calls and all(not training for _, training in model.calls)
    assert model.training
    model.eval()
    evaluate(FakePipeline(model), "test")
    assert not model.training


def test_max_samples_caps_generation_not_perplexity():
    model = FakeModel()
    results = evaluate(FakePipeline(model, ALL_METRICS), "test", max_samples=1)
    values = results["crslab-v1"]
    assert values["gen.f1"] == pytest.approx(1.0)  # only the first (perfect) reply generated
    assert values["gen.ppl"] == pytest.approx(math.exp(10 / 7))  # still both samples
    assert results.sample_counts["crslab-v1"]["gen"] == 1
    assert sum(1 for wanted, _ in model.calls if wanted == ("generate",)) == 1


def test_generation_records_take_their_scores_from_the_perplexity_pass():
    # the records' recommended items come from the forward that computes perplexity, not from one more forward
    model = FakeModel()
    with_ppl = evaluate(FakePipeline(model, ALL_METRICS, protocols=[{"type": "crslab"}]), "test")
    assert [wanted for wanted, _ in model.calls][:4] == [("nll_sum", "nll_count", "scores"), ("generate",)] * 2
    model = FakeModel()
    without_ppl = evaluate(FakePipeline(model, [{"type": "f1"}], protocols=[{"type": "crslab"}]), "test")
    assert [wanted for wanted, _ in model.calls][:4] == [("generate",), ("scores",)] * 2  # no pass to share
    assert len(with_ppl.generations) == 2 and without_ppl.generations == with_ppl.generations


def test_generate_false_and_missing_slots():
    results = evaluate(FakePipeline(FakeModel(), ALL_METRICS), "test", generate=False)
    assert "gen.ppl" in results["crslab-v1"] and "gen.f1" not in results["crslab-v1"]
    rec_only = evaluate(FakePipeline(FakeModel(generator=False), ALL_METRICS), "test")
    assert all(not key.startswith("gen.") for key in rec_only["fresh-v1"])
    conv_model = FakeModel(recommender=False)
    conv_only = evaluate(FakePipeline(conv_model, ALL_METRICS), "test")
    assert all(key.startswith("gen.") for key in conv_only["crslab-v1"])
    assert all("scores" not in wanted for wanted, _ in conv_model.calls)


def test_explicit_protocol_objects_and_duplicate_ids():
    pipeline = FakePipeline(FakeModel(), ALL_METRICS)
    fresh = pipeline.build("evaluation_protocol", {"type": "fresh"}, "p")
    assert list(evaluate(pipeline, "test", protocols=[fresh])) == ["fresh-v1"]
    with pytest.raises(ConfigError, match="fresh-v1"):
        evaluate(pipeline, "test", protocols=[fresh, fresh])


def test_format_table_and_write_report(tmp_path):
    results = evaluate(FakePipeline(FakeModel(), ALL_METRICS), "test")
    results["cold-start-v1"]["rec.recall@1"] = float("nan")  # as when a protocol scores no sample
    table = format_table(results)
    lines = table.splitlines()
    assert lines[0].split() == ["metric", "crslab-v1", "fresh-v1", "cold-start-v1"]
    row = next(line for line in lines if line.startswith("rec.recall@1 "))
    assert row.split()[1:] == ["0.6667", "0.5000", "nan"]
    path = write_report(tmp_path / "run", results, resolved_config={"name": "fake"},
                        extra={"timings_s": {"train": 1.5}})
    report = json.loads(path.read_text())
    assert path.name == "report.json"
    assert report["protocols"] == ["crslab-v1", "fresh-v1", "cold-start-v1"]
    assert report["metrics"]["fresh-v1"]["rec.recall@1"] == pytest.approx(0.5)
    assert report["metrics"]["cold-start-v1"]["rec.recall@1"] is None  # strict JSON: NaN -> null
    assert {"gen.dist-n/sentences", "gen.dist-n/ngrams"} <= set(report["definitions"])
    assert report["config"] == {"name": "fake"}
    assert report["extra"]["timings_s"] == {"train": 1.5}
    assert report["extra"]["examples"][1]["hypothesis"] == "@0"
    assert report["sample_counts"]["crslab-v1"]["rec"] == 3
    assert [p.name for p in path.parent.iterdir()] == ["report.json"]  # no temp file left behind


def test_format_table_empty():
    assert "no evaluation results" in format_table({})


def test_protocol_without_samples_reports_nan_and_zero_count():
    pipeline = FakePipeline(FakeModel(generator=False))
    pipeline.samples = {"test": [SAMPLES[1]]}  # only a turn with an item already mentioned
    results = evaluate(pipeline, "test")
    assert results.sample_counts["cold-start-v1"] == {"rec": 0}
    assert all(math.isnan(v) for v in results["cold-start-v1"].values())
    assert results["crslab-v1"]["rec.recall@1"] == pytest.approx(1 / 2)
