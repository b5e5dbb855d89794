"""examples/kgsf-inspired.yaml and examples/kgsf-redial.yaml load (as `--print-config` does, no data, no training)
and hold exactly the KGSF configuration of the benchmark runs recorded in BENCHMARKS.md."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from crs.config.loader import load_config

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_quality import overrides_for  # noqa: E402 - the benchmark's own reading of its `--set` arguments

# keys that name the run rather than the system (folder, report name)
NAMING = ("name", "run_dir", "corpus")


def _recorded_kgsf_config(corpus: str, registry) -> dict:
    """The resolved config of the KGSF run in benchmarks/results/quality-<corpus>.json, rebuilt from its argv."""
    argv = json.loads((ROOT / f"benchmarks/results/quality-{corpus}.json").read_text())["argv"]
    assert argv[argv.index("--corpus") + 1] == corpus
    sets = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--set"]
    _, resolved = load_config(str(ROOT / f"benchmarks/configs/{corpus}.yaml"),
                              ["preset=kgsf", *overrides_for("kgsf", sets)], registry=registry)
    return resolved


def _without_naming(config: dict) -> dict:
    return {k: v for k, v in config.items() if k not in NAMING}


@pytest.mark.parametrize("corpus", ["inspired", "redial"])
def test_example_is_the_recorded_benchmark_configuration(corpus, registry):
    spec, resolved = load_config(str(ROOT / f"examples/kgsf-{corpus}.yaml"), registry=registry)
    assert _without_naming(resolved) == _without_naming(_recorded_kgsf_config(corpus, registry))
    assert resolved["preset"] == "kgsf" and [s.name for s in spec.stages] == ["pretrain", "rec", "conv"]


def test_the_inspired_example_has_the_settings_chosen_on_validation(registry):
    spec, _ = load_config(str(ROOT / "examples/kgsf-inspired.yaml"), registry=registry)
    recommender = spec.model["recommender"]
    assert recommender["item_bias"] is True and recommender["bias_init"] == "popularity"
    assert spec.stages[1].optimizer.weight_decay == pytest.approx(1e-3)
    assert spec.linker is None and spec.data["type"] == "unicrs_jsonl"


def test_the_readme_links_both_examples_and_states_default_kgsf_on_inspired():
    readme = (ROOT / "README.md").read_text()
    assert "examples/kgsf-inspired.yaml" in readme and "examples/kgsf-redial.yaml" in readme
    benchmarks = (ROOT / "BENCHMARKS.md").read_text()
    for figure in ("0.147", "0.161", "0.168", "0.205"):  # popularity, default KGSF, tuned KGSF (test, valid) R@10
        assert figure in readme and figure in benchmarks, figure
