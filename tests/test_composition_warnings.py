"""Composition warnings: a `type:` change that drops keys of the old node, a stage training slots none of its
objectives uses; objective errors suggest names as the stage writes them."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from torch import nn

from crs.config.loader import load_config
from crs.errors import ConfigError
from crs.interfaces import Port
from crs.pipeline.wiring import SlotWiring, Wiring
from crs.shared import SharedRef
from crs.training.run_log import console
from crs.training.stage import plan_stage, resolve_objectives, untouched_slots

ROOT = Path(__file__).resolve().parents[1]
SMALL_DEMO = ["data.n_items=30", "data.n_people=12", "data.n_users=6", "data.n_train=24", "data.n_valid=6",
              "data.n_test=6"]


def _warnings(caplog, logger: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger and r.levelno == logging.WARNING]


# ------------------------------------------------------------------ type changes
def test_a_file_changing_a_type_names_the_dropped_keys(tmp_path, caplog, capsys):
    run = tmp_path / "swap.yaml"
    run.write_text("preset: kgsf\ndata: demo\nmodel:\n  recommender: {type: popularity}\n"
                   "  mim: {type: mim, word_dim: 128}\n")  # same type: merged, nothing dropped
    with caplog.at_level(logging.WARNING, logger="crs.config"), console():
        spec, _ = load_config(str(run))
    assert spec.model["recommender"] == {"type": "popularity"}
    message = (f"model.recommender changes type from 'dot_product' to 'popularity' ({run}), so these keys of the "
               "old node are dropped: dim; set them again under the new node if it should keep them")
    assert _warnings(caplog, "crs.config") == [message]
    assert capsys.readouterr().err == f"warning: {message}\n"  # one prefix on the console: the console handler's


def test_overrides_changing_or_replacing_a_node_name_the_dropped_keys(caplog):
    with caplog.at_level(logging.WARNING, logger="crs.config"):
        spec, _ = load_config(str(ROOT / "examples/kgsf.yaml"),
                              ["model.user.type=self_attention_pool", "model.mim=mim",
                               "model.generator={type: transformer, layers: 1}"])
    assert spec.model["mim"] == {"type": "mim"}
    messages = _warnings(caplog, "crs.config")
    assert len(messages) == 3
    assert messages[0].startswith("model.user changes type from 'gate' to 'self_attention_pool' "
                                  "(override 'model.user.type=self_attention_pool'), so these keys of the old "
                                  "node are dropped: dim;")
    assert messages[1].startswith("model.mim is replaced by a bare 'mim' node (override 'model.mim=mim'), "
                                  "so these keys of the old node are dropped: word_dim, entity_dim;")
    assert "model.generator changes type from 'kgsf_decoder' to 'transformer'" in messages[2]
    assert "dropped: dim, heads, ffn_dim, word_dim, entity_dim;" in messages[2]  # `layers` is set again


def test_the_shipped_examples_load_without_warnings(caplog):
    with caplog.at_level(logging.WARNING):
        for example in ("kgsf", "baseline", "popularity"):
            load_config(str(ROOT / f"examples/{example}.yaml"))
    assert caplog.records == []


# ------------------------------------------------------------------ objectives
def test_objective_errors_suggest_names_as_written():
    provided = {"loss.rec", "loss.mim"}
    with pytest.raises(ConfigError) as err:
        resolve_objectives({"recc": 1.0}, provided, "stages.1")
    message = str(err.value)
    assert err.value.path == "stages.1.objectives.recc"
    assert "unknown objective (no slot outputs it) 'recc'. Did you mean 'rec'?" in message
    assert "use one of: mim, rec" in message and "loss." not in message
    with pytest.raises(ConfigError, match=r"'loss\.recc'\. Did you mean 'loss\.rec'\?"):
        resolve_objectives({"loss.recc": 1.0}, provided, "stages.1")
    with pytest.raises(ConfigError, match="this model provides: mim, rec$"):
        resolve_objectives({}, provided, "stages.1")


# ------------------------------------------------------------------ untrained slots
class _Slot(nn.Module):
    def __init__(self, shared: nn.Module | None = None):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        if shared is not None:
            self.tokens = SharedRef("tokens", shared)


class _Model(nn.Module):
    """What untouched_slots reads of a PipelineModel: slots, shared modules and the wiring."""

    def __init__(self):
        super().__init__()
        tokens = nn.Embedding(3, 2)
        self.shared = nn.ModuleDict({"tokens": tokens})
        self.slots = nn.ModuleDict({"encoder": _Slot(), "rec": _Slot(), "gen": _Slot(tokens), "aux": _Slot()})
        self.wiring = Wiring({
            "encoder": SlotWiring("encoder", {}, {"nodes": Port("nodes")}),
            "rec": SlotWiring("rec", {"nodes": Port("nodes")}, {"loss": Port("loss.rec")}),
            "gen": SlotWiring("gen", {}, {"loss": Port("loss.gen")}),
            "aux": SlotWiring("aux", {"nodes": Port("nodes")}, {"loss": Port("loss.aux")}),
        }, {"nodes": "encoder", "loss.rec": "rec", "loss.gen": "gen", "loss.aux": "aux"})


def test_untouched_slots_follow_the_objectives_plan():
    model = _Model()
    train = ["encoder", "rec", "gen", "aux", "shared.tokens"]
    assert untouched_slots(model, train, {"loss.rec": 1.0}) == ["gen", "aux", "shared.tokens"]
    assert untouched_slots(model, train, {"loss.gen": 1.0}) == ["encoder", "rec", "aux"]  # gen holds the tokens
    assert untouched_slots(model, ["*"], {"loss.rec": 1.0}) == []
    assert untouched_slots(model, ["encoder", "aux"], {"loss.aux": 1.0}) == []


def test_a_stage_training_slots_no_objective_uses_warns(registry, tmp_path, caplog, capsys):
    from crs.pipeline import build_pipeline

    spec, resolved = load_config(None, ["preset=kgsf", "data=demo", *SMALL_DEMO, f"run_dir={tmp_path}"],
                                 registry=registry)
    pipeline = build_pipeline(spec, registry, resolved)
    with caplog.at_level(logging.WARNING, logger="crs.training"):
        for index, stage in enumerate(spec.stages):  # the shipped KGSF stages train only what they use
            plan_stage(pipeline, stage, index)
        assert _warnings(caplog, "crs.training") == []
        pretrain = spec.stages[0]
        pretrain.train = [*pretrain.train, "user", "recommender"]
        capsys.readouterr()
        with console():
            plan_stage(pipeline, pretrain, 0)
    message = ("stages.0.train: stage 'pretrain' trains user, recommender, but none of its objectives (mim) uses "
               "their outputs, so the stage does not change them; drop them from `train:` or add an objective that "
               "needs them")
    assert _warnings(caplog, "crs.training") == [message]
    assert capsys.readouterr().err == f"warning: {message}\n"  # one prefix on the console: the console handler's
