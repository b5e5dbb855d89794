"""Evaluation reports: a terminal table and ``report.json`` in the run directory.

``report.json`` (written atomically, so a reader never sees half a report) holds::

    {
      "format": "crs-report/1",
      "protocols": ["crslab-v1", ...],          # ids, in evaluation order
      "metrics": {protocol_id: {metric_key: value}},   # NaN / inf -> null
      "sample_counts": {protocol_id: {"rec": n, "conv": n, "gen": n}},
      "withheld": {protocol_id: {metric_key: reason}},   # only when some value is not a result
      "definitions": {"gen.dist-n/sentences": "...", "gen.dist-n/ngrams": "...", "rec.rank": "..."},
      "config": <the resolved pipeline config>,
      "extra": {... caller's timings, data report ...,
                "examples": [{"context", "reference", "hypothesis"}, ...]},
      "written_at": "2025-01-01T12:00:00+00:00"
    }

``rankings.jsonl`` beside it holds one line per scored recommendation sample and
protocol, ``{"protocol", "conv_id", "turn", "target", "rank", "ties", "top"}``: the
per-sample ranks (mid rank among ``ties`` other items of equal score, see
``rec.rank``) behind the averages, which ``crs compare`` pairs across runs.

A *withheld* value is one the evaluator computed but that is not a result (e.g. the
perplexity of a generator no stage trained): report.json stores it as ``null`` with
the reason under ``withheld``, and the table prints ``n/a`` and the reason below it.

``generations.jsonl`` (also written on every evaluation, empty when nothing was
generated) holds one line per generated reply, ``{"conv_id", "turn", "context",
"reference", "generated", "recommended", "items_in_reply"}`` (``context`` a list of
turn texts, the last two lists item ids): what error analysis and human evaluation read.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
from pathlib import Path
from typing import Any, Iterable, Mapping

from ..io import atomic_write_json, atomic_writer
from ..run_folder import GENERATIONS_NAME, RANKINGS_NAME, REPORT_NAME

FORMAT = "crs-report/1"

DEFINITIONS = {
    "gen.dist-n/sentences": "distinct word n-grams over all generated replies / number of replies "
                            "(KGSF, CRSLab convention; can exceed 1)",
    "gen.dist-n/ngrams": "distinct word n-grams over all generated replies / total generated n-grams "
                         "(Li et al. 2016 ratio, in [0, 1])",
    "rec.rank": "mid rank: 1 + candidates scored strictly higher than the target + half the other candidates "
                "scored exactly as high (ties never favour the target); items excluded by the protocol are "
                "never ranked",
    "rec.ties": "each rec metric's per-sample value is its mean over the positions of the target's tied block, "
                "i.e. its expected value under a random tie-break (McSherry & Najork 2008): a model scoring "
                "every item alike gets recall@k = k / n_items",
    "gen.bleu-n": "BLEU+1 smoothed (Lin & Och 2004); mode and weights as in the metric's config",
    "gen.ppl": "exp(total token NLL / total non-pad reference tokens) under teacher forcing; tokens are words "
               "of the pipeline vocabulary",
    "gen.ppl/subtoken": "as gen.ppl, but the generator's tokens are sub-word tokens of its own tokenizer "
                        "(not comparable with word-level gen.ppl)",
    "adaptation": "per adapting protocol and task: tasks, adapted tasks, support and query samples, task unit",
}


def format_table(results: Mapping[str, Mapping[str, float]], *, digits: int = 4) -> str:
    """A plain-text table: one row per metric key, one column per protocol id.

    Rows keep the order in which keys first appear (rec before gen, cut-offs
    ascending, as the metrics produce them); a value a protocol lacks prints "-".
    """
    protocols = list(results)
    if not protocols:
        return "(no evaluation results)"
    keys: list[str] = []
    for values in results.values():
        keys.extend(k for k in values if k not in keys)
    rows = [["metric", *protocols]]
    withheld = getattr(results, "withheld", {}) or {}
    rows += [[key, *(("n/a" if key in withheld.get(p, {}) else _cell(results[p].get(key), digits))
                     for p in protocols)] for key in keys]
    counts = getattr(results, "sample_counts", {})
    if counts:
        rows.append(["(rec samples)", *(str(counts.get(p, {}).get("rec", "-")) for p in protocols)])
    widths = [max(len(row[col]) for row in rows) for col in range(len(rows[0]))]
    lines = []
    for i, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [cell.rjust(w) for cell, w in zip(row[1:], widths[1:])]
        lines.append("  ".join(cells).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    reasons: dict[str, list[str]] = {}  # one note per key and reason, listing the protocols it applies to
    for protocol in protocols:
        for key, reason in withheld.get(protocol, {}).items():
            reasons.setdefault(f"{key}: {reason}", []).append(protocol)
    for note, where in reasons.items():
        scope = "" if len(where) == len(protocols) else f" ({', '.join(where)})"
        lines.append(f"n/a {note}{scope}")
    return "\n".join(lines)


def _cell(value: float | None, digits: int) -> str:
    if value is None:
        return "-"
    return "nan" if math.isnan(value) else f"{value:.{digits}f}"


def write_report(run_dir: str | Path, results: Mapping[str, Mapping[str, float]], *,
                 resolved_config: dict, extra: dict | None = None) -> Path:
    """Write ``<run_dir>/report.json`` atomically and return its path.

    ``extra`` (timings, data report, ...) is stored as given; the examples and
    sample counts an :class:`~crs.evaluation.evaluator.EvaluationResults`
    carries are added unless ``extra`` already has ``examples``.  Values JSON
    cannot hold (NaN, inf, tensors, paths) are converted: non-finite numbers
    become ``null``, tensors lists, anything else its ``str``.  A value the results
    list under ``withheld`` is written as ``null``, its reason under ``withheld``.
    """
    extra = dict(extra or {})
    withheld = getattr(results, "withheld", None) or {}
    if "examples" not in extra and getattr(results, "examples", None):
        extra["examples"] = results.examples
    if "evaluation_timings_s" not in extra and getattr(results, "timings", None):
        extra["evaluation_timings_s"] = {k: round(v, 3) for k, v in results.timings.items()}
    report = {
        "format": FORMAT,
        "protocols": list(results),
        "metrics": {pid: {key: None if key in withheld.get(pid, {}) else value for key, value in values.items()}
                    for pid, values in results.items()},
        "sample_counts": dict(getattr(results, "sample_counts", {})),
        **({"withheld": dict(withheld)} if withheld else {}),
        **({"adaptation": dict(results.adaptation)} if getattr(results, "adaptation", None) else {}),
        "definitions": DEFINITIONS,
        "config": resolved_config,
        "extra": extra,
        "written_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    return atomic_write_json(Path(run_dir) / REPORT_NAME, _json_safe(report))


def write_rankings(run_dir: str | Path, rankings: Mapping[str, list[dict[str, Any]]]) -> Path:
    """Write ``<run_dir>/rankings.jsonl`` atomically (see the module docstring) and return its path."""
    path = Path(run_dir) / RANKINGS_NAME
    with atomic_writer(path, "w") as handle:
        for protocol, records in rankings.items():
            for record in records:
                handle.write(json.dumps({"protocol": protocol, **_json_safe(record)}) + "\n")
    return path


def write_generations(run_dir: str | Path, generations: Iterable[Mapping[str, Any]]) -> Path:
    """Write ``<run_dir>/generations.jsonl`` atomically, one line per generated sample, and return its path.

    Records are written as given, in order (see the module docstring for their keys), made
    JSON-safe as in :func:`write_report`.  An empty iterable still writes an empty file, so
    that a stale file from an earlier evaluation of the same folder never survives.
    """
    path = Path(run_dir) / GENERATIONS_NAME
    with atomic_writer(path, "w", encoding="utf-8") as handle:
        for record in generations:
            handle.write(json.dumps(_json_safe(record), ensure_ascii=False) + "\n")
    return path


def _json_safe(value: Any) -> Any:
    """A copy of ``value`` that strict JSON can hold (see :func:`write_report`)."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_json_safe(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, (str, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(value, "tolist"):  # tensors, numpy arrays and scalars
        return _json_safe(value.tolist())
    return str(value)
