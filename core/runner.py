"""`crs run` (config -> pipeline -> staged training -> evaluation -> report) and `crs eval`
(a finished run's pipeline -> evaluation -> report in another folder, no training).

Both end in :func:`write_evaluation`, so a run folder and an eval folder hold the same
files: ``report.json``, ``rankings.jsonl`` and ``generations.jsonl``.
"""
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

    from .data.item_links import unlinked_note
    from .evaluation import evaluate
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
          f"{', '.join(f'{k} {len(v)} samples' for k, v in pipeline.samples.items())}, {len(pipeline.items)} items"
          f"{unlinked_note(pipeline.corpus.report)}, "
          f"{sum(p.numel() for p in pipeline.model.parameters()):,} parameters", flush=True)
    check_split(pipeline)  # a misspelt split must not cost a whole training run first

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
    path = write_evaluation(out, results, resolved, extra)
    print(f"[crs] report: {path}  (train {train_s:.1f}s, evaluate {eval_s:.1f}s, "
          f"peak RSS {extra['peak_rss_mb']:.0f} MB)")
    return 0


def write_evaluation(out: Path, results, resolved: dict, extra: dict) -> Path:
    """Print the metrics table and write rankings.jsonl, generations.jsonl and report.json into `out`.

    report.json goes last: a folder with a report also holds the per-sample files of that evaluation.
    """
    from .evaluation import format_table, write_rankings, write_report
    from .evaluation.report import write_generations

    print(format_table(results))
    write_rankings(out, results.rankings)
    # `generations` arrives with the evaluator's per-sample generation records; until then, an empty file.
    write_generations(out, getattr(results, "generations", None) or [])
    return write_report(out, results, resolved_config=resolved, extra=extra)


def check_split(pipeline, source: str | None = None) -> None:
    """A ConfigError when the corpus has no ``evaluation.split`` (caught before any training or evaluation).

    :param source: where the split was given (e.g. "--split"), for the message.
    """
    from .errors import ConfigError, did_you_mean

    split = pipeline.spec.evaluation.split
    if split not in pipeline.samples:
        raise ConfigError("evaluation.split", f"the {pipeline.corpus.name} corpus has no split "
                          f"'{split}'.{did_you_mean(split, pipeline.samples)}",
                          f"use one of: {', '.join(pipeline.samples)}", source=source)


# ----------------------------------------------------------------- crs eval
EVAL_FOLDER = "eval"  # `crs eval RUN` writes into RUN/eval/<split> unless --out says otherwise
# The only config keys `crs eval` may change: anything else would alter the data or the model the
# checkpoint was trained as, and the metrics would describe a pipeline nobody trained.
EVAL_KEYS = ("evaluation",)


def check_eval_overrides(overrides: list[str]) -> None:
    """Raise a ConfigError for the first override outside ``evaluation.*`` (``~`` deletions included)."""
    from .errors import ConfigError

    for text in overrides:
        if "=" not in text and not text.startswith("~"):  # usually an unquoted value split by the shell
            raise ConfigError("", f"malformed override '{text}': expected evaluation.key=value",
                              "quote an override whose value has spaces, e.g. 'evaluation.protocols=[{type: fresh}]'",
                              source="command line")
        key = text.partition("=")[0].strip().lstrip("~")
        if key.split(".", 1)[0] not in EVAL_KEYS:
            raise ConfigError(key, f"`crs eval` takes only evaluation.* overrides, and '{text}' would evaluate "
                                   "another pipeline than the one trained",
                              "change evaluation.* only (split, protocols, metrics, generate, max_samples, ...), "
                              f"or train a run with it: `crs run RUN.yaml {text}`", source="command line")


def evaluate_run(run_dir: str, overrides: list[str], *, split: str | None = None, out: str | None = None,
                 progress: bool = True) -> int:
    """`crs eval`: evaluate the finished run in `run_dir` under its config plus evaluation.* `overrides`.

    Writes report.json, rankings.jsonl and generations.jsonl into `out` (default
    ``run_dir/eval/<split>``), never into `run_dir` itself or another run's folder.
    """
    from .errors import ConfigError
    from .serving import load_pipeline
    from .training.checkpoint import CHECKPOINT_FILE

    check_eval_overrides(list(overrides))
    # Checked before the (slow) loading: a run folder's report describes its training run, and an
    # evaluation must not replace it.
    if out is not None and (Path(out).resolve() == Path(run_dir).resolve() or (Path(out) / CHECKPOINT_FILE).exists()):
        raise ConfigError("", f"'{out}' is a training run's folder; its report.json would be overwritten",
                          f"write elsewhere, e.g. --out {Path(run_dir) / EVAL_FOLDER / (split or 'test')} "
                          "(the default)", source="--out")
    if split is not None:
        overrides = [*overrides, f"evaluation.split={split}"]

    import torch

    from .evaluation import evaluate

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    started = time.perf_counter()
    pipeline = load_pipeline(run_dir, overrides)
    load_s = time.perf_counter() - started
    spec = pipeline.spec
    check_split(pipeline, "--split" if split is not None else None)
    split = spec.evaluation.split
    target = Path(out) if out is not None else Path(run_dir) / EVAL_FOLDER / split
    if spec.threads:
        torch.set_num_threads(spec.threads)
    ev = spec.evaluation
    print(f"[crs] eval {spec.name} from {run_dir}: {pipeline.corpus.name} corpus, {split} split "
          f"({len(pipeline.samples[split])} samples), protocols "
          f"{', '.join(str(p.get('type')) for p in ev.protocols)}", flush=True)
    t0 = time.perf_counter()
    results = evaluate(pipeline, split, generate=ev.generate, max_samples=ev.max_samples, progress=progress)
    eval_s = time.perf_counter() - t0
    extra = {
        "evaluated_run": str(run_dir),
        "overrides": list(overrides),
        "timings_s": {**{k: round(v, 3) for k, v in pipeline.timings.items()},
                      "load": round(load_s, 3), "evaluate": round(eval_s, 3),
                      "total": round(time.perf_counter() - started, 3)},
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "data": {"corpus": pipeline.corpus.name, "samples": {k: len(v) for k, v in pipeline.samples.items()},
                 "items": len(pipeline.items)},
    }
    path = write_evaluation(target, results, pipeline.resolved, extra)
    print(f"[crs] report: {path}  (load {load_s:.1f}s, evaluate {eval_s:.1f}s)")
    return 0
