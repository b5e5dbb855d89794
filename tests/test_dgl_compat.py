"""crs.compat.dgl: DGL imports despite GraphBolt, message passing works, nobody else imports dgl."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def test_import_stubs_graphbolt_and_exposes_dgl():
    from crs.compat import dgl as compat

    assert compat.dgl.__version__.startswith("2.")
    assert compat.fn is compat.dgl.function and compat.nn is compat.dgl.nn
    graphbolt = sys.modules["dgl.graphbolt"]
    # the real GraphBolt needs torchdata.datapipes; the stub is used exactly when that is missing
    try:
        import torchdata.datapipes  # noqa: F401
        has_datapipes = True
    except ImportError:
        has_datapipes = False
    if not has_datapipes:
        assert compat.graphbolt_is_stubbed()
        assert graphbolt.__path__ == []


def test_message_passing_sums_in_neighbours():
    from crs.compat.dgl import fn, graph_from_edges

    graph = graph_from_edges([0, 1, 2, 2], [1, 2, 1, 0], num_nodes=4)
    graph.ndata["h"] = torch.tensor([[1.0], [2.0], [4.0], [8.0]])
    graph.update_all(fn.copy_u("h", "m"), fn.sum("m", "out"))
    assert graph.ndata["out"].squeeze(1).tolist() == [4.0, 5.0, 2.0, 0.0]
    assert graph.num_nodes() == 4 and graph.edges()[0].tolist() == [0, 1, 2, 2]  # edge order kept


def test_graph_from_edges_rejects_length_mismatch():
    from crs.compat.dgl import graph_from_edges

    try:
        graph_from_edges([0, 1], [1], num_nodes=2)
    except ValueError as err:
        assert "differ in length" in str(err)
    else:  # pragma: no cover - the assertion below reports it
        raise AssertionError("expected ValueError")


def test_missing_dgl_raises_crs_error_with_fix():
    code = (
        "import sys; sys.modules['dgl'] = None\n"
        "from crs.errors import CRSError\n"
        "try:\n"
        "    import crs.compat.dgl\n"
        "except CRSError as err:\n"
        "    print('CRSERROR', err)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "CRSERROR cannot import DGL" in done.stdout, done.stdout + done.stderr
    assert "pip install dgl==2.1.0 pandas" in done.stdout


def test_no_other_module_imports_dgl_directly():
    pattern = re.compile(r"^\s*(import\s+dgl\b|from\s+dgl\b)", re.MULTILINE)
    allowed = REPO / "core" / "compat" / "dgl.py"
    offenders = [
        str(path.relative_to(REPO))
        for folder in ("core", "plugins")
        for path in (REPO / folder).rglob("*.py")
        if path != allowed and pattern.search(path.read_text(encoding="utf-8"))
    ]
    assert offenders == [], f"import DGL via crs.compat.dgl only: {offenders}"
    assert pattern.search(allowed.read_text(encoding="utf-8"))  # the pattern does match a real import
