"""`crs run`: config -> pipeline -> staged training -> evaluation -> report."""
from __future__ import annotations

import logging
import resource
import sys
import time
from pathlib import Path

import yaml


def _peak_rss_mb() -> float:
    # ru_maxrss is in KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def prepare(config_path: str | None, overrides: list[str], run_dir: str | None = None):
    """Load and validate a config; return (registry, spec, resolved dict)."""
    from .config.loader import load_config
    from .plugin_manager import get_plugin_manager
    from .registry import Registry

    registry = Registry.from_plugin_manager(get_plugin_manager())
    if run_dir:
        overrides = [*overrides, f"run_dir={run_dir}"]
    # registry= validates every component node with errors pointing at the layer (preset, file, override)
    # the offending value came from.
    spec, resolved = load_config(config_path, list(overrides), registry=registry)
    return registry, spec, resolved


def run(config_path: str | None, overrides: list[str], *, resume: bool = False, print_config: bool = False,
        run_dir: str | None = None, progress: bool = True) -> int:
    registry, spec, resolved = prepare(config_path, overrides, run_dir)
    if print_config:
        sys.stdout.write(yaml.safe_dump(resolved, sort_keys=False))
        return 0

    import torch

    from .evaluation import evaluate, format_table, write_rankings, write_report
    from .io import atomic_write_text
    from .pipeline import build_pipeline
    from .training.seeding import seed_everything
    from .training.trainer import Trainer

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = Path(spec.run_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.yaml", yaml.safe_dump(resolved, sort_keys=False))
    if spec.threads:
        torch.set_num_threads(spec.threads)
    seed_everything(spec.seed)

    started = time.perf_counter()
    pipeline = build_pipeline(spec, registry, resolved)
    print(f"[crs] {spec.name}: {pipeline.corpus.name} corpus, "
          f"{', '.join(f'{k} {len(v)} samples' for k, v in pipeline.samples.items())}, {len(pipeline.items)} items, "
          f"{sum(p.numel() for p in pipeline.model.parameters()):,} parameters", flush=True)

    t0 = time.perf_counter()
    trainer = Trainer(pipeline, out, resume=resume, progress=progress)
    history = trainer.fit()
    train_s = time.perf_counter() - t0
    throughput = {stage: {**{k: round(v, 3) for k, v in t.items()},
                          "samples_per_s": round(t["samples"] / t["train_s"], 1) if t["train_s"] else None}
                  for stage, t in trainer.timings.items()}

    t0 = time.perf_counter()
    ev = spec.evaluation
    results = evaluate(pipeline, ev.split, generate=ev.generate, max_samples=ev.max_samples, progress=progress)
    eval_s = time.perf_counter() - t0

    extra = {
        "timings_s": {**{k: round(v, 3) for k, v in pipeline.timings.items()},
                      "train": round(train_s, 3), "evaluate": round(eval_s, 3),
                      "total": round(time.perf_counter() - started, 3)},
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "training": throughput,
        "data": {"corpus": pipeline.corpus.name, "report": pipeline.corpus.report,
                 "samples": {k: len(v) for k, v in pipeline.samples.items()}, "items": len(pipeline.items)},
        "history": history,
    }
    print(format_table(results))
    write_rankings(out, results.rankings)
    path = write_report(out, results, resolved_config=resolved, extra=extra)
    print(f"[crs] report: {path}  (train {train_s:.1f}s, evaluate {eval_s:.1f}s, peak RSS {extra['peak_rss_mb']:.0f} MB)")
    return 0
