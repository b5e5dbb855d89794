"""Scores a trained pipeline on one split under named evaluation protocols.

``evaluate`` returns ``{protocol_id: {metric_key: value}}``.  Recommendation
metrics depend on the protocol (which samples, which candidates); conversation
metrics (Dist, BLEU, F1, PPL, ...) do not, so they are computed once and copied
into every protocol's dict, making each report section complete on its own.  The
exception is a protocol that adapts the model per task (``adapts``, e.g.
``user_adapt``): it scores only its query samples, each task with its own fast
weights, so it gets its own recommendation *and* conversation pass.

Adaptation: for each ``(support, query, info)`` of ``protocol.tasks(samples)``,
``protocol.adapt(pipeline, support, "rec"|"conv")`` returns fast weights under
``torch.enable_grad()`` (also inside the trainer's ``no_grad`` validation); the
query samples are then scored through ``functional_call`` with them.  The model's
parameters never change, and the slot cache never keeps outputs computed from
fast weights (see :mod:`crs.pipeline.model`), so nothing leaks from one task to
the next.

The returned object is an :class:`EvaluationResults`, a plain ``dict`` of that
shape with attributes on the side (they are not keys, so code iterating over
protocols never trips over them):

- ``examples``: up to ``EXAMPLES`` dicts ``{"context", "reference", "hypothesis"}``
  from the first generated replies, for the report;
- ``sample_counts``: ``{protocol_id: {"rec": n_scored, "conv": n_ppl, "gen": n_generated}}``;
- ``timings``: seconds spent on ``rec/<protocol_id>``, ``conv`` and ``conv/<protocol_id>`` (adapting ones);
- ``rankings``: ``{protocol_id: [{"conv_id", "turn", "user", "target", "rank", "ties", "top"}, ...]}``, one
  record per scored sample (``target``/``top`` are item ids, ``top`` the first ``TOP_SHOWN``
  items ranked, ``rank`` the target's mid rank among its ties and ``ties`` how many other items share
  its score (see :mod:`crs.evaluation.ranking`), ``rank`` null for a target the protocol excluded,
  ``user`` the sample's user index; adapting protocols add ``adapted``: whether fast weights scored
  it): what ``crs compare`` pairs up for significance tests and what error analysis reads;
- ``generations``: one record per generated reply, ``{"conv_id", "turn", "context" (the context
  turn texts), "reference", "generated", "recommended" (top-5 item ids from the recommender, []
  without one), "items_in_reply" (item ids whose placeholder token the reply contains)}``;
  ``reference`` is the word sequence the metrics compared, ``generated`` the reply as the
  generator wrote it (detokenized ids, or a text generator's own text).  They come from the
  shared conversation pass, or from the first adapting protocol's when every protocol adapts;
- ``adaptation``: ``{protocol_id: {"rec"|"conv": {"tasks", "adapted", "support", "query",
  "units": {unit: n_tasks}}}}`` for adapting protocols;
- ``withheld``: ``{protocol_id: {metric_key: reason}}`` for values that are computed but are not
  results: the perplexity (``nll`` metrics) of a generator that no stage trains (see
  :func:`crs.training.stage.trained_by_stages`), and the rec metrics (NaN) of a protocol that keeps
  none of the split's recommendation samples.  The dict keeps the computed value, for callers that
  study untrained models on purpose; ``report.json`` stores ``null`` and the table ``n/a``.

Evaluating on nothing is refused (:func:`check_evaluable`, a DataError): a split with no
samples, a recommender on a split where no sample recommends an item, or a generator on a
split with no reply to score.  Averages over no samples would be NaN, exit code 0.

Perplexity is per word for vocabulary generators (``gen.ppl``).  A generator whose
``nll_count`` counts something else declares ``ppl_unit`` (e.g. ``"subtoken"``);
every ``nll`` metric key then carries it: ``gen.ppl/subtoken``, so numbers in
different units never share a row of a report.

Text generators (``model.generates_text``) are scored on their text split into words
with ``crs.data.vocab.tokenize`` and passed through ``vocab.encode``/``decode``,
exactly as the references are, so hypotheses and references share one tokenization.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

import torch

from ..data.vocab import detokenize, tokenize
from ..errors import ConfigError, DataError
from ..training.callbacks import evaluation_hooks
from .ranking import apply_candidate_mask, rank_targets

EXAMPLES = 5
CONTEXT_TURNS_SHOWN = 3  # the examples show the last turns only: enough to judge the reply
TASKS = ("rec", "gen", "nll")
TOP_SHOWN = 10
RECOMMENDED_SHOWN = 5  # items listed next to each generated reply
WORD_UNIT = "word"


class EvaluationResults(dict):
    """``{protocol_id: {metric_key: float}}`` plus the side attributes the module docstring lists."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.examples: list[dict[str, str]] = []
        self.sample_counts: dict[str, dict[str, int]] = {}
        self.timings: dict[str, float] = {}
        self.rankings: dict[str, list[dict[str, Any]]] = {}
        self.generations: list[dict[str, Any]] = []
        self.adaptation: dict[str, dict[str, Any]] = {}
        self.withheld: dict[str, dict[str, str]] = {}


def check_evaluable(pipeline: Any, split: str, tasks: Iterable[str] = ("rec", "conv")) -> None:
    """A DataError unless `split` has samples for every requested task the model can do (see the module doc)."""
    samples = pipeline.samples.get(split) or []
    corpus = getattr(getattr(pipeline, "corpus", None), "name", None)
    where = f"{corpus + ' corpus, ' if corpus else ''}split '{split}'"
    fix = ("check the data files and filters (data.*, samples.max_train_conversations), or evaluate another "
           "split (evaluation.split, crs eval --split)")
    if not samples:
        raise DataError(where, "no samples to evaluate on; every metric would be an average over nothing", fix)
    model, tasks = pipeline.model, set(tasks)
    if "rec" in tasks and model.has_recommender and not any(getattr(s, "target_items", None) for s in samples):
        raise DataError(where, f"none of its {len(samples)} samples recommends an item, so there is nothing "
                        "to rank", fix)
    if "conv" in tasks and model.has_generator and not pipeline.task_samples(split, "conv"):
        raise DataError(where, f"none of its {len(samples)} samples has a reply to score the generator on", fix)
    _check_protocols(pipeline, split)


def _check_protocols(pipeline: Any, split: str) -> None:
    """ConfigErrors for configured protocols that the samples settings make wrong (protocols built once):

    - a protocol that scores turns of a speaker ``samples.roles`` makes no samples of (e.g. ``all_turns``
      with the default recommender turns): it would score a subset of what its id says;
    - with ``samples.test_support_to_train``, train holds the support samples of `split`'s users: only
      protocols that score query samples alone (``adapts``) may score it, or the model is tested on what it
      was trained on.
    """
    spec = getattr(pipeline, "spec", None)
    if getattr(spec, "samples", None) is None:  # a stand-in pipeline without samples settings
        return
    made = set(spec.samples.roles)
    support_in_train = spec.samples.test_support_to_train and split == spec.evaluation.split
    for i, protocol in enumerate(_build_protocols(pipeline)):
        missing = [role for role in getattr(protocol, "roles", ()) if role not in made]
        if missing:
            raise ConfigError(f"evaluation.protocols.{i}",
                              f"protocol '{protocol.id}' scores {' and '.join(protocol.roles)} turns, but "
                              f"samples.roles makes samples of {' and '.join(spec.samples.roles)} turns only",
                              f"set samples.roles: [{', '.join(protocol.roles)}] (other protocols still score "
                              "recommender turns only), or drop the protocol")
        if support_in_train and not protocol.adapts:
            raise ConfigError(f"evaluation.protocols.{i}",
                              f"protocol '{protocol.id}' scores every {split} sample, but "
                              f"samples.test_support_to_train put the {split} users' support conversations in "
                              "train, so it would score the model on samples it was trained on",
                              "score with a per-user protocol only (e.g. {type: user_adapt, rec_adapt: {steps: 0}}), "
                              "or set samples.test_support_to_train: false")


@dataclass
class _Group:
    """Samples scored with one set of parameters (None: the model's own)."""

    samples: list
    params: dict[str, torch.Tensor] | None = None
    info: dict = field(default_factory=dict)


def evaluate(pipeline: Any, split: str, *, protocols: Iterable[Any] | None = None, generate: bool = True,
             max_samples: int = 0, progress: bool = False,
             tasks: Iterable[str] = ("rec", "conv"), hooks: bool = True) -> EvaluationResults:
    """Evaluate ``pipeline.model`` on ``pipeline.samples[split]``.

    :param protocols: already-built protocol objects; default: every node of
        ``pipeline.spec.evaluation.protocols``, built through ``pipeline.build``.
    :param generate: also decode replies and feed the ``gen`` metrics (otherwise
        only perplexity is computed for the generator).
    :param max_samples: when > 0, generate for at most that many conversation
        samples per conversation pass (perplexity still covers them all).
    :param progress: show tqdm progress bars.
    :param tasks: which parts to run: "rec" (ranking under each protocol) and/or "conv"
        (perplexity and generation). Validation for early stopping on a rec metric
        passes ("rec",) so that no conversation pass runs every epoch.
    :param hooks: call ``on_eval_start`` / ``on_eval_end`` on the model's components around
        the evaluation; False when the caller brackets it itself (the trainer's validation, whose
        one pair also covers its valid-loss pass).
    The model is put in eval mode (then ``on_eval_start`` is called on its components,
    ``on_eval_end`` after) and restored to its previous mode afterwards.
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
    tasks = set(tasks)
    check_evaluable(pipeline, split, tasks)
    untrained = _untrained_generator(pipeline)
    was_training = model.training
    model.eval()
    try:
        with evaluation_hooks(model, split, pipeline) if hooks else contextlib.nullcontext(), torch.no_grad():
            conv_metrics = [m for m in metrics if m.task == "nll" or (generate and m.task == "gen")]
            run_conv = model.has_generator and "conv" in tasks

            sinks = [results]  # examples and generation records come from the first conversation pass

            def conv_pass(groups: list[_Group], timing_key: str) -> tuple[dict[str, float], dict[str, int]]:
                started = time.perf_counter()
                out = _conversation_metrics(pipeline, groups, conv_metrics, ev.batch_size, ev.max_gen_tokens,
                                            max_samples, progress, sinks.pop() if sinks else None)
                results.timings[timing_key] = time.perf_counter() - started
                return out

            shared_values, shared_counts = {}, {}
            if run_conv and any(not getattr(p, "adapts", False) for p in protocols):
                shared_values, shared_counts = conv_pass([_Group(pipeline.task_samples(split, "conv"))], "conv")
            for protocol in protocols:
                pid = protocol.id
                adapts = bool(getattr(protocol, "adapts", False))
                values: dict[str, float] = {}
                counts: dict[str, int] = {}
                withheld: dict[str, str] = {}
                conv_values, conv_counts = shared_values, shared_counts
                if adapts and run_conv:
                    groups = _adapted_groups(pipeline, split, protocol, "conv", results)
                    conv_values, conv_counts = conv_pass(groups, f"conv/{pid}")
                counts.update(conv_counts)
                if model.has_recommender and "rec" in tasks:
                    started = time.perf_counter()
                    if adapts:
                        groups = _adapted_groups(pipeline, split, protocol, "rec", results)
                    else:
                        groups = [_Group(spread(protocol.rec_samples(pipeline.samples.get(split, [])),
                                                getattr(ev, "max_rec_samples", 0)))]
                    results.rankings[pid] = _rec_metrics(pipeline, groups, protocol, rec_metrics, ev.batch_size,
                                                         progress)
                    counts["rec"] = len(results.rankings[pid])
                    values.update(_collect(rec_metrics))
                    results.timings[f"rec/{pid}"] = time.perf_counter() - started
                    if not counts["rec"]:
                        withheld.update(dict.fromkeys(values, f"{pid} keeps none of the split's recommendation "
                                                              "samples"))
                values.update(conv_values)
                if untrained and conv_values:
                    unit = getattr(model, "nll_unit", WORD_UNIT)
                    nll_keys = _collect([m for m in conv_metrics if m.task == "nll"], unit)
                    withheld.update(dict.fromkeys((k for k in nll_keys if k in values), untrained))
                if withheld:
                    results.withheld[pid] = withheld
                results[pid] = values
                results.sample_counts[pid] = counts
    finally:
        model.train(was_training)
    return results


def _untrained_generator(pipeline: Any) -> str | None:
    """Why the generator's perplexity is not a result (no stage trains it), or None."""
    from ..training.stage import trained_by_stages

    model = pipeline.model
    slot = getattr(model, "generator_slot", None)
    stages = getattr(pipeline.spec, "stages", None)
    if slot is None or stages is None or trained_by_stages(model, stages, slot):
        return None
    return (f"no stage trains the generator slot '{slot}', so this is the perplexity of its initial weights "
            "(add a stage that trains it, e.g. train: [" + slot + "])")


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


def _collect(metrics: list[Any], nll_unit: str = WORD_UNIT) -> dict[str, float]:
    """Every metric's values, in config order; ``nll`` keys get ``/<unit>`` unless the unit is the word."""
    values: dict[str, float] = {}
    for metric in metrics:
        suffix = f"/{nll_unit}" if metric.task == "nll" and nll_unit != WORD_UNIT else ""
        values.update({f"{key}{suffix}": float(v) for key, v in metric.compute().items()})
    return values


def _bar(iterable: Iterable, enabled: bool, desc: str) -> Iterable:
    """A progress bar as training draws them: only when `enabled` and stderr is a terminal (never in log files)."""
    if not enabled:
        return iterable
    from ..training.run_log import progress_bar

    return progress_bar(iterable, enabled=enabled, desc=desc)


# --------------------------------------------------------------- adaptation
def _adapted_groups(pipeline: Any, split: str, protocol: Any, task: str, results: EvaluationResults) -> list[_Group]:
    """One group per adaptation task of `protocol`, with the fast weights its support gives."""
    raw = list(pipeline.samples.get(split, []))
    conv_ids = {id(s) for s in pipeline.task_samples(split, "conv")} if pipeline.model.has_generator else set()
    groups: list[_Group] = []
    stats = {"tasks": 0, "adapted": 0, "support": 0, "query": 0, "units": {}}
    for support, query, info in protocol.tasks(raw):
        if task == "rec":
            scored = protocol.rec_samples(query)
        else:
            scored = [s for s in query if id(s) in conv_ids]
        if not scored:
            continue
        params = None
        if support:
            by_task = {"rec": protocol.rec_samples(support), "conv": [s for s in support if id(s) in conv_ids]}
            with torch.enable_grad():
                params = protocol.adapt(pipeline, by_task, task) or None  # {}: nothing moved, unadapted
            stats["support"] += len(by_task[task])
        adapted = params is not None
        groups.append(_Group(scored, params, {**info, "adapted": adapted}))
        stats["tasks"] += 1
        stats["adapted"] += adapted
        stats["query"] += len(scored)
        unit = str(info.get("unit", "task"))
        stats["units"][unit] = stats["units"].get(unit, 0) + 1
    results.adaptation.setdefault(protocol.id, {})[task] = stats
    return groups


def _run(model: Any, params: dict[str, torch.Tensor] | None, batch: dict, wanted: list[str], **kwargs: Any) -> dict:
    """``model.compute`` with the model's parameters, or functionally with `params`."""
    if params is None:
        return model.compute(batch, wanted)
    from ..training.meta import functional_compute  # torch.func only when something adapts

    return functional_compute(model, params, batch, wanted, **kwargs)


def _group_batches(pipeline: Any, groups: list[_Group], batch_size: int) -> Iterator[tuple[_Group, dict]]:
    for group in groups:
        for batch in pipeline.batches(group.samples, batch_size, shuffle=False, seed=0):
            yield group, batch


# ------------------------------------------------------------ recommendation
def spread(samples: list, limit: int) -> list:
    """At most `limit` of `samples` (all when `limit` <= 0), evenly spaced over the list and in its order, so a
    capped evaluation still covers the whole split (``evaluation.max_rec_samples``)."""
    if limit <= 0 or len(samples) <= limit:
        return list(samples)
    return [samples[(i * len(samples)) // limit] for i in range(limit)]


def _rec_metrics(pipeline: Any, groups: list[_Group], protocol: Any, metrics: list[Any], batch_size: int,
                 progress: bool) -> list[dict[str, Any]]:
    """Feed ``metrics`` with the protocol's masked scores; returns one ranking record per scored sample."""
    for metric in metrics:
        metric.reset()
    item_ids = pipeline.items.ids
    n_items = len(item_ids)
    records: list[dict[str, Any]] = []
    adapts = bool(getattr(protocol, "adapts", False))
    for group, batch in _bar(_group_batches(pipeline, groups, batch_size), progress, f"rec {protocol.id}"):
        scores = _run(pipeline.model, group.params, batch, ["scores"])["scores"]
        scores = apply_candidate_mask(scores, protocol.candidate_mask(batch, n_items))
        targets = batch["batch.target_item"].to(scores.device)
        for metric in metrics:
            metric.update(scores, targets)
        ranks, ties = (values.tolist() for values in rank_targets(scores, targets))
        top = scores.topk(min(TOP_SHOWN, n_items), dim=1)
        for sample, rank, tied, top_scores, top_items in zip(batch["batch.samples"], ranks, ties, top.values.tolist(),
                                                             top.indices.tolist()):
            record = {"conv_id": sample.conv_id, "turn": sample.turn_index, "user": sample.user_index,
                      "target": item_ids[sample.target_item], "rank": rank if rank != float("inf") else None,
                      "ties": int(tied),
                      "top": [item_ids[i] for i, v in zip(top_items, top_scores) if v != float("-inf")]}
            if adapts:
                record["adapted"] = group.info.get("adapted", False)
            records.append(record)
    return records


# -------------------------------------------------------------- conversation
def _conversation_metrics(pipeline: Any, groups: list[_Group], metrics: list[Any], batch_size: int, max_len: int,
                          max_samples: int, progress: bool,
                          sink: EvaluationResults | None) -> tuple[dict[str, float], dict[str, int]]:
    """One pass over the groups' samples: perplexity on all, generation on the first ``max_samples``.

    Examples and generation records go to `sink` (None: not kept).
    """
    nll_metrics = [m for m in metrics if m.task == "nll"]
    gen_metrics = [m for m in metrics if m.task == "gen"]
    for metric in metrics:
        metric.reset()
    model = pipeline.model
    total = sum(len(g.samples) for g in groups)
    gen_budget = total if max_samples <= 0 else min(max_samples, total)
    generated = 0
    for group, batch in _bar(_group_batches(pipeline, groups, batch_size), progress, "conv"):
        generating = bool(gen_metrics) and generated < gen_budget
        # The generation records list the recommender's top items: scored in the perplexity pass when there is one.
        wants_scores = generating and sink is not None and model.has_recommender
        scores = None
        if nll_metrics:
            state = _run(model, group.params, batch, ["nll_sum", "nll_count", *(["scores"] if wants_scores else [])])
            for metric in nll_metrics:
                metric.update(float(state["nll_sum"]), float(state["nll_count"]))
            scores = state["scores"] if wants_scores else None
        if generating:
            take = min(gen_budget - generated, batch["batch.response_tokens"].shape[0])
            texts, hyps, refs = _decode_batch(pipeline, batch, max_len, take, group.params)
            for metric in gen_metrics:
                metric.update(hyps, refs)
            if sink is not None:
                if wants_scores and scores is None:  # no perplexity pass to score them in
                    scores = _run(model, group.params, batch, ["scores"])["scores"]
                _keep_examples(sink.examples, batch, hyps, refs)
                _keep_generations(sink.generations, pipeline, batch, texts, refs, scores)
            generated += take
    counts = {"conv": total if nll_metrics else 0, "gen": generated}
    return _collect(metrics, getattr(model, "nll_unit", WORD_UNIT)), counts


def _decode_batch(pipeline: Any, batch: dict, max_len: int, take: int, params: dict | None = None
                  ) -> tuple[list[str], list[list[str]], list[list[str]]]:
    """The first ``take`` replies as written, and the word tokens of them and of their references."""
    # Generation runs on the whole batch (cheaper than re-collating a smaller one); extra rows are dropped.
    model, vocab = pipeline.model, pipeline.vocab
    if getattr(model, "generates_text", False):
        if params is None:
            texts = list(model.generate_text(batch, max_len=max_len))[:take]
        else:
            from ..pipeline.model import GENERATED_TEXT

            texts = list(_run(model, params, batch, [], generate_len=max_len, as_text=True)[GENERATED_TEXT])[:take]
        hyps = [vocab.decode(vocab.encode(text)) for text in texts]  # the references' own word tokenization
    else:
        if params is None:
            ids = model.generate(batch, max_len=max_len)
        else:
            from ..pipeline.model import GENERATED

            ids = _run(model, params, batch, [], generate_len=max_len)[GENERATED]
        hyps = [vocab.decode(row.tolist()) for row in ids[:take]]
        texts = [detokenize(hyp) for hyp in hyps]
    refs = [vocab.decode(row.tolist()) for row in batch["batch.response_tokens"][:take]]
    return texts, hyps, refs


def _keep_examples(examples: list[dict[str, str]], batch: dict, hyps: list[list[str]],
                   refs: list[list[str]]) -> None:
    contexts = batch.get("batch.context_text") or [[] for _ in hyps]
    for context, ref, hyp in zip(contexts, refs, hyps):
        if len(examples) >= EXAMPLES:
            return
        examples.append({"context": " | ".join(context[-CONTEXT_TURNS_SHOWN:]),
                         "reference": detokenize(ref), "hypothesis": detokenize(hyp)})


def _keep_generations(records: list[dict[str, Any]], pipeline: Any, batch: dict, texts: list[str],
                      refs: list[list[str]], scores: torch.Tensor | None) -> None:
    """One record per reply in `texts`; `scores`: the recommender's scores of the batch (None without one)."""
    item_ids, item_of_token = pipeline.items.ids, pipeline.items.item_of_token
    recommended: list[list[int]] = [[] for _ in texts]
    if scores is not None:
        recommended = scores.topk(min(RECOMMENDED_SHOWN, scores.shape[-1]), dim=-1).indices[:len(texts)].tolist()
    samples = batch.get("batch.samples") or []
    for sample, text, ref, top in zip(samples, texts, refs, recommended):
        in_reply = dict.fromkeys(i for i in map(item_of_token, tokenize(text)) if i >= 0)
        records.append({"conv_id": sample.conv_id, "turn": sample.turn_index, "context": list(sample.context_text),
                        "reference": detokenize(ref), "generated": text,
                        "recommended": [item_ids[i] for i in top], "items_in_reply": [item_ids[i] for i in in_reply]})
