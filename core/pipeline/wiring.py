"""Port wiring between model slots: resolution, checks and execution plans.

Checks run when the pipeline is built, before any training, so that a missing
input, a key provided twice, a cycle or a dimension mismatch fails at load time
with a message naming the slots involved.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from ..data.fields import batch_keys
from ..errors import WiringError, did_you_mean
from ..interfaces import ModelComponent, Port

#: Keys the collated batch provides without featurizers (see crs.data.fields); model inputs may read them.
BATCH_KEYS = batch_keys()


@dataclass
class SlotWiring:
    name: str
    inputs: dict[str, Port]  # local name -> port with the resolved state key
    outputs: dict[str, Port]


@dataclass
class Wiring:
    slots: dict[str, SlotWiring]
    provider: dict[str, str] = field(default_factory=dict)  # state key -> slot that writes it
    batch_keys: frozenset[str] = BATCH_KEYS  # the batch's keys, featurizer fields included

    def plan(self, wanted: Iterable[str]) -> list[str]:
        """Slots to run, in dependency order, to produce every key in `wanted`."""
        order: list[str] = []
        seen: set[str] = set()

        def visit(slot: str) -> None:
            if slot in seen:
                return
            seen.add(slot)
            for port in self.slots[slot].inputs.values():
                provider = self.provider.get(port.key)
                if provider is not None:
                    visit(provider)
            order.append(slot)

        for key in wanted:
            if key in self.provider:
                visit(self.provider[key])
            elif key not in self.batch_keys:
                have = sorted(self.provider)
                raise WiringError("", f"no model slot provides '{key}'.{did_you_mean(key, have)}",
                                  f"keys the model provides: {', '.join(have)}")
        return order

    def batch_independent(self) -> set[str]:
        """Slots whose outputs do not depend on the batch (graph encoders): cacheable at eval time."""
        memo: dict[str, bool] = {}

        def independent(slot: str) -> bool:
            if slot not in memo:
                memo[slot] = all(
                    port.key in self.provider and independent(self.provider[port.key])
                    for port in self.slots[slot].inputs.values()
                )
            return memo[slot]

        return {slot for slot in self.slots if independent(slot)}


def _renamed(ports: dict[str, Port], renames: dict[str, str], path: str, what: str) -> dict[str, Port]:
    for local in renames:
        if local not in ports:
            raise WiringError(f"{path}.{what}.{local}", f"this component has no {what[:-1]} port '{local}'."
                              f"{did_you_mean(local, ports)}", f"its {what} ports are: {', '.join(ports) or '(none)'}")
    return {local: Port(renames.get(local, p.key), p.dim, p.optional, p.doc) for local, p in ports.items()}


def wire(slots: dict[str, ModelComponent], renames: dict[str, dict[str, dict[str, str]]],
         batch: frozenset[str] = BATCH_KEYS) -> Wiring:
    """Resolve every slot's ports (applying YAML renames) and check that they fit together.

    `batch` is the set of batch keys (built-in fields plus those of the pipeline's featurizers).
    """
    wired: dict[str, SlotWiring] = {}
    provider: dict[str, str] = {}
    for name, comp in slots.items():
        path = f"model.{name}"
        ren = renames.get(name, {})
        ins = _renamed(comp.input_ports(), ren.get("inputs", {}), path, "inputs")
        outs = _renamed(comp.output_ports(), ren.get("outputs", {}), path, "outputs")
        wired[name] = SlotWiring(name, ins, outs)
        for port in outs.values():
            if port.key in provider:
                raise WiringError(f"{path}.outputs",
                                  f"slots '{provider[port.key]}' and '{name}' both write '{port.key}'",
                                  f"rename one of them with `outputs: {{port: new_key}}` under model.{name}")
            if port.key in batch:
                raise WiringError(f"{path}.outputs", f"'{port.key}' is a batch field and cannot be written by a slot",
                                  "rename the output port")
            provider[port.key] = name
    dims = {port.key: (wired[provider[port.key]], port.dim) for s in wired.values() for port in s.outputs.values()}
    for name, sw in wired.items():
        for local, port in sw.inputs.items():
            where = f"model.{name}.inputs.{local}"
            if port.key in batch:
                continue
            if port.key not in provider:
                if port.optional:
                    continue
                have = sorted(set(provider) | batch)
                raise WiringError(where, f"slot '{name}' reads '{port.key}', which no slot provides and is no batch "
                                  f"field.{did_you_mean(port.key, have)}",
                                  f"add a slot that outputs '{port.key}', or map the port to one of: {', '.join(have)}")
            src, dim = dims[port.key]
            if port.dim is not None and dim is not None and port.dim != dim:
                raise WiringError(where, f"dimension mismatch: slot '{src.name}' outputs '{port.key}' with dim {dim}, "
                                  f"but slot '{name}' expects dim {port.dim}",
                                  f"make model.{src.name} and model.{name} agree (e.g. set the same `dim`)")
    wiring = Wiring(wired, provider, batch)
    _check_acyclic(wiring)
    return wiring


def _check_acyclic(wiring: Wiring) -> None:
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done

    def visit(slot: str, stack: list[str]) -> None:
        if state.get(slot) == 2:
            return
        if state.get(slot) == 1:
            cycle = " -> ".join(stack[stack.index(slot):] + [slot])
            raise WiringError(f"model.{slot}", f"the slots form a cycle: {cycle}", "break the cycle by renaming a port")
        state[slot] = 1
        for port in wiring.slots[slot].inputs.values():
            if port.key in wiring.provider:
                visit(wiring.provider[port.key], stack + [slot])
        state[slot] = 2

    for slot in wiring.slots:
        visit(slot, [])
