"""Pictures of what runs did: ``crs plot RUN_DIR [RUN_DIR ...] [--out plots/]``.

Three figures, drawn with matplotlib (Agg backend: no display needed) from the files a
run folder already holds, so they can be redrawn for any finished run:

- :func:`curves_figure` (one run): per stage, the training loss and each of its parts by
  epoch, the validation loss dashed, and the validation metrics below; the epoch whose
  state early stopping restored is marked (the ``scope: restored`` record of
  ``metrics.jsonl``).  Every ``crs run`` writes it as ``curves.png`` when it ends.
- :func:`comparison_figure` (several runs): Recall@k per run and protocol with a 95%
  percentile-bootstrap interval of each mean, from ``rankings.jsonl`` (the same per-sample
  gains ``crs compare`` resamples; intervals of single runs, not of differences: use
  ``crs compare`` for claims).
- :func:`popularity_figure` (several runs): Recall@k by how often the target item was
  recommended in train (``report.json``'s ``extra.data.item_train_counts``), in buckets
  of equal numbers of test targets: do the models only find the popular items?
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from .errors import DataError
from .io import atomic_write_bytes
from .run_folder import CURVES_NAME, METRICS_FILE, RANKINGS_NAME, REPORT_NAME

__all__ = ["CURVES_NAME", "curves_figure", "comparison_figure", "popularity_figure", "write_plots",
           "write_run_curves", "mean_interval"]

RESTORED_SCOPE = "restored"  # metrics.jsonl scope of the record naming the epoch early stopping restored
log = logging.getLogger("crs.plot")


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)  # files only: never open a window, work without a display
    import matplotlib.pyplot as plt

    return plt


# ------------------------------------------------------------------ reading run folders
def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        raise DataError(str(path), "not found", "point at the run_dir of a `crs run` (it writes this file)")
    records = []
    with open(path, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise DataError(str(path), f"not a JSON line ({err.msg})",
                                "the file is written by `crs run`; rerun the run to rewrite it", line=line_no) from None
    return records


def _read_report(run_dir: Path) -> dict:
    path = run_dir / REPORT_NAME
    if not path.is_file():
        raise DataError(str(path), "no report in this run folder",
                        "point at the run_dir of a finished `crs run` (report.json is written when it ends)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(str(path), f"not valid JSON ({err.msg})", "rerun the evaluation (crs eval RUN_DIR) to "
                        "rewrite it", line=err.lineno) from None


def _label(run_dir: Path) -> str:
    """A run's name in legends: its config name, and the folder when names repeat."""
    try:
        name = _read_report(run_dir).get("config", {}).get("name")
    except DataError:
        name = None
    return f"{name} ({run_dir.name})" if name and name != run_dir.name else run_dir.name


def _stages(records: list[dict]) -> dict[str, dict[str, Any]]:
    """``{stage: {"train": [...], "valid": [...], "restored": record | None}}`` from metrics.jsonl, in run order."""
    stages: dict[str, dict[str, Any]] = {}
    for record in records:
        stage = stages.setdefault(str(record.get("stage")), {"train": [], "valid": [], "restored": None})
        scope = record.get("scope")
        if scope == "epoch" and record.get("split") in ("train", "valid"):
            stage[record["split"]].append(record)
        elif scope == RESTORED_SCOPE:
            stage["restored"] = record
    return stages


_BOOKKEEPING = frozenset({"stage", "epoch", "step", "split", "scope"})


def _numbers(record: dict, prefix: str) -> dict[str, float]:
    """The finite metric values of a metrics.jsonl record whose keys start with `prefix`."""
    return {k: float(v) for k, v in record.items() if k.startswith(prefix) and k not in _BOOKKEEPING
            and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))}


def _shown_metrics(stage: dict[str, Any]) -> list[str]:
    """Validation metrics worth a line: the early-stopping metric and recall@k (mrr/ndcg follow recall and would
    crowd the panel; metrics.jsonl has them all)."""
    keys = {k for r in stage["valid"] for k in _numbers(r, "") if not k.startswith("loss")}
    chosen = {k for k in keys if k.startswith("rec.recall@")}
    if stage["restored"] is not None:
        chosen |= set(_numbers(stage["restored"], "")) & keys
    return sorted(chosen, key=lambda k: (not k.startswith("rec.recall@"), len(k), k))


# ------------------------------------------------------------------ figures
def _trained_stages(run_dir: Path) -> dict[str, dict[str, Any]]:
    """:func:`_stages` of the run's metrics.jsonl, only those with a finished training epoch."""
    return {name: s for name, s in _stages(_read_jsonl(run_dir / METRICS_FILE)).items() if s["train"]}


def curves_figure(run_dir: str | Path, stages: dict[str, dict[str, Any]] | None = None) -> Any:
    """Loss parts and validation metrics by epoch, one column per stage (see the module doc).

    `stages`: :func:`_trained_stages` when the caller has read them already."""
    run_dir = Path(run_dir)
    stages = _trained_stages(run_dir) if stages is None else stages
    if not stages:
        raise DataError(str(run_dir / METRICS_FILE), "no finished epoch to draw",
                        "plot a run that trained at least one epoch")
    plt = _pyplot()
    fig, axes = plt.subplots(2, len(stages), figsize=(4.2 * len(stages), 6.4), squeeze=False, sharex="col")
    for col, (name, stage) in enumerate(stages.items()):
        loss_ax, metric_ax = axes[0][col], axes[1][col]
        for split, style in (("train", "-"), ("valid", "--")):
            records = stage[split]
            keys = sorted({k for r in records for k in _numbers(r, "loss")})
            for key in keys:
                points = [(r["epoch"], _numbers(r, "loss")[key]) for r in records if key in _numbers(r, "loss")]
                if points:
                    xs, ys = zip(*points)
                    loss_ax.plot(xs, ys, style, marker="o", markersize=3, label=f"{split} {key}")
        loss_ax.set_title(f"stage {name}")
        loss_ax.set_ylabel("loss")
        loss_ax.legend(fontsize=7)
        metrics = _shown_metrics(stage)
        for key in metrics:
            points = [(r["epoch"], _numbers(r, "")[key]) for r in stage["valid"] if key in _numbers(r, "")]
            xs, ys = zip(*points)
            metric_ax.plot(xs, ys, marker="o", markersize=3, label=key)
        restored = stage["restored"]
        if restored is not None:
            for ax in (loss_ax, metric_ax):
                ax.axvline(restored["epoch"], color="black", linestyle=":", linewidth=1)
            metric_ax.annotate(f"restored: epoch {restored['epoch']}", xy=(restored["epoch"], 0.02),
                               xycoords=("data", "axes fraction"), fontsize=7, ha="right")
        metric_ax.set_xlabel("epoch")
        last = max(r["epoch"] for r in stage["train"])
        metric_ax.set_xticks(list(range(1, last + 1, max(1, math.ceil(last / 10)))))  # whole epochs only
        metric_ax.set_xlim(0.5, last + 0.5)  # a one-epoch stage gets one tick, not a fractional axis
        metric_ax.set_ylabel("validation")
        if metrics:
            metric_ax.legend(fontsize=7)
        else:
            metric_ax.text(0.5, 0.5, "no validation metrics\n(validated on loss, or not validated)", ha="center",
                           va="center", transform=metric_ax.transAxes)
    fig.suptitle(f"{_label(run_dir)}: training curves")
    fig.tight_layout()
    return fig


def mean_interval(values: np.ndarray, *, resamples: int = 2000, seed: int = 0, level: float = 0.95
                  ) -> tuple[float, float, float]:
    """(mean, low, high): a percentile-bootstrap interval of the mean of per-sample `values`."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or len(values) == 0:
        raise ValueError("values must be a non-empty 1-D array")
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for start in range(0, resamples, 1000):  # chunks keep memory flat for large test splits
        stop = min(start + 1000, resamples)
        means[start:stop] = values[rng.integers(0, len(values), size=(stop - start, len(values)))].mean(axis=1)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(values.mean()), float(low), float(high)


def _gains(run_dir: Path, metrics: Sequence[str]) -> dict[str, tuple[list, dict[str, np.ndarray]]]:
    """``{protocol: (sample keys, {metric: per-sample gains})}`` of one run (rankings.jsonl read once)."""
    from .evaluation.significance import gains, load_rankings

    out = {}
    for protocol, ranked in load_rankings(run_dir).items():
        keys = list(ranked)
        ranks = np.array([ranked[k][0] for k in keys])
        ties = np.array([ranked[k][1] for k in keys])
        out[protocol] = (keys, {metric: gains(ranks, metric, ties) for metric in metrics})
    return out


def comparison_figure(run_dirs: Sequence[str | Path], *, ks: Sequence[int] = (1, 10, 50),
                      resamples: int = 2000, seed: int = 0) -> Any:
    """Recall@k of each run and protocol with 95% bootstrap intervals (see the module doc)."""
    runs = [Path(r) for r in run_dirs]
    table: dict[tuple[str, str], dict[int, tuple[float, float, float]]] = {}
    for run in runs:
        label = _label(run)
        for protocol, (_, by_metric) in _gains(run, [f"recall@{k}" for k in ks]).items():
            table[(label, protocol)] = {k: mean_interval(by_metric[f"recall@{k}"], resamples=resamples, seed=seed)
                                        for k in ks}
    if not table:
        raise DataError(str(runs[0]), "no ranked samples in these runs", "plot runs that have a recommender")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(5.0, 1.6 * len(ks) * len(table) ** 0.5 + 3), 4.2))
    width = 0.8 / len(table)
    for i, ((label, protocol), by_k) in enumerate(table.items()):
        xs = [j + (i - (len(table) - 1) / 2) * width for j in range(len(ks))]
        means = [by_k[k][0] for k in ks]
        errors = [[by_k[k][0] - by_k[k][1] for k in ks], [by_k[k][2] - by_k[k][0] for k in ks]]
        ax.bar(xs, means, width, yerr=errors, capsize=3, label=f"{label} [{protocol}]")
    ax.set_xticks(range(len(ks)), [f"R@{k}" for k in ks])
    ax.set_ylabel("recall (95% bootstrap interval)")
    ax.set_title("runs compared (use crs compare for paired differences)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _train_counts(run_dir: Path) -> dict[str, float]:
    counts = _read_report(run_dir).get("extra", {}).get("data", {}).get("item_train_counts")
    if counts is None:
        raise DataError(str(run_dir / REPORT_NAME), "the report has no item_train_counts (written since "
                        "2026-12-01)", "rerun the run, or `crs eval RUN_DIR` to rewrite its report")
    return {str(k): float(v) for k, v in counts.items()}


def popularity_figure(run_dirs: Sequence[str | Path], *, k: int = 10, buckets: int = 4) -> Any:
    """Recall@k by the target's train popularity, buckets of equal test-target counts (see the module doc)."""
    runs = [Path(r) for r in run_dirs]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    edges = None
    for run in runs:
        run_counts = _train_counts(run)
        label = _label(run)
        for protocol, (keys, by_metric) in _gains(run, [f"recall@{k}"]).items():
            values = by_metric[f"recall@{k}"]
            popularity = np.array([run_counts.get(key[2], 0.0) for key in keys])
            if edges is None:  # the first run's buckets; the other runs are scored on the same edges
                edges = np.unique(np.quantile(popularity, np.linspace(0, 1, buckets + 1)))
            which = np.clip(np.searchsorted(edges, popularity, side="right") - 1, 0, len(edges) - 2)
            means = [values[which == b].mean() if (which == b).any() else np.nan for b in range(len(edges) - 1)]
            ax.plot(range(len(means)), means, marker="o", label=f"{label} [{protocol}]")
    labels = [f"{edges[b]:.0f}-{edges[b + 1]:.0f}" for b in range(len(edges) - 1)]
    ax.set_xticks(range(len(labels)), labels)
    ax.set_xlabel("times the target was recommended in train (bucket)")
    ax.set_ylabel(f"recall@{k}")
    ax.set_title("recall by item popularity")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------ writing
def _save(fig: Any, path: Path) -> Path:
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    _pyplot().close(fig)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def write_run_curves(run_dir: str | Path) -> Path | None:
    """``RUN_DIR/curves.png`` at the end of a run; a run without a trained epoch draws nothing (None)."""
    run_dir = Path(run_dir)
    stages = _trained_stages(run_dir)
    return _save(curves_figure(run_dir, stages), run_dir / CURVES_NAME) if stages else None


def write_plots(run_dirs: Iterable[str | Path], out: str | Path) -> list[Path]:
    """Every figure for `run_dirs` into folder `out`: one curves PNG per run that trained, then the
    comparison and popularity figures of all runs that ranked items.  Returns the files written."""
    runs = [Path(r) for r in run_dirs]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for i, run in enumerate(runs):
        if not run.is_dir():
            raise DataError(str(run), "no such run folder", "pass the run_dir of a `crs run`")
        stages = _trained_stages(run)
        if not stages:
            log.warning("%s trained nothing (e.g. popularity): no training curves", run)
            continue
        name = f"curves-{run.name}.png" if sum(r.name == run.name for r in runs) == 1 else f"curves-{i}-{run.name}.png"
        written.append(_save(curves_figure(run, stages), out / name))
    ranked = [run for run in runs if (run / RANKINGS_NAME).is_file() and (run / RANKINGS_NAME).stat().st_size]
    if ranked:
        written.append(_save(comparison_figure(ranked), out / "comparison.png"))
        written.append(_save(popularity_figure(ranked), out / "popularity.png"))
    return written
