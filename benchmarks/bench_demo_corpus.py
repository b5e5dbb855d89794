"""Benchmark: generating the built-in demo corpus (default size) from scratch.

Times ``crs.plugins.demo.corpus`` building the default corpus (1,200 / 150 / 150
dialogues, 300 movies) without its per-process cache, median and best over ``--runs``
rounds, and prints them with the machine they were measured on.  The unit test
(tests/test_demo_corpus.py) checks the sizes and content; it used to require under
5 s as well, a wall-clock limit that fails on a busy machine, so the figure lives
here (BENCHMARKS.md).

    python benchmarks/bench_demo_corpus.py              # 5 rounds
    python benchmarks/bench_demo_corpus.py --runs 3 --json out.json
"""
from __future__ import annotations

import argparse
import time
from dataclasses import astuple

from bench_report import finish, summary  # same folder: run as python benchmarks/bench_demo_corpus.py

from crs.plugins.demo.corpus import DemoConfig, _corpus


def one_round(config: DemoConfig) -> tuple[float, dict[str, int]]:
    """Seconds to build the corpus (bypassing the cache) and its split sizes."""
    start = time.perf_counter()
    corpus = _corpus.__wrapped__(astuple(config))
    seconds = time.perf_counter() - start
    return seconds, {split: len(convs) for split, convs in corpus.splits.items()}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="rounds")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    config = DemoConfig()
    rounds = [one_round(config) for _ in range(max(1, args.runs))]
    seconds = [s for s, _ in rounds]
    result = {"sizes": rounds[0][1], "items": config.n_items, "runs": len(seconds), "seconds": summary(seconds)}
    median, best = result["seconds"]["median"], result["seconds"]["best"]
    return finish(result, [f"demo corpus, default size {result['sizes']}, {len(seconds)} rounds",
                           f"  build: median {median:.2f} s, best {best:.2f} s"], args.json)


if __name__ == "__main__":
    main()
