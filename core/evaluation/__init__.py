"""Evaluation: score a pipeline under named protocols and write the report.

- :func:`evaluate` (``evaluator.py``): ``{protocol_id: {metric_key: value}}``;
- :func:`format_table`, :func:`write_report`, :func:`write_rankings`, :func:`write_generations`
  (``report.py``): terminal table, ``report.json``, per-sample ``rankings.jsonl`` and ``generations.jsonl``;
- :func:`compare_runs` (``significance.py``): paired bootstrap of two runs' rankings;
- ``ranking.py`` / ``text.py``: the arithmetic the metric plugins share.

The metric and protocol components themselves live in the ``crs.plugins.metrics`` plugin.
"""
from .evaluator import EvaluationResults, evaluate
from .report import format_table, write_generations, write_rankings, write_report

__all__ = ["EvaluationResults", "evaluate", "format_table", "write_generations", "write_rankings", "write_report"]
