"""Figures that look real but are not: the perplexity of a generator no stage trains is withheld
(null in report.json, with the reason), never printed as a number."""
from __future__ import annotations

import json

from test_ties import TEST, UNIFORM_TRAIN, conversation, write_corpus

from crs.runner import run

SMALL_BASELINE = ["preset=baseline", "model.recommender={type: text_cnn, embedding_dim: 16, filters: 8}",
                  "model.generator={type: transformer, dim: 16, layers: 1, heads: 2, ffn_dim: 32}",
                  "stages.0.epochs=1", "~stages.0.early_stopping", "stages.1.epochs=1", "~stages.1.early_stopping",
                  "evaluation.generate=false", "evaluation.metrics=[{type: recall}, {type: ppl}]"]


def _run(tmp_path, *extra: str) -> dict:
    overrides = write_corpus(tmp_path / "data", UNIFORM_TRAIN + [conversation("t9", ["up", "alien"])], TEST)
    data = [o for o in overrides if o.startswith(("data=", "samples."))]  # the corpus, not the popularity model
    assert run(None, [*SMALL_BASELINE, *data, *extra], run_dir=str(tmp_path / "run"), progress=False) == 0
    return json.loads((tmp_path / "run" / "report.json").read_text())


def test_perplexity_of_a_generator_no_stage_trains_is_withheld(tmp_path, capsys):
    report = _run(tmp_path, "~stages.1")  # the conv stage removed: the generator keeps its initial weights
    metrics = report["metrics"]["crslab-v1"]
    assert metrics["gen.ppl"] is None and metrics["rec.recall@10"] is not None
    reason = report["withheld"]["crslab-v1"]["gen.ppl"]
    assert "no stage trains the generator slot 'generator'" in reason
    out = capsys.readouterr().out
    table = out[out.index("metric"):]
    assert [line.split()[-1] for line in table.splitlines() if line.startswith("gen.ppl")] == ["n/a"]
    assert "n/a gen.ppl: no stage trains the generator slot 'generator'" in out


def test_perplexity_of_a_trained_generator_is_reported(tmp_path):
    report = _run(tmp_path)
    assert report["metrics"]["crslab-v1"]["gen.ppl"] > 1.0 and "withheld" not in report
