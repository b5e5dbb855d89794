"""The model of a pipeline: named slots run in dependency order over a shared state.

``forward(batch, wanted)`` is the one entry point (``compute`` is its older name), so
``torch.func.functional_call(model, params, (batch, wanted))`` runs the whole pipeline
with other tensors standing in for some parameters: what MAML-style adaptation and
per-user evaluation do (see :mod:`crs.training.meta`).  Decoding goes through
``forward`` too (``generate_len=``), so adapted parameters can generate as well.

Batch-independent slots (graph encoders) are cached, and the cache is honest: an
entry is keyed on the identity and version counter of every parameter, buffer and
input tensor the slot saw, and holds references to them so that no id is reused
while the entry lives.  An optimizer step, ``load_state_dict`` or an in-place edit
bumps a version counter; ``functional_call`` swaps in other tensors: either way the
key no longer matches and the slot runs again.  (Edits through ``.data`` bypass the
version counter: call :meth:`PipelineModel.clear_cache` after those.)
"""
from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import torch
from torch import nn

from ..errors import ConfigError, WiringError, did_you_mean
from ..interfaces import Generator, ModelComponent
from ..shared import PREFIX as SHARED_PREFIX
from ..shared import borrowed
from .wiring import Wiring

#: Key of the generator's inputs dict holding ``recommend(k) -> LongTensor (B, k)`` (reserved).
RECOMMEND_INPUT = "recommend"
#: State keys ``forward(..., generate_len=n)`` writes the decoded replies to (reserved).
GENERATED, GENERATED_TEXT = "generated.tokens", "generated.text"


@dataclass
class _CacheEntry:
    key: tuple
    refs: tuple  # the tensors/objects named in `key`, kept alive so their ids stay theirs
    outputs: dict[str, Any]


@dataclass
class _Pass:
    """One forward pass: the state, the slots already run, and keys not derived from own parameters."""

    state: dict[str, Any]
    ran: set[str] = field(default_factory=set)
    # Keys computed from tensors that are not this model's own parameters (functional_call
    # swapped them in) or from such keys: never stored in the cache, so a functional
    # pass can neither evict the entry for the real parameters nor leave its outputs
    # behind for the next pass (one user's adapted graph for the next user).
    foreign: set[str] = field(default_factory=set)
    foreign_slots: set[str] = field(default_factory=set)


class PipelineModel(nn.Module):
    """Runs only the slots a request needs; caches batch-independent slots while nothing trains them.

    Graph encoders read no batch field, so when they are not being trained their
    outputs are the same for every batch: computing them once per evaluation (or per
    epoch of a stage that freezes them) instead of once per batch is most of the cost
    of those passes on a 64k-node graph.  One entry per slot; ``train()``/``eval()``
    drop them all (they are rebuilt on the next batch).
    """

    def __init__(self, slots: dict[str, ModelComponent], wiring: Wiring, shared: dict[str, nn.Module] | None = None):
        """:param shared: the pipeline's ``shared:`` modules (:mod:`crs.shared`), owned here as ``model.shared``."""
        super().__init__()
        self.slots = nn.ModuleDict(slots)
        self.shared = nn.ModuleDict(shared or {})
        self.wiring = wiring
        self._static = wiring.batch_independent()
        self._cache: dict[str, _CacheEntry] = {}
        # Shared modules a slot calls through a SharedRef are not its submodules, but their
        # tensors decide its outputs as much as its own: the cache key covers them too.
        # (Listed once here: a slot that gains submodules after construction is not supported.)
        # The submodules whose tensors key a static slot's cache entry: its own and those it borrows.
        self._submodules = {
            name: list({id(m): m for root in (module, *borrowed(module).values()) for m in root.modules()}.values())
            for name, module in slots.items() if name in self._static}
        self._check_reserved_keys()

    def _check_reserved_keys(self) -> None:
        for name, sw in self.wiring.slots.items():
            for local, port in sw.outputs.items():
                if port.key in (GENERATED, GENERATED_TEXT):
                    raise WiringError(f"model.{name}.outputs.{local}", f"'{port.key}' is reserved for decoded replies",
                                      "rename the output port with `outputs: {port: other_key}`")
        slot = self.generator_slot
        if slot is not None and RECOMMEND_INPUT in self.wiring.slots[slot].inputs:
            raise WiringError(f"model.{slot}.inputs.{RECOMMEND_INPUT}",
                              f"the generator input '{RECOMMEND_INPUT}' is reserved for the recommender callable",
                              "give the component's input port another name")

    # ------------------------------------------------------------------ info
    @property
    def has_recommender(self) -> bool:
        return "scores" in self.wiring.provider

    @property
    def generator_slot(self) -> str | None:
        names = [n for n, s in self.slots.items() if isinstance(s, Generator)]
        return names[0] if names else None

    @property
    def has_generator(self) -> bool:
        return self.generator_slot is not None

    @property
    def generates_text(self) -> bool:
        """Whether the generator writes text itself (``generate_text``) rather than vocabulary ids."""
        slot = self.generator_slot
        if slot is None:
            return False
        method = getattr(type(self.slots[slot]), "generate_text", None)
        return callable(method) and method is not getattr(Generator, "generate_text", None)

    @property
    def nll_unit(self) -> str:
        """What ``nll_count`` counts: "word" (vocabulary generators) or the generator's ``ppl_unit``."""
        slot = self.generator_slot
        return str(getattr(self.slots[slot], "ppl_unit", "word")) if slot is not None else "word"

    def loss_keys(self) -> set[str]:
        return {k for k in self.wiring.provider if k.startswith("loss.")}

    def slot_parameters(self, names: Iterable[str]) -> list[nn.Parameter]:
        """Parameters of the named slots (``shared.<name>``: a shared module; ``*``: everything)."""
        names = list(names)
        if "*" in names:
            return [p for p in self.parameters()]
        params: list[nn.Parameter] = []
        for name in names:
            if name.startswith(SHARED_PREFIX) and name[len(SHARED_PREFIX):] in self.shared:
                params.extend(self.shared[name[len(SHARED_PREFIX):]].parameters())
                continue
            if name not in self.slots:
                have = [*self.slots, *(f"{SHARED_PREFIX}{n}" for n in self.shared)]
                raise ConfigError("train", f"no model slot named '{name}'.{did_you_mean(name, have)}",
                                  f"slots are: {', '.join(have)}")
            params.extend(self.slots[name].parameters())
        return params

    def train(self, mode: bool = True) -> "PipelineModel":
        self.clear_cache()  # not needed for correctness (keys are honest), but frees the entries' memory
        return super().train(mode)

    def clear_cache(self) -> None:
        """Drop every cached slot output (needed only after edits through ``.data``)."""
        self._cache.clear()

    # ------------------------------------------------------------- execution
    def forward(self, batch: dict[str, Any], wanted: Iterable[str] = (), generate_len: int = 0,
                as_text: bool = False) -> dict[str, Any]:
        """Run the slots needed for `wanted`; return the whole state (batch keys included).

        With ``generate_len > 0`` also decode replies of at most that many tokens into
        ``state["generated.tokens"]`` (long (B, T)) or, with ``as_text``, into
        ``state["generated.text"]`` (list of str).
        """
        run = _Pass(dict(batch))
        self._complete(run, wanted)
        if generate_len > 0:
            key = GENERATED_TEXT if as_text else GENERATED
            run.state[key] = self._decode(run, int(generate_len), as_text)
        return run.state

    def compute(self, batch: dict[str, Any], wanted: Iterable[str]) -> dict[str, Any]:
        """Alias of ``forward(batch, wanted)``."""
        return self(batch, list(wanted))

    def recommend(self, batch: dict[str, Any], k: int) -> torch.Tensor:
        """Long (B, k): the indices of the k best-scored items of each sample, best first."""
        if not self.has_recommender:
            raise ConfigError("model", "this pipeline has no recommender (no slot outputs 'scores')",
                              "add a recommender slot under `model:`")
        return _top_items(self(batch, ["scores"])["scores"], k)

    def generate(self, batch: dict[str, Any], max_len: int) -> torch.Tensor:
        """Long (B, T) reply token ids (vocabulary ids, without BOS, stopping at EOS)."""
        self._require_generator()
        return self(batch, (), generate_len=max_len)[GENERATED]

    def generate_text(self, batch: dict[str, Any], max_len: int) -> list[str]:
        """Reply texts, from a generator that writes text (``generates_text``)."""
        slot = self._require_generator()
        if not self.generates_text:
            raise ConfigError(f"model.{slot}", f"the generator '{type(self.slots[slot]).__name__}' has no "
                              "generate_text", "use generate(), which returns vocabulary ids")
        return self(batch, (), generate_len=max_len, as_text=True)[GENERATED_TEXT]

    def _require_generator(self) -> str:
        slot = self.generator_slot
        if slot is None:
            raise ConfigError("model", "this pipeline has no generator slot", "add a generator under `model:`")
        return slot

    def _complete(self, run: _Pass, wanted: Iterable[str]) -> dict[str, Any]:
        """Run the slots `wanted` needs that this pass has not run yet; return the state."""
        for slot in self.wiring.plan(list(wanted)):
            if slot not in run.ran:
                self._run_slot(slot, run)
        return run.state

    def _decode(self, run: _Pass, max_len: int, as_text: bool) -> Any:
        slot = self._require_generator()
        sw = self.wiring.slots[slot]
        self._complete(run, [p.key for p in sw.inputs.values() if p.key in self.wiring.provider])
        inputs: dict[str, Any] = {local: run.state[p.key] for local, p in sw.inputs.items() if p.key in run.state}
        if self.has_recommender:
            # Scores are computed on first use only, within this pass (so with the same,
            # possibly adapted, parameters), and at most once however often it is called.
            inputs[RECOMMEND_INPUT] = self._recommender_for(run)
        generator = self.slots[slot]
        return generator.generate_text(inputs, max_len) if as_text else generator.generate(inputs, max_len)

    def _recommender_for(self, run: _Pass) -> Callable[[int], torch.Tensor]:
        def recommend(k: int) -> torch.Tensor:
            return _top_items(self._complete(run, ["scores"])["scores"], k)

        return recommend

    def _run_slot(self, slot: str, run: _Pass) -> None:
        sw = self.wiring.slots[slot]
        state = run.state
        inputs = {}
        for local, port in sw.inputs.items():
            if port.key in state:
                inputs[local] = state[port.key]
            elif not port.optional:
                where = "the batch" if port.key in self.wiring.batch_keys else "an earlier slot"
                raise WiringError(f"model.{slot}.inputs.{local}",
                                  f"'{port.key}' was expected from {where} but is missing")
        module = self.slots[slot]
        if slot in self._static:
            outputs = self._run_static(slot, module, inputs, run)
        else:
            outputs = module(inputs)
        run.ran.add(slot)
        for local, value in outputs.items():
            if local in sw.outputs:
                state[sw.outputs[local].key] = value
                if slot in run.foreign_slots:
                    run.foreign.add(sw.outputs[local].key)

    def _run_static(self, slot: str, module: nn.Module, inputs: dict[str, Any], run: _Pass) -> dict[str, Any]:
        """A batch-independent slot: from the cache when its key matches, else run (and store if allowed)."""
        submodules = self._submodules[slot]
        tensors = [t for m in submodules for group in (m._parameters, m._buffers) for t in group.values()
                   if t is not None]
        # Only static slots read static slots, so foreignness only matters (and is only computed) here.
        foreign = (any(port.key in run.foreign for port in self.wiring.slots[slot].inputs.values())
                   or any(not isinstance(t, nn.Parameter) for m in submodules for t in m._parameters.values()
                          if t is not None))
        if foreign:
            run.foreign_slots.add(slot)
        key = self._cache_key(submodules, tensors, inputs)
        entry = self._cache.get(slot)
        if key is not None and entry is not None and entry.key == key:
            return entry.outputs
        outputs = module(inputs)
        if key is not None and not foreign:
            self._cache[slot] = _CacheEntry(key, (*tensors, *(inputs[name] for name in sorted(inputs))), outputs)
        return outputs

    def _cache_key(self, submodules: list[nn.Module], tensors: list[torch.Tensor], inputs: dict[str, Any]
                   ) -> tuple | None:
        """The slot's cache key now, or None when its outputs must not come from (or go to) the cache."""
        if not self._cacheable(submodules, tensors, inputs):
            return None
        parts: list[Any] = [self.training]
        for obj in (*tensors, *(inputs[name] for name in sorted(inputs))):
            if torch.is_tensor(obj):
                if obj.is_inference():  # no version counter to tell an in-place edit
                    return None
                parts.append((id(obj), obj._version, obj.data_ptr()))
            else:
                parts.append(id(obj))
        return tuple(parts)

    def _cacheable(self, submodules: list[nn.Module], tensors: list[torch.Tensor], inputs: dict[str, Any]) -> bool:
        """Whether a batch-independent slot's outputs may be shared between batches right now.

        True at evaluation time, and in a stage that keeps the slot frozen (KGSF's
        conversation stage reads both graph encoders but trains neither, so they run
        once per epoch, not per batch).  False while gradients must flow through the
        slot, and under active dropout (every batch would see different outputs).
        """
        if not self.training and not torch.is_grad_enabled():
            return True
        if any(t.requires_grad for t in tensors):
            return False
        if any(torch.is_tensor(v) and v.requires_grad for v in inputs.values()):
            return False
        return not (self.training and any(isinstance(m, nn.Dropout) and m.p > 0 for m in submodules))


def _top_items(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the `k` highest scores per row, best first (all items when there are fewer)."""
    try:
        count = operator.index(k)
    except TypeError:
        count = 0
    if isinstance(k, bool) or count < 1:
        raise ConfigError("", f"recommend(k) needs a whole number k >= 1, got {k!r}", "ask for at least one item")
    return scores.topk(min(count, scores.shape[-1]), dim=-1).indices
