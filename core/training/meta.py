"""Functional inner steps shared by every adaptation strategy (MAML, per-user evaluation, ...).

Adapting never copies the model and never writes to its parameters: fast weights
are a dict ``{name: tensor}`` that ``torch.func.functional_call`` puts in place of
the model's own tensors for one forward pass (:func:`functional_compute`).  The
same code then serves both orders of MAML: keep the graph of the inner gradient
(``first_order=False``) and the outer loss differentiates through it.

Names are ``<slot>.<param>``: ``model.named_parameters()`` with the leading
``slots.`` stripped (a module shared between slots: ``shared.<name>.<param>``).
:func:`named_parameters` lists them; :func:`to_model_names` maps them back.

A strategy's inner loop, per task::

    inner = select_params(named_parameters(model), ["*"], ["entity_encoder.*"], path=...)
    support_loss, _ = loop.loss(support_batch, params=inner)
    fast = inner_update(support_loss, inner, lr=0.01, first_order=False)
    query_loss, _ = loop.loss(query_batch, params=fast)   # differentiable w.r.t. the real parameters

:func:`adapt` runs several such steps; :func:`adapt_on_batches` is the variant for
inference (evaluation per user), which keeps no graph and accumulates the gradient
batch by batch so that a large support set fits in memory.
"""
from __future__ import annotations

import contextlib
import fnmatch
import weakref
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import torch
from torch import nn

from ..errors import ConfigError, did_you_mean
from .stage import SLOTS_PREFIX, batch_length, public_name, train_only

__all__ = ["named_parameters", "public_name", "to_model_names", "select_params", "functional_compute",
           "inner_update", "adapt", "task_loss", "double_backward_ready", "maml_step", "adapt_on_batches",
           "SLOTS_PREFIX"]

Params = dict[str, torch.Tensor]
# model -> {public name: the model's own name}: built on a model's first functional forward, not on every one
# (a model's parameter names are fixed once it is built).
_MODEL_NAMES: "weakref.WeakKeyDictionary[nn.Module, dict[str, str]]" = weakref.WeakKeyDictionary()


# ------------------------------------------------------------------- names
def _model_names(model: nn.Module) -> dict[str, str]:
    """{public name: the model's own name} of `model`'s parameters, computed once per model."""
    names = _MODEL_NAMES.get(model)
    if names is None:
        names = _MODEL_NAMES[model] = {public_name(name): name for name, _ in model.named_parameters()}
    return names


def named_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """The model's parameters under their public names (each parameter once, as torch lists them)."""
    return {public_name(name): param for name, param in model.named_parameters()}


def to_model_names(model: nn.Module, params: Mapping[str, torch.Tensor], path: str = "") -> Params:
    """`params` keyed by the model's own parameter names (``slots.``...), for ``functional_call``.

    Accepts public names and the model's own names; anything else is a ConfigError at `path`.
    """
    real = _model_names(model)
    out: Params = {}
    for name, tensor in params.items():
        if name in real:
            out[real[name]] = tensor
        elif real.get(public_name(name)) == name:  # the model's own name (``slots.``...)
            out[name] = tensor
        else:
            raise ConfigError(path, f"the model has no parameter '{name}'.{did_you_mean(name, real)}",
                              f"names are <slot>.<param>, e.g. {', '.join(list(real)[:3])}")
    return out


def select_params(named_params: Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]],
                  inner_globs: Iterable[str], outer_only_globs: Iterable[str] = (), *,
                  path: str = "") -> Params:
    """The inner (adapted) parameters: names matching an `inner_globs` pattern and no `outer_only_globs` one.

    Patterns are ``fnmatch`` globs over public names (``*`` also crosses dots, so
    ``generator.encoder.*`` is the whole encoder).  The tensors are returned as
    given (the model's own parameters stay differentiable for an outer update).
    A pattern that matches nothing, or an empty selection, is a ConfigError at
    ``path.inner`` / ``path.outer_only``: a typo would otherwise silently adapt nothing.
    """
    named = dict(named_params.items() if isinstance(named_params, Mapping) else named_params)
    inner_globs, outer_only_globs = list(inner_globs), list(outer_only_globs)
    example = ", ".join(list(named)[:4]) or "(the model has no parameters)"
    for key, globs in (("inner", inner_globs), ("outer_only", outer_only_globs)):
        for pattern in globs:
            if not any(fnmatch.fnmatchcase(name, pattern) for name in named):
                raise ConfigError(_join(path, key), f"the pattern '{pattern}' matches no parameter",
                                  f"patterns match <slot>.<param> names, e.g. {example}")
    chosen = {name: tensor for name, tensor in named.items()
              if any(fnmatch.fnmatchcase(name, p) for p in inner_globs)
              and not any(fnmatch.fnmatchcase(name, p) for p in outer_only_globs)}
    if not chosen:
        raise ConfigError(_join(path, "inner"), "no parameter is left to adapt once outer_only is removed",
                          "widen `inner` or narrow `outer_only`")
    return chosen


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


# --------------------------------------------------------------- functional
def functional_compute(model: nn.Module, params: Mapping[str, torch.Tensor], batch: dict, wanted: Iterable[str],
                       **kwargs: Any) -> dict[str, Any]:
    """``model.forward(batch, wanted, **kwargs)`` with `params` in place of those parameters.

    Parameters not in `params` are the model's own.  Tied parameters stay tied.
    The model is left exactly as it was (and its slot cache keeps its entries).
    """
    return torch.func.functional_call(model, to_model_names(model, params), (batch, list(wanted)), kwargs,
                                      strict=False)


def inner_update(loss: torch.Tensor, params: Mapping[str, torch.Tensor], lr: float, first_order: bool) -> Params:
    """One SGD step ``phi = theta - lr * d loss / d theta`` over `params`.

    ``first_order=False`` keeps the graph of the gradient, so a loss computed with
    ``phi`` differentiates through the step (second-order MAML); ``True`` detaches it
    (then d query / d theta is the query gradient at phi).  ``retain_graph`` is set
    so that the support loss can still be part of the outer loss afterwards.
    Parameters the loss does not depend on, or that do not require grad, keep their value.
    """
    if not torch.is_grad_enabled():
        raise ConfigError("", "inner_update needs autograd, but gradients are disabled here",
                          "wrap the adaptation in `with torch.enable_grad():`")
    names = [name for name, tensor in params.items() if tensor.requires_grad]
    out = dict(params)
    if not names or not loss.requires_grad:
        return out
    grads = torch.autograd.grad(loss, [params[n] for n in names], create_graph=not first_order,
                                retain_graph=True, allow_unused=True)
    for name, grad in zip(names, grads):
        if grad is not None:
            out[name] = params[name] - lr * (grad.detach() if first_order else grad)
    return out


def adapt(loss_fn: Callable[[Params], torch.Tensor], params: Mapping[str, torch.Tensor], *, steps: int = 1,
          lr: float, first_order: bool = False) -> tuple[Params, list[torch.Tensor]]:
    """`steps` inner updates from `params`; returns the fast weights and each step's loss (before its update).

    ``loss_fn(params)`` is the support loss, typically ``lambda p: loop.loss(batch, params=p)[0]``.
    """
    fast = dict(params)
    losses = []
    for _ in range(int(steps)):
        loss = loss_fn(fast)
        losses.append(loss)
        fast = inner_update(loss, fast, lr, first_order)
    return fast, losses


def task_loss(loop: Any, batches: dict | Sequence[dict], params: Mapping[str, torch.Tensor]
              ) -> tuple[torch.Tensor, dict[str, float]]:
    """The stage's objective on one side of a task (one batch, or its chunks), with `params` in place.

    Chunks (a user's support cut at the stage's batch size) are combined as the
    sample-weighted mean of their objectives, so a chunked side gives the loss of the
    whole side: each chunk's graph is kept, as a second-order inner step needs them all.
    """
    if isinstance(batches, Mapping):
        return loop.loss(batches, params=params)
    chunks = list(batches)
    sizes = [batch_length(batch) for batch in chunks]
    count = sum(sizes)
    total: torch.Tensor | None = None
    parts: dict[str, float] = {}
    for batch, size in zip(chunks, sizes):
        loss, chunk_parts = loop.loss(batch, params=params)
        term = loss * (size / count)
        total = term if total is None else total + term
        for key, value in chunk_parts.items():
            parts[key] = parts.get(key, 0.0) + value * size / count
    if total is None:
        raise ValueError("task_loss needs at least one batch")
    return total, parts


@contextlib.contextmanager
def double_backward_ready(first_order: bool) -> Iterator[None]:
    """Second order only: attention through the math SDPA kernel, the only one with a double backward.

    The fused CPU and CUDA kernels of ``F.scaled_dot_product_attention`` have no
    derivative of their backward, so a second-order meta-gradient through a
    transformer would fail.  First-order passes keep the fast kernels.
    """
    if first_order:
        yield
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.MATH):
        yield


def maml_step(loop: Any, tasks: Iterable[tuple[Any, Any]], inner: Mapping[str, torch.Tensor], *, lr: float,
              steps: int = 1, first_order: bool = False, support_in_outer: bool = True,
              path: str | None = None) -> dict[str, float]:
    """One outer update of MAML over `tasks`, through an :class:`crs.training.loop.EpochLoop`.

    Each task is ``(support, query)``, each side a batch or a list of batches (chunks,
    see :func:`task_loss`).  For each task: adapt `inner` (see :func:`select_params`)
    with `steps` inner updates on the support loss, then backpropagate, divided by the
    number of tasks, the query loss at the fast weights plus (``support_in_outer``) the
    support loss before adapting: Algorithm 1 of CCRS; without it, MAML's Eq. 14.
    One backward pass per task (``loop.backward``: fp16 loss scaling, 1/accumulate) keeps
    one task's graph in memory at a time; then ``loop.end_batch()`` (the optimizer step,
    with clipping, every ``accumulate`` meta-batches) and ``loop.log_step``.
    Returns the logged parts: the query parts, ``support`` and ``loss`` (the outer loss).
    `path` names the strategy's config node in the error for a non-finite meta-loss.
    """
    tasks = list(tasks)
    sums: dict[str, float] = {}
    where = path or f"{loop.plan.path}.strategy"
    with double_backward_ready(first_order):
        for support, query in tasks:
            fast, losses = adapt(lambda p: task_loss(loop, support, p)[0], inner, steps=steps, lr=lr,
                                 first_order=first_order)
            query_total, parts = task_loss(loop, query, fast)
            total = query_total + losses[0] if support_in_outer and losses else query_total
            if not torch.isfinite(total.detach()).all():
                raise ConfigError(f"{where}.inner_lr", f"the meta-loss became {float(total.detach())} at "
                                  f"epoch {loop.epoch + 1}, step {loop.global_step + 1}",
                                  "lower the inner or outer learning rate, or set grad_clip")
            loop.backward(total / len(tasks))
            parts = {**parts, "support": float(losses[0].detach()) if losses else float("nan"),
                     "loss": float(total.detach())}
            for key, value in parts.items():
                sums[key] = sums.get(key, 0.0) + value / len(tasks)
    loop.end_batch()
    loop.log_step(sums)
    return sums


def adapt_on_batches(model: nn.Module, params: Mapping[str, torch.Tensor], batches: Callable[[], Iterable[dict]],
                     objectives: Mapping[str, float], *, steps: int, lr: float, path: str = "",
                     fixed: Mapping[str, torch.Tensor] | None = None) -> Params:
    """Inference-time adaptation: `steps` SGD steps on the sample-weighted mean objective over ``batches()``.

    ``fixed`` are tensors used in place of the model's own but not adapted (e.g. the
    result of an earlier adaptation of other parameters).

    Nothing differentiates through the result, so no graph is kept: each step sums
    the gradient batch by batch (a large support set fits in memory) and updates
    all of `params` at once.  While it runs, the model's own parameters are frozen
    (``requires_grad`` off, restored after), which keeps batch-independent slots
    that are not adapted (graph encoders) in the cache instead of re-running them
    for every support batch.  Returns the fast weights of the parameters the
    objective depends on; the others are left out, so the model's own are used.
    """
    from .loop import weighted_objective  # loop imports this module

    fast = {name: tensor.detach() for name, tensor in params.items()}
    constant = {name: tensor.detach() for name, tensor in (fixed or {}).items() if name not in fast}
    touched: set[str] = set()
    with torch.enable_grad(), train_only(model, []):
        for _ in range(int(steps)):
            leaves = {name: tensor.detach().requires_grad_(True) for name, tensor in fast.items()}
            sums: dict[str, torch.Tensor] = {}
            count = 0
            for batch in batches():
                state = functional_compute(model, {**constant, **leaves}, batch, list(objectives))
                loss, _ = weighted_objective(state, dict(objectives), path)
                size = batch_length(batch)
                count += size
                if not loss.requires_grad:
                    continue
                grads = torch.autograd.grad(loss * size, list(leaves.values()), allow_unused=True)
                for name, grad in zip(leaves, grads):
                    if grad is not None:
                        sums[name] = grad if name not in sums else sums[name] + grad
            if not count:
                break
            touched.update(sums)
            fast = {name: tensor - (lr / count) * sums[name] if name in sums else tensor
                    for name, tensor in fast.items()}
    return {name: fast[name] for name in fast if name in touched}
