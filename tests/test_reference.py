"""`crs components fields|settings`: references derived from the field table and the spec dataclasses."""
from __future__ import annotations

import dataclasses

from crs.cli import main
from crs.config.reference import settings_reference
from crs.config.spec import EvaluationSpec, PipelineSpec, SamplesSpec, StageSpec
from crs.data.fields import BUILTIN_FIELDS


def test_fields_lists_every_batch_key(capsys):
    assert main(["components", "fields"]) == 0
    out = capsys.readouterr().out
    for spec in BUILTIN_FIELDS:
        assert f"`{spec.key}`" in out and spec.doc in out
    assert "`batch.context_turns_mask`" not in out  # list fields have no mask
    assert "`batch.context_tokens_mask`" in out


def test_settings_lists_every_spec_key_with_default_and_help():
    lines = settings_reference().splitlines()
    keys = {line.split(":", 1)[0] for line in lines}
    assert {f"stages.<i>.{f.name}" for f in dataclasses.fields(StageSpec)
            if f.name not in ("optimizer", "schedule", "early_stopping")} <= keys
    assert {f"samples.{f.name}" for f in dataclasses.fields(SamplesSpec)} <= keys
    assert {f"evaluation.{f.name}" for f in dataclasses.fields(EvaluationSpec)} <= keys
    assert {f.name for f in dataclasses.fields(PipelineSpec)} - {"stages", "samples", "evaluation"} <= keys
    accumulate = next(line for line in lines if line.startswith("stages.<i>.accumulate:"))
    assert "= 1" in accumulate and "#" in accumulate  # default and one-line help
    # a comment on the line above a field is its help too
    assert "summed" in next(line for line in lines if line.startswith("stages.<i>.early_stopping.metric:"))


def test_settings_command(capsys):
    assert main(["components", "settings"]) == 0
    assert "samples.valid_by" in capsys.readouterr().out
