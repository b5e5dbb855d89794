"""The third-party plugin template, pip-installed into a temp folder (the shared venv is untouched)."""
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from crs.plugin_manager import DEFAULT_PLUGINS, get_plugin_manager
from crs.registry import Registry

TEMPLATE = Path(__file__).resolve().parents[1] / "examples" / "plugin-template"
HERMETIC = {"CRS_DISABLE_PLUGINS": ",".join(DEFAULT_PLUGINS)}  # the template alone, whatever else is installed


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """Site folder holding the built-and-installed template (wheel build, no network)."""
    if importlib.util.find_spec("pip") is None:
        pytest.skip("pip is not available")
    root = tmp_path_factory.mktemp("template")
    source, site = root / "src", root / "site"
    # Build from a copy so that build/ and *.egg-info never land in the repository.
    shutil.copytree(TEMPLATE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
                           "--no-index", "--quiet", "--target", str(site), str(source)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return source, site


def _env(site: Path) -> dict:
    return {**os.environ, **HERMETIC, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}


def test_crs_components_lists_mean_entity(installed):
    _, site = installed
    proc = subprocess.run([sys.executable, "-c", "import sys; from crs.cli import main; sys.exit(main())",
                           "components", "recommender"], capture_output=True, text=True, env=_env(site), timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "  mean_entity  [template]  Scores items by the dot product of the mean" in proc.stdout
    # each key with its default and the help comment from the plugin's own Config source
    assert "      dim: int = 32  # embedding size\n" in proc.stdout
    assert "      graph: str = 'entity_kg'  # knowledge name of the entity graph\n" in proc.stdout


def test_fresh_manager_finds_and_builds_it(installed, monkeypatch, tiny_deps, tiny_batch):
    _, site = installed
    monkeypatch.syspath_prepend(str(site))
    for key, value in HERMETIC.items():
        monkeypatch.setenv(key, value)
    try:
        pm = get_plugin_manager()
        assert pm.plugin_versions["template"] == "0.1.0" and pm.plugin_dists["template"] == "crs-plugin-template"
        registry = Registry.from_plugin_manager(pm)
        assert registry.by_plugin()["template"] == {"recommender": ["mean_entity"]}
        node = yaml.safe_load("type: mean_entity\ndim: 6\ninputs: {target: batch.target_item}\n")
        model = registry.build("recommender", node, "model.rec", tiny_deps)
        assert type(model).__module__ == "crs_plugin_template.mean_entity"
        assert str(site) in sys.modules["crs_plugin_template"].__file__  # the installed copy, not the source
        out = model({"entities": tiny_batch["batch.context_entities"],
                     "mask": tiny_batch["batch.context_entities_mask"], "target": tiny_batch["batch.target_item"]})
        assert out["scores"].shape == (3, 5) and out["loss"].ndim == 0
    finally:
        for name in [m for m in sys.modules if m.startswith("crs_plugin_template")]:
            del sys.modules[name]


def test_the_template_own_tests_pass(installed):
    source, site = installed
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(source / "tests")],
                          capture_output=True, text=True, env=_env(site), cwd=source, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "4 passed" in proc.stdout
