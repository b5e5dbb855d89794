"""A plugin imports `crs`, never another plugin package (ARCHITECTURE rule 10).

Shared pieces live in core (crs.nn, crs.labels, ...).  The check reads every module
of every built-in plugin: import statements (absolute and relative ones reaching
above the package) and lazy "crs.plugins.<name>..." registration strings.
"""
import ast
from pathlib import Path

import pytest

PLUGINS = Path(__file__).resolve().parents[1] / "plugins"


def foreign_plugin_refs(source: str, own: str) -> list[str]:
    """The ``crs.plugins.<other>`` references in `source`, a module of plugin `own`."""
    found = []

    def check(module: str, line: int) -> None:
        parts = module.split(".")
        if parts[:2] == ["crs", "plugins"] and len(parts) > 2 and parts[2] != own:
            found.append(f"line {line}: {module}")

    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                check(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                check(node.module or "", node.lineno)
                if node.module == "crs.plugins":  # from crs.plugins import other
                    for alias in node.names:
                        check(f"crs.plugins.{alias.name}", node.lineno)
            elif node.level >= 2:  # from ..other import x: above this plugin's package
                found.append(f"line {node.lineno}: {'.' * node.level}{node.module or ''}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and " " not in node.value:
            check(node.value.partition(":")[0], node.lineno)  # lazy "crs.plugins.x.mod:Class"
    return found


def plugin_modules():
    for package in sorted(p for p in PLUGINS.iterdir() if (p / "__init__.py").is_file()):
        for module in sorted(package.rglob("*.py")):
            yield package.name, module


def test_the_scan_catches_each_form_of_cross_plugin_import():
    source = "\n".join([
        "import crs.plugins.baselines.transformer_generator",
        "from crs.plugins.datasets.labels import uri_label",
        "from crs.plugins import baselines",
        "from ..datasets import labels",
        "REF = 'crs.plugins.baselines.popularity:PopularityRecommender'",
        "from crs.plugins.kgsf.copy import CopyMixture",  # its own package: fine
        "from .copy import CopyMixture",  # relative within the package: fine
        "from crs.nn import SelfAttentivePool",  # core: fine
        "'''Docs may mention crs.plugins.datasets.labels in prose.'''",
    ])
    found = foreign_plugin_refs(source, own="kgsf")
    assert [f.split(":")[0] for f in found] == ["line 1", "line 2", "line 3", "line 4", "line 5"]


def test_built_in_plugins_exist():
    names = {name for name, _ in plugin_modules()}
    assert {"kgsf", "baselines", "linking", "datasets"} <= names


@pytest.mark.parametrize("plugin,module", list(plugin_modules()), ids=lambda v: getattr(v, "name", v))
def test_no_plugin_imports_another(plugin, module):
    found = foreign_plugin_refs(module.read_text(encoding="utf-8"), own=plugin)
    assert not found, (f"{module.relative_to(PLUGINS.parent)} (plugin '{plugin}') uses another plugin: "
                       f"{found}; move the shared piece into core (crs.nn, crs.labels, ...)")
