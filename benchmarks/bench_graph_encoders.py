"""Benchmark: our DGL-based `gcn` + `rgcn` against PyTorch Geometric's GCNConv + RGCNConv.

Times forward+backward over the full ReDial graphs (KGSF's DBpedia subgraph for the
R-GCN, the ConceptNet word graph for the GCN), side by side and interleaved round by
round so that background load hits both equally; reports medians, the speed-up, peak
RSS (each side measured in its own subprocess) and checks that both give the same
outputs after copying our weights into the PyG layers.

    python benchmarks/bench_graph_encoders.py --runs 7 --out bench_graph.json
    python benchmarks/bench_graph_encoders.py --synthetic          # no data needed

Graphs come from the `kgsf_dbpedia` / `conceptnet_edges` knowledge sources when that
plugin can load them, else from a minimal reader of the same files
(`CRS_SHARED_DATA` or ../shared/data), else (or with --synthetic) from a random graph
of the same size.
"""
from __future__ import annotations

import argparse
import collections
import gzip
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from crs.interfaces import BuildDeps
from crs.knowledge import ENTITY, WORD, IndexedGraph, KnowledgeGraph

REPO = Path(__file__).resolve().parents[1]
DIM, BASES = 128, 8
KGSF_MIN_RELATION_EDGES = 1000  # KGSF keeps relations with more than 1000 edges (both directions)


# ------------------------------------------------------------------ graphs
def shared_data() -> Path:
    return Path(os.environ.get("CRS_SHARED_DATA") or REPO.parent / "shared" / "data")


def read_kgsf_dbpedia(folder: Path) -> KnowledgeGraph:
    """KGSF's subkg.pkl (entity id -> [(relation, tail)]) with KGSF's frequent-relation filter."""
    from crs.data.safe_pickle import load_plain_pickle

    kg = load_plain_pickle(folder / "subkg.pkl")
    heads, rels, tails = [], [], []
    for head, edges in kg.items():
        for rel, tail in edges:
            if head != tail:
                heads.append(head), rels.append(rel), tails.append(tail)
    heads, rels, tails = np.array(heads), np.array(rels), np.array(tails)
    counts = collections.Counter(rels.tolist())
    kept = sorted(r for r, c in counts.items() if 2 * c > KGSF_MIN_RELATION_EDGES)
    keep = np.isin(rels, kept)
    remap = {r: i for i, r in enumerate(kept)}
    num_nodes = int(max(heads.max(), tails.max())) + 1
    return KnowledgeGraph(ENTITY, [str(i) for i in range(num_nodes)], [str(r) for r in kept],
                          heads[keep], np.array([remap[r] for r in rels[keep]]), tails[keep])


def read_conceptnet(folder: Path) -> KnowledgeGraph:
    """ConceptNet one-hop edges ("relation<TAB>word<TAB>word") over the words of key2index."""
    words = json.loads((folder / "conceptnet_one_hop_key2index.json").read_text())
    nodes = sorted(words, key=words.get)
    index = {w: i for i, w in enumerate(nodes)}
    relations: dict[str, int] = {}
    heads, rels, tails = [], [], []
    with gzip.open(folder / "conceptnet_one_hop_edges.txt.gz", "rt", encoding="utf-8") as handle:
        for line in handle:
            parts = line.rstrip("\n").split("\t")
            if len(parts) == 3 and parts[1] in index and parts[2] in index:
                heads.append(index[parts[1]]), tails.append(index[parts[2]])
                rels.append(relations.setdefault(parts[0], len(relations)))
    return KnowledgeGraph(WORD, nodes, list(relations), heads, rels, tails)


def via_knowledge_sources() -> tuple[KnowledgeGraph, KnowledgeGraph]:
    """The two graphs as the project's knowledge-source plugins load them (raises if unavailable)."""
    from crs.data.schema import Corpus
    from crs.plugin_manager import get_plugin_manager

    found: dict[str, object] = {}
    get_plugin_manager().hook.crs_register_knowledge_sources(register=lambda n, c: found.__setitem__(n, c))
    graphs = []
    for name in ("kgsf_dbpedia", "conceptnet_edges"):
        ref = found[name]
        if isinstance(ref, str):
            module, _, cls = ref.partition(":")
            ref = getattr(__import__(module, fromlist=[cls]), cls)
        source = ref(ref.Config(), BuildDeps(path=f"knowledge.{name}"))
        graphs.append(source.load(Corpus(name="bench", splits={"train": [], "test": []}, items={})))
    return graphs[0], graphs[1]


def synthetic(num_nodes: int, num_edges: int, num_relations: int, role: str, seed: int) -> KnowledgeGraph:
    rng = np.random.default_rng(seed)
    return KnowledgeGraph(role, [str(i) for i in range(num_nodes)], [str(r) for r in range(num_relations)],
                          rng.integers(0, num_nodes, num_edges), rng.integers(0, num_relations, num_edges),
                          rng.integers(0, num_nodes, num_edges))


def load_graphs(use_synthetic: bool) -> tuple[IndexedGraph, IndexedGraph, str]:
    entity = word = None
    source = "synthetic (ReDial-sized)"
    if not use_synthetic:
        try:
            entity, word = via_knowledge_sources()
            source = "knowledge sources kgsf_dbpedia + conceptnet_edges"
        except Exception:  # plugin not there (yet) or cannot load: read the files directly
            data = shared_data() / "redial"
            if (data / "kgsf" / "subkg.pkl").exists():
                entity = read_kgsf_dbpedia(data / "kgsf")
                word = read_conceptnet(data / "conceptnet_one_hop_shupeili")
                source = f"files under {data} (minimal reader)"
    if entity is None:
        entity = synthetic(64362, 147648, 34, ENTITY, 0)
        word = synthetic(29308, 35000, 1, WORD, 1)
    return IndexedGraph.from_graph("entity_kg", entity), IndexedGraph.from_graph("word_kg", word), source


# ------------------------------------------------------------------ models
def build_ours(entity: IndexedGraph, word: IndexedGraph):
    from crs.plugins.kgsf.gcn import WordGraphGCN
    from crs.plugins.kgsf.rgcn import EntityGraphRGCN

    deps = BuildDeps(path="model.bench", graphs={"entity_kg": entity, "word_kg": word})
    gcn = WordGraphGCN(WordGraphGCN.Config(dim=DIM), deps)
    rgcn = EntityGraphRGCN(EntityGraphRGCN.Config(dim=DIM, num_bases=BASES), deps)
    return gcn, rgcn


class PygPair(torch.nn.Module):
    """PyG GCNConv + RGCNConv with their own node embeddings, on the same edge lists as ours."""

    def __init__(self, entity: IndexedGraph, word: IndexedGraph):
        from torch_geometric.nn import GCNConv, RGCNConv

        super().__init__()
        self.word_emb = torch.nn.Embedding(word.num_nodes, DIM)
        self.entity_emb = torch.nn.Embedding(entity.num_nodes, DIM)
        self.gcn = GCNConv(DIM, DIM)  # adds self-loops and normalises symmetrically itself
        self.rgcn = RGCNConv(DIM, DIM, max(entity.num_relations, 1), num_bases=BASES)  # mean aggregation, root, bias
        keep = word.src != word.dst
        pairs = np.unique(np.concatenate([np.stack([word.src[keep], word.dst[keep]], 1),
                                          np.stack([word.dst[keep], word.src[keep]], 1)]), axis=0)
        self.word_edges = torch.from_numpy(pairs.T.copy())
        keep = entity.src != entity.dst
        s, d, r = entity.src[keep], entity.dst[keep], entity.rel[keep]
        self.entity_edges = torch.from_numpy(np.stack([np.concatenate([s, d]), np.concatenate([d, s])]))
        self.entity_types = torch.from_numpy(np.concatenate([r, r]))

    def copy_from(self, gcn, rgcn) -> None:
        with torch.no_grad():
            self.word_emb.weight.copy_(gcn.embeddings.weight)
            self.gcn.lin.weight.copy_(gcn.weights[0].weight)
            self.gcn.bias.copy_(gcn.biases[0])
            layer = rgcn.layers[0]
            self.entity_emb.weight.copy_(rgcn.embeddings.weight)
            self.rgcn.weight.copy_(layer.bases)
            self.rgcn.comp.copy_(layer.coefficients)
            self.rgcn.root.copy_(layer.root)
            self.rgcn.bias.copy_(layer.bias)

    def run_gcn(self):
        return self.gcn(self.word_emb.weight, self.word_edges)

    def run_rgcn(self):
        return self.rgcn(self.entity_emb.weight, self.entity_edges, self.entity_types)


def step(module: torch.nn.Module, forward, projection: torch.Tensor) -> float:
    """One forward+backward (loss = <output, fixed projection>); seconds."""
    module.zero_grad(set_to_none=True)
    start = time.perf_counter()
    (forward() * projection).sum().backward()
    return time.perf_counter() - start


# ------------------------------------------------------------------ measurements
def memory_mb(field: str) -> float:
    """VmHWM (peak) or VmRSS (current) of this process in MB.

    /proc is read rather than getrusage: ru_maxrss survives fork+exec, so a subprocess
    would report its parent's peak.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux: best effort


def rss_probe(side: str, use_synthetic: bool, threads: int) -> dict:
    """Run in a subprocess: peak RSS of building + two training steps of one side."""
    torch.set_num_threads(threads)
    entity, word, _ = load_graphs(use_synthetic)
    before = memory_mb("VmRSS")
    torch.manual_seed(0)
    if side == "ours":
        gcn, rgcn = build_ours(entity, word)
        calls = [(gcn, gcn.encode, word.num_nodes), (rgcn, rgcn.encode, entity.num_nodes)]
    else:
        pyg = PygPair(entity, word)
        calls = [(pyg, pyg.run_gcn, word.num_nodes), (pyg, pyg.run_rgcn, entity.num_nodes)]
    for _ in range(2):
        for module, forward, n in calls:
            step(module, forward, torch.ones(n, DIM))
    peak = memory_mb("VmHWM")
    return {"peak_rss_mb": peak, "model_rss_mb": peak - before}


def probe_in_subprocess(side: str, args) -> dict:
    cmd = [sys.executable, __file__, "--rss-probe", side, "--threads", str(args.threads)]
    if args.synthetic:
        cmd.append("--synthetic")
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="timed rounds (median reported)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--synthetic", action="store_true", help="random graphs of ReDial size")
    parser.add_argument("--out", type=Path, help="write the result as JSON here")
    parser.add_argument("--no-rss", action="store_true", help="skip the peak-RSS subprocesses")
    parser.add_argument("--rss-probe", choices=["ours", "pyg"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rss_probe:
        print(json.dumps(rss_probe(args.rss_probe, args.synthetic, args.threads)))
        return 0

    torch.set_num_threads(args.threads)
    try:
        import torch_geometric
    except ImportError:
        print("torch_geometric is not installed: pip install 'crs-registry[bench]'", file=sys.stderr)
        return 2
    entity, word, source = load_graphs(args.synthetic)
    torch.manual_seed(0)
    gcn, rgcn = build_ours(entity, word)
    pyg = PygPair(entity, word)
    pyg.copy_from(gcn, rgcn)

    with torch.no_grad():  # same weights -> same outputs
        diff_gcn = (gcn.encode() - pyg.run_gcn()).abs().max().item()
        diff_rgcn = (rgcn.encode() - pyg.run_rgcn()).abs().max().item()
    equal = diff_gcn < 1e-4 and diff_rgcn < 1e-4

    proj_word = torch.randn(word.num_nodes, DIM)
    proj_entity = torch.randn(entity.num_nodes, DIM)
    sides = {
        "ours.gcn": (gcn, gcn.encode, proj_word),
        "pyg.gcn": (pyg, pyg.run_gcn, proj_word),
        "ours.rgcn": (rgcn, rgcn.encode, proj_entity),
        "pyg.rgcn": (pyg, pyg.run_rgcn, proj_entity),
    }
    times: dict[str, list[float]] = {name: [] for name in sides}
    for round_ in range(args.warmup + args.runs):
        for name, (module, forward, proj) in sides.items():  # interleaved: load hits every side alike
            seconds = step(module, forward, proj)
            if round_ >= args.warmup:
                times[name].append(seconds)
    median = {name: statistics.median(ts) for name, ts in times.items()}
    total = {side: median[f"{side}.gcn"] + median[f"{side}.rgcn"] for side in ("ours", "pyg")}
    rss = {} if args.no_rss else {side: probe_in_subprocess(side, args) for side in ("ours", "pyg")}

    result = {
        "graphs": source,
        "entity_graph": {"nodes": entity.num_nodes, "stored_edges": int(len(entity.src)),
                         "edges_with_reverse": int(rgcn.edge_src.numel()), "relations": entity.num_relations,
                         "relation_destination_pairs": rgcn.num_pairs},
        "word_graph": {"nodes": word.num_nodes, "edges_with_self_loops": int(gcn.edge_src.numel())},
        "dim": DIM, "num_bases": BASES, "threads": args.threads, "runs": args.runs, "warmup": args.warmup,
        "median_seconds": median, "all_seconds": times,
        "total_seconds": total,
        "speedup": {"rgcn": median["pyg.rgcn"] / median["ours.rgcn"],
                    "gcn": median["pyg.gcn"] / median["ours.gcn"],
                    "total": total["pyg"] / total["ours"]},
        "max_abs_diff": {"gcn": diff_gcn, "rgcn": diff_rgcn}, "outputs_equal": equal,
        "peak_rss": rss,
        "versions": {"torch": torch.__version__, "torch_geometric": torch_geometric.__version__,
                     "python": platform.python_version()},
        "machine": {"cpu_count": os.cpu_count(), "load_average": os.getloadavg(), "platform": platform.platform()},
    }
    print(f"graphs: {source}")
    print(f"entity graph: {entity.num_nodes} nodes, "
          f"{result['entity_graph']['edges_with_reverse']} edges with reverses, "
          f"{entity.num_relations} relations, {rgcn.num_pairs} (dst, rel) pairs; word graph: {word.num_nodes} nodes")
    print(f"forward+backward, median of {args.runs} (threads={args.threads}, load avg {os.getloadavg()[0]:.1f})")
    print(f"{'':8}{'ours (s)':>10}{'PyG (s)':>10}{'speed-up':>10}")
    for part in ("gcn", "rgcn"):
        print(f"{part:8}{median['ours.' + part]:10.3f}{median['pyg.' + part]:10.3f}{result['speedup'][part]:9.2f}x")
    print(f"{'total':8}{total['ours']:10.3f}{total['pyg']:10.3f}{result['speedup']['total']:9.2f}x")
    for side, r in rss.items():
        print(f"peak RSS {side}: {r['peak_rss_mb']:.0f} MB (above the loaded graphs: {r['model_rss_mb']:.0f} MB)")
    print(f"outputs equal after copying weights: {equal} (max |diff| gcn {diff_gcn:.2e}, rgcn {diff_rgcn:.2e})")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
        print(f"wrote {args.out}")
    return 0 if equal else 1


if __name__ == "__main__":
    sys.exit(main())
