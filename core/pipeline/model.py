"""The model of a pipeline: named slots run in dependency order over a shared state."""
from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import nn

from ..errors import ConfigError, WiringError, did_you_mean
from ..interfaces import Generator, ModelComponent
from .wiring import BATCH_KEYS, Wiring


class PipelineModel(nn.Module):
    """Runs only the slots a request needs; caches batch-independent slots in eval mode.

    Graph encoders read no batch field, so when they are not being trained their
    outputs are the same for every batch: computing them once per evaluation (or per
    epoch of a stage that freezes them) instead of once per batch is most of the cost
    of those passes on a 64k-node graph.
    """

    def __init__(self, slots: dict[str, ModelComponent], wiring: Wiring):
        super().__init__()
        self.slots = nn.ModuleDict(slots)
        self.wiring = wiring
        self._static = wiring.batch_independent()
        self._cache: dict[str, dict[str, Any]] = {}

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

    def loss_keys(self) -> set[str]:
        return {k for k in self.wiring.provider if k.startswith("loss.")}

    def slot_parameters(self, names: Iterable[str]) -> list[nn.Parameter]:
        names = list(names)
        if "*" in names:
            return [p for p in self.parameters()]
        params: list[nn.Parameter] = []
        for name in names:
            if name not in self.slots:
                raise ConfigError("train", f"no model slot named '{name}'.{did_you_mean(name, self.slots)}",
                                  f"slots are: {', '.join(self.slots)}")
            params.extend(self.slots[name].parameters())
        return params

    def train(self, mode: bool = True) -> "PipelineModel":
        self._cache.clear()  # parameters may change once training resumes
        return super().train(mode)

    # ------------------------------------------------------------- execution
    def compute(self, batch: dict[str, Any], wanted: Iterable[str]) -> dict[str, Any]:
        """Run the slots needed for `wanted`; return the whole state (batch keys included)."""
        wanted = list(wanted)
        state: dict[str, Any] = dict(batch)
        for slot in self.wiring.plan(wanted):
            self._run_slot(slot, state)
        return state

    def _run_slot(self, slot: str, state: dict[str, Any]) -> None:
        sw = self.wiring.slots[slot]
        if slot in self._cache:
            outputs = self._cache[slot]
        else:
            inputs = {}
            for local, port in sw.inputs.items():
                if port.key in state:
                    inputs[local] = state[port.key]
                elif not port.optional:
                    where = "the batch" if port.key in BATCH_KEYS else "an earlier slot"
                    raise WiringError(f"model.{slot}.inputs.{local}", f"'{port.key}' was expected from {where} but is missing")
            outputs = self.slots[slot](inputs)
            if self._cacheable(slot, inputs):
                self._cache[slot] = outputs
        for local, value in outputs.items():
            if local in sw.outputs:
                state[sw.outputs[local].key] = value

    def _cacheable(self, slot: str, inputs: dict[str, Any]) -> bool:
        """Whether a slot's outputs are the same for every batch until the model changes mode.

        True for batch-independent slots when nothing is being trained through them: at
        evaluation time, and in a stage that keeps them frozen (KGSF's conversation stage
        reads both graph encoders but trains neither, so they run once per epoch, not per batch).
        The cache is cleared by every ``train()``/``eval()`` call, i.e. at least once per epoch.
        """
        if slot not in self._static:
            return False
        if not self.training and not torch.is_grad_enabled():
            return True
        module = self.slots[slot]
        if any(p.requires_grad for p in module.parameters()):
            return False
        if any(torch.is_tensor(v) and v.requires_grad for v in inputs.values()):
            return False
        # active dropout would make every batch see different outputs
        return not (self.training and any(isinstance(m, nn.Dropout) and m.p > 0 for m in module.modules()))

    def generate(self, batch: dict[str, Any], max_len: int) -> torch.Tensor:
        slot = self.generator_slot
        if slot is None:
            raise ConfigError("model", "this pipeline has no generator slot", "add a generator under `model:`")
        sw = self.wiring.slots[slot]
        needed = [p.key for p in sw.inputs.values() if p.key in self.wiring.provider]
        state = self.compute(batch, needed)
        inputs = {local: state[p.key] for local, p in sw.inputs.items() if p.key in state}
        return self.slots[slot].generate(inputs, max_len)
