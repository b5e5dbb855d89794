"""The one place that imports DGL.

DGL 2.1.0 imports its GraphBolt extension at ``import dgl``; GraphBolt needs
``torchdata.datapipes``, which recent torchdata releases removed, so a plain
``import dgl`` fails on current torch.  Nothing in this project uses GraphBolt,
so an empty stand-in package is put into ``sys.modules['dgl.graphbolt']`` before
DGL is imported (only when the real one is not already loaded).

Everything else imports DGL from here::

    from crs.compat.dgl import dgl, fn, graph_from_edges
"""
from __future__ import annotations

import sys
import types

import torch

from crs.errors import CRSError

_GRAPHBOLT = "dgl.graphbolt"
_FIX = "pip install dgl==2.1.0 pandas  (DGL 2.1.0 also needs pandas at import time)"


def _stub_graphbolt() -> bool:
    """Install an empty `dgl.graphbolt` package unless a real one is already imported.

    Returns True when the stub was installed.
    """
    if _GRAPHBOLT in sys.modules:
        return False
    stub = types.ModuleType(_GRAPHBOLT)
    stub.__path__ = []  # a package with no submodules: `import dgl.graphbolt.x` fails cleanly
    stub.__doc__ = "Stand-in installed by crs.compat.dgl; GraphBolt is not used by crs."
    stub.__crs_stub__ = True
    sys.modules[_GRAPHBOLT] = stub
    return True


def graphbolt_is_stubbed() -> bool:
    """True when `dgl.graphbolt` is the empty stand-in from this module."""
    return bool(getattr(sys.modules.get(_GRAPHBOLT), "__crs_stub__", False))


def _import_dgl() -> types.ModuleType:
    if "dgl" in sys.modules and getattr(sys.modules["dgl"], "function", None) is not None:
        return sys.modules["dgl"]
    installed = _stub_graphbolt()
    try:
        import dgl as module  # noqa: PLC0415 - deliberate, after the stub
    except Exception as err:  # ImportError, or a broken native library
        if installed and graphbolt_is_stubbed():  # leave no half-installed stand-in behind
            del sys.modules[_GRAPHBOLT]
        raise CRSError(f"cannot import DGL ({type(err).__name__}: {err})\n  fix: {_FIX}") from err
    return module


dgl = _import_dgl()
fn = dgl.function
nn = dgl.nn
ops = dgl.ops


def graph_from_edges(src, dst, num_nodes: int, *, device: torch.device | str | None = None):
    """A DGLGraph with `num_nodes` nodes and edges src[i] -> dst[i] (int64 ids, order kept).

    Accepts numpy arrays, lists or tensors.  Edge i of the result is edge i of the input,
    so per-edge data (weights, relation ids) can be attached in the same order.
    """
    src_t = torch.as_tensor(src, dtype=torch.int64)
    dst_t = torch.as_tensor(dst, dtype=torch.int64)
    if src_t.shape != dst_t.shape:
        raise ValueError(f"src and dst differ in length: {tuple(src_t.shape)} vs {tuple(dst_t.shape)}")
    graph = dgl.graph((src_t, dst_t), num_nodes=int(num_nodes), idtype=torch.int64)
    return graph.to(device) if device is not None else graph


def bipartite_from_edges(src, dst, num_src: int, num_dst: int):
    """A one-relation bipartite DGLGraph (src nodes -> dst nodes), edge order kept."""
    src_t = torch.as_tensor(src, dtype=torch.int64)
    dst_t = torch.as_tensor(dst, dtype=torch.int64)
    return dgl.heterograph({("_S", "_E", "_D"): (src_t, dst_t)},
                           num_nodes_dict={"_S": int(num_src), "_D": int(num_dst)}, idtype=torch.int64)


__all__ = ["dgl", "fn", "nn", "ops", "graph_from_edges", "bipartite_from_edges", "graphbolt_is_stubbed"]
