"""`crs run` (config -> pipeline -> staged training -> evaluation -> report) and `crs eval`
(a finished run's pipeline -> evaluation -> report in another folder, no training).

Both end in :func:`write_evaluation`, so a run folder and an eval folder hold the same
files: ``report.json``, ``rankings.jsonl`` and ``generations.jsonl``.
"""
from __future__ import annotations

import contextlib
import logging
import resource
import sys
import time
from pathlib import Path

import yaml

log = logging.getLogger("crs.run")


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


def run(config_path: str | None, overrides: list[str], *, resume: bool = False, overwrite: bool = False,
        print_config: bool = False, run_dir: str | None = None, progress: bool = True) -> int:
    """`crs run`: train and evaluate into ``spec.run_dir``.

    The run folder is locked for the whole command (:mod:`crs.run_folder`).  Everything that
    can refuse the run is checked before anything is written there: another process holding
    the folder, a finished or unfinished run in it (``overwrite`` replaces it, ``resume``
    continues it), and for ``resume`` the checkpoint's checksum and config.  A run that fails
    before its first checkpoint removes the folder it created.
    """
    from .errors import ConfigError

    registry, spec, resolved = prepare(config_path, overrides, run_dir)
    if print_config:
        sys.stdout.write(yaml.safe_dump(resolved, sort_keys=False))
        return 0
    if resume and overwrite:
        raise ConfigError("", "--resume continues the run in the folder and --overwrite replaces it",
                          "pass one of them", source="command line")

    from .training import distributed
    from .training.run_log import console

    # Under torchrun: join the process group (gloo on CPU, nccl on CUDA); nothing happens in one process.
    distributed.init_from_env(spec.device)
    try:
        with console(), distributed.quiet_unless_main():
            return _run_in_folder(registry, spec, resolved, resume=resume, overwrite=overwrite, progress=progress)
    finally:
        distributed.shutdown()


def _run_in_folder(registry, spec, resolved: dict, *, resume: bool, overwrite: bool, progress: bool) -> int:
    """The body of `crs run` once the config is loaded: checks, lock, data, training, evaluation, report."""
    import torch

    from .data.item_links import unlinked_note
    from .data.shared_folder import check_shared_data
    from .evaluation import evaluate
    from .io import atomic_write_text
    from .pipeline import build_pipeline
    from .run_folder import CONFIG_FILE, claim, clear_run, refuse_existing_run
    from .training import distributed
    from .training.checkpoint import check_resumable, comparable_config
    from .training.seeding import seed_everything
    from .training.trainer import Trainer

    out = Path(spec.run_dir)
    check_shared_data(spec, registry)  # before a folder exists: a missing corpus leaves nothing behind
    # Under torchrun, rank 0 alone holds the folder, checks it and writes into it; the others only read the checkpoint.
    main = distributed.current().main
    with claim(out) if main else contextlib.nullcontext():
        if main:
            refuse_existing_run(out, resume=resume, overwrite=overwrite)
        # A damaged checkpoint or another config: refused before the (slow) loading, nothing written.  The checked
        # checkpoint goes to the trainer, which would otherwise read, hash and compare it all over again.
        checkpoint = check_resumable(out, comparable_config(resolved)) if resume else None
        if spec.threads:
            torch.set_num_threads(spec.threads)
        seed_everything(spec.seed)

        started = time.perf_counter()
        pipeline = build_pipeline(spec, registry, resolved)
        check_split(pipeline)  # a misspelt split must not cost a whole training run first
        print_header(pipeline, out, unlinked_note(pipeline.corpus.report))
        item_texts = pipeline.item_text_report()  # which texts stood in for reviews, and their coverage
        print_item_texts(item_texts, spec.evaluation.split)
        print_skipped_lines(pipeline)
        if overwrite and main:
            removed = clear_run(out)
            if removed:
                log.info("--overwrite: removed the previous run's %s from %s", ", ".join(removed), out)
        if main:
            atomic_write_text(out / CONFIG_FILE, yaml.safe_dump(resolved, sort_keys=False))

        t0 = time.perf_counter()
        trainer = Trainer(pipeline, out, resume=resume, progress=progress, checkpoint=checkpoint)
        del checkpoint  # the trainer's now, and dropped once loaded: not kept in memory through the evaluation
        history = trainer.fit()
        train_s = time.perf_counter() - t0
        throughput = {stage: {**{k: round(v, 3) for k, v in t.items()},
                              "samples_per_s": round(t["samples"] / t["train_s"], 1) if t["train_s"] else None}
                      for stage, t in trainer.timings.items()}
        if not main:
            return 0  # rank 0 evaluates (every sample once) and writes the report

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
            "data": {**data_summary(pipeline, item_texts), "report": pipeline.corpus.report},
            "history": history,
            **distributed.report_entry(),  # under torchrun: processes and backend ({} in one process)
        }
        path = write_evaluation(out, results, resolved, extra)
        write_curves(out)
    print(f"[crs] report: {path}  (train {train_s:.1f}s, evaluate {eval_s:.1f}s, "
          f"peak RSS {extra['peak_rss_mb']:.0f} MB)", flush=True)
    return 0


def print_header(pipeline, out: Path, items_note: str = "") -> None:
    """What the run works on: corpus, items (`items_note`: e.g. how many are unlinked from the KG),
    parameters, folder, and what its report will count.

    The split sizes count samples, one per recommender turn; the report's ``(rec samples)``
    counts ranked targets, one per item a turn recommends (none for a turn that recommends
    nothing), so the two differ, and the header says by how much before the run starts.
    """
    spec = pipeline.spec
    parameters = sum(p.numel() for p in pipeline.model.parameters())
    print(f"[crs] {spec.name}: {pipeline.corpus.name} corpus, {len(pipeline.items)} items{items_note}, "
          f"{parameters:,} parameters, run folder {out}", flush=True)
    sizes = ", ".join(f"{split} {len(samples)}" for split, samples in pipeline.samples.items())
    roles = " and ".join(r for r in ("seeker", "recommender") if r in spec.samples.roles)  # samples.roles
    print(f"[crs] samples (one per {roles} turn): {sizes}", flush=True)
    print(f"[crs] {scored_counts(pipeline, spec.evaluation.split)}", flush=True)


def print_item_texts(report: dict, split: str) -> None:
    """The item texts the pipeline reads: what they are and how much of `split` they cover (report:
    extra.data.item_texts, see crs.data.text_coverage); nothing when no component reads any."""
    from .data.text_coverage import coverage_lines

    for line in coverage_lines(report, split) if report else []:
        print(f"[crs] {line}", flush=True)


def scored_counts(pipeline, split: str) -> str:
    """Why the report's sample counts differ from the split's: ranked targets and scored replies."""
    turns = len(pipeline.samples.get(split, []))
    targets = len(pipeline.task_samples(split, "rec"))
    text = (f"{split}: {turns} turns; rec.* ranks {targets} recommended items (one per item a turn recommends, "
            "none for a turn that recommends nothing)")
    if getattr(pipeline.model, "has_generator", False):
        text += f", gen.* scores {len(pipeline.task_samples(split, 'conv'))} replies"
    return text


def data_summary(pipeline, item_texts: dict) -> dict:
    """The report's ``extra.data``: corpus, split sizes, items, ``item_train_counts`` (``{item id: times
    recommended in train}`` for items recommended at least once: crs.plots' popularity buckets) and, when a
    component reads item texts, what they are and their coverage (``item_texts``)."""
    counts = pipeline.items.train_counts.tolist()
    return {"corpus": pipeline.corpus.name, "samples": {k: len(v) for k, v in pipeline.samples.items()},
            "items": len(pipeline.items),
            "item_train_counts": {item: int(n) for item, n in zip(pipeline.items.ids, counts) if n > 0},
            **({"item_texts": item_texts} if item_texts else {})}


def write_curves(out: Path) -> None:
    """``curves.png`` of a finished run (crs.plots).  The report is already written: a drawing that fails
    (a broken matplotlib install) costs the picture, not the run, and says how to redraw it."""
    from .plots import write_run_curves

    try:
        path = write_run_curves(out)
    except Exception as err:  # noqa: BLE001 - any plotting failure must not fail a finished run
        log.warning("could not draw %s/curves.png (%s: %s); redraw it with `crs plot %s`", out,
                    type(err).__name__, err, out)
        return
    if path is not None:
        print(f"[crs] training curves: {path}", flush=True)


def write_evaluation(out: Path, results, resolved: dict, extra: dict) -> Path:
    """Print the metrics table and write rankings.jsonl, generations.jsonl and report.json into `out`.

    report.json goes last: a folder with a report also holds the per-sample files of that evaluation.
    """
    from .evaluation import format_table, write_generations, write_rankings, write_report

    print(format_table(results), flush=True)
    write_rankings(out, results.rankings)
    write_generations(out, results.generations)
    return write_report(out, results, resolved_config=resolved, extra=extra)


def print_skipped_lines(pipeline) -> None:
    """One console line for the malformed data lines the corpus skipped under ``on_error: skip`` (none: silent).

    The report holds the same count (extra.data.report.skipped, with examples); the console says it too,
    because a skip that nobody sees changes the test set without a trace.
    """
    report = getattr(pipeline.corpus, "report", None) or {}
    count = int(report.get("skipped") or 0)
    if count:
        files = ", ".join(f"{Path(str(name)).name} {n}" for name, n in (report.get("skipped_by_file") or {}).items())
        print(f"[crs] {pipeline.corpus.name}: skipped {count} malformed line{'s' * (count != 1)} "
              f"(on_error: skip){f' in {files}' if files else ''}", flush=True)


def check_split(pipeline, source: str | None = None) -> None:
    """A ConfigError when the corpus has no ``evaluation.split``, a DataError when that split has nothing to
    evaluate (:func:`crs.evaluation.evaluator.check_evaluable`); caught before any training or evaluation.

    :param source: where the split was given (e.g. "--split"), for the message.
    """
    from .errors import ConfigError, did_you_mean

    split = pipeline.spec.evaluation.split
    if split not in pipeline.samples:
        raise ConfigError("evaluation.split", f"the {pipeline.corpus.name} corpus has no split "
                          f"'{split}'.{did_you_mean(split, pipeline.samples)}",
                          f"use one of: {', '.join(pipeline.samples)}", source=source)
    from .evaluation.evaluator import check_evaluable

    check_evaluable(pipeline, split)  # nor an empty one: evaluating on nothing is refused after training otherwise


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

    import contextlib
    import os

    from .run_folder import claim
    from .training.run_log import console

    # The run's folder is locked like a training run's: the default output lies inside it, and a
    # `crs run --overwrite` or `--resume` of the same folder must not change the model under the evaluation.
    # A missing folder is load_pipeline's error to explain, so it is not created here; a read-only one
    # (a run shared by someone else, evaluated with --out elsewhere) nobody can change, so it needs no lock.
    lockable = Path(run_dir).is_dir() and os.access(run_dir, os.W_OK)
    folder_lock = claim(run_dir, create=False) if lockable else contextlib.nullcontext()
    with console(), folder_lock:
        path, load_s, eval_s = _evaluate_locked(run_dir, overrides, split, out, progress)
    print(f"[crs] report: {path}  (load {load_s:.1f}s, evaluate {eval_s:.1f}s)", flush=True)
    return 0


def _evaluate_locked(run_dir: str, overrides: list[str], split: str | None, out: str | None,
                     progress: bool) -> tuple[Path, float, float]:
    """The body of `crs eval` while the run folder is locked; returns (report path, load s, evaluate s)."""
    import torch

    from .evaluation import evaluate
    from .serving import load_pipeline

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
    print(f"[crs] {scored_counts(pipeline, split)}", flush=True)
    print_skipped_lines(pipeline)
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
        "data": data_summary(pipeline, pipeline.item_text_report()),
    }
    return write_evaluation(target, results, pipeline.resolved, extra), load_s, eval_s
