"""How much can any recommender learn from a corpus?  Target coverage, graph reach, recall by item frequency.

    python benchmarks/corpus_stats.py --corpus inspired [--runs runs/bench/inspired-kgsf runs/bench/inspired-popularity]

For the corpus bundle named in ``--corpus`` (the same data the quality benchmark loads):

- per split, the recommendation samples and the share whose target item never occurs as a
  training target ("unseen"), is mentioned earlier in the dialogue ("in context"), or both
  neither ("unreachable": nothing learned from training targets points at it);
- the entity graph around the items: edges per item by relation, and how many items share
  each non-item neighbour (what R-GCN propagation can pass between items);
- with ``--runs``: each run's test Recall@k by how often the target was a training target,
  read from the run's ``rankings.jsonl`` (protocol ``--protocol``).
"""
from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BUCKETS = (("0", 0, 0), ("1", 1, 1), ("2-4", 2, 4), ("5+", 5, None))


def bucket(count: int) -> str:
    return next(name for name, low, high in BUCKETS if count >= low and (high is None or count <= high))


def load(corpus: str):
    from crs.pipeline import build_pipeline
    from crs.runner import prepare

    registry, spec, resolved = prepare(None, ["preset=popularity", f"data={corpus}"], str(ROOT / "runs" / "stats"))
    return build_pipeline(spec, registry, resolved)


def coverage(pipeline) -> None:
    counts = pipeline.items.train_counts.tolist()
    train_targets = [s.target_item for s in pipeline.task_samples("train", "rec")]
    top10 = sum(c for _, c in collections.Counter(train_targets).most_common(10)) / max(len(train_targets), 1)
    print(f"items {len(counts)}, items ever a training target {sum(c > 0 for c in counts)}, "
          f"top-10 items' share of training targets {top10:.3f}")
    print(f"{'split':<6}{'samples':>9}{'unseen':>9}{'in context':>12}{'unreachable':>13}")
    for split in ("train", "valid", "test"):
        samples = pipeline.task_samples(split, "rec")
        if not samples:
            continue
        unseen = [counts[s.target_item] == 0 for s in samples]
        in_context = [s.target_item in s.context_items for s in samples]
        unreachable = [u and not c for u, c in zip(unseen, in_context)]
        n = len(samples)
        print(f"{split:<6}{n:>9}{sum(unseen) / n:>9.3f}{sum(in_context) / n:>12.3f}{sum(unreachable) / n:>13.3f}")


def graph_reach(pipeline) -> None:
    graph = pipeline.graphs.get("entity_kg")
    if graph is None:
        print("no entity graph")
        return
    items = set(pipeline.items.entity_nodes.tolist())
    per_relation: collections.Counter = collections.Counter()
    degree: collections.Counter = collections.Counter()
    items_of_neighbour: dict[int, set[int]] = collections.defaultdict(set)
    for src, dst, rel in zip(graph.src.tolist(), graph.dst.tolist(), graph.rel.tolist()):
        if src == dst:
            continue
        for item, other in ((src, dst), (dst, src)):  # the encoders add the reverse of every edge
            if item in items:
                degree[item] += 1
                per_relation[graph.relations[rel].rsplit("/", 1)[-1].rstrip(">")] += 1
                if other not in items:
                    items_of_neighbour[other].add(item)
    degrees = np.array([degree[i] for i in items])
    sharing = np.array([len(v) for v in items_of_neighbour.values()]) if items_of_neighbour else np.zeros(1)
    print(f"entity graph: {graph.num_nodes} nodes, {len(graph.src)} stored edges; per item: mean degree "
          f"{degrees.mean():.1f}, {int((degrees == 0).sum())} items without edges")
    print(f"non-item neighbours of items: {len(items_of_neighbour)}, items per neighbour: mean {sharing.mean():.2f}, "
          f"share linked to one item only {(sharing == 1).mean():.3f}")
    print("item edges by relation: " + ", ".join(f"{r} {c}" for r, c in per_relation.most_common()))


def recall_by_frequency(pipeline, runs: list[str], protocol: str, ks: tuple[int, ...] = (10, 50)) -> None:
    from crs.evaluation.significance import gains, load_rankings

    counts = dict(zip(pipeline.items.ids, pipeline.items.train_counts.tolist()))
    header = "".join(f"{name + ' (n)':>16}" for name, _, _ in BUCKETS)
    print(f"test Recall@{'/'.join(map(str, ks))} by the target's training-target count, protocol {protocol}")
    print(f"{'run':<40}{header}")
    for run in runs:
        ranks = load_rankings(run).get(protocol, {})
        grouped: dict[str, list[tuple[float, float]]] = collections.defaultdict(list)
        for (_conv, _turn, target), rank_and_ties in ranks.items():
            grouped[bucket(int(counts.get(target, 0)))].append(rank_and_ties)
        cells = []
        for name, _, _ in BUCKETS:
            r = np.array(grouped.get(name, []), dtype=float).reshape(-1, 2)  # (rank, ties) rows
            hits = "/".join(f"{gains(r[:, 0], f'recall@{k}', r[:, 1]).mean():.2f}" for k in ks) if len(r) else "-"
            cells.append(f"{hits} ({len(r)})")
        label = "/".join(Path(run).parts[-2:])  # seeds live in sibling folders of the same name
        print(f"{label:<40}" + "".join(f"{c:>16}" for c in cells))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", required=True, help="a corpus bundle of registry.yaml (demo, redial, inspired)")
    parser.add_argument("--runs", nargs="*", default=[], help="run folders whose rankings.jsonl to break down")
    parser.add_argument("--protocol", default="crslab-v1")
    args = parser.parse_args(argv)
    pipeline = load(args.corpus)
    coverage(pipeline)
    graph_reach(pipeline)
    if args.runs:
        recall_by_frequency(pipeline, args.runs, args.protocol)
    return 0


if __name__ == "__main__":
    from crs.errors import CRSError

    try:
        sys.exit(main())
    except CRSError as err:
        sys.exit(f"error: {err}")
