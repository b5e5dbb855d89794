"""Non-finite numbers in a stage (`grad_clip: .nan`, `lr: .inf`, ...) are config errors naming the key,
caught for every stage before the first one trains."""
from __future__ import annotations

import math

import pytest
from test_ties import TEST, UNIFORM_TRAIN, write_corpus

from crs.cli import main
from crs.config.spec import OptimizerSpec, ParamGroupSpec, ScheduleSpec, StageSpec
from crs.errors import ConfigError
from crs.training.optim import check_number
from crs.training.stage import check_stage_numbers

NAN, INF = math.nan, math.inf


@pytest.mark.parametrize("stage, key", [
    (StageSpec(name="s", grad_clip=NAN), "stages.2.grad_clip"),
    (StageSpec(name="s", grad_clip=INF), "stages.2.grad_clip"),
    (StageSpec(name="s", grad_clip=-1.0), "stages.2.grad_clip"),
    (StageSpec(name="s", optimizer=OptimizerSpec(lr=NAN)), "stages.2.optimizer.lr"),
    (StageSpec(name="s", optimizer=OptimizerSpec(lr=INF)), "stages.2.optimizer.lr"),
    (StageSpec(name="s", optimizer=OptimizerSpec(weight_decay=NAN)), "stages.2.optimizer.weight_decay"),
    (StageSpec(name="s", optimizer=OptimizerSpec(momentum=NAN)), "stages.2.optimizer.momentum"),
    (StageSpec(name="s", optimizer=OptimizerSpec(eps=INF)), "stages.2.optimizer.eps"),
    (StageSpec(name="s", optimizer=OptimizerSpec(groups=[ParamGroupSpec(params=["x.*"], lr=NAN)])),
     "stages.2.optimizer.groups.0.lr"),
    (StageSpec(name="s", optimizer=OptimizerSpec(groups=[ParamGroupSpec(params=["x.*"], weight_decay=-INF)])),
     "stages.2.optimizer.groups.0.weight_decay"),
    (StageSpec(name="s", schedule=ScheduleSpec(warmup_epochs=NAN)), "stages.2.schedule.warmup_epochs"),
    (StageSpec(name="s", objectives={"rec": NAN}), "stages.2.objectives.rec"),
])
def test_non_finite_or_out_of_range_numbers_name_their_key(stage, key):
    with pytest.raises(ConfigError, match=rf"config key '{key}': .*got") as err:
        check_stage_numbers(stage, 2)
    assert "fix:" in str(err.value) or "finite" in str(err.value)


def test_ordinary_numbers_pass():
    check_stage_numbers(StageSpec(name="s", grad_clip=1.0, optimizer=OptimizerSpec(lr=1e-4, weight_decay=0.01),
                                  schedule=ScheduleSpec(warmup_epochs=0.5), objectives={"rec": -0.5}), 0)
    assert check_number(0, "k") == 0.0 and check_number(3, "k", strict=True) == 3.0
    for bad in (True, "1.0", None):
        with pytest.raises(ConfigError):
            check_number(bad, "k")


def test_crs_run_refuses_a_nan_grad_clip_in_a_later_stage_before_training(tmp_path, capsys):
    overrides = write_corpus(tmp_path / "data", UNIFORM_TRAIN, TEST)
    data = [o for o in overrides if o.startswith(("data=", "samples."))]
    code = main(["run", "--no-progress", "--run-dir", str(tmp_path / "run"), "preset=baseline", *data,
                 "model.recommender={type: text_cnn, embedding_dim: 8, filters: 4}",
                 "model.generator={type: transformer, dim: 8, layers: 1, heads: 2, ffn_dim: 16}",
                 "stages.0.epochs=1", "stages.1.grad_clip=.nan"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: config key 'stages.1.grad_clip': must be a finite number >= 0, got nan")
    assert "Traceback" not in err
    assert not (tmp_path / "run" / "checkpoint.pt").exists()  # stage 0 did not train first
