"""Benchmark: one forward+backward of `rgcn` as ours (node embeddings + d x d bases) and `featureless: true`.

The featureless R-GCN is the one KGSF's and C2-CRS's released code run (PyG RGCNConv with
x=None); ours is a lower-rank model with a learned node embedding.  Both are timed over the
whole entity graph, interleaved round by round so background load hits both alike; the
parameter counts are printed beside the times.  With ``--pyg`` PyG's own RGCNConv(x=None)
(what CRSLab runs; it materialises every W_r, an (R, N, d) tensor) is timed as well.

    python benchmarks/bench_rgcn_featureless.py --runs 5 [--out result.json] [--pyg] [--synthetic]

The graph is KGSF's ReDial DBpedia subgraph (`kgsf_dbpedia`, ../shared/data or
CRS_SHARED_DATA) when present, else (or with --synthetic) a random graph of the same size
(64,363 nodes, 34 relations, 147,648 stored edges).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from crs.interfaces import BuildDeps
from crs.knowledge import ENTITY, IndexedGraph, KnowledgeGraph
from crs.plugins.kgsf.rgcn import EntityGraphRGCN

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_report import finish, summary  # noqa: E402  (a sibling script, not a package)

REPO = Path(__file__).resolve().parents[1]
REDIAL_NODES, REDIAL_RELATIONS, REDIAL_EDGES = 64_363, 34, 147_648  # KGSF's graph after its relation filter


def redial_graph(synthetic: bool) -> tuple[IndexedGraph, str]:
    folder = Path(os.environ.get("CRS_SHARED_DATA") or REPO.parent / "shared" / "data") / "redial" / "kgsf"
    if not synthetic and (folder / "subkg.pkl").exists():
        from crs.plugins.datasets.dbpedia import KGSFDBpedia

        source = KGSFDBpedia(KGSFDBpedia.Config(root=str(folder)), BuildDeps(path="bench.entity_kg"))
        return IndexedGraph.from_graph("entity_kg", source.load()), f"ReDial KGSF DBpedia ({folder})"
    rng = np.random.default_rng(0)
    heads, tails = (rng.integers(0, REDIAL_NODES - 1, REDIAL_EDGES) for _ in range(2))
    kg = KnowledgeGraph(ENTITY, [f"n{i}" for i in range(REDIAL_NODES - 1)],
                        [f"r{i}" for i in range(REDIAL_RELATIONS)],
                        heads, rng.integers(0, REDIAL_RELATIONS, REDIAL_EDGES), tails)
    return IndexedGraph.from_graph("entity_kg", kg), "synthetic graph of ReDial's size"


def pyg_step(graph: IndexedGraph):
    """PyG's RGCNConv(x=None) over the same edges (reverses added, self-loops dropped), as CRSLab runs it."""
    from torch_geometric.nn import RGCNConv

    keep = graph.src != graph.dst
    s, d, r = graph.src[keep], graph.dst[keep], graph.rel[keep]
    edge_index = torch.from_numpy(np.stack([np.concatenate([s, d]), np.concatenate([d, s])]))
    edge_type = torch.from_numpy(np.concatenate([r, r]))
    conv = RGCNConv(graph.num_nodes, 128, graph.num_relations, num_bases=8)
    return conv, lambda: conv(None, edge_index, edge_type)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="timed rounds (median reported)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--synthetic", action="store_true", help="a random graph of ReDial's size")
    parser.add_argument("--pyg", action="store_true", help="also time PyG RGCNConv(x=None) (CRSLab's layer)")
    parser.add_argument("--out", help="write the result as JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    graph, where = redial_graph(args.synthetic)
    deps = BuildDeps(path="bench.entity_encoder", graphs={"entity_kg": graph})
    sides = {}
    for name, featureless in (("ours", False), ("featureless", True)):
        module = EntityGraphRGCN(EntityGraphRGCN.Config(dim=128, num_bases=8, featureless=featureless), deps)
        sides[name] = (module, lambda m=module: m({})["nodes"])
    if args.pyg:
        sides["pyg_featureless"] = pyg_step(graph)

    # wall time, and this process's CPU time (all threads): on a shared, overloaded machine the wall time
    # includes waiting for a core, the CPU time much less so
    times: dict[str, list[float]] = {name: [] for name in sides}
    cpu: dict[str, list[float]] = {name: [] for name in sides}
    for round_ in range(args.runs + 1):  # round 0 warms up (graph building, allocator)
        for name, (module, forward) in sides.items():
            module.zero_grad(set_to_none=True)
            start, start_cpu = time.perf_counter(), time.process_time()
            forward().pow(2).mean().backward()
            if round_:
                times[name].append(time.perf_counter() - start)
                cpu[name].append(time.process_time() - start_cpu)
    result = {"graph": where, "nodes": graph.num_nodes, "relations": graph.num_relations,
              "stored_edges": int(len(graph.src)), "threads": args.threads, "runs": args.runs, "sides": {}}
    lines = [f"R-GCN forward+backward over {where}: {graph.num_nodes:,} nodes, {graph.num_relations} relations, "
             f"{len(graph.src):,} stored edges; {args.threads} threads, median of {args.runs}"]
    for name, (module, _) in sides.items():
        params = sum(p.numel() for p in module.parameters())
        stats, cpu_stats = summary(times[name]), summary(cpu[name])
        result["sides"][name] = {"parameters": params, "seconds": stats, "cpu_seconds": cpu_stats}
        lines.append(f"  {name:16s} {params:>12,} parameters  wall {stats['median'] * 1000:8.1f} ms "
                     f"(best {stats['best'] * 1000:.1f})  cpu {cpu_stats['median'] * 1000:8.1f} ms")
    wall_ratio, cpu_ratio = (result["sides"]["featureless"][key]["median"] / result["sides"]["ours"][key]["median"]
                             for key in ("seconds", "cpu_seconds"))
    lines.append(f"  featureless / ours: {wall_ratio:.2f}x the wall time, {cpu_ratio:.2f}x the CPU time")
    finish(result, lines, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
