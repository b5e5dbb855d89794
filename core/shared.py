"""Modules shared between model slots: one token embedding or one pretrained LM serving several slots.

A pipeline declares them once, in a top-level ``shared:`` section::

    shared:
      tokens: {type: token_embedding, dim: 128}
    model:
      generator: {type: transformer, dim: 128, embedding: tokens}
      ...

The builder builds every shared module before the slots (kind ``shared_module``,
base :class:`SharedModule`) and the :class:`crs.pipeline.model.PipelineModel` owns
them in ``model.shared`` (an ``nn.ModuleDict``), so each parameter exists once and
is named ``shared.<name>.<param>`` in ``named_parameters()``, ``state_dict()`` and
checkpoints.  A slot whose config names a shared module gets a :class:`SharedRef` to
it from ``deps.shared_module(name, key)``: calls and attribute reads go to the
module, but ``nn.Module`` does not register a ``SharedRef`` as a submodule, so the
slot does not own (or save, or count) the shared parameters a second time.

Slots stay separate: the wiring check still sees every slot and its ports; only the
parameters are shared.  Training a shared module is explicit: a stage lists it as
``train: [shared.tokens, generator]``; ``train: [generator]`` updates the generator's
own parameters and leaves the shared embedding as it is (which is how one slot can be
fine-tuned without moving what the other slots see).  ``train: ["*"]`` includes them.
"""
from __future__ import annotations

from typing import Any

from torch import nn

from .errors import ConfigError, did_you_mean
from .interfaces import BuildDeps, Component

PREFIX = "shared."  # how stage `train:` lists and parameter names refer to a shared module


class SharedModule(Component, nn.Module):
    """Base class of the ``shared_module`` kind: an ``nn.Module`` built once and handed to slots.

    It has no ports and is never run by the wiring; the slots holding a
    :class:`SharedRef` to it call it (or read its parameters) in their own forward.
    Subclasses document the interface their users rely on (e.g. ``weight`` and
    ``embedding_dim`` for a token embedding).
    """

    kind = "shared_module"

    def __init__(self, config: Any, deps: BuildDeps):
        nn.Module.__init__(self)  # first: nn.Module must exist before attributes are set on it
        Component.__init__(self, config, deps)


class SharedRef:
    """A slot's handle on a shared module: forwards calls and attribute reads to it.

    Not an ``nn.Module`` on purpose: assigning it to a module attribute stores a plain
    reference, so the shared parameters are registered (named, saved, moved to a
    device) only by their owner, the pipeline's ``shared`` ModuleDict.
    """

    __slots__ = ("name", "module")

    def __init__(self, name: str, module: nn.Module):
        self.name = name
        self.module = module

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.module(*args, **kwargs)

    def __getattr__(self, attr: str) -> Any:
        # Dunder and own-slot look-ups must not be forwarded: copy/pickle probe them on a
        # half-built instance, where forwarding would recurse.
        if attr.startswith("__") or attr in SharedRef.__slots__:
            raise AttributeError(attr)
        return getattr(self.module, attr)

    def __repr__(self) -> str:
        return f"SharedRef({self.name!r} -> {type(self.module).__name__})"


def resolve_shared(deps: BuildDeps, name: str, key: str, base: type | None = None) -> SharedRef:
    """The shared module `name` for the component built at ``deps.path``, as a :class:`SharedRef`.

    :param key: the config key that named it (for the error path, e.g. ``embedding``).
    :param base: the class the component needs (e.g. a token embedding); None = any.
    :raises ConfigError: at ``<path>.<key>`` when `shared:` has no such module (did-you-mean
        and the declared names included) or it is not a `base`.
    """
    where = f"{deps.path}.{key}"
    if name not in deps.shared:
        have = ", ".join(sorted(deps.shared)) or "(the pipeline has no `shared:` section)"
        raise ConfigError(where, f"no shared module named '{name}'.{did_you_mean(name, deps.shared)}",
                          f"name one of the modules under `shared:`: {have}; or declare it, e.g. "
                          f"`shared: {{{name}: {{type: token_embedding, dim: 128}}}}`")
    module = deps.shared[name]
    if base is not None and not isinstance(module, base):
        raise ConfigError(where, f"shared module '{name}' is a {type(module).__name__}, but this component "
                                 f"needs a {base.__name__}",
                          f"point `{key}` at a shared module of that type (`shared.{name}.type`)")
    return SharedRef(name, module)


def borrowed(module: nn.Module) -> dict[str, nn.Module]:
    """The shared modules `module` (or any of its submodules) holds a :class:`SharedRef` to, by name."""
    found: dict[str, nn.Module] = {}
    for sub in module.modules():
        for value in vars(sub).values():
            if isinstance(value, SharedRef):
                found[value.name] = value.module
    return found


def build_shared(nodes: dict[str, Any], registry: Any, deps: BuildDeps) -> dict[str, SharedModule]:
    """Build the `shared:` section: each node with `deps` (its path set to ``shared.<name>``).

    Modules are built in the order written, before any slot, so a slot's constructor
    can hold them.  A name must be usable in ``train: [shared.<name>]`` and in
    parameter names: letters, digits and '_'.
    """
    built: dict[str, SharedModule] = {}
    for name, node in nodes.items():
        if not (isinstance(name, str) and name.replace("_", "").isalnum()):
            raise ConfigError(f"shared.{name}", f"'{name}' is not a valid shared-module name",
                              "use letters, digits and '_' (it becomes part of `shared.<name>` parameter names)")
        built[name] = registry.build("shared_module", node, f"shared.{name}", deps)
    return built
