"""`crs.training` behaviour the mutation run (TESTING.md) found untested: early stopping's exact refusals,
ties and fresh state, the CPU copy of the best state, and the NumPy part of a restored RNG state."""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from crs.errors import ConfigError, DataError, UnknownComponentError
from crs.training.early_stopping import EarlyStopper, check_metric_list, cpu_state_dict
from crs.training.seeding import capture_rng_state, restore_rng_state, seed_everything


def stopper(metric="rec.recall@10", mode="max", patience=2):
    return EarlyStopper(SimpleNamespace(metric=metric, mode=mode, patience=patience), "stages.1.early_stopping")


# ------------------------------------------------------------------ early stopping
def test_an_empty_or_repeated_metric_list_names_the_key_and_the_fix():
    with pytest.raises(ConfigError) as err:
        check_metric_list([], "stages.0.early_stopping")
    assert str(err.value) == (
        "config key 'stages.0.early_stopping.metric': the list of metrics is empty\n"
        "  fix: name a metric (metric: loss) or several to sum (metric: [rec.recall@10, rec.mrr@10])")
    with pytest.raises(ConfigError) as err:
        check_metric_list(["loss", "rec.mrr@10", "loss"], "stages.0.early_stopping")
    assert str(err.value) == ("config key 'stages.0.early_stopping.metric.2': 'loss' is listed twice\n"
                              "  fix: list each metric once (the values are summed)")
    check_metric_list("loss", "stages.0.early_stopping")
    check_metric_list(["loss", "rec.mrr@10"], "stages.0.early_stopping")


def test_a_bad_mode_or_patience_names_the_key():
    with pytest.raises(UnknownComponentError) as err:
        stopper(mode="maximum")
    assert str(err.value) == ("config key 'stages.1.early_stopping.mode': unknown early-stopping mode 'maximum'. "
                              "Did you mean 'max'?\n  fix: use one of: max, min")
    with pytest.raises(ConfigError) as err:
        stopper(patience=-1)
    assert str(err.value) == ("config key 'stages.1.early_stopping.patience': must be >= 0 (0 = never stop, keep "
                              "the best), got -1")
    assert stopper(mode="MIN").mode == "min"


def test_a_fresh_stopper_has_no_best_and_has_not_stopped():
    fresh = stopper()
    assert fresh.state_dict() == {"best": None, "best_epoch": None, "bad_epochs": 0, "stopped": False,
                                  "best_file": "best.pt"}
    assert fresh.legacy_best_state is None


def test_missing_validation_metrics_are_named_with_what_there_is():
    with pytest.raises(ConfigError) as err:
        stopper(metric=["rec.recall@10", "rec.mrr@10", "loss"]).value_of({"loss": 1.0, "gen.bleu-1": 0.2})
    assert str(err.value) == ("config key 'stages.1.early_stopping.metric': validation produced no the metrics "
                              "'rec.recall@10', 'rec.mrr@10'\n  fix: use one of: gen.bleu-1, loss")
    with pytest.raises(ConfigError) as err:
        stopper().value_of({})
    assert str(err.value) == ("config key 'stages.1.early_stopping.metric': validation produced no "
                              "'rec.recall@10'\n  fix: use one of: (none)")


@pytest.mark.parametrize("mode,values,best_epoch", [("max", [0.5, 0.5, 0.4], 1), ("min", [2.0, 2.0, 3.0], 1),
                                                    ("min", [2.0, 1.5, float("nan")], 2)])
def test_a_tie_or_nan_is_no_improvement(mode, values, best_epoch):
    tracker = stopper(mode=mode, patience=2)
    for epoch, value in enumerate(values, start=1):
        tracker.update({"rec.recall@10": value}, epoch)
    assert tracker.best_epoch == best_epoch
    assert tracker.stopped is (best_epoch == 1)
    assert tracker.bad_epochs == len(values) - best_epoch


def test_the_best_state_is_a_cpu_copy_that_later_training_does_not_change():
    layer = torch.nn.Linear(2, 2)
    saved = cpu_state_dict(layer)
    with torch.no_grad():
        layer.weight.add_(1.0)
    assert not torch.equal(saved["weight"], layer.weight)
    assert all(value.device.type == "cpu" and not value.requires_grad for value in saved.values())


# ------------------------------------------------------------------ RNG state
def test_a_restored_rng_state_gives_the_same_numpy_draws_as_the_saved_one():
    np.random.seed(3)
    state = capture_rng_state()
    expected = np.random.random(4)
    np.random.seed(99)
    restore_rng_state(state)
    assert np.array_equal(np.random.random(4), expected)
    assert np.random.get_state()[1].dtype == np.uint32


@pytest.mark.parametrize("seed", [7, 2**32 + 7, "7"])  # NumPy takes the seed modulo 2**32; a string is cast
def test_seeding_sets_pythons_numpys_and_torchs_streams(seed):
    import random
    seed_everything(seed)
    drawn = random.random(), np.random.random(3), torch.rand(3)
    random.seed(int(seed))
    np.random.seed(7)
    torch.manual_seed(int(seed))
    assert drawn[0] == random.random()
    assert np.array_equal(drawn[1], np.random.random(3))
    assert torch.equal(drawn[2], torch.rand(3))


# ------------------------------------------------------------------ MAML building blocks (crs.training.meta)
def _named():
    return {"rec.weight": torch.zeros(2, requires_grad=True), "rec.bias": torch.zeros(1, requires_grad=True),
            "generator.embed": torch.zeros(3, requires_grad=True), "generator.out": torch.zeros(3, requires_grad=True),
            "graph.nodes": torch.zeros(4, requires_grad=True)}


def test_a_glob_that_matches_nothing_names_its_key_and_the_first_four_names():
    from crs.training.meta import select_params

    with pytest.raises(ConfigError) as err:
        select_params(_named(), ["rec.*"], ["recommender.*"], path="stages.1.strategy")
    assert str(err.value) == (
        "config key 'stages.1.strategy.outer_only': the pattern 'recommender.*' matches no parameter\n"
        "  fix: patterns match <slot>.<param> names, e.g. rec.weight, rec.bias, generator.embed, generator.out")
    with pytest.raises(ConfigError) as err:
        select_params({}, ["*"])
    assert str(err.value) == ("config key 'inner': the pattern '*' matches no parameter\n"
                              "  fix: patterns match <slot>.<param> names, e.g. (the model has no parameters)")


def test_an_empty_selection_is_refused_and_pairs_are_accepted_as_well_as_a_mapping():
    from crs.training.meta import select_params

    with pytest.raises(ConfigError) as err:
        select_params(_named(), ["rec.*"], ["rec.*"], path="stages.1.strategy")
    assert str(err.value) == ("config key 'stages.1.strategy.inner': no parameter is left to adapt once outer_only "
                              "is removed\n  fix: widen `inner` or narrow `outer_only`")
    named = _named()
    chosen = select_params(iter(named.items()), ["generator.*", "rec.bias"], ["generator.out"])
    assert list(chosen) == ["rec.bias", "generator.embed"] and chosen["rec.bias"] is named["rec.bias"]


def test_an_unknown_parameter_name_names_the_path_and_real_names():
    from crs.training.meta import to_model_names

    model = torch.nn.Module()
    model.slots = torch.nn.ModuleDict({"rec": torch.nn.Linear(2, 1), "graph": torch.nn.Linear(1, 1)})
    with pytest.raises(ConfigError) as err:
        to_model_names(model, {"rec.weigth": torch.zeros(1, 2)}, "stages.0.strategy")
    assert str(err.value) == ("config key 'stages.0.strategy': the model has no parameter 'rec.weigth'. Did you "
                              "mean 'rec.weight'?\n  fix: names are <slot>.<param>, e.g. rec.weight, rec.bias, "
                              "graph.weight")


def test_an_inner_update_without_autograd_says_how_to_enable_it():
    from crs.training.meta import inner_update

    params = {"w": torch.ones(2, requires_grad=True)}
    with torch.no_grad(), pytest.raises(ConfigError) as err:
        inner_update(params["w"].sum(), params, lr=0.1, first_order=True)
    assert str(err.value) == ("inner_update needs autograd, but gradients are disabled here\n"
                              "  fix: wrap the adaptation in `with torch.enable_grad():`")
    frozen = {"w": torch.ones(2)}
    assert inner_update(torch.ones(()), frozen, lr=0.1, first_order=False)["w"] is frozen["w"]
    # a loss without a graph leaves trainable parameters as they are too
    assert inner_update(torch.ones(()), params, lr=0.1, first_order=False)["w"] is params["w"]


def test_adapt_defaults_to_one_second_order_step():
    from crs.training.meta import adapt

    p = torch.tensor([2.0], requires_grad=True)
    fast, losses = adapt(lambda params: (params["p"] ** 3).sum(), {"p": p}, lr=0.1)
    assert len(losses) == 1
    torch.testing.assert_close(fast["p"], torch.tensor([2.0 - 0.1 * 12.0]))
    # second order: d fast / d p = 1 - lr * 6p, not 1
    (slope,) = torch.autograd.grad(fast["p"].sum(), [p])
    torch.testing.assert_close(slope, torch.tensor([1.0 - 0.1 * 12.0]))


def test_a_chunked_task_side_is_the_sample_weighted_mean_of_its_chunks():
    from crs.training.meta import task_loss

    class Loop:
        def loss(self, batch, params=None):
            value = batch["value"] * params["scale"]
            return value, {"loss": float(value), "loss.rec": float(batch["value"])}

    chunks = [{"batch.samples": [0], "value": torch.tensor(2.0)},
              {"batch.samples": [0, 1, 2], "value": torch.tensor(6.0)}]
    total, parts = task_loss(Loop(), chunks, {"scale": torch.tensor(1.0)})
    torch.testing.assert_close(total, torch.tensor(5.0))  # (1 * 2 + 3 * 6) / 4
    assert parts == {"loss": 5.0, "loss.rec": 5.0}
    one, _ = task_loss(Loop(), chunks[0], {"scale": torch.tensor(3.0)})  # a single batch, as it is
    torch.testing.assert_close(one, torch.tensor(6.0))
    with pytest.raises(ValueError, match="^task_loss needs at least one batch$"):
        task_loss(Loop(), [], {"scale": torch.tensor(1.0)})



class _Offset(torch.nn.Module):
    """loss.a = mean over the batch of (w + v - y)^2; a batch marked `skip` has a loss no parameter reaches."""

    def __init__(self):
        super().__init__()
        self.w, self.v, self.u = (torch.nn.Parameter(torch.zeros(())) for _ in range(3))

    def forward(self, batch, wanted):
        if batch.get("skip"):
            return {"loss.a": torch.tensor(0.0)}
        return {"loss.a": ((self.w + self.v - batch["y"]) ** 2).mean()}


def _ys(*values):
    return {"y": torch.tensor(values), "batch.samples": list(values)}


def test_inference_time_adaptation_takes_steps_on_the_sample_weighted_mean_loss():
    from crs.training.meta import adapt_on_batches

    model = _Offset()
    batches = [{"skip": True, "batch.samples": [0]}, _ys(1.0, 1.0), _ys(4.0)]  # 4 samples, one without a gradient
    fast = adapt_on_batches(model, {"w": model.w, "u": model.u}, lambda: iter(batches), {"loss.a": 1.0},
                            steps=1, lr=0.25)
    # gradient sum 2(0-1)*2 + 2(0-4) = -12 over 4 samples: w' = 0 - 0.25/4 * -12; u gets no gradient: left out
    assert list(fast) == ["w"] and float(fast["w"]) == pytest.approx(0.75) and not fast["w"].requires_grad
    two = adapt_on_batches(model, {"w": model.w}, lambda: iter(batches), {"loss.a": 1.0}, steps=2, lr=0.25)
    assert float(two["w"]) == pytest.approx(0.75 + 0.25 / 4 * (2 * (1 - 0.75) * 2 + 2 * (4 - 0.75)))
    fixed = adapt_on_batches(model, {"w": model.w}, lambda: iter(batches), {"loss.a": 1.0}, steps=1, lr=0.25,
                             fixed={"v": torch.tensor(3.0), "w": torch.tensor(9.0)})  # w is adapted, so not fixed
    assert float(fixed["w"]) == pytest.approx(-0.25 / 4 * (2 * (3 - 1) * 2 + 2 * (3 - 4)))
    assert adapt_on_batches(model, {"w": model.w}, lambda: iter([]), {"loss.a": 1.0}, steps=1, lr=0.25) == {}
    assert all(param.requires_grad for param in model.parameters()) and float(model.w.detach()) == 0.0


def test_an_adaptation_objective_the_model_does_not_output_names_the_protocols_key():
    from crs.training.meta import adapt_on_batches

    model = _Offset()
    with pytest.raises(ConfigError) as err:
        adapt_on_batches(model, {"w": model.w}, lambda: iter([_ys(1.0)]), {"loss.b": 1.0}, steps=1, lr=0.1,
                         path="evaluation.protocols.0.rec_adapt")
    assert err.value.path == "evaluation.protocols.0.rec_adapt.objectives"


def test_a_maml_step_takes_the_inner_steps_it_is_given_and_zero_steps_log_no_support_loss():
    from crs.training.meta import maml_step

    support, query = {"target": torch.tensor(1.0)}, {"target": torch.tensor(3.0)}
    w = torch.zeros((), requires_grad=True)
    maml_step(_QuadraticLoop(), [(support, query)], {"w": w}, lr=0.25, steps=2, support_in_outer=False)
    # two steps: w' = 0.5, then 0.75; d query / d w = 2 (w'' - 3) (1 - 2 lr)^2 = -1.125
    torch.testing.assert_close(w.grad, torch.tensor(-1.125))
    parts = maml_step(_QuadraticLoop(), [(support, query)], {"w": torch.zeros((), requires_grad=True)}, lr=0.25,
                      steps=0)
    assert math.isnan(parts["support"]) and parts["loss"] == 9.0  # no step: the query loss at w, nothing added

# ------------------------------------------------------------------ resuming (crs.training.checkpoint)
def test_config_differences_list_every_changed_key_in_order():
    from crs.training.checkpoint import config_differences

    old = {"b": {"lr": 0.1, "gone": 1}, "a": [1, {"x": 2}], 3: "int key", "same": [1, 2]}
    new = {"b": {"lr": 0.2, "new": [1]}, "a": [1, {"x": 3}], 3: "int key", "same": [1, 2, 3]}
    assert config_differences(old, new) == [
        "a.1.x: 2 -> 3",  # the int key 3 sorts among the strings, and is unchanged
        "b.gone: 1 -> (removed)", "b.lr: 0.1 -> 0.2", "b.new: (absent) -> [1]", "same: [1, 2] -> [1, 2, 3]"]
    assert config_differences([1, 2], [1, 3]) == ["1: 2 -> 3"]
    assert config_differences({"a": 1}, [1]) == ['(root): {"a": 1} -> [1]']
    assert config_differences([{"a": 1}], {"a": 1}) == ['(root): [{"a": 1}] -> {"a": 1}']


def test_a_resume_with_another_config_shows_the_first_eight_differences_and_names_the_first_key(tmp_path):
    from crs.training.checkpoint import check_same_config

    old = {f"k{i}": i for i in range(10)}
    new = {f"k{i}": i + 1 for i in range(10)}
    with pytest.raises(ConfigError) as err:
        check_same_config(old, new, tmp_path)
    shown = "\n    ".join(f"k{i}: {i} -> {i + 1}" for i in range(8))
    assert str(err.value) == (
        f"config key 'k0': cannot resume: the checkpoint in {tmp_path} was written with a different config "
        f"(checkpoint -> now):\n    {shown}\n    ... and 2 more\n"
        "  fix: resume with the original config, or train this config in a new run_dir (--run-dir runs/NEW), or "
        "start over in this run_dir with --overwrite instead of --resume (its run is replaced)")
    for count, more in ((8, ""), (9, "\n    ... and 1 more")):  # all eight shown; the ninth only counted
        some = {f"k{i}": i for i in range(count)}
        with pytest.raises(ConfigError) as err:
            check_same_config(some, {k: v + 1 for k, v in some.items()}, tmp_path)
        assert err.value.problem.endswith("k7: 7 -> 8" + more)
    with pytest.raises(ConfigError) as err:
        check_same_config([1], {"a": 1}, tmp_path)
    assert err.value.path == ""
    check_same_config(old, dict(old), tmp_path)


def test_a_missing_or_mismatched_best_file_is_named_with_the_stage_and_epoch(tmp_path):
    from crs.training.checkpoint import load_best, save_best

    fix = ("the run folder was changed outside this run; start the run over (--overwrite, without --resume) or in a "
           "new run_dir (--run-dir DIR)")
    with pytest.raises(DataError) as err:
        load_best(tmp_path, stage="rec", stage_index=1, epoch=3)
    assert str(err.value) == (f"{tmp_path / 'best.pt'}: missing: the checkpoint says it holds the best model of "
                              f"stage 'rec' (epoch 3)\n  fix: {fix}")
    save_best(tmp_path, stage="rec", stage_index=1, epoch=2, metric="rec.recall@10", value=0.5,
              model={"w": torch.ones(1)})
    state = torch.load(tmp_path / "best.pt", weights_only=True)
    assert (state["stage"], state["stage_index"], state["epoch"], state["metric"], state["value"]) == \
        ("rec", 1, 2, "rec.recall@10", 0.5)
    with pytest.raises(DataError) as err:
        load_best(tmp_path, stage="rec", stage_index=1, epoch=3)
    assert str(err.value) == (f"{tmp_path / 'best.pt'}: holds (stage index, epoch) (1, 2), but the checkpoint "
                              f"expects the best model of stage 'rec' (1, 3)\n  fix: {fix}")
    assert torch.equal(load_best(tmp_path, stage="rec", stage_index=1, epoch=2)["w"], torch.ones(1))


def test_resume_checks_the_best_file_of_an_unfinished_stage_by_its_name(tmp_path):
    from crs.errors import DataError
    from crs.training.checkpoint import check_resumable, save_checkpoint

    config = {"stages": [{"name": "pretrain"}, {"name": "rec"}]}
    stopper = {"best_file": "best.pt", "best_epoch": 2}
    save_checkpoint(tmp_path, {"config": config, "stage_index": 1, "stage_done": False, "early_stopping": stopper})
    with pytest.raises(DataError) as err:
        check_resumable(tmp_path, config)
    assert "best model of stage 'rec' (epoch 2)" in str(err.value)
    unnamed = {"stages": [{}, {"epochs": 3}]}
    save_checkpoint(tmp_path, {"config": unnamed, "stage_index": 1, "stage_done": False, "early_stopping": stopper})
    with pytest.raises(DataError) as err:
        check_resumable(tmp_path, unnamed)
    assert "best model of stage '1' (epoch 2)" in str(err.value)
    with pytest.raises(ConfigError) as err:  # another config: named with the run folder
        check_resumable(tmp_path, {"stages": [{"name": "pretrain"}, {"name": "conv"}]})
    assert f"the checkpoint in {tmp_path} was written with a different config" in str(err.value)
    # a finished stage no longer needs its best file
    save_checkpoint(tmp_path, {"config": config, "stage_index": 1, "stage_done": True, "early_stopping": stopper})
    assert check_resumable(tmp_path, config)["stage_done"] is True


# ------------------------------------------------------------------ console and metrics log (crs.training.run_log)
def test_info_goes_to_stdout_and_warnings_to_stderr_with_their_level(capsys):
    import logging

    from crs.training.run_log import console

    logger = logging.getLogger("crs.test_console_streams")
    with console(debug=False):
        logger.info("rec 1/3  loss 2.00")
        logger.warning("the corpus has no reviews")
        logger.error("cannot read it")
    out, err = capsys.readouterr()
    assert out == "rec 1/3  loss 2.00\n"
    assert err == "warning: the corpus has no reviews\nerror: cannot read it\n"


def test_epoch_lines_show_report_metrics_with_four_decimals_and_other_values_as_they_are():
    from crs.training.run_log import epoch_line

    line = epoch_line("rec", 2, 5, {"loss": 2.5, "loss.rec": 2.5}, {"rec.recall@10": torch.tensor(0.25)},
                      "rec.recall@10", True, 1.26)
    assert line == "rec 2/5  loss.rec 2.50  valid rec.recall@10 0.2500*  1.3s"
    flagged = epoch_line("rec", 2, 5, {"loss.rec": 2.5}, {"rec.flag": True, "rec.nan": float("nan")}, "rec.flag",
                         False, 1.0)
    assert flagged.endswith("valid rec.flag True  1.0s")
    assert "valid rec.nan nan" in epoch_line("rec", 1, 1, {}, {"rec.nan": float("nan")}, "rec.nan", False, 0.0)


def test_truncating_the_metrics_log_keeps_the_first_bytes_and_never_grows_it(tmp_path):
    from crs.training.run_log import MetricsLog

    log = MetricsLog(tmp_path, fresh=True, tensorboard=False)
    log.write("rec", 1, 10, "train", {"loss": 1.0})
    size = log.size()
    log.write("rec", 2, 20, "train", {"loss": 0.5})
    log.truncate(size)
    assert log.size() == size and (tmp_path / "metrics.jsonl").read_text().count("\n") == 1
    log.truncate(size + 100)  # a longer size leaves the file as it is
    assert log.size() == size
    MetricsLog(tmp_path / "empty", fresh=False, tensorboard=False).truncate(0)  # no file: nothing to do
    assert not (tmp_path / "empty" / "metrics.jsonl").exists()



def test_without_crs_debug_set_the_console_shows_info_and_one_set_up_replaces_the_last(monkeypatch):
    import logging

    from crs.training.run_log import _ConsoleHandler, setup_console

    monkeypatch.delenv("CRS_DEBUG", raising=False)
    logger = logging.getLogger("crs")
    before = list(logger.handlers), logger.level
    try:
        setup_console()
        assert logger.level == logging.INFO
        setup_console()
        assert sum(isinstance(h, _ConsoleHandler) for h in logger.handlers) == 1
    finally:
        logger.handlers[:] = before[0]
        logger.setLevel(before[1])


def test_a_console_that_cannot_be_written_reports_the_record_and_does_not_end_the_run(monkeypatch, capsys):
    import logging

    from crs.training.run_log import console

    class Closed:
        def write(self, text):
            raise ValueError("I/O operation on closed file")

        def flush(self):
            pass

    with console(debug=False):
        monkeypatch.setattr("sys.stdout", Closed())
        logging.getLogger("crs.test_closed").info("rec 1/3")  # must not raise
        monkeypatch.undo()
    assert "Message: 'rec 1/3'" in capsys.readouterr().err  # logging's report names the lost record


@pytest.mark.parametrize("train, shown", [
    ({"loss": 3.0, "loss.a": 1.0, "loss.b": 2.0}, "loss 3.00  loss.a 1.00  loss.b 2.00"),  # total first, then parts
    ({"loss": 2.0, "loss.rec": 2.0}, "loss.rec 2.00"),  # one part: the total would repeat it
    ({"loss": 2.0}, "loss 2.00"),
    ({"loss.a": 1.0, "grad_norm": 0.5}, "loss.a 1.00  grad_norm 0.500"),
])
def test_an_epoch_line_shows_the_total_loss_only_beside_several_parts(train, shown):
    from crs.training.run_log import epoch_line

    assert epoch_line("rec", 1, 2, train, None, None, False, 0.0) == f"rec 1/2  {shown}  0.0s"


@pytest.mark.parametrize("valid, metric, shown", [
    ({"loss": 0.5, "rec.recall@10": 0.25}, None, "valid loss 0.500"),  # no metric: the valid loss, 3 digits
    ({"loss": 0.5, "rec.recall@10": 0.25}, "rec.recall@50", "valid loss 0.500"),  # a metric not there: the loss
    ({"loss.rec": 0.5, "rec.recall@10": 0.25}, "loss.rec", "valid loss.rec 0.500"),  # a loss part: loss digits
    ({"rec.recall@10": 0.25}, "rec.recall@10", "valid rec.recall@10 0.2500"),
])
def test_an_epoch_line_shows_the_stopping_metric_or_else_the_valid_loss(valid, metric, shown):
    from crs.training.run_log import epoch_line

    assert epoch_line("conv", 2, 3, {}, valid, metric, False, 1.0) == f"conv 2/3  {shown}  1.0s"
    assert epoch_line("conv", 2, 3, {}, {"rec.recall@10": 0.25}, None, True, 1.0) == "conv 2/3  1.0s"


@pytest.mark.parametrize("value, text", [
    (0.5, "0.500"), (5, "5.00"), (99.99, "100"), (100, "100.0"), (100.5, "100.5"), (1234.56, "1234.6"),
    (-2.5, "-2.50"), (torch.tensor(2.5), "2.50"), (float("nan"), "nan"), (float("inf"), "inf"), (True, "True"),
])
def test_losses_show_three_significant_digits_below_100_and_one_decimal_from_there(value, text):
    from crs.training.run_log import _loss_text

    assert _loss_text(value) == text


class _Board:
    def __init__(self):
        self.scalars, self.closed = [], 0

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, value, step))

    def close(self):
        self.closed += 1


def test_the_metrics_log_writes_utf8_lines_and_numbers_to_tensorboard_by_scope(tmp_path, monkeypatch):
    from crs.training import run_log

    board = _Board()
    monkeypatch.setattr(run_log, "_tensorboard_writer", lambda folder: board)
    folder = tmp_path / "runs" / "new"  # parents are made
    log = run_log.MetricsLog(folder, fresh=True)  # TensorBoard on by default
    log.write("rec", 1, 4, "train", {"loss": torch.tensor(1.5), "note": "ok", "flag": True})
    log.write("rec", 1, 4, "valid", {"rec.rückruf": 0.25, "bad": float("nan")}, scope="epoch")
    lines = (folder / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    assert lines[1] == ('{"stage": "rec", "epoch": 1, "step": 4, "split": "valid", "scope": "epoch", '
                        '"rec.rückruf": 0.25, "bad": "nan"}')  # non-ASCII kept as it is, NaN as text
    assert board.scalars == [("rec/train/loss", 1.5, 4), ("rec/valid_epoch/rec.rückruf", 0.25, 4)]
    assert log.size() == len("\n".join(lines).encode("utf-8")) + 1
    log.close()
    log.close()
    assert board.closed == 1
    again = run_log.MetricsLog(folder, fresh=False, tensorboard=False)  # a resumed run keeps the lines
    assert again.size() == log.size() and again._writer is None
    run_log.MetricsLog(folder, fresh=True, tensorboard=False)
    assert (folder / "metrics.jsonl").read_text() == ""
    assert run_log.MetricsLog(tmp_path / "x", fresh=False, tensorboard=False).size() == 0  # no file yet

# ------------------------------------------------------------------ which slots training reaches (crs.training.stage)
class _Slots(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.slots = torch.nn.ModuleDict({"rec": torch.nn.Linear(1, 1), "generator": torch.nn.Linear(1, 1),
                                          "pool": torch.nn.Identity()})

    def slot_parameters(self, names):
        if any(name not in self.slots for name in names):
            raise ConfigError("stages.0.train", "unknown slot")
        return [p for name in names for p in self.slots[name].parameters()]


@pytest.mark.parametrize("stages,slot,trained", [
    ([SimpleNamespace(epochs=0, train=["generator"]), SimpleNamespace(epochs=2, train=["generator"])],
     "generator", True),  # a stage of 0 epochs is skipped, the next one trains it
    ([SimpleNamespace(epochs=2, train=["nope"]), SimpleNamespace(epochs=2, train=["generator"])],
     "generator", True),  # an unknown slot name does not end the search
    ([SimpleNamespace(epochs=2, train=["rec"])], "generator", False),
    ([SimpleNamespace(train=["generator"])], "generator", False),  # no epochs given: it trains nothing
    ([], "pool", True),  # nothing to learn
])
def test_trained_by_stages(stages, slot, trained):
    from crs.training.stage import trained_by_stages

    assert trained_by_stages(_Slots(), stages, slot) is trained


def test_a_pretrained_component_counts_as_trained():
    from crs.training.stage import trained_by_stages

    model = _Slots()
    model.slots["generator"].pretrained = True
    assert trained_by_stages(model, [], "generator") is True


# ------------------------------------------------------------------ collectives, with a simulated second rank
@pytest.fixture
def two_ranks(monkeypatch):
    """This process as rank 0 of 2; the other rank's contributions are added by the patched collectives."""
    from crs.training import distributed

    calls = []

    def use(backend="gloo", other=None):
        monkeypatch.setattr(distributed, "_current", distributed.Distributed(rank=0, world_size=2, local_rank=1,
                                                                             backend=backend))

        def all_reduce(tensor):
            calls.append(("all_reduce", tensor.dtype, tensor.device.type))
            tensor += other

        monkeypatch.setattr(torch.distributed, "all_reduce", all_reduce)
        monkeypatch.setattr(torch.distributed, "barrier", lambda **kwargs: calls.append(("barrier", kwargs)))
        return calls

    return use


def test_logged_means_are_weighted_by_each_ranks_samples(two_ranks):
    from crs.training.distributed import all_reduce_weighted_means

    # the other rank saw 3 samples with loss 4.0 and loss.rec 1.0; this one 1 sample with 2.0 and 3.0
    calls = two_ranks(other=torch.tensor([4.0 * 3, 1.0 * 3, 3.0], dtype=torch.float64))
    means = all_reduce_weighted_means({"loss": 2.0, "loss.rec": 3.0}, weight=1)
    assert means == {"loss": pytest.approx((2.0 + 12.0) / 4), "loss.rec": pytest.approx((3.0 + 3.0) / 4)}
    assert calls == [("all_reduce", torch.float64, "cpu")]


def test_a_step_where_no_rank_had_samples_logs_nan(two_ranks):
    import math

    from crs.training.distributed import all_reduce_weighted_means

    two_ranks(other=torch.zeros(2, dtype=torch.float64))
    assert math.isnan(all_reduce_weighted_means({"loss": 0.0}, weight=0)["loss"])


def test_one_process_passes_values_through_and_reports_nothing():
    from crs.training.distributed import all_reduce_weighted_means, barrier, report_entry

    values = {"loss": 1.5}
    assert all_reduce_weighted_means(values, weight=3) == values
    assert report_entry() == {}
    barrier()  # no process group: returns at once


@pytest.mark.parametrize("backend,kwargs", [("gloo", {}), ("nccl", {"device_ids": [1]})])
def test_the_report_names_the_world_and_nccl_barriers_name_the_gpu(two_ranks, backend, kwargs):
    from crs.training.distributed import barrier, report_entry

    calls = two_ranks(backend=backend, other=torch.zeros(1))
    assert report_entry() == {"distributed": {"world_size": 2, "backend": backend}}
    barrier()
    assert calls == [("barrier", kwargs)]



def test_under_nccl_the_means_travel_on_the_gpu(two_ranks, monkeypatch):
    from crs.training.distributed import all_reduce_weighted_means

    made, tensor = [], torch.tensor

    def on_cpu(data, dtype=None, device=None):  # record where the packet was meant to go; build it on the CPU
        made.append(device)
        return tensor(data, dtype=dtype)

    two_ranks(backend="nccl", other=torch.tensor([6.0, 2.0], dtype=torch.float64))
    monkeypatch.setattr(torch, "tensor", on_cpu)
    assert all_reduce_weighted_means({"loss": 1.0}, weight=2) == {"loss": 2.0}
    assert made == [torch.device("cuda")]


def test_gathered_objects_come_in_rank_order_and_replicas_that_differ_are_named(two_ranks, monkeypatch):
    from crs.training.distributed import check_replicas_agree, gather_objects

    two_ranks(other=torch.zeros(1))
    others = {"value": None}

    sent = []

    def all_gather_object(gathered, value):
        assert gathered == [None, None]
        sent.append(value)
        gathered[:] = [value, others["value"] if others["value"] is not None else value]

    monkeypatch.setattr(torch.distributed, "all_gather_object", all_gather_object)
    others["value"] = "theirs"
    assert gather_objects("mine") == ["mine", "theirs"]
    model = torch.nn.Linear(2, 1)
    others["value"] = None  # the other rank holds the same state
    check_replicas_agree(model, "rec epoch 2")
    from crs.training.checksum import state_checksum

    assert sent[-1] == state_checksum(model.state_dict())  # what the ranks compare: the model state's checksum
    others["value"] = "another checksum"
    with pytest.raises(RuntimeError) as err:
        check_replicas_agree(model, "rec epoch 2")
    assert str(err.value) == ("rec epoch 2: the model state of rank(s) [1] differs from rank 0's; the data-parallel "
                              "replicas went out of step (a component that changes parameters outside the optimizer, "
                              "or draws different random numbers into its state?)")


def test_a_strategy_that_cannot_be_sharded_is_refused_under_torchrun_by_name(two_ranks):
    from crs.training.distributed import check_strategy

    two_ranks(other=torch.zeros(1))
    check_strategy(SimpleNamespace(distributed=True), {"type": "plain"}, "stages.0.strategy")
    with pytest.raises(ConfigError, match=r"the '\{'inner_lr': 0.01\}' training strategy"):
        check_strategy(SimpleNamespace(), {"inner_lr": 0.01}, "stages.0.strategy")  # no type: the node as written
    for node in ({"type": "maml", "inner_lr": 0.01}, "maml"):
        with pytest.raises(ConfigError) as err:
            check_strategy(SimpleNamespace(), node, "stages.0.strategy")
        assert str(err.value) == (
            "config key 'stages.0.strategy': the 'maml' training strategy cannot run under torchrun with 2 "
            "processes: it does not train through sharded batches and DistributedDataParallel (maml's per-user "
            "tasks and functional inner loop run outside DDP's gradient hooks)\n  fix: run this config in one "
            "process (`crs run`, without torchrun), or train the stage with the plain strategy")


def test_leaving_a_group_that_was_never_joined_destroys_nothing(two_ranks, monkeypatch):
    from crs.training import distributed

    two_ranks(other=torch.zeros(1))
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.distributed, "destroy_process_group", lambda: pytest.fail("nothing to destroy"))
    distributed.shutdown()
    assert distributed.current() is distributed.SINGLE and distributed.SilentMetricsLog().size() == 0


def test_other_ranks_seeds_are_fixed_functions_of_the_run_seed_and_the_rank():
    from crs.training.distributed import rank_seed
    from crs.training.seeding import derived_seed

    # pinned: a resumed run must draw what the interrupted one drew, in this version and the next
    assert (rank_seed(42, 0), rank_seed(42, 1), rank_seed(42, 2)) == (42, 2443843872, 3098059956)
    assert derived_seed(7, 3) == derived_seed(2**32 + 7, 3) == 3466196061  # parts are taken modulo 2**32


def test_a_joined_gpu_group_uses_nccl_on_the_local_ranks_gpu(a_gpu_machine):
    from crs.training import distributed

    chosen = []
    a_gpu_machine.setattr(distributed, "_current", distributed.SINGLE)
    a_gpu_machine.setattr(torch.distributed, "is_initialized", lambda: False)
    a_gpu_machine.setattr(torch.distributed, "init_process_group", lambda backend, timeout: chosen.append(backend))
    a_gpu_machine.setattr(torch.distributed, "get_rank", lambda: 1)
    a_gpu_machine.setattr(torch.distributed, "get_world_size", lambda: 2)
    a_gpu_machine.setattr(torch.cuda, "set_device", lambda index: chosen.append(index))
    a_gpu_machine.setenv("WORLD_SIZE", "2")
    a_gpu_machine.setenv("LOCAL_RANK", "1")
    assert distributed.init_from_env("cuda").backend == "nccl" and chosen == [1, "nccl"]
    a_gpu_machine.setattr(torch.cuda, "is_available", lambda: False)
    a_gpu_machine.setattr(distributed, "_current", distributed.SINGLE)
    with pytest.raises(ConfigError) as err:  # the one-process device check, with the caller's key
        distributed.init_from_env("cuda", "stages.1.device")
    assert err.value.path == "stages.1.device" and "torch sees none" in str(err.value)


def test_a_cached_gaussian_survives_capture_and_restore():
    np.random.seed(5)
    np.random.standard_normal()  # draws two, returns one: the other is cached (has_gauss = 1)
    state = capture_rng_state()
    assert state["numpy"]["has_gauss"] == 1 and state["numpy"]["keys"].dtype == torch.int64
    expected = np.random.standard_normal(3)
    np.random.seed(6)
    restore_rng_state(state)
    assert np.array_equal(np.random.standard_normal(3), expected)


def test_gpu_rng_states_are_captured_once_cuda_is_in_use_and_restored_on_the_gpus_there_are(monkeypatch):
    restored, states = [], [torch.tensor([1], dtype=torch.uint8), torch.tensor([2], dtype=torch.uint8)]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    assert "cuda" not in capture_rng_state()  # CUDA not started: capturing would start it
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: states)
    state = capture_rng_state()
    assert state["cuda"] is states
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)  # resumed on a machine with one GPU
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda value, device: restored.append((value, device)))
    restore_rng_state(state)
    assert restored == [(states[0], 0)]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    restore_rng_state(state)  # no GPU now: the CPU streams only
    del state["cuda"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    restore_rng_state(state)  # saved without CUDA: nothing to put back
    assert len(restored) == 1

# ------------------------------------------------------------------ trainer helpers, on a stand-in trainer
def test_metric_early_stopping_without_a_protocol_names_the_key_and_the_fix():
    from crs.training.trainer import Trainer

    built = []
    trainer = SimpleNamespace(spec=SimpleNamespace(evaluation=SimpleNamespace(protocols=[])),
                              pipeline=SimpleNamespace(build=lambda *args: built.append(args) or "protocol"))
    with pytest.raises(ConfigError) as err:
        Trainer._valid_protocol(trainer)
    assert str(err.value) == ("config key 'evaluation.protocols': early stopping on a report metric needs an "
                              "evaluation protocol\n  fix: list one under evaluation.protocols, or stop early on "
                              "metric: loss")
    trainer.spec.evaluation.protocols = [{"type": "fresh"}, {"type": "crslab"}]
    assert Trainer._valid_protocol(trainer) == "protocol"
    assert built == [("evaluation_protocol", {"type": "fresh"}, "evaluation.protocols.0")]


def test_each_rank_resumes_its_own_rng_stream_and_extra_ranks_seed_a_fresh_one():
    from crs.training import distributed
    from crs.training.seeding import seed_everything
    from crs.training.trainer import Trainer

    def trainer(rank):
        return SimpleNamespace(_dist=distributed.Distributed(rank=rank, world_size=3), spec=SimpleNamespace(seed=7))

    checkpoint = {"rng": "rank 0 state", "rng_by_rank": ["rank 0 state", "rank 1 state"]}
    assert Trainer._own_rng(trainer(0), checkpoint) == "rank 0 state"
    assert Trainer._own_rng(trainer(1), checkpoint) == "rank 1 state"
    fresh = Trainer._own_rng(trainer(2), checkpoint)  # saved with two processes, resumed with three
    seed_everything(distributed.rank_seed(7, 2))
    expected = torch.rand(3)
    restore_rng_state(fresh)
    assert torch.equal(torch.rand(3), expected)
    assert Trainer._own_rng(trainer(0), {"rng": "one process"}) == "one process"



def test_ranks_other_than_0_run_the_validation_hooks_and_take_rank_0s_figures(monkeypatch):
    from crs.training import distributed
    from crs.training.trainer import Trainer

    events = []

    class Hooked(torch.nn.Module):
        def on_eval_start(self, split, pipeline):
            events.append(("start", split, pipeline, self.training))

        def on_eval_end(self, split, pipeline):
            events.append(("end", split, pipeline, self.training))

    model = Hooked()
    model.slots, model.shared = {"rec": model}, {}
    pipeline = object()
    trainer = SimpleNamespace(_dist=distributed.Distributed(rank=1, world_size=2), model=model, pipeline=pipeline,
                              _validate=lambda *args: pytest.fail("only rank 0 validates"))
    monkeypatch.setattr(distributed, "broadcast_object", lambda value: {"loss": 0.5} if value is None else value)
    assert Trainer._validate_on_main(trainer, None, [], None, None) == {"loss": 0.5}
    assert events == [("start", "valid", pipeline, False), ("end", "valid", pipeline, False)] and model.training


def test_the_best_state_is_written_by_rank_0_under_the_stage_name_and_read_back_by_every_rank(tmp_path):
    from crs.training import distributed
    from crs.training.trainer import Trainer

    model = torch.nn.Linear(2, 1)
    plan = SimpleNamespace(name="rec", index=1)
    stopper = SimpleNamespace(best_epoch=3, metric="rec.recall@10", best=0.25, legacy_best_state=None)

    def trainer(rank):
        return SimpleNamespace(_dist=distributed.Distributed(rank=rank, world_size=1), run_dir=tmp_path, model=model)

    Trainer._save_best(trainer(1), plan, stopper)
    assert not (tmp_path / "best.pt").exists()  # only rank 0 writes
    Trainer._save_best(trainer(0), plan, stopper)
    saved = torch.load(tmp_path / "best.pt", weights_only=True)
    assert (saved["stage"], saved["stage_index"], saved["epoch"], saved["metric"], saved["value"]) == (
        "rec", 1, 3, "rec.recall@10", 0.25)
    expected = {key: value.clone() for key, value in model.state_dict().items()}
    with torch.no_grad():
        model.weight.zero_()
    assert Trainer._restore_best(trainer(0), plan, stopper) is True
    assert all(torch.equal(model.state_dict()[key], value) for key, value in expected.items())
    assert Trainer._restore_best(trainer(0), plan, SimpleNamespace(best_epoch=None)) is False
    with pytest.raises(DataError) as err:
        Trainer._restore_best(trainer(0), plan, SimpleNamespace(best_epoch=4, legacy_best_state=None))
    assert "the checkpoint expects the best model of stage 'rec' (1, 4)" in str(err.value)

START_OVER = ("start the run over with --overwrite (instead of --resume), or train in a new folder (--run-dir DIR); a "
              "copy of the file from before the damage can also be put back")


def test_every_way_a_checkpoint_file_can_be_unusable_is_named_with_the_file_and_the_fix(tmp_path, caplog):
    from crs.errors import DataError
    from crs.training.checkpoint import load_best, load_checkpoint, save_checkpoint, with_checksum

    path = tmp_path / "checkpoint.pt"

    def error() -> str:
        with pytest.raises(DataError) as err:
            load_checkpoint(tmp_path)
        return str(err.value)

    path.write_bytes(b"not a torch file\n")
    text = error()
    assert text.startswith(f"{path}: the checkpoint cannot be read (UnpicklingError: ") and \
        text.endswith(f"\n  fix: {START_OVER}")
    assert "\n" not in text.split(": ", 1)[1].split("\n  fix")[0]  # torch's message on one line
    torch.save([1, 2], path)
    assert error() == f"{path}: not a crs checkpoint: it holds a list, not a dict\n  fix: {START_OVER}"
    torch.save({"format": 9}, path)
    assert error() == (f"{path}: not a crs training checkpoint of format 3 (found 9)\n"
                       "  fix: resume it with the crs version that wrote it, or start a new run_dir")
    torch.save({"format": 3, "stage_index": 0}, path)
    assert error() == (f"{path}: the checkpoint has no checksum, though its format (3) always stores one: the file "
                       f"was edited or damaged after crs wrote it, so it is not used\n  fix: {START_OVER}")
    state = with_checksum({"format": 3, "stage_index": 0})
    torch.save({**state, "stage_index": 1}, path)
    stored, actual = state["checksum"], with_checksum({"format": 3, "stage_index": 1})["checksum"]
    assert error() == (f"{path}: the checkpoint does not match its checksum (stored {stored[:23]}..., content "
                       f"{actual[:23]}...): the file was damaged or changed after crs wrote it, so it is not used\n"
                       f"  fix: {START_OVER}")
    torch.save({"format": 3, "obj": SimpleNamespace(a=1)}, path)  # arbitrary objects are never unpickled
    assert error().startswith(f"{path}: the checkpoint cannot be read (UnpicklingError: ")
    torch.save({"format": 2, "stage_index": 4}, path)  # older formats carry no checksum: used, with a warning
    with caplog.at_level("WARNING", logger="crs.training"):
        assert load_checkpoint(tmp_path) == {"format": 2, "stage_index": 4}
    assert caplog.messages == [f"{path}: written before checkpoints carried checksums (format 2); used unverified"]
    save_checkpoint(tmp_path, {"stage_index": 0})
    (tmp_path / "best.pt").write_bytes(b"junk")
    with pytest.raises(DataError, match="the best model file cannot be read"):
        load_best(tmp_path, stage="rec", stage_index=0, epoch=1)


def test_batch_length_counts_samples_then_rows_then_list_entries():
    from crs.training.stage import batch_length

    assert batch_length({"x": torch.zeros(5, 2), "batch.samples": [1, 2, 3]}) == 3
    assert batch_length({"scalar": torch.tensor(1.0), "x": torch.zeros(4)}) == 4
    assert batch_length({"texts": ["a", "b"]}) == 2
    assert batch_length({"flag": True}) == 1


def test_patience_one_stops_after_one_epoch_without_improvement():
    tracker = stopper(patience=1)
    tracker.update({"rec.recall@10": 0.5}, 1)
    assert not tracker.stopped
    tracker.update({"rec.recall@10": 0.4}, 2)
    assert tracker.stopped
    never = stopper(patience=0)
    for epoch in range(1, 6):
        never.update({"rec.recall@10": 0.1}, epoch)
    assert not never.stopped and never.bad_epochs == 4


def test_joining_torchruns_group_reads_ranks_backend_and_timeout_from_the_environment(monkeypatch):
    from datetime import timedelta

    from crs.training import distributed

    joined = []
    monkeypatch.setattr(distributed, "_current", distributed.SINGLE)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.distributed, "init_process_group", lambda backend, timeout: joined.append(
        (backend, timeout)))
    monkeypatch.setattr(torch.distributed, "get_rank", lambda: 1)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 3)
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.delenv(distributed.TIMEOUT_ENV, raising=False)
    assert distributed.init_from_env("cpu") == distributed.Distributed(rank=1, world_size=3, local_rank=0,
                                                                         backend="gloo")
    assert joined == [("gloo", timedelta(seconds=3 * 3600))]
    assert distributed.current().world_size == 3
    monkeypatch.setenv("LOCAL_RANK", "2")
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "1")
    assert distributed.init_from_env("cpu").local_rank == 2 and joined[-1] == ("gloo", timedelta(seconds=1))
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "0")
    with pytest.raises(ConfigError) as err:
        distributed.init_from_env("cpu")
    assert str(err.value) == ("CRS_DDP_TIMEOUT_S=0: a collective needs a positive timeout\n"
                              "  fix: unset CRS_DDP_TIMEOUT_S (default 10800 s) or give seconds")
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "ten")
    with pytest.raises(ConfigError) as err:
        distributed.init_from_env("cpu")
    assert str(err.value) == ("the environment variable CRS_DDP_TIMEOUT_S='ten' is not a whole number\n"
                              "  fix: start the run with torchrun, which sets it, or unset it")


def test_a_gpu_per_process_is_checked_before_joining(monkeypatch):
    from crs.training import distributed

    monkeypatch.setattr(distributed, "_current", distributed.SINGLE)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError) as err:
        distributed.init_from_env("cuda:1", "stages.0.device")
    assert str(err.value) == ("config key 'stages.0.device': 'cuda:1' puts all 2 processes on one GPU\n"
                              "  fix: use device: cuda: each process takes the GPU of its LOCAL_RANK")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr("crs.training.precision.resolve_device", lambda device, path: None)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ConfigError) as err:
        distributed.init_from_env("cuda")
    assert str(err.value) == ("config key 'device': process LOCAL_RANK 1 needs GPU 1, but this node has 1\n"
                              "  fix: start at most 1 processes per node (--nproc-per-node)")


def test_broadcast_sends_rank_zeros_value(two_ranks, monkeypatch):
    from crs.training.distributed import broadcast_object

    two_ranks(other=torch.zeros(1))
    sent = []

    def broadcast_object_list(box, src):
        sent.append((list(box), src))
        box[0] = "from rank 0"

    monkeypatch.setattr(torch.distributed, "broadcast_object_list", broadcast_object_list)
    assert broadcast_object("mine") == "from rank 0"
    assert sent == [(["mine"], 0)]


def test_crs_debug_turns_on_debug_records_and_a_new_set_up_replaces_the_old_handler(monkeypatch):
    import logging

    from crs.training.run_log import _ConsoleHandler, console

    logger = logging.getLogger("crs")
    for value, level in (("1", logging.DEBUG), ("0", logging.INFO), ("", logging.INFO)):
        monkeypatch.setenv("CRS_DEBUG", value)
        with console():
            assert logger.level == level, value
            assert sum(isinstance(h, _ConsoleHandler) for h in logger.handlers) == 1
    monkeypatch.delenv("CRS_DEBUG")
    with console(debug=True):
        with console(debug=False):
            assert logger.level == logging.INFO
        assert logger.level == logging.DEBUG
    assert not any(isinstance(h, _ConsoleHandler) for h in logger.handlers)


def _terminal(monkeypatch):
    """stderr as a terminal whose output the test can read."""
    import io

    terminal = io.StringIO()
    terminal.isatty = lambda: True
    monkeypatch.setattr("sys.stderr", terminal)
    return terminal


def test_a_progress_bar_draws_only_on_a_terminal(monkeypatch, capsys):
    from crs.training.run_log import progress_bar

    assert list(progress_bar(iter(range(3)), enabled=True, total=3, desc="rec")) == [0, 1, 2]
    assert capsys.readouterr().err == ""  # not a terminal: nothing drawn
    terminal = _terminal(monkeypatch)
    assert list(progress_bar(iter(range(3)), enabled=False, total=3, desc="rec")) == [0, 1, 2]
    assert terminal.getvalue() == ""  # turned off
    assert list(progress_bar(iter(range(3)), enabled=True, total=3, desc="rec")) == [0, 1, 2]
    drawn = terminal.getvalue()
    assert drawn.startswith("\rrec:") and "0/3" in drawn  # the description and the total
    assert drawn.endswith(" \r")  # leave=False: the bar is wiped when done, so log lines stay clean


class _QuadraticLoop:
    """A stand-in EpochLoop: the loss of a batch is (w - target)^2 with the given parameters."""

    def __init__(self):
        self.plan, self.epoch, self.global_step = SimpleNamespace(path="stages.2"), 1, 6
        self.backwards, self.steps, self.logged = [], 0, []

    def loss(self, batch, params=None):
        value = ((params["w"] - batch["target"]) ** 2).sum()
        return value, {"loss": float(value.detach()), "loss.rec": float(value.detach()) / 2}

    def backward(self, total):
        self.backwards.append(float(total.detach()))
        total.backward()

    def end_batch(self):
        self.steps += 1

    def log_step(self, parts):
        self.logged.append(parts)


def test_a_maml_step_is_second_order_one_inner_step_with_the_support_loss_in_the_outer_loss():
    from crs.training.meta import maml_step

    # w = 0, lr = 0.25: support (w - 1)^2 gives w' = 0.5; query (w' - 3)^2 = 6.25
    # d query / d w = 2 (w' - 3) (1 - 2 lr) = -2.5 (second order), d support / d w = -2
    support, query = {"target": torch.tensor(1.0)}, {"target": torch.tensor(3.0)}
    w = torch.zeros((), requires_grad=True)
    loop = _QuadraticLoop()
    parts = maml_step(loop, [(support, query)], {"w": w}, lr=0.25)
    torch.testing.assert_close(w.grad, torch.tensor(-4.5))
    assert parts == {"loss": 7.25, "loss.rec": 3.125, "support": 1.0} and loop.logged == [parts]
    assert loop.backwards == [7.25] and loop.steps == 1
    w.grad = None
    maml_step(_QuadraticLoop(), [(support, query)] * 2, {"w": w}, lr=0.25, support_in_outer=False)
    torch.testing.assert_close(w.grad, torch.tensor(-2.5))  # each task's backward is divided by the task count
    w.grad = None
    maml_step(_QuadraticLoop(), [(support, query)], {"w": w}, lr=0.25, first_order=True, support_in_outer=False)
    torch.testing.assert_close(w.grad, torch.tensor(-5.0))


def test_two_tasks_are_averaged_in_the_logged_parts():
    from crs.training.meta import maml_step

    w = torch.zeros((), requires_grad=True)
    tasks = [({"target": torch.tensor(1.0)}, {"target": torch.tensor(3.0)}),
             ({"target": torch.tensor(0.0)}, {"target": torch.tensor(1.0)})]
    parts = maml_step(_QuadraticLoop(), tasks, {"w": w}, lr=0.25)
    # task 2: support 0, w' = 0, query 1: loss 1
    assert parts == pytest.approx({"loss": (7.25 + 1.0) / 2, "loss.rec": (3.125 + 0.5) / 2, "support": 0.5})


def test_a_non_finite_meta_loss_names_the_inner_lr_and_where_training_was():
    from crs.training.meta import maml_step

    w = torch.zeros((), requires_grad=True)
    bad = [({"target": torch.tensor(1.0)}, {"target": torch.tensor(float("inf"))})]
    with pytest.raises(ConfigError) as err:
        maml_step(_QuadraticLoop(), bad, {"w": w}, lr=0.25)
    assert str(err.value) == ("config key 'stages.2.strategy.inner_lr': the meta-loss became inf at epoch 2, step 7\n"
                              "  fix: lower the inner or outer learning rate, or set grad_clip")
    with pytest.raises(ConfigError) as err:
        maml_step(_QuadraticLoop(), bad, {"w": w}, lr=0.25, path="stages.2.maml")
    assert err.value.path == "stages.2.maml.inner_lr"


# ------------------------------------------------------------------ the epoch's batches (crs.training.loop)
class _Batches:
    """A pipeline stand-in that records how it was asked for batches."""

    fields = {}

    def __init__(self):
        self.calls = []

    def batches(self, samples, size, *, shuffle, seed, group_by_length=False):
        self.calls.append((list(samples), size, shuffle, seed, group_by_length))
        for start in range(0, len(samples), size):
            yield {"batch.samples": samples[start:start + size]}


def _loop(group_by_length=False, dist=None, epoch=0):
    from crs.training import distributed
    from crs.training.loop import EpochLoop

    loop = EpochLoop.__new__(EpochLoop)  # only what batches() reads
    loop.samples, loop.seed, loop.epoch, loop._progress = list(range(5)), 11, epoch, True
    loop.stage = SimpleNamespace(batch_size=2, name="rec", epochs=4, group_by_length=group_by_length)
    loop.pipeline, loop._dist = _Batches(), dist or distributed.SINGLE
    return loop


@pytest.mark.parametrize("group", [False, True])
def test_the_stages_group_by_length_reaches_the_batches(group, monkeypatch):
    bars = []
    monkeypatch.setattr("crs.training.loop.progress_bar", lambda items, **kwargs: bars.append(kwargs) or items)
    loop = _loop(group_by_length=group, epoch=1)
    assert [b["batch.samples"] for b in loop.batches()] == [[0, 1], [2, 3], [4]]
    assert loop.pipeline.calls == [([0, 1, 2, 3, 4], 2, True, 11, group)]
    assert bars == [{"enabled": True, "total": 3, "desc": "rec 2/4"}]  # the stage, its epoch, the batch count


def test_a_salt_or_other_samples_draw_another_reproducible_order_without_a_bar():
    from crs.training.seeding import derived_seed

    loop = _loop()
    list(loop.batches(salt=3))
    list(loop.batches([7, 8, 9], batch_size=3))
    assert loop.pipeline.calls == [([0, 1, 2, 3, 4], 2, True, derived_seed(11, 3), False),
                                   ([7, 8, 9], 3, True, 11, False)]
    assert not hasattr(loop, "_bar")  # only the stage's own pass shows a progress bar


def test_under_torchrun_each_rank_gets_its_shard_of_every_global_batch():
    from crs.training import distributed

    shards = []
    for rank in (0, 1):
        loop = _loop(dist=distributed.Distributed(rank=rank, world_size=2, backend="gloo"))
        shards.append([b["batch.samples"] for b in loop.batches()])
        assert all(call[2] is False and call[3] == 0 for call in loop.pipeline.calls)  # shards come pre-drawn
    # every sample in some shard, and both ranks take the same number of steps (DDP needs them in lockstep)
    assert {x for rank in shards for batch in rank for x in batch} == {0, 1, 2, 3, 4}
    assert len(shards[0]) == len(shards[1]) == 3



def test_under_torchrun_shards_follow_the_one_process_shuffle_and_group_by_length(monkeypatch):
    from crs.training import distributed

    sized = []
    monkeypatch.setattr("crs.training.loop.padded_size", lambda sample, fields: sized.append(fields) or sample)
    for group in (False, True):
        for rank in (0, 1):
            loop = _loop(group_by_length=group, dist=distributed.Distributed(rank=rank, world_size=2,
                                                                             backend="gloo"))
            expected = [shard.samples for shard in distributed.shard_batches(
                list(range(5)), 2, shuffle=True, seed=11, rank=rank, world_size=2,
                size_of=(lambda sample: sample) if group else None)]
            assert [b["batch.samples"] for b in loop.batches()] == expected
    assert sized and all(fields is _Batches.fields for fields in sized)  # only with group_by_length
    rank_0 = _loop(dist=distributed.Distributed(rank=0, world_size=2, backend="gloo"))
    assert [b["batch.samples"] for b in rank_0.batches()] != [[0], [2], [4]]  # shuffled, not in order


def test_under_torchrun_the_loss_is_scaled_to_the_global_batch_and_its_parts_are_global_means(two_ranks):
    from crs.training import distributed

    # the other rank's shard: 1 sample with loss.rec 0.5 (weighted total 1.0)
    two_ranks(other=torch.tensor([0.5, 1.0, 1.0], dtype=torch.float64))
    loop = _loop(dist=distributed.current())
    loop.samples, loop.stage.batch_size = list(range(9)), 3  # global batches of 3: this rank takes 2 of each
    loop.objectives, loop.plan, loop.wanted = {"loss.rec": 2.0}, SimpleNamespace(path="stages.0"), ("loss.rec",)
    forwarded = []

    def forward(batch, wanted):
        forwarded.append((batch["batch.samples"], wanted))
        return {"loss.rec": torch.tensor(1.5)}

    loop._forward = forward
    batches = loop.batches()
    batch = next(batches)
    total, parts = loop.loss(batch)
    assert float(total) == pytest.approx(2.0 * 1.5 * (2 * 2 / 3))  # DDP averages over 2 ranks: x N * 2/3
    assert parts == {"loss.rec": pytest.approx((1.5 * 2 + 0.5) / 3), "loss": pytest.approx((3.0 * 2 + 1.0) / 3)}
    assert forwarded == [(batch["batch.samples"], ("loss.rec",))] and len(batch["batch.samples"]) == 2
    for wrong in (lambda: loop.loss(batch),  # a batch's loss is taken once
                  lambda: loop.loss(next(batches), params={"w": torch.zeros(1)}),  # no fast weights
                  lambda: loop.loss({"batch.samples": [0]})):  # only batches from loop.batches()
        with pytest.raises(RuntimeError) as err:
            wrong()
        assert str(err.value) == ("under torchrun, EpochLoop.loss takes the batches of loop.batches() and no "
                                  "fast weights (crs.training.distributed)")
    loop._forward = lambda batch, wanted: {}  # the model did not output the stage's loss
    with pytest.raises(ConfigError) as err:
        loop.loss(next(batches))
    assert err.value.path == "stages.0.objectives"

# ------------------------------------------------------------------ devices, precision, checksums, lifecycle
def test_device_names_torch_cannot_train_on_are_refused_naming_the_key():
    from crs.training.precision import Precision, resolve_device

    with pytest.raises(ConfigError) as err:
        resolve_device("meta", "stages.0.device")
    assert str(err.value) == ("config key 'stages.0.device': device type 'meta' is not supported for training\n"
                              "  fix: use cpu, cuda or cuda:N")
    with pytest.raises(UnknownComponentError) as err:
        Precision("fp8", "cpu", "stages.0.precision")
    assert err.value.path == "stages.0.precision" and "unknown precision 'fp8'" in str(err.value)
    assert Precision("fp32", "cpu", "p").path == "p"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks what a machine without a GPU says")
def test_cuda_without_a_gpu_says_why_and_how_to_fix_it():
    from crs.training.precision import resolve_device

    with pytest.raises(ConfigError) as err:
        resolve_device("cuda:0", "device")
    text = str(err.value)
    assert text.startswith("config key 'device': 'cuda:0' needs a CUDA GPU, but ")
    cpu_only = torch.version.cuda is None and torch.version.hip is None
    assert ("is a CPU-only build" in text) is cpu_only
    assert ("torch sees none (no driver, or CUDA_VISIBLE_DEVICES hides them)" in text) is not cpu_only


@pytest.fixture
def a_gpu_machine(monkeypatch):
    """torch as a CUDA build on a machine with two GPUs (nothing runs on them: only the checks are exercised)."""
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    return monkeypatch


def test_a_gpu_index_is_checked_against_the_gpus_there_are(a_gpu_machine):
    from crs.training.precision import resolve_device

    assert resolve_device(" cuda:1 ") == torch.device("cuda", 1)
    assert resolve_device("cuda") == torch.device("cuda")
    with pytest.raises(ConfigError) as err:
        resolve_device("cuda:2", "stages.0.device")
    assert str(err.value) == ("config key 'stages.0.device': 'cuda:2' asks for GPU 2, but this machine has 2 "
                              "(numbered 0 to 1)\n  fix: use cuda:0 ... cuda:1, or cuda")


def test_a_cuda_build_without_a_visible_gpu_and_a_cpu_build_say_which_it_is(monkeypatch):
    from crs.training.precision import resolve_device

    fix = "\n  fix: set device: cpu, or install a CUDA build of torch (https://pytorch.org/get-started) on a " \
          "machine with a GPU"
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError) as err:
        resolve_device("cuda", "device")
    assert str(err.value) == ("config key 'device': 'cuda' needs a CUDA GPU, but torch sees none (no driver, or "
                              "CUDA_VISIBLE_DEVICES hides them)" + fix)
    monkeypatch.setattr(torch.version, "cuda", None)
    monkeypatch.setattr(torch.version, "hip", "6.0")  # a ROCm build counts as a GPU build
    with pytest.raises(ConfigError, match="torch sees none"):
        resolve_device("cuda", "device")
    monkeypatch.setattr(torch.version, "hip", None)
    with pytest.raises(ConfigError) as err:
        resolve_device("cuda:0", "device")
    assert str(err.value) == (f"config key 'device': 'cuda:0' needs a CUDA GPU, but the installed torch "
                              f"{torch.__version__} is a CPU-only build" + fix)


def test_a_name_torch_cannot_parse_is_refused_with_the_names_that_work():
    from crs.training.precision import resolve_device

    with pytest.raises(ConfigError) as err:
        resolve_device("gpu0", "device")
    assert str(err.value) == ("config key 'device': 'gpu0' is not a device name torch understands\n"
                              "  fix: use cpu, cuda (the current GPU) or cuda:N (GPU number N, from 0)")
    assert err.value.__cause__ is None and err.value.__suppress_context__


def test_bf16_on_a_gpu_without_it_is_refused_and_with_it_autocasts_to_bfloat16(a_gpu_machine):
    from crs.training.precision import Precision

    a_gpu_machine.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    with pytest.raises(ConfigError) as err:
        Precision("bf16", "cuda:0", "stages.1.precision")
    assert str(err.value) == ("config key 'stages.1.precision': this GPU has no bfloat16 support (it needs compute "
                              "capability 8.0 or newer)\n  fix: use precision: fp16 (with its gradient scaler) "
                              "or fp32")
    assert Precision("bf16", "cpu", "p").dtype is torch.bfloat16  # the GPU check is for GPUs only
    a_gpu_machine.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    precision = Precision("BF16", "cuda:0", "p")
    assert precision.name == "bf16" and precision.dtype is torch.bfloat16 and precision.scaler is None


def test_a_torch_without_an_fp16_scaler_for_the_device_says_which_and_what_to_use(monkeypatch):
    from crs.training.precision import Precision

    def no_scaler(device_type):
        raise RuntimeError(f"no scaler for {device_type}")

    monkeypatch.setattr(torch.amp, "GradScaler", no_scaler)
    with pytest.raises(ConfigError) as err:
        Precision("fp16", "cpu", "stages.0.precision")
    assert str(err.value) == (f"config key 'stages.0.precision': this torch ({torch.__version__}) has no fp16 "
                              f"gradient scaler for cpu (RuntimeError: no scaler for cpu)\n  fix: use "
                              f"precision: bf16, or a newer torch")
    assert err.value.__cause__ is None


@pytest.mark.parametrize("name, dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_the_forward_autocasts_to_the_stages_dtype_and_the_backward_does_not(name, dtype):
    from crs.training.precision import Precision

    precision = Precision(name, "cpu", "p")
    a, b = torch.randn(4, 4), torch.randn(4, 4)
    with precision.autocast():
        assert (a @ b).dtype is dtype and torch.is_autocast_enabled("cpu")
        with precision.no_autocast():
            assert (a @ b).dtype is torch.float32 and not torch.is_autocast_enabled("cpu")
    fp32 = Precision("fp32", "cpu", "p")
    with fp32.autocast(), fp32.no_autocast():
        assert (a @ b).dtype is torch.float32 and not fp32.enabled


def test_the_checksum_tells_apart_values_that_print_alike():
    from crs.training.checksum import state_checksum

    pairs = [([1, 2], (1, 2)), ("ab", ["a", "b"]), ({"a": torch.float32}, {"a": torch.float64}),
             ({"a": torch.device("cpu")}, {"a": "cpu"}), ({"x": "\ud800"}, {"x": "\ud801"})]
    for a, b in pairs:
        assert state_checksum({"v": a}) != state_checksum({"v": b}), (a, b)
    assert state_checksum({"v": [1, 2]}) == state_checksum({"v": [1, 2]})


def test_a_module_shared_by_two_slots_hears_each_event_once_and_unknown_events_are_named():
    from crs.training.callbacks import EVENTS, notify

    class Hooked(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.heard = []

        def on_eval_start(self, **context):
            self.heard.append(context)

    shared, own = Hooked(), Hooked()
    model = SimpleNamespace(slots={"a": shared, "b": shared, "c": own}, shared={"enc": shared, "other": Hooked()})
    notify(model, "on_eval_start", split="valid")
    assert shared.heard == [{"split": "valid"}] and own.heard == [{"split": "valid"}]
    assert model.shared["other"].heard == [{"split": "valid"}]  # shared modules hear events too
    with pytest.raises(ValueError) as err:
        notify(model, "on_epoch_begin")
    assert str(err.value) == f"unknown lifecycle event 'on_epoch_begin'; events are: {', '.join(EVENTS)}"


# ------------------------------------------------------------------ optimizer and schedule (crs.training.optim)
def test_numbers_out_of_range_name_the_rule_the_value_and_an_example():
    from crs.training.optim import check_number

    with pytest.raises(ConfigError) as err:
        check_number(0.0, "stages.0.optimizer.lr", strict=True, example="e.g. lr: 0.001")
    assert str(err.value) == ("config key 'stages.0.optimizer.lr': must be a finite positive number, got 0.0\n"
                              "  fix: e.g. lr: 0.001")
    with pytest.raises(ConfigError) as err:
        check_number(1, "k", minimum=2, strict=True)
    assert str(err.value) == "config key 'k': must be a finite number > 2, got 1"
    with pytest.raises(ConfigError) as err:
        check_number(float("nan"), "k", minimum=0.5)
    assert str(err.value) == "config key 'k': must be a finite number >= 0.5, got nan"
    assert check_number(0, "k") == 0.0 and check_number(2, "k", minimum=2) == 2.0


@pytest.mark.parametrize("key,value,fix", [
    ("lr", 0.0, "e.g. lr: 0.001"), ("eps", 0.0, "e.g. eps: 1.0e-8 (the default)"),
    ("weight_decay", -1.0, "e.g. weight_decay: 0.01, or 0 for none"),
    ("momentum", -0.5, "e.g. momentum: 0.9 (sgd only), or 0 for none")])
def test_each_optimizer_number_is_checked_with_its_own_example(key, value, fix):
    from crs.training.optim import check_optimizer

    spec = SimpleNamespace(lr=0.001, weight_decay=0.0, momentum=0.0, eps=1e-8, groups=[])
    setattr(spec, key, value)
    with pytest.raises(ConfigError) as err:
        check_optimizer(spec, "stages.1.optimizer")
    assert err.value.path == f"stages.1.optimizer.{key}" and err.value.fix == fix


def test_warmup_in_steps_and_in_epochs_at_once_is_refused():
    from crs.training.optim import check_schedule, warmup_steps

    with pytest.raises(ConfigError) as err:
        check_schedule(SimpleNamespace(warmup_steps=1, warmup_epochs=0.5), "stages.1.schedule")
    assert str(err.value) == ("config key 'stages.1.schedule.warmup_epochs': both warmup_steps (1) and warmup_epochs "
                              "(0.5) are set\n  fix: keep one of the two")
    with pytest.raises(ConfigError) as err:
        check_schedule(SimpleNamespace(warmup_steps=-1, warmup_epochs=0), "s")
    assert err.value.fix == "e.g. warmup_steps: 100"
    with pytest.raises(ConfigError) as err:
        check_schedule(SimpleNamespace(warmup_steps=0, warmup_epochs=-0.5), "s")
    assert err.value.fix == "e.g. warmup_epochs: 0.5"
    check_schedule(SimpleNamespace(warmup_steps=0, warmup_epochs=0.5), "s")
    assert warmup_steps(SimpleNamespace(warmup_steps=0, warmup_epochs=0.5), steps_per_epoch=7) == 4
    assert warmup_steps(SimpleNamespace(warmup_steps=3, warmup_epochs=0), steps_per_epoch=7) == 3
    assert warmup_steps(SimpleNamespace(warmup_steps=0, warmup_epochs=2), steps_per_epoch=0) == 0


@pytest.mark.parametrize("kind,expected", [
    ("constant", [1 / 3, 2 / 3, 1.0, 1.0, 1.0, 1.0]),
    ("linear", [1 / 3, 2 / 3, 1.0, 0.5, 0.0, 0.0]),
    ("cosine", [1 / 3, 2 / 3, 1.0, 0.5, 0.0, 0.0])])
def test_the_learning_rate_factor_warms_up_then_decays_to_zero_at_the_last_step(kind, expected):
    from crs.training.optim import LRFactor

    factor = LRFactor(kind, warmup_steps=2, total_steps=4)
    assert [factor(step) for step in range(6)] == pytest.approx(expected)
    assert LRFactor("linear", 0, 0)(0) == 1.0 and LRFactor("linear", 0, 1)(1) == 0.0  # no zero division


def test_unknown_optimizer_or_schedule_types_name_the_key():
    from crs.training.optim import build_optimizer, build_scheduler

    param = torch.nn.Parameter(torch.zeros(1))
    spec = SimpleNamespace(type="adamax", lr=0.1, weight_decay=0.0, momentum=0.0, eps=1e-8, groups=[])
    with pytest.raises(UnknownComponentError) as err:
        build_optimizer(spec, [param], "stages.0.optimizer")
    assert err.value.path == "stages.0.optimizer.type" and "unknown optimizer 'adamax'" in str(err.value)
    optimizer = torch.optim.SGD([param], lr=0.1)
    with pytest.raises(UnknownComponentError) as err:
        build_scheduler(SimpleNamespace(type="step", warmup_steps=0, warmup_epochs=0), optimizer, 10,
                        "stages.0.schedule")
    assert err.value.path == "stages.0.schedule.type" and "unknown learning-rate schedule 'step'" in str(err.value)


def test_between_its_ends_cosine_decay_is_not_linear():
    from crs.training.optim import LRFactor

    cosine, linear = LRFactor("cosine", 0, 4), LRFactor("linear", 0, 4)
    assert cosine(1) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4))) and linear(1) == 0.75


def test_a_warmup_in_epochs_without_the_epochs_length_is_no_warmup():
    from crs.training.optim import build_scheduler

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    spec = SimpleNamespace(type="constant", warmup_steps=0, warmup_epochs=0.5)
    assert build_scheduler(spec, optimizer, 10, "s").get_last_lr() == [1.0]
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    assert build_scheduler(spec, optimizer, 10, "s", steps_per_epoch=4).get_last_lr() == [pytest.approx(1 / 3)]


def _optimizer_spec(**changes):
    spec = dict(type="adam", lr=0.05, weight_decay=0.01, momentum=0.5, eps=1e-6, groups=[], no_decay=[])
    spec.update(changes)
    return SimpleNamespace(**spec)


@pytest.mark.parametrize("kind, cls, extra", [
    ("adam", torch.optim.Adam, {"eps": 1e-6}), ("AdamW", torch.optim.AdamW, {"eps": 1e-6}),
    ("sgd", torch.optim.SGD, {"momentum": 0.5})])
def test_each_optimizer_gets_the_stages_numbers(kind, cls, extra):
    from crs.training.optim import build_optimizer

    optimizer = build_optimizer(_optimizer_spec(type=kind), [torch.nn.Parameter(torch.zeros(2))], "o")
    group = optimizer.param_groups[0]
    assert type(optimizer) is cls and group["lr"] == 0.05 and group["weight_decay"] == 0.01
    assert {key: group[key] for key in extra} == extra


def test_an_unchecked_spec_is_checked_with_its_path_and_listed_parameters_are_named_by_position():
    from crs.training.optim import build_optimizer

    params = [torch.nn.Parameter(torch.zeros(1)) for _ in range(2)]
    with pytest.raises(ConfigError) as err:
        build_optimizer(_optimizer_spec(lr=0.0), params, "stages.2.optimizer")
    assert err.value.path == "stages.2.optimizer.lr"
    build_optimizer(_optimizer_spec(lr=0.0), params, "o", checked=True)  # the trainer checked it before
    group = SimpleNamespace(params=["1"], lr=0.5, weight_decay=None)
    optimizer = build_optimizer(_optimizer_spec(groups=[group]), params, "o")
    assert [(g["name"], g["params"][0] is params[i], g["lr"]) for i, g in enumerate(optimizer.param_groups)] == [
        ("default", True, 0.05), ("groups.0", True, 0.5)]


@pytest.mark.parametrize("key, value, fix", [
    ("lr", 0.0, "e.g. lr: 0.0001, or leave lr out to use the optimizer's"),
    ("weight_decay", -0.1, "e.g. weight_decay: 0.0, or leave it out to use the optimizer's")])
def test_a_groups_numbers_are_checked_with_their_own_example(key, value, fix):
    from crs.training.optim import check_optimizer

    group = SimpleNamespace(params=["a"], lr=None, weight_decay=None)
    setattr(group, key, value)
    with pytest.raises(ConfigError) as err:
        check_optimizer(_optimizer_spec(groups=[group]), "stages.0.optimizer")
    assert err.value.path == f"stages.0.optimizer.groups.0.{key}" and err.value.fix == fix


@pytest.mark.parametrize("count, shown", [
    (8, "p0, p1, p2, p3, p4, p5, p6, p7"),
    (9, "p0, p1, p2, p3, p4, p5, p6, p7, ... (9 in all)")])
def test_a_group_without_globs_lists_at_most_eight_parameter_names(count, shown):
    from crs.training.optim import _assign_groups

    with pytest.raises(ConfigError) as err:
        _assign_groups([SimpleNamespace(params=[])], [f"p{i}" for i in range(count)], "stages.0.optimizer.groups")
    assert str(err.value) == ("config key 'stages.0.optimizer.groups.0.params': the group lists no parameter globs\n"
                              f"  fix: e.g. params: [\"recommender.*\"]; this stage's parameters: {shown}")


def test_a_group_left_with_nothing_by_earlier_groups_is_refused():
    from crs.training.optim import _assign_groups

    groups = [SimpleNamespace(params=["rec.*"]), SimpleNamespace(params=["rec.w"])]
    with pytest.raises(ConfigError) as err:
        _assign_groups(groups, ["rec.w", "gen.w"], "o.groups")
    assert str(err.value) == ("config key 'o.groups.1.params': every parameter it matches already belongs to an "
                              "earlier group (each parameter goes to the first group that matches it)\n"
                              "  fix: remove this group, or narrow the globs of the earlier groups")


def test_the_checksum_of_each_kind_of_value_is_pinned_so_old_checkpoints_still_verify():
    from crs.training.checksum import state_checksum

    value = {"t": torch.arange(6, dtype=torch.float32).reshape(2, 3), "empty": torch.zeros(0),
             "l": [1, "é", b"\x00\x01"], "u": (None, True, 2.5, float("nan")), "d": torch.float16,
             "dev": torch.device("cpu")}
    assert state_checksum(value) == "sha256:654080a086f4ab9c0223df14deab620987ba6c896caa5b067a3961f9824b1a1f"
    assert state_checksum({"b": b"\x00\x01"}) != state_checksum({"b": b"\x00\x02"})


def test_a_torch_error_while_reading_a_checkpoint_is_quoted_on_one_line(tmp_path, monkeypatch):
    from crs.training import checkpoint

    (tmp_path / "checkpoint.pt").write_bytes(b"x")

    def unreadable(*args, **kwargs):
        raise RuntimeError("PytorchStreamReader failed\n    reading zip archive:  failed finding central directory")

    monkeypatch.setattr(torch, "load", unreadable)
    with pytest.raises(DataError) as err:
        checkpoint.load_checkpoint(tmp_path)
    assert str(err.value).startswith(f"{tmp_path / 'checkpoint.pt'}: the checkpoint cannot be read (RuntimeError: "
                                     "PytorchStreamReader failed reading zip archive: failed finding central "
                                     "directory)\n")


def test_config_values_json_cannot_hold_are_compared_as_text():
    from pathlib import Path

    from crs.training.checkpoint import comparable_config

    assert comparable_config({"data": {"root": Path("/data/redial")}, "seed": 3}) == {
        "data": {"root": "/data/redial"}, "seed": 3}
    assert comparable_config(None) == {}


# ------------------------------------------------------------------ one epoch's steps (crs.training.loop.EpochLoop)
def _epoch_loop(accumulate=1, grad_clip=0.0, precision=None, metrics=None, **kwargs):
    from crs.training.loop import EpochLoop

    w = torch.nn.Parameter(torch.zeros(()))
    model = torch.nn.Module()
    model.w = w
    model.compute = lambda batch, wanted: batch  # a batch here is already the state
    stage = SimpleNamespace(grad_clip=grad_clip, name="rec", epochs=4, batch_size=2)
    plan = SimpleNamespace(spec=stage, index=3, samples=[], objectives={"loss.a": 1.0}, wanted=["loss.a"],
                           accumulate=accumulate, path="stages.3")
    return EpochLoop(pipeline=SimpleNamespace(model=model), plan=plan, parameters=[w],
                     optimizer=torch.optim.SGD([w], lr=1.0), scheduler=None, epoch=2, global_step=6, run_seed=1,
                     metrics=metrics, precision=precision, **kwargs), w


def test_a_non_finite_loss_names_the_learning_rate_the_epoch_and_the_step():
    loop, w = _epoch_loop()
    with pytest.raises(ConfigError) as err:
        loop.backward(w * float("nan"))
    assert str(err.value) == ("config key 'stages.3.optimizer.lr': the loss became nan at epoch 3, step 7\n"
                              "  fix: lower the learning rate, set grad_clip (e.g. 1.0) or add a warmup")
    with pytest.raises(ConfigError) as err:
        loop.loss({"loss.b": torch.tensor(1.0)})  # a state without the stage's objective
    assert err.value.path == "stages.3.objectives"


def test_accumulated_batches_step_once_with_their_mean_gradient_and_clear_it():
    loop, w = _epoch_loop(accumulate=2)
    loop.backward(4.0 * w)
    loop.end_batch()
    assert float(w.grad) == 2.0 and loop.global_step == 6  # 1/accumulate of each batch; no step yet
    loop.backward(2.0 * w)
    loop.end_batch()
    assert float(w.detach()) == -3.0 and w.grad is None and loop.global_step == 7  # mean of 4 and 2, lr 1


def test_a_short_last_group_steps_with_the_mean_over_its_own_batches():
    loop, w = _epoch_loop(accumulate=4)
    for slope in (4.0, 2.0):
        loop.backward(slope * w)
        loop.end_batch()
    loop.finish()  # 2 of 4 batches: (4 + 2) / 4 scaled back to their mean, 3
    assert float(w.detach()) == -3.0 and loop.global_step == 7


def test_a_step_on_hand_set_gradients_uses_them_as_they_are():
    loop, w = _epoch_loop(accumulate=2)
    w.grad = torch.tensor(1.0)
    loop.step(None)
    assert float(w.detach()) == -1.0 and loop.global_step == 7
    loop.backward(w * 2.0)
    loop.end_batch()
    with pytest.raises(RuntimeError) as err:
        loop.step(None)
    assert str(err.value) == ("EpochLoop.step(None) called while step(loss) gradients are still being accumulated; "
                              "a strategy uses one of the two")


def test_under_fp16_the_gradient_is_unscaled_before_clipping_and_hand_set_ones_are_not_unscaled():
    from crs.training.precision import Precision

    loop, w = _epoch_loop(grad_clip=0.5, precision=Precision("fp16", "cpu", "p"))
    loop.step(4.0 * w)  # scaled by 65536 in backward; unscaled, then clipped to 0.5
    assert float(w.detach()) == pytest.approx(-0.5)
    loop, w = _epoch_loop(precision=Precision("fp16", "cpu", "p"))
    w.grad = torch.tensor(1.0)  # a strategy's own gradient: never scaled, so never unscaled
    loop.step(None)
    assert float(w.detach()) == -1.0


class _Bar:
    def __init__(self):
        self.postfixes, self.closed = [], 0

    def __iter__(self):
        return iter(())

    def set_postfix(self, values, refresh):
        self.postfixes.append((values, refresh))

    def close(self):
        self.closed += 1


def test_every_log_every_steps_the_step_means_go_to_the_log_and_the_bar(monkeypatch):
    written = []
    metrics = SimpleNamespace(write=lambda *args: written.append(args))
    loop, w = _epoch_loop(metrics=metrics)  # log_every 50 by default; the stage is at step 6
    loop.global_step = 48
    bar = loop._bar = _Bar()
    for value in (2.0, 3.0):
        loop.step(w * 0.0)
        loop.log_step({"loss": value})
    assert written == [("rec", 3, 50, "train", {"loss": 3.0, "lr": 1.0})]  # step 49 is not logged
    assert bar.postfixes == [({"loss": "3"}, False)]  # drawn with the next tick, not forced
    assert loop.mean_parts() == {"loss": 2.5}
    loop.close()
    assert bar.closed == 1 and loop._bar is None


def test_a_fresh_loop_shows_a_bar_by_default_and_reads_the_stage_index_and_the_forward(monkeypatch):
    shown = []
    monkeypatch.setattr("crs.training.loop.progress_bar", lambda items, **kwargs: shown.append(kwargs) or _Bar())
    loop, _ = _epoch_loop()
    loop.pipeline.batches = lambda *args, **kwargs: iter(())
    list(loop.batches())
    assert shown[0]["enabled"] is True and loop.stage_index == 3 and loop._forward is loop.model
    replica = torch.nn.Module()
    assert _epoch_loop(forward=replica)[0]._forward is replica
    one, _ = _epoch_loop()
    one.log_step({"loss": 4.0})
    assert one.mean_parts() == {"loss": 4.0}


def test_under_torchrun_a_fresh_loop_takes_only_batches_it_handed_out(two_ranks):
    two_ranks(other=torch.zeros(1))
    loop, _ = _epoch_loop()
    with pytest.raises(RuntimeError, match="takes the batches of loop.batches"):
        loop.loss({"batch.samples": [0]})


# ------------------------------------------------------------------ early stopping set-up (crs.training.trainer)
@pytest.mark.parametrize("validate, why", [
    (False, "the stage sets validate: false"), (True, "there are no valid samples for task 'conv'")])
def test_early_stopping_without_validation_says_why_there_is_none(validate, why):
    from crs.training.trainer import Trainer

    spec = SimpleNamespace(early_stopping=SimpleNamespace(metric="loss", mode="min", patience=2), validate=validate,
                           task="conv")
    plan = SimpleNamespace(spec=spec, path="stages.2", objectives={"loss.gen": 1.0})
    with pytest.raises(ConfigError) as err:
        Trainer._early_stopper(None, plan, [])
    assert str(err.value) == (f"config key 'stages.2.early_stopping': early stopping needs validation, but {why}\n"
                              "  fix: set validate: true and make sure a valid split exists (samples.valid_fraction "
                              "> 0), or remove early_stopping")


@pytest.mark.parametrize("metric, where", [
    ("loss.rec", "stages.2.early_stopping.metric"), (["loss", "loss.rec"], "stages.2.early_stopping.metric.1")])
def test_stopping_on_a_loss_the_stage_does_not_train_names_the_metric_and_the_stages_losses(metric, where):
    from crs.training.trainer import Trainer

    spec = SimpleNamespace(early_stopping=SimpleNamespace(metric=metric, mode="min", patience=2), validate=True,
                           task="conv")
    plan = SimpleNamespace(spec=spec, path="stages.2", objectives={"loss.gen": 1.0, "loss.copy": 0.5})
    with pytest.raises(ConfigError) as err:
        Trainer._early_stopper(None, plan, ["a valid sample"])
    assert str(err.value) == (f"config key '{where}': 'loss.rec' is not one of the stage's objectives\n"
                              "  fix: use 'loss' (the weighted total) or one of: loss.gen, loss.copy")
    plan.objectives["loss.rec"] = 1.0
    assert Trainer._early_stopper(None, plan, ["a valid sample"]).metric == "+".join(
        metric if isinstance(metric, list) else [metric])


def test_validation_is_the_sample_weighted_valid_loss_plus_the_protocols_numbers(monkeypatch):
    import crs.evaluation
    from crs.training.trainer import Trainer

    heard, asked, evaluated = [], [], []

    class Model(torch.nn.Module):
        def compute(self, batch, wanted):
            assert not self.training and not torch.is_grad_enabled() and wanted == ["loss.rec"]
            return {"loss.rec": torch.tensor(batch["loss"])}

        def on_eval_start(self, split, pipeline):
            heard.append(("start", split, pipeline))

        def on_eval_end(self, split, pipeline):
            heard.append(("end", split, pipeline))

    model = Model()
    model.slots, model.shared = {"rec": model}, {}

    def batches(samples, size, shuffle, seed):
        asked.append((size, shuffle, seed))
        return iter([{"loss": value, "batch.samples": [value] * count} for value, count in samples])

    def evaluate(pipeline, split, **kwargs):
        evaluated.append((split, kwargs))
        return {"crslab-v1": {"rec.recall@10": 0.5, "rec.count": 3, "rec.flag": True, "rec.note": "text"}}

    monkeypatch.setattr(crs.evaluation, "evaluate", evaluate)
    pipeline = SimpleNamespace(batches=batches)
    trainer = SimpleNamespace(model=model, pipeline=pipeline, spec=SimpleNamespace(seed="7"))
    plan = SimpleNamespace(spec=SimpleNamespace(batch_size=2), wanted=["loss.rec"], objectives={"loss.rec": 2.0},
                           path="stages.1")
    assert Trainer._validate(trainer, plan, [(1.0, 2), (4.0, 1)], None) == {"loss.rec": 2.0, "loss": 4.0}
    assert asked == [(2, False, 7)] and heard == [("start", "valid", pipeline), ("end", "valid", pipeline)]
    assert model.training and evaluated == []  # back in training mode; no protocol, no evaluation
    protocol, stopper = SimpleNamespace(id="crslab-v1"), SimpleNamespace(evaluation_tasks=("rec",))
    assert Trainer._validate(trainer, plan, [(3.0, 1)], protocol, stopper) == {
        "loss.rec": 3.0, "loss": 6.0, "rec.recall@10": 0.5, "rec.count": 3.0}  # numbers only, flags left out
    assert evaluated == [("valid", {"protocols": [protocol], "generate": False, "tasks": ("rec",), "hooks": False})]
    assert heard[2:] == [("start", "valid", pipeline), ("end", "valid", pipeline)]  # one bracket for both passes
    monkeypatch.setattr(crs.evaluation, "evaluate", lambda *args, **kwargs: {})  # the protocol scored nothing
    assert Trainer._validate(trainer, plan, [(3.0, 1)], protocol, stopper) == {"loss.rec": 3.0, "loss": 6.0}
    plan.objectives = {"loss.gen": 1.0}
    with pytest.raises(ConfigError) as err:
        Trainer._validate(trainer, plan, [(1.0, 1)], None)
    assert err.value.path == "stages.1.objectives" and model.training


# ------------------------------------------------------------------ stage checks (crs.training.stage)
def _stage(**changes):
    optimizer = SimpleNamespace(lr=0.001, weight_decay=0.0, momentum=0.0, eps=1e-8, groups=[])
    stage = dict(epochs=0, batch_size=1, grad_clip=0.0, accumulate=1, objectives={"rec": 1},
                 optimizer=optimizer, schedule=SimpleNamespace(warmup_steps=0, warmup_epochs=0))
    stage.update(changes)
    return SimpleNamespace(**stage)


def test_the_smallest_valid_stage_numbers_pass():
    from crs.training.stage import check_stage_numbers

    check_stage_numbers(_stage(), 0)  # 0 epochs, batch 1, no clipping, a step per batch, an int weight


@pytest.mark.parametrize("changes, message", [
    ({"epochs": -1}, "config key 'stages.2.epochs': must be >= 0, got -1"),
    ({"batch_size": 0}, "config key 'stages.2.batch_size': must be >= 1, got 0"),
    ({"grad_clip": float("nan")}, "config key 'stages.2.grad_clip': must be a finite number >= 0, got nan\n"
                                  "  fix: the largest global gradient norm, e.g. grad_clip: 1.0; 0 turns clipping off"),
    ({"accumulate": 0}, "config key 'stages.2.accumulate': must be >= 1 (batches per optimizer step), got 0\n"
                        "  fix: use 1 for a step after every batch"),
    ({"objectives": {"rec": True}}, "config key 'stages.2.objectives.rec': the weight must be a finite number, got "
                                    "True\n  fix: a loss weight, e.g. 1.0"),
    ({"objectives": {"gen": "1"}}, "config key 'stages.2.objectives.gen': the weight must be a finite number, got "
                                   "'1'\n  fix: a loss weight, e.g. 1.0"),
])
def test_each_stage_number_out_of_range_is_named_with_its_key(changes, message):
    from crs.training.stage import check_stage_numbers

    with pytest.raises(ConfigError) as err:
        check_stage_numbers(_stage(**changes), 2)
    assert str(err.value) == message


def test_a_stage_that_lists_no_slot_or_an_unknown_one_is_refused_with_the_slots_there_are():
    from crs.training.stage import resolve_parameters

    model = SimpleNamespace(slots={"rec": None, "gen": None}, shared={"tokens": None})
    with pytest.raises(ConfigError) as err:
        resolve_parameters(model, [], "stages.1")
    assert str(err.value) == ("config key 'stages.1.train': no slot is listed, so the stage would train nothing\n"
                              "  fix: list slots to train (or '*' for all): rec, gen, shared.tokens")
    with pytest.raises(UnknownComponentError) as err:
        resolve_parameters(model, ["rec", "recc"], "stages.1")
    assert err.value.path == "stages.1.train" and "unknown slot 'recc'" in str(err.value)


# the slots each set of objectives runs, in _wired_model
_PLANS = {("loss.rec",): ["encoder", "rec"], ("loss.gen",): ["gen"], ("loss.other",): ["rec"],
          ("loss.rec", "loss.other"): ["encoder", "rec"]}


def _wired_model():
    from crs.shared import SharedRef

    tokens = torch.nn.Embedding(3, 2)
    slots = {name: torch.nn.Linear(1, 1) for name in ("encoder", "rec", "gen", "aux")}
    slots["encoder"].words = SharedRef("tokens", tokens)  # the encoder borrows shared.tokens
    slots["gen"].words = SharedRef("tokens", tokens)
    return SimpleNamespace(slots=slots, wiring=SimpleNamespace(plan=lambda objectives: _PLANS[tuple(objectives)]))


@pytest.mark.parametrize("train, objective, unused", [
    (["encoder", "rec", "gen", "shared.tokens"], "loss.rec", ["gen"]),
    (["encoder", "gen", "shared.tokens"], "loss.other", ["encoder", "gen", "shared.tokens"]),
    (["*"], "loss.other", []),  # everything: never flagged
    (["rec", "not_a_slot"], "loss.other", []),  # unknown names are resolve_parameters' to refuse
])
def test_trained_slots_the_objectives_never_run_are_found(train, objective, unused):
    from crs.training.stage import untouched_slots

    assert untouched_slots(_wired_model(), train, {objective: 1.0}) == unused
    assert untouched_slots(SimpleNamespace(slots={}), ["rec"], {objective: 1.0}) == []  # no wiring: nothing known


@pytest.mark.parametrize("train, objectives, text", [
    (["rec", "gen"], ["loss.rec"],
     "trains gen, but none of its objectives (rec) uses its outputs, so the stage does not change it; drop it from "
     "`train:` or add an objective that needs it"),
    (["encoder", "rec", "gen", "aux"], ["loss.rec", "loss.other"],  # two unused: plural
     "trains gen, aux, but none of its objectives (rec, other) uses their outputs, so the stage does not change "
     "them; drop them from `train:` or add an objective that needs them"),
    (["encoder", "gen", "shared.tokens"], ["loss.other"],
     "trains encoder, gen, shared.tokens, but none of its objectives (other) uses their outputs, so the stage does "
     "not change them; drop them from `train:` or add an objective that needs them"),
])
def test_the_untouched_slots_warning_names_them_and_the_stages_losses(train, objectives, text, caplog):
    from crs.training.stage import warn_untouched_slots

    with caplog.at_level("WARNING", logger="crs.training"):
        warn_untouched_slots(_wired_model(), train, dict.fromkeys(objectives, 1.0), "stages.1", "rec")
    assert caplog.messages == [f"stages.1.train: stage 'rec' {text}"]


# ------------------------------------------------------------------ a whole stage (Trainer._run_stage)
def _toy():
    """tests/test_training.py, whose fake pipeline the trainer tests share (imported whatever pytest's mode)."""
    import importlib
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    return importlib.import_module("test_training")


def _toy_pipeline(*stages, **kwargs):
    return _toy().ToyPipeline(list(stages), **kwargs)


def _toy_stage(name="rec", **overrides):
    return _toy().make_stage(name, **overrides)


def test_a_stage_says_each_epoch_its_early_stop_and_restore_and_counts_its_time(tmp_path, monkeypatch, capsys):
    from crs.config.spec import EarlyStoppingSpec
    from crs.training import Trainer
    from crs.training import trainer as trainer_module
    from crs.training.optim import norm_parameter_ids
    from crs.training.run_log import console, epoch_line

    events, bars, built = [], [], []

    class Hooked(torch.nn.Linear):
        def on_train_start(self, stage, pipeline):
            events.append(("start", stage.name, pipeline))

        def on_train_end(self, stage, pipeline):
            events.append(("end", stage.name, pipeline))

    clock = iter(float(t) for t in range(1000))  # one second per reading: every duration is a count of readings
    monkeypatch.setattr(trainer_module, "time", SimpleNamespace(perf_counter=lambda: next(clock)))
    monkeypatch.setattr("crs.training.loop.progress_bar", lambda items, **kwargs: bars.append(kwargs) or items)
    real_build_optimizer = trainer_module.build_optimizer
    monkeypatch.setattr(trainer_module, "build_optimizer", lambda *args, **kwargs: built.append(
        kwargs["norm_ids"]) or real_build_optimizer(*args, **kwargs))
    # mode max on a falling loss: epoch 1 stays best, so patience 1 stops after epoch 2 and restores epoch 1
    stopping = EarlyStoppingSpec(metric="loss.rec", mode="max", patience=1)
    pipeline = _toy_pipeline()
    pipeline.spec.stages = [_toy_stage(epochs=4, early_stopping=stopping),
                            _toy_stage("aux", epochs=0, objectives={"aux": 1.0}, train=["aux"])]
    pipeline.model.slots["aux"] = Hooked(4, 1)
    trainer = Trainer(pipeline, tmp_path, progress=False)
    with console(debug=False):
        history = trainer.fit()
    said = capsys.readouterr().out.splitlines()
    rec = history["rec"]
    lines = [epoch_line("rec", epoch, 4, rec[epoch - 1]["train"], rec[epoch - 1]["valid"], "loss.rec",
                        epoch == 1, 4.0) for epoch in (1, 2)]
    best = rec[0]["valid"]["loss.rec"]
    assert [line for line in said if line.startswith(("rec ", "stage 'rec'"))] == lines + [
        "stage 'rec': early stop after epoch 2 (no better loss.rec for 1 epochs)",
        f"stage 'rec': restored the best epoch (1, loss.rec = {best:.6g})"]
    assert trainer.timings["rec"] == {"epochs": 2, "train_s": 2.0, "samples": 2 * 96, "valid_s": 2.0}
    assert events == [("start", "rec", pipeline), ("end", "rec", pipeline),
                      ("start", "aux", pipeline), ("end", "aux", pipeline)]  # a stage of 0 epochs ends too
    assert [bar["enabled"] for bar in bars] == [False, False]  # the trainer's flag reaches each epoch's bar
    assert built == [norm_parameter_ids(pipeline.model)] * 2


def test_planning_a_stage_refuses_frozen_slots_and_an_empty_train_split_by_key(caplog):
    from crs.training.stage import plan_stage

    pipeline = _toy_pipeline()
    for param in pipeline.model.slots["aux"].parameters():
        param.requires_grad_(False)
    with pytest.raises(ConfigError) as err:
        plan_stage(pipeline, _toy_stage(train=["aux"], objectives={"aux": 1.0}), 1)
    assert str(err.value) == ("config key 'stages.1.train': the slots ['aux'] have no trainable parameters\n"
                              "  fix: list slots that own parameters")
    pipeline.samples["train"] = []
    with pytest.raises(ConfigError) as err:
        plan_stage(pipeline, _toy_stage(epochs=1, task="conv"), 1)
    assert str(err.value) == ("config key 'stages.1.task': the train split has no samples for task 'conv'\n"
                              "  fix: check the data, or use another task (rec, conv, all)")
    assert plan_stage(pipeline, _toy_stage(epochs=0), 1).samples == []  # nothing to train on is fine at 0 epochs
    pipeline.model.wiring = SimpleNamespace(plan=lambda objectives: ["encoder", "rec"])
    with caplog.at_level("WARNING", logger="crs.training"):
        plan_stage(pipeline, _toy_stage("warm", epochs=0, train=["rec", "encoder", "aux"]), 2)
    assert caplog.messages == ["stages.2.train: stage 'warm' trains aux, but none of its objectives (rec) uses its "
                               "outputs, so the stage does not change it; drop it from `train:` or add an objective "
                               "that needs it"]


def test_the_objective_is_the_weighted_sum_of_mean_losses_and_a_missing_one_is_named():
    from crs.training.loop import weighted_objective

    state = {"loss.rec": torch.tensor([1.0, 3.0]), "loss.gen": torch.tensor(0.5)}  # a per-sample vector is averaged
    total, parts = weighted_objective(state, {"loss.rec": 2.0, "loss.gen": 4.0}, "stages.0")
    assert float(total) == 6.0 and parts == {"loss.rec": 2.0, "loss.gen": 0.5, "loss": 6.0}
    with pytest.raises(ConfigError) as err:
        weighted_objective(state, {"loss.copy": 1.0}, "stages.0")
    assert str(err.value) == ("config key 'stages.0.objectives': the model did not output 'loss.copy' for this batch\n"
                              "  fix: check that the stage's task gives the inputs this loss needs (e.g. targets)")


def test_objective_names_are_checked_with_the_losses_the_model_provides():
    from crs.training.stage import resolve_objectives

    provided = {"loss.rec", "loss.gen"}
    with pytest.raises(ConfigError) as err:
        resolve_objectives({}, provided, "stages.0")
    assert str(err.value) == ("config key 'stages.0.objectives': the stage has no objectives, so it would train "
                              "nothing\n  fix: give loss names and weights, e.g. objectives: {rec: 1.0}; this model "
                              "provides: gen, rec")
    with pytest.raises(ConfigError, match=r"this model provides: \(no losses\)$"):
        resolve_objectives({}, set(), "stages.0")
    for name, suggestion in (("recc", "'rec'"), ("loss.recc", "'loss.rec'")):  # suggested as the stage writes it
        with pytest.raises(UnknownComponentError) as err:
            resolve_objectives({name: 1.0}, provided, "stages.0")
        assert err.value.path == f"stages.0.objectives.{name}"
        assert f"unknown objective (no slot outputs it) '{name}'" in str(err.value) and suggestion in str(err.value)
    with pytest.raises(ConfigError) as err:
        resolve_objectives({"rec": 1.0, "loss.rec": 0.5}, provided, "stages.0")
    assert str(err.value) == ("config key 'stages.0.objectives.loss.rec': 'loss.rec' is listed twice (with and "
                              "without 'loss.')\n  fix: keep one of the two entries")
    for weight in (float("inf"), "1"):
        with pytest.raises(ConfigError) as err:
            resolve_objectives({"gen": weight}, provided, "stages.0")
        assert str(err.value) == (f"config key 'stages.0.objectives.gen': the weight must be a finite number, got "
                                  f"{weight!r}")
    assert resolve_objectives({"rec": 1, "loss.gen": 0.5}, provided, "s") == {"loss.rec": 1, "loss.gen": 0.5}


def test_a_trainer_starts_fresh_by_default_and_says_what_it_does_with_an_existing_run(tmp_path, capsys):
    from crs.training import Trainer
    from crs.training.checkpoint import load_checkpoint
    from crs.training.run_log import console

    def pipeline():
        toy = _toy_pipeline(_toy_stage(epochs=1), _toy_stage("aux", epochs=1, objectives={"aux": 1.0},
                                                              train=["aux"]))
        del toy.resolved  # a pipeline without a resolved config compares as {}
        return toy

    run_dir = tmp_path / "runs" / "new"  # parents are made
    with console(debug=False):
        trainer = Trainer(pipeline(), run_dir, tensorboard=False)
        assert (trainer.resume, trainer.progress, trainer.log_every) == (False, True, 50)
        Trainer(pipeline(), tmp_path / "fresh", resume=True, tensorboard=False).fit()
        trainer.fit()
        Trainer(pipeline(), run_dir, tensorboard=False).fit()
        Trainer(pipeline(), run_dir, resume=True, tensorboard=False).fit()
    warnings = capsys.readouterr().err.splitlines()
    assert warnings == [
        f"warning: no checkpoint in {tmp_path / 'fresh'} to resume from; starting a fresh run there",
        f"warning: {run_dir} already holds a run; starting over and overwriting it (`crs run --resume` would "
        "continue it instead)",
        f"warning: the run in {run_dir} had already finished; its final state is loaded"]
    final = load_checkpoint(run_dir)
    assert (final["stage_index"], final["epoch"], final["done"], final["global_step"]) == (1, -1, True, 0)
    assert "rng_by_rank" not in final and not (run_dir / "tensorboard").exists()  # one process; TensorBoard off


def test_stage_names_must_differ_and_only_stages_that_train_build_their_strategy(two_ranks):
    from crs.training import Trainer

    trainer = SimpleNamespace(spec=SimpleNamespace(stages=[_toy_stage(), _toy_stage("conv"), _toy_stage()]))
    with pytest.raises(ConfigError) as err:
        Trainer._check_stage_names(trainer)
    assert str(err.value) == ("config key 'stages.2.name': stage name 'rec' is also used by stage 0\n"
                              "  fix: give every stage its own name (history is keyed by it)")
    two_ranks(other=torch.zeros(1))  # under torchrun, the plain strategy is sharded: accepted
    pipeline = _toy_pipeline(_toy_stage(), _toy_stage("later", epochs=0, strategy={"type": "no such strategy"}))
    Trainer._check_stage_names(SimpleNamespace(spec=pipeline.spec, pipeline=pipeline))  # 0 epochs: never built


def test_under_torchrun_a_checkpoint_keeps_every_ranks_rng_stream(tmp_path, two_ranks, monkeypatch):
    from crs.training import Trainer, distributed
    from crs.training.checkpoint import load_checkpoint

    two_ranks(other=torch.zeros(1))
    monkeypatch.setattr(distributed, "gather_objects", lambda value: [value, "rank 1's streams"])
    trainer = SimpleNamespace(_dist=distributed.current(), run_dir=tmp_path, _config={}, model=torch.nn.Linear(1, 1),
                              history={}, _metrics=SimpleNamespace(size=lambda: 0))
    Trainer._save(trainer, stage_index=0, epoch=-1, stage_done=True, done=True)
    saved = load_checkpoint(tmp_path)
    assert saved["rng_by_rank"][1] == "rank 1's streams" and saved["rng_by_rank"][0] == saved["rng"]


def test_a_one_stage_run_ends_with_a_checkpoint_of_stage_0_and_a_resume_with_another_config_names_the_folder(
        tmp_path):
    from crs.training import Trainer
    from crs.training.checkpoint import load_checkpoint

    Trainer(_toy_pipeline(_toy_stage(epochs=1)), tmp_path, tensorboard=False).fit()
    assert load_checkpoint(tmp_path)["stage_index"] == 0
    changed = _toy_pipeline(_toy_stage(epochs=1))
    changed.resolved = {**changed.resolved, "seed": 8}
    with pytest.raises(ConfigError) as err:
        Trainer(changed, tmp_path, resume=True, tensorboard=False).fit()
    assert f"the checkpoint in {tmp_path} was written with a different config" in str(err.value)


def test_strategies_are_built_at_their_stages_key_and_torchrun_refuses_one_that_cannot_be_sharded(
        tmp_path, two_ranks):
    from crs.training import Trainer

    pipeline = _toy_pipeline(_toy_stage(epochs=1))
    built, real_build = [], pipeline.build
    pipeline.build = lambda kind, node, path: built.append((kind, path)) or real_build(kind, node, path)
    Trainer(pipeline, tmp_path, tensorboard=False, progress=False).fit()
    assert built == [("training_strategy", "stages.0.strategy")] * 2  # checked before training, then trained
    two_ranks(other=torch.zeros(1))
    pipeline.build = lambda kind, node, path: SimpleNamespace()  # a strategy without `distributed`
    pipeline.spec.stages[0].strategy = {"type": "maml"}
    with pytest.raises(ConfigError) as err:
        Trainer._check_stage_names(SimpleNamespace(spec=pipeline.spec, pipeline=pipeline))
    assert err.value.path == "stages.0.strategy" and "the 'maml' training strategy cannot run under torchrun" in \
        str(err.value)


def test_a_functional_pass_with_an_unknown_parameter_names_it_without_a_config_key():
    from crs.training.meta import functional_compute

    with pytest.raises(ConfigError) as err:
        functional_compute(_Offset(), {"x": torch.zeros(())}, _ys(1.0), ["loss.a"])
    assert err.value.path == "" and str(err.value).startswith("the model has no parameter 'x'.")


def test_a_bar_without_a_description_starts_with_its_percentage(monkeypatch):
    from crs.training.run_log import progress_bar

    terminal = _terminal(monkeypatch)
    list(progress_bar(iter(range(2)), enabled=True, total=2))
    assert terminal.getvalue().startswith("\r  0%|")
