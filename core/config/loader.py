"""Load a run config: registry preset, corpus bundle, YAML file, CLI overrides -> PipelineSpec.

Layering, lowest precedence first:

1. ``preset: NAME`` (from the file, or a ``preset=NAME`` override) starts from
   ``presets.NAME`` in registry.yaml.  A preset may itself name a ``preset:``.
2. The config file merges on top.  Mappings merge key by key, lists are replaced
   whole, and a component node whose ``type`` changes is replaced whole (so options
   of the old type do not leak into the new one).
3. Each ``key=value`` override is applied in order (``stages.0.epochs=2`` indexes
   into lists; setting a node to a type name, ``model.rec=dot_product``, replaces it;
   ``~key`` deletes a key).

Corpus bundles: wherever ``data`` is set to a *string* (in a preset, the file or an
override), the bundle ``corpora.NAME`` of registry.yaml is applied at that point:
its ``data`` and ``knowledge`` replace what was set before, as do its ``linker`` and
``samples`` when it has them.  Everything set after that point still wins, so
``data=inspired data.max_lines=100`` uses the inspired bundle with 100 lines, and a
file with ``data: demo`` plus ``samples: {context_turns: 3}`` keeps its 3 turns.

Then ``corpus`` is set (the latest bundle's name while its dataset is still the one in
use, else ``data.type``), ``${...}`` interpolations are resolved, top-level defaults are
filled in (so the default ``run_dir: runs/${name}-${corpus}`` resolves), and the result is validated into a
:class:`~crs.config.spec.PipelineSpec`.  Errors name the file and line (or the
override) the offending value came from.

Environment variables: ``${oc.env:NAME}`` is refused wherever it appears (file, preset, bundle or
override), naming the key.  A resolved config is written into ``config.yaml``, ``report.json`` and every
checkpoint, so a value read from the environment (a token, a private path) would be copied into each of
them, and a later ``crs eval`` or ``--resume`` would silently read whatever the environment holds then.
Pass such a value as an override (``data.root=$DATA_ROOT``, expanded by the shell and recorded like any
other value) or keep a run file per environment.

After validation the top-level settings torch consumes are checked too (``threads`` >= 0, and that
``device`` exists on this machine), so that no output folder is created for a run that cannot start.

registry.yaml is looked up in order: the ``registry_path`` argument, ``$CRS_REGISTRY``,
``./registry.yaml``, then the repository root next to the installed ``crs`` package.
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import os
import re
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ..errors import ConfigError, UnknownComponentError, clip, did_you_mean
from .spec import PipelineSpec
from .validate import from_dict, join, locate
from .yaml_lines import SourceMap

REGISTRY_ENV = "CRS_REGISTRY"
BUNDLE_KEYS = ("data", "knowledge", "linker", "samples")
_OVERRIDE_KEY = re.compile(r"^[A-Za-z_][\w\-]*(\.[\w\-]+)*$")


@dataclasses.dataclass
class _Layer:
    label: str
    values: dict[str, Any]
    text: str | None = None  # YAML text for line numbers
    prefix: str = ""  # where `values` sit inside `text`


def load_config(path: str | None, overrides: list[str] | tuple[str, ...] = (), *,
                registry_path: str | os.PathLike | None = None, registry: Any = None
                ) -> tuple[PipelineSpec, dict]:
    """Read, layer, resolve and validate a run config.

    :param path: the YAML run file, or None to build from overrides alone (e.g. ``preset=kgsf``).
    :param overrides: ``key=value`` strings applied last.
    :param registry_path: registry.yaml to use for presets and corpus bundles.
    :param registry: a :class:`crs.registry.Registry`; when given, every component node is
        checked too (:func:`validate_components`), with file:line in its errors.
    :returns: the validated spec and the resolved config as a plain dict (all fields).
    :raises ConfigError: any problem, naming the YAML path and where the value came from.
    """
    try:
        return _load_config(path, overrides, registry_path, registry)
    except RecursionError:  # e.g. an override with a dotted key of a thousand parts
        raise _too_deep(path or "command line") from None


def _load_config(path: str | None, overrides: list[str] | tuple[str, ...], registry_path: Any,
                 registry: Any) -> tuple[PipelineSpec, dict]:
    sources = SourceMap()
    file_layer = _read_file(path) if path else _Layer("(no config file)", {})
    ops = [_parse_override(text) for text in overrides]
    registry_file = _RegistryFile(registry_path)

    preset_op = next((text for k, _, text in reversed(ops) if k == "preset"), None)
    preset = next((v for k, v, _ in reversed(ops) if k == "preset"), file_layer.values.get("preset"))
    try:
        layers = registry_file.preset_layers(preset) if preset is not None else []
    except ConfigError as err:  # say whether the file or the command line named it
        origin = SourceMap()
        if preset_op is not None:
            origin.add_override("preset", preset_op)
        elif file_layer.text is not None:
            origin.add_yaml(file_layer.label, file_layer.text)
        raise locate(err, origin)
    layers.append(file_layer)

    merged: dict[str, Any] = {}
    last_bundle: tuple[str, Any] | None = None  # (name, data.type) of the latest corpus bundle, for `corpus`
    for layer in layers:
        values = _normalize(copy.deepcopy(layer.values))
        bundle = values.pop("data") if isinstance(values.get("data"), str) else None
        if bundle is not None:
            merged = _apply_bundle(merged, registry_file.bundle_layer(bundle, layer.label), sources)
            last_bundle = (bundle, _data_type(merged))
        if layer.text is not None:
            sources.add_yaml(layer.label, layer.text, layer.prefix)
        merged = _merge(merged, values, origin=f"{layer.prefix} in {layer.label}" if layer.prefix else layer.label)
    for key, value, text in ops:
        if key == "preset":
            merged["preset"] = value
        elif key.startswith("~"):
            _delete_path(merged, key[1:], text)
        elif key == "data" and isinstance(value, str):
            merged = _apply_bundle(merged, registry_file.bundle_layer(value, f"override '{text}'"), sources)
            last_bundle = (value, _data_type(merged))
        else:
            _set_path(merged, key, value, text)
        sources.add_override(key, text)
    if preset is not None:
        merged["preset"] = preset
    merged.setdefault("corpus", _corpus_name(merged, last_bundle))

    merged = _normalize(merged)
    _refuse_environment(merged, sources)
    resolved = _resolve(merged, sources)
    try:
        spec = from_dict(PipelineSpec, resolved, "", sources)
        check_settings(spec)
    except ConfigError as err:
        if path is None and not err.source:
            raise locate(locate(err, sources), "(overrides)")
        raise locate(err, sources)
    if registry is not None:
        validate_components(spec, registry, sources)
    return spec, dataclasses.asdict(spec)


def validate_components(spec: PipelineSpec, registry: Any, source: Any = None) -> None:
    """Check every component node of `spec` (type and config) before any data loads.

    :param source: the config file name (its lines are read for messages) or a locator.
    :raises ConfigError: the first bad node; when several nodes are bad, the message lists all.
    """
    if isinstance(source, (str, os.PathLike)) and Path(source).is_file():
        locator = SourceMap()
        locator.add_yaml(str(source), read_yaml_text(Path(source), "config file"))
        source = locator
    nodes = component_nodes(spec)
    errors: list[ConfigError] = []
    for slot, node in spec.model.items():
        # a slot without `type:` whose name is close to another slot's is almost always a typo
        # in an override (model.recomender.dim=64 creates a new, empty slot)
        others = [s for s in spec.model if s != slot]
        hint = did_you_mean(slot, others)
        if isinstance(node, dict) and "type" not in node and hint:
            errors.append(ConfigError(f"model.{slot}", f"there is no model slot '{slot}'.{hint}",
                                      f"slots are: {', '.join(others)}; a new slot needs `type: NAME`"))
            nodes = [n for n in nodes if n[2] != f"model.{slot}"]
    for kinds, node, path in nodes:
        try:
            registry.check_node(kinds, node, path, source)
        except ConfigError as err:
            errors.append(err)
    if len(errors) == 1:
        raise errors[0]
    if errors:
        combined = ConfigError("", f"{len(errors)} config errors:\n" + "\n".join(f"- {e}" for e in errors))
        combined.path = errors[0].path  # for callers that inspect it; the message lists every error
        raise combined


def component_nodes(spec: PipelineSpec) -> list[tuple[Any, Any, str]]:
    """(kinds, node, config path) of every component node of `spec`, in the order they are validated.

    The one list of where components sit in a pipeline: :func:`validate_components` checks these
    nodes, and :func:`crs.data.shared_folder.check_shared_data` reads their values.
    """
    from ..interfaces import MODEL_KINDS

    nodes: list[tuple[Any, Any, str]] = [("dataset", spec.data, "data")]
    nodes += [("knowledge_source", node, f"knowledge.{name}") for name, node in spec.knowledge.items()]
    nodes += [("shared_module", node, f"shared.{name}") for name, node in spec.shared.items()]
    if spec.linker is not None:
        nodes.append(("entity_linker", spec.linker, "linker"))
    nodes += [(MODEL_KINDS, node, f"model.{slot}") for slot, node in spec.model.items()]
    nodes += [("training_strategy", stage.strategy, f"stages.{i}.strategy") for i, stage in enumerate(spec.stages)]
    nodes += [("evaluation_protocol", node, f"evaluation.protocols.{i}")
              for i, node in enumerate(spec.evaluation.protocols)]
    nodes += [("metric", node, f"evaluation.metrics.{i}") for i, node in enumerate(spec.evaluation.metrics)]
    nodes += [("featurizer", node, f"samples.featurizers.{i}") for i, node in enumerate(spec.samples.featurizers)]
    return nodes


def find_registry_file(registry_path: str | os.PathLike | None = None) -> Path | None:
    """The registry.yaml to use (see module doc), or None if there is none."""
    if registry_path is not None:
        return Path(registry_path)
    if os.environ.get(REGISTRY_ENV):
        return Path(os.environ[REGISTRY_ENV])
    if Path("registry.yaml").is_file():
        return Path("registry.yaml")
    import crs

    packaged = Path(crs.__file__).resolve().parents[1] / "registry.yaml"
    return packaged if packaged.is_file() else None


def check_settings(spec: PipelineSpec) -> None:
    """Check the top-level settings torch consumes, before anything is written or built.

    ``threads`` must be 0 (torch's default) or positive; ``device`` must name a device this
    machine has (:func:`crs.training.precision.resolve_device`, which imports torch, so it runs
    only for devices other than ``cpu``).  ``seed`` needs nothing more: every int the validator
    accepts (64-bit) seeds Python, NumPy and torch.

    :raises ConfigError: at ``threads`` or ``device``.
    """
    if spec.threads < 0:
        raise ConfigError("threads", f"must be 0 (torch's default) or a positive number of threads, got {spec.threads}",
                          "use threads: 0, or the number of CPU cores to use, e.g. threads: 4")
    if str(spec.device).strip() != "cpu":
        from ..training.precision import resolve_device

        resolve_device(spec.device, "device")


# --------------------------------------------------------------- reading
def read_yaml_text(path: Path, what: str) -> str:
    """The UTF-8 text of `path`; a ConfigError naming the file (and the line of a bad byte) otherwise.

    :param what: what the file is, for the message ("config file", "registry file").
    """
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise ConfigError("", f"cannot read the {what} ({err.strerror or err})",
                          "check the path and that it is a readable file", source=str(path)) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise ConfigError("", f"the {what} is not UTF-8 text: byte 0x{data[err.start]:02x} cannot be decoded",
                          "save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8 OLD > NEW`)",
                          source=f"{path}:{line}") from None


def _load_yaml(text: str, label: str) -> Any:
    try:
        return OmegaConf.to_container(OmegaConf.create(text), resolve=False) if text.strip() else {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        where = f"{label}:{mark.line + 1}" if mark is not None else label
        problem = " ".join(str(getattr(err, "problem", None) or err).split())
        context = getattr(err, "context", None)
        raise ConfigError("", f"malformed YAML: {context + ', ' if context else ''}{problem}",
                          "fix the YAML syntax at that line (indentation, ':' after keys, closing quotes/brackets)",
                          source=where) from err
    except OmegaConfBaseException as err:
        raise ConfigError("", f"cannot read YAML: {' '.join(str(err).split())}",
                          "fix the YAML at the reported key", source=label) from err
    except RecursionError:  # OmegaConf recurses ~10 frames per level: [[[...]]] 100 deep exhausts Python's stack
        raise _too_deep(label) from None


def _too_deep(where: str) -> ConfigError:
    return ConfigError("", "the config nests lists or mappings too deeply to be read",
                       "flatten it: no config needs more than a few levels", source=where)


def _read_file(path: str) -> _Layer:
    file = Path(path)
    if not file.is_file():
        raise ConfigError("", f"config file '{path}' not found", "check the path (it is relative to the "
                              "current directory), e.g. examples/kgsf.yaml")
    text = read_yaml_text(file, "config file")
    values = _load_yaml(text, str(path))
    if not isinstance(values, dict):
        raise ConfigError("", f"the config must be a mapping of keys, got {type(values).__name__}",
                          "write top-level `key: value` lines (data:, model:, stages:, ...)", source=str(path))
    return _Layer(str(path), values, text)


class _RegistryFile:
    """registry.yaml, read on first need (a config without preset or bundle never touches it)."""

    def __init__(self, registry_path: Any):
        self._arg = registry_path
        self._file: Path | None = None
        self._text = ""
        self._values: dict | None = None

    def _load(self, purpose: str) -> dict:
        if self._values is None:
            self._file = find_registry_file(self._arg)
            if self._file is None or not self._file.is_file():
                raise ConfigError(purpose, f"{purpose} needs registry.yaml, which was not found"
                                  + (f" at '{self._file}'" if self._file else ""),
                                  f"run from the repository root, pass its path in ${REGISTRY_ENV}, "
                                  f"or write the pipeline out in full instead of `{purpose}:`")
            self._text = read_yaml_text(self._file, "registry file")
            self._values = self._checked(_load_yaml(self._text, str(self._file)))
        return self._values

    def _checked(self, values: Any) -> dict:
        """`values` if registry.yaml has the expected shape; a ConfigError at the offending line otherwise."""
        lines = SourceMap()
        lines.add_yaml(str(self._file), self._text)
        if values is None:
            return {}
        if not isinstance(values, dict):
            raise ConfigError("", f"registry file must be a mapping with `corpora:` and `presets:`, got "
                              f"{_kind_of(values)}", "write `corpora:` and `presets:` as top-level keys",
                              source=str(self._file))
        examples = {"presets": "`NAME: {model: ..., stages: ...}`", "corpora": "`NAME: {data: ..., knowledge: ...}`"}
        for section, example in examples.items():
            entries = values.get(section)
            if entries is None:
                continue
            if not isinstance(entries, dict):
                raise locate(ConfigError(section, f"must be a mapping of names to settings, got {_kind_of(entries)}",
                                         f"write one {example} entry per name under `{section}:`"), lines)
            for name, entry in entries.items():
                if not isinstance(name, str):
                    raise locate(ConfigError(f"{section}.{name}", f"names must be strings, got {name!r}",
                                             "quote the name"), lines)
                if entry is not None and not isinstance(entry, dict):
                    raise locate(ConfigError(f"{section}.{name}", f"must be a mapping of settings, got "
                                             f"{_kind_of(entry)}", f"write it as {example}"), lines)
        return values

    def preset_layers(self, name: Any, seen: tuple[str, ...] = ()) -> list[_Layer]:
        presets = self._load("preset").get("presets") or {}
        if not isinstance(name, str) or name not in presets:
            raise UnknownComponentError("preset", "preset", str(name), presets)
        if name in seen:
            raise ConfigError("preset", f"presets form a cycle: {' -> '.join(seen + (name,))}",
                              f"remove the `preset:` key from presets.{name} in {self._file}")
        values = copy.deepcopy(presets[name]) or {}
        parent = values.pop("preset", None)
        below = self.preset_layers(parent, seen + (name,)) if parent is not None else []
        return below + [_Layer(str(self._file), values, self._text, f"presets.{name}")]

    def bundle_layer(self, name: str, selected_by: str) -> _Layer:
        corpora = self._load("data").get("corpora") or {}
        if name not in corpora:
            raise UnknownComponentError("data", "corpus bundle", name, corpora, source=selected_by)
        values = corpora[name] or {}
        unknown = [k for k in values if k not in BUNDLE_KEYS]
        if unknown:
            raise ConfigError(f"corpora.{name}.{unknown[0]}", "a corpus bundle may only set "
                              f"{', '.join(BUNDLE_KEYS)}", f"move it out of the bundle in {self._file}",
                              source=str(self._file))
        return _Layer(str(self._file), copy.deepcopy(values), self._text, f"corpora.{name}")


# --------------------------------------------------------------- merging
def _normalize(config: dict) -> dict:
    """Expand `NAME` shorthands of component nodes into ``{type: NAME}``."""
    for section in ("knowledge", "model"):
        if isinstance(config.get(section), dict):
            config[section] = {k: _node(v) for k, v in config[section].items()}
    if "linker" in config:
        config["linker"] = _node(config["linker"])
    if isinstance(config.get("stages"), list):
        for stage in config["stages"]:
            if isinstance(stage, dict) and "strategy" in stage:
                stage["strategy"] = _node(stage["strategy"])
    samples = config.get("samples")
    if isinstance(samples, dict) and isinstance(samples.get("featurizers"), list):
        samples["featurizers"] = [_node(v) for v in samples["featurizers"]]
    evaluation = config.get("evaluation")
    if isinstance(evaluation, dict):
        for key in ("protocols", "metrics"):
            if isinstance(evaluation.get(key), list):
                evaluation[key] = [_node(v) for v in evaluation[key]]
    return config


def _node(value: Any) -> Any:
    return {"type": value} if isinstance(value, str) else value


def _merge(base: Any, top: Any, path: str = "", origin: str = "") -> Any:
    """Merge `top` onto `base`: mappings key by key, anything else (lists too) replaced.

    A node whose `type` changes is replaced whole; the old node's keys it does not set again
    are dropped, with a warning naming them (`path`: where the node sits; `origin`: the layer).
    """
    if not isinstance(base, dict) or not isinstance(top, dict):
        return copy.deepcopy(top)
    if "type" in top and "type" in base and top["type"] != base["type"]:
        warn_dropped_keys(path, base["type"], top["type"], [k for k in base if k != "type" and k not in top], origin)
        return copy.deepcopy(top)  # another component: the old one's options do not apply
    out = dict(base)
    for key, value in top.items():
        out[key] = _merge(base[key], value, f"{path}.{key}" if path else str(key), origin) if key in base \
            else copy.deepcopy(value)
    return out


log = logging.getLogger("crs.config")


def warn_dropped_keys(path: str, old_type: Any, new_type: Any, dropped: list[str], origin: str) -> None:
    """Log that the node at `path` changed component type and lost `dropped` (nothing when empty).

    Silently dropping them surprised users: `dim` set for the old component does not carry
    over to the new one, which then runs with its own default.
    """
    if not dropped:
        return
    where = f" ({origin})" if origin else ""
    change = f"changes type from '{old_type}' to '{new_type}'{where}" if old_type != new_type else \
        f"is replaced by a bare '{new_type}' node{where}"
    log.warning("%s %s, so these keys of the old node are dropped: %s; set them again under the new "
                "node if it should keep them", path or "a component node", change, ", ".join(dropped))


def _apply_bundle(merged: dict, bundle: _Layer, sources: SourceMap) -> dict:
    out = dict(merged)
    values = _normalize(copy.deepcopy(bundle.values))
    for key in BUNDLE_KEYS:
        if key in values:
            out[key] = values[key]
        elif key in ("data", "knowledge"):
            out.pop(key, None)
    sources.add_yaml(bundle.label, bundle.text or "", bundle.prefix)
    return out


def _data_type(config: dict) -> Any:
    data = config.get("data")
    return data.get("type") if isinstance(data, dict) else None


def _corpus_name(config: dict, last_bundle: tuple[str, Any] | None) -> str | None:
    """The corpus's name for the default run_dir: the bundle that set `data` (``inspired``) while its
    dataset type is still the one in use, else ``data.type`` (a file that writes its own ``data:`` node)."""
    data_type = _data_type(config)
    if last_bundle is not None and last_bundle[1] == data_type:
        return last_bundle[0]
    return data_type if isinstance(data_type, str) else None


def _parse_override(text: str) -> tuple[str, Any, str]:
    """(key, value, text); ``~key`` deletes a key and comes back as ("~key", None, text)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    fix = "write overrides as key=value with a dotted key, e.g. stages.0.epochs=2 or model.rec.dim=64 " \
          "(~key deletes a key)"
    if key.startswith("~") and _OVERRIDE_KEY.match(key[1:]):
        return key, None, text
    if not sep or not _OVERRIDE_KEY.match(key):
        raise ConfigError("", f"malformed override '{text}': expected key=value", fix, source="command line")
    try:
        value = OmegaConf.to_container(OmegaConf.from_dotlist([f"value={raw}"]), resolve=False)["value"]
    except (OmegaConfBaseException, yaml.YAMLError, ValueError) as err:
        problem = getattr(err, "problem", None) or str(err)  # YAML errors: drop the "<unicode string>" noise
        raise ConfigError(key, f"malformed override '{clip(text, 120)}': {clip(' '.join(str(problem).split()), 120)}",
                          fix, source="command line") from err
    except RecursionError:
        raise _too_deep(f"override '{clip(text, 120)}'") from None
    return key, value, text


def _set_path(config: dict, key: str, value: Any, text: str) -> None:
    parts = key.split(".")
    node: Any = config
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        where = ".".join(parts[:depth + 1])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(where, f"override '{text}': '{'.'.join(parts[:depth]) or key}' is a list of "
                                         f"{len(node)} entries, so '{part}' is not a valid index",
                                  f"use an index from 0 to {len(node) - 1}", source="command line")
            part = int(part)
        elif not isinstance(node, dict):
            raise ConfigError(where, f"override '{text}': '{'.'.join(parts[:depth])}' holds {node!r}, "
                                     f"not a mapping", "override the whole value instead", source="command line")
        if last:
            old = node[part] if (isinstance(node, list) or part in node) else None
            if isinstance(old, dict) and isinstance(value, str) and _is_node_path(parts) and len(old) > 1:
                # `model.rec=NAME` replaces the whole node: say what it had
                warn_dropped_keys(key, old.get("type"), value, [k for k in old if k != "type"], f"override '{text}'")
            node[part] = value if not (isinstance(old, dict) and isinstance(value, dict)) else \
                _merge(old, value, key, f"override '{text}'")
            if part == "type" and isinstance(node, dict) and old is not None and old != value:
                stale = [k for k in node if k not in ("type", "inputs", "outputs")]
                warn_dropped_keys(".".join(parts[:-1]), old, value, stale, f"override '{text}'")
                for name in stale:
                    del node[name]  # another component type: drop the old one's options
            return
        if isinstance(node, dict) and not isinstance(node.get(part), (dict, list)):
            node[part] = {"type": node[part]} if isinstance(node.get(part), str) and \
                _is_node_path(parts[:depth + 1]) else ({} if node.get(part) is None else node[part])
        node = node[part]


def _delete_path(config: dict, key: str, text: str) -> None:
    *parents, last = key.split(".")
    node: Any = config
    for part in parents:
        node = node[int(part)] if isinstance(node, list) and part.isdigit() and int(part) < len(node) \
            else node.get(part) if isinstance(node, dict) else None
    if isinstance(node, dict) and last in node:
        del node[last]
    elif isinstance(node, list) and last.isdigit() and int(last) < len(node):
        del node[int(last)]
    else:
        raise ConfigError(key, f"override '{text}' deletes '{key}', which is not set",
                          "check the key against the config (`crs run CONFIG --print-config` shows it)",
                          source="command line")


def _is_node_path(parts: list[str]) -> bool:
    """True for paths of component nodes, where a string is a `{type: NAME}` shorthand."""
    return (len(parts) == 2 and parts[0] in ("model", "knowledge")) or parts == ["linker"] or \
        (len(parts) == 3 and parts[0] == "stages" and parts[2] == "strategy") or \
        (len(parts) == 3 and parts[0] == "evaluation" and parts[1] in ("protocols", "metrics")) or \
        (len(parts) == 3 and parts[0] == "samples" and parts[1] == "featurizers")


_ENV_INTERPOLATION = re.compile(r"(?<!\\)\$\{\s*oc\.env\s*:\s*([^,}]*)")


def _refuse_environment(config: Any, sources: SourceMap, path: str = "") -> None:
    """A ConfigError for the first ``${oc.env:...}`` in `config` (see the module doc for why)."""
    if isinstance(config, dict):
        items = config.items()
    elif isinstance(config, list):
        items = enumerate(config)
    else:
        match = _ENV_INTERPOLATION.search(config) if isinstance(config, str) else None
        if match:
            variable = match.group(1).strip().strip("'\"") or "NAME"
            raise locate(ConfigError(
                path, f"reads the environment variable {variable} (`${{oc.env:...}}`); a run config (file, preset "
                "or override) may not read the environment, because the resolved config is saved in config.yaml, "
                "report.json and every checkpoint (a secret would be copied into each) and a later `crs eval` or "
                "--resume would read whatever the environment holds then",
                f"pass the value as an override instead (e.g. `{path or 'key'}=${variable}`, expanded by the shell "
                "and recorded like any other value), or keep a run file per environment"), sources)
        return
    for key, value in items:
        _refuse_environment(value, sources, join(path, key))


def _kind_of(value: Any) -> str:
    return "a list" if isinstance(value, list) else f"{value!r} ({type(value).__name__})"


def _resolve(config: dict, sources: SourceMap) -> dict:
    """Fill top-level scalar defaults (so `runs/${name}` resolves) and resolve interpolations."""
    for f in dataclasses.fields(PipelineSpec):
        if f.default is not dataclasses.MISSING and isinstance(f.default, (str, int, float)) \
                and not isinstance(f.default, bool):
            config.setdefault(f.name, f.default)
    try:
        return OmegaConf.to_container(OmegaConf.create(config), resolve=True)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", "") or ""
        raise locate(ConfigError(str(key), f"cannot resolve an interpolation: {' '.join(str(err).split())}",
                                 "check the `${...}` reference names an existing key"), sources) from err
