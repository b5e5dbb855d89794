"""Scores a trained pipeline on one split under named evaluation protocols.

``evaluate`` returns ``{protocol_id: {metric_key: value}}``.  Recommendation
metrics depend on the protocol (which samples, which candidates); conversation
metrics (Dist, BLEU, F1, PPL, ...) do not, so they are computed once and copied
into every protocol's dict, making each report section complete on its own.

The returned object is an :class:`EvaluationResults`, a plain ``dict`` of that
shape with three attributes on the side (they are not keys, so code iterating
over protocols never trips over them):

- ``examples``: up to ``EXAMPLES`` dicts ``{"context", "reference", "hypothesis"}``
  from the first generated replies, for the report;
- ``sample_counts``: ``{protocol_id: {"rec": n_scored, "conv": n_ppl, "gen": n_generated}}``;
- ``timings``: seconds spent on ``rec/<protocol_id>`` and ``conv``;
- ``rankings``: ``{protocol_id: [{"conv_id", "turn", "target", "rank", "top"}, ...]}``, one
  record per scored sample (``target``/``top`` are item ids, ``top`` the first ``TOP_SHOWN``
  items ranked, ``rank`` null for a target the protocol excluded): what ``crs compare`` pairs
  up for significance tests and what error analysis reads.
"""
from __future__ import annotations

import time
from typing import Any, Iterable

import torch

from ..data.vocab import detokenize
from ..errors import ConfigError
from .ranking import apply_candidate_mask, target_ranks

EXAMPLES = 5
CONTEXT_TURNS_SHOWN = 3  # the examples show the last turns only: enough to judge the reply
TASKS = ("rec", "gen", "nll")
TOP_SHOWN = 10


class EvaluationResults(dict):
    """``{protocol_id: {metric_key: float}}`` plus ``examples``, ``sample_counts`` and ``timings``."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.examples: list[dict[str, str]] = []
        self.sample_counts: dict[str, dict[str, int]] = {}
        self.timings: dict[str, float] = {}
        self.rankings: dict[str, list[dict[str, Any]]] = {}


def evaluate(pipeline: Any, split: str, *, protocols: Iterable[Any] | None = None, generate: bool = True,
             max_samples: int = 0, progress: bool = False,
             tasks: Iterable[str] = ("rec", "conv")) -> EvaluationResults:
    """Evaluate ``pipeline.model`` on ``pipeline.samples[split]``.

    :param protocols: already-built protocol objects; default: every node of
        ``pipeline.spec.evaluation.protocols``, built through ``pipeline.build``.
    :param generate: also decode replies and feed the ``gen`` metrics (otherwise
        only perplexity is computed for the generator).
    :param max_samples: when > 0, generate for at most that many conversation
        samples (perplexity still covers the whole split).
    :param progress: show tqdm progress bars.
    :param tasks: which parts to run: "rec" (ranking under each protocol) and/or "conv"
        (perplexity and generation). Validation for early stopping on a rec metric
        passes ("rec",) so that no conversation pass runs every epoch.
    The model is put in eval mode and restored to its previous mode afterwards.
    """
    ev = pipeline.spec.evaluation
    protocols = _build_protocols(pipeline) if protocols is None else list(protocols)
    ids = [p.id for p in protocols]
    for pid in ids:
        if ids.count(pid) > 1:  # checked before any work: results are keyed by id
            raise ConfigError("evaluation.protocols", f"two protocols share the id '{pid}'",
                              "list each protocol once")
    metrics = _build_metrics(pipeline)
    rec_metrics = [m for m in metrics if m.task == "rec"]
    model = pipeline.model
    results = EvaluationResults()
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            conv_values, conv_counts = {}, {}
            tasks = set(tasks)
            if model.has_generator and "conv" in tasks:
                started = time.perf_counter()
                conv_metrics = [m for m in metrics if m.task == "nll" or (generate and m.task == "gen")]
                conv_values, conv_counts = _conversation_metrics(
                    pipeline, split, conv_metrics, ev.batch_size, ev.max_gen_tokens, max_samples, progress,
                    results.examples)
                results.timings["conv"] = time.perf_counter() - started
            for protocol in protocols:
                pid = protocol.id
                values: dict[str, float] = {}
                counts = dict(conv_counts)
                if model.has_recommender and "rec" in tasks:
                    started = time.perf_counter()
                    results.rankings[pid] = _rec_metrics(pipeline, split, protocol, rec_metrics, ev.batch_size,
                                                         progress)
                    counts["rec"] = len(results.rankings[pid])
                    values.update(_collect(rec_metrics))
                    results.timings[f"rec/{pid}"] = time.perf_counter() - started
                values.update(conv_values)
                results[pid] = values
                results.sample_counts[pid] = counts
    finally:
        model.train(was_training)
    return results


def _build_protocols(pipeline: Any) -> list[Any]:
    return [pipeline.build("evaluation_protocol", node, f"evaluation.protocols.{i}")
            for i, node in enumerate(pipeline.spec.evaluation.protocols)]


def _build_metrics(pipeline: Any) -> list[Any]:
    """The configured metrics, in config order (report rows follow it)."""
    metrics = []
    for i, node in enumerate(pipeline.spec.evaluation.metrics):
        path = f"evaluation.metrics.{i}"
        metric = pipeline.build("metric", node, path)
        if metric.task not in TASKS:
            raise ConfigError(path, f"metric declares unknown task '{metric.task}'",
                              f"a Metric's task must be one of: {', '.join(TASKS)}")
        metrics.append(metric)
    return metrics


def _collect(metrics: list[Any]) -> dict[str, float]:
    values: dict[str, float] = {}
    for metric in metrics:
        values.update({key: float(v) for key, v in metric.compute().items()})
    return values


def _bar(iterable: Iterable, enabled: bool, desc: str) -> Iterable:
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, leave=False)


def _rec_metrics(pipeline: Any, split: str, protocol: Any, metrics: list[Any], batch_size: int,
                 progress: bool) -> list[dict[str, Any]]:
    """Feed ``metrics`` with the protocol's masked scores; returns one ranking record per scored sample."""
    for metric in metrics:
        metric.reset()
    samples = protocol.rec_samples(pipeline.samples.get(split, []))
    item_ids = pipeline.items.ids
    n_items = len(item_ids)
    records: list[dict[str, Any]] = []
    batches = pipeline.batches(samples, batch_size, shuffle=False, seed=0)
    for batch in _bar(batches, progress, f"rec {protocol.id}"):
        scores = pipeline.model.compute(batch, ["scores"])["scores"]
        scores = apply_candidate_mask(scores, protocol.candidate_mask(batch, n_items))
        targets = batch["batch.target_item"].to(scores.device)
        for metric in metrics:
            metric.update(scores, targets)
        ranks = target_ranks(scores, targets).tolist()
        top = scores.topk(min(TOP_SHOWN, n_items), dim=1)
        for sample, rank, top_scores, top_items in zip(samples[len(records):], ranks, top.values.tolist(),
                                                       top.indices.tolist()):
            records.append({"conv_id": sample.conv_id, "turn": sample.turn_index,
                            "target": item_ids[sample.target_item], "rank": rank if rank != float("inf") else None,
                            "top": [item_ids[i] for i, v in zip(top_items, top_scores) if v != float("-inf")]})
    return records


def _conversation_metrics(pipeline: Any, split: str, metrics: list[Any], batch_size: int, max_len: int,
                          max_samples: int, progress: bool,
                          examples: list[dict[str, str]]) -> tuple[dict[str, float], dict[str, int]]:
    """One pass over the conversation samples: perplexity on all, generation on the first ``max_samples``."""
    nll_metrics = [m for m in metrics if m.task == "nll"]
    gen_metrics = [m for m in metrics if m.task == "gen"]
    for metric in metrics:
        metric.reset()
    samples = pipeline.task_samples(split, "conv")
    gen_budget = len(samples) if max_samples <= 0 else min(max_samples, len(samples))
    generated = 0
    for batch in _bar(pipeline.batches(samples, batch_size, shuffle=False, seed=0), progress, "conv"):
        if nll_metrics:
            state = pipeline.model.compute(batch, ["nll_sum", "nll_count"])
            for metric in nll_metrics:
                metric.update(float(state["nll_sum"]), float(state["nll_count"]))
        if gen_metrics and generated < gen_budget:
            take = min(gen_budget - generated, batch["batch.response_tokens"].shape[0])
            hyps, refs = _decode_batch(pipeline, batch, max_len, take)
            for metric in gen_metrics:
                metric.update(hyps, refs)
            _keep_examples(examples, batch, hyps, refs)
            generated += take
    counts = {"conv": len(samples) if nll_metrics else 0, "gen": generated}
    return _collect(metrics), counts


def _decode_batch(pipeline: Any, batch: dict, max_len: int, take: int) -> tuple[list[list[str]], list[list[str]]]:
    """Word tokens of the first ``take`` generated replies and of their references."""
    # Generation runs on the whole batch (cheaper than re-collating a smaller one); extra rows are dropped.
    generated = pipeline.model.generate(batch, max_len=max_len)
    vocab = pipeline.vocab
    hyps = [vocab.decode(row.tolist()) for row in generated[:take]]
    refs = [vocab.decode(row.tolist()) for row in batch["batch.response_tokens"][:take]]
    return hyps, refs


def _keep_examples(examples: list[dict[str, str]], batch: dict, hyps: list[list[str]],
                   refs: list[list[str]]) -> None:
    contexts = batch.get("batch.context_text") or [[] for _ in hyps]
    for context, ref, hyp in zip(contexts, refs, hyps):
        if len(examples) >= EXAMPLES:
            return
        examples.append({"context": " | ".join(context[-CONTEXT_TURNS_SHOWN:]),
                         "reference": detokenize(ref), "hypothesis": detokenize(hyp)})
