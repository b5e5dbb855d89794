"""The ``crs`` command (``crs run|eval|plugins|components|data|compare|items|plot ...``), and ``crs-run``.

Each subcommand is a :class:`Subcommand` in :data:`SUBCOMMANDS`: a function adding
its arguments to an argparse parser and a handler returning the exit code.  Adding a
command (``chat``, ``serve``) is one entry; handlers import heavy modules
inside themselves so that ``crs --help`` stays fast.

Errors users can cause (:class:`crs.errors.CRSError`) print as ``error: <message>``
on stderr with exit code 2 and no traceback (``CRS_DEBUG=1`` shows it).  Ctrl-C
exits with 130 after saying that the last checkpoint is kept.
"""
from __future__ import annotations

import argparse
import os
import sys
import traceback
from dataclasses import dataclass
from typing import Callable, Sequence

from .errors import CRSError, UnknownComponentError
from .hookspecs import KINDS


@dataclass(frozen=True)
class Subcommand:
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    handler: Callable[[argparse.Namespace], int | None]


# ------------------------------------------------------------------- run
def _configure_run(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML run file (e.g. examples/kgsf.yaml); may be omitted when "
                                       "overrides name a preset (preset=kgsf)")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="dotted overrides applied last, e.g. stages.0.epochs=2 data=inspired")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint in the run dir")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the run already in the run dir (without it, a folder holding a run is refused)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--run-dir", default=None, metavar="DIR",
                        help="where checkpoints and reports go (default: run_dir, runs/NAME-CORPUS)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _run(args: argparse.Namespace) -> int:
    from .runner import run  # the runner pulls in torch; only `crs run` needs it

    config, overrides = args.config, list(args.overrides)
    if config is not None and "=" in config and not os.path.exists(config):
        config, overrides = None, [config, *overrides]  # `crs run preset=kgsf ...`
    code = run(config, overrides, resume=args.resume, overwrite=args.overwrite, print_config=args.print_config,
               run_dir=args.run_dir, progress=not args.no_progress)
    return code if isinstance(code, int) else 0


# -------------------------------------------------------------------- eval
def _configure_eval(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a finished run's folder (holds config.yaml and "
                                                           "checkpoint.pt)")
    parser.add_argument("overrides", nargs="*", metavar="evaluation.key=value",
                        help="evaluation overrides only, e.g. 'evaluation.protocols=[{type: fresh}]' "
                             "evaluation.max_samples=50")
    parser.add_argument("--split", default=None, help="split to evaluate (default: the run's evaluation.split)")
    parser.add_argument("--out", default=None, metavar="DIR", help="where report.json, rankings.jsonl and "
                                                                   "generations.jsonl go (default: RUN_DIR/eval/SPLIT)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _eval(args: argparse.Namespace) -> int:
    from .runner import evaluate_run  # torch again: imported only when evaluating

    return evaluate_run(args.run_dir, list(args.overrides), split=args.split, out=args.out,
                        progress=not args.no_progress)


# ----------------------------------------------------------------- plugins
def _configure_plugins(parser: argparse.ArgumentParser) -> None:
    pass


def _plugins(args: argparse.Namespace) -> int:
    from .plugin_manager import DEFAULT_PLUGINS, get_plugin_manager
    from .registry import Registry

    pm = get_plugin_manager()
    registry = Registry.from_plugin_manager(pm)
    registered = registry.by_plugin()
    for name, plugin in pm.list_name_plugin():
        if plugin is None:  # blocked by CRS_DISABLE_PLUGINS; listed once below
            continue
        origin = "built-in" if name in DEFAULT_PLUGINS else \
            f"{pm.plugin_dists.get(name) or 'unknown package'}, module {pm.plugin_modules.get(name, '?')}"
        print(f"{name} {pm.plugin_versions.get(name, 'unknown')} ({origin})")
        kinds = registered.get(name, {})
        if not kinds:
            print("  (registers nothing)")
        for kind in KINDS:
            if kind in kinds:
                print(f"  {kind}: {', '.join(kinds[kind])}")
    if pm.disabled:
        print(f"disabled: {', '.join(sorted(pm.disabled))}")
    return 0


# -------------------------------------------------------------- components
def _configure_components(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", nargs="?", default=None, metavar="KIND|NAME",
                        help=f"only this kind: {', '.join(KINDS)}; or one component by name (e.g. dot_product); "
                             f"or `fields` (the batch fields model slots read) or `settings` (the pipeline keys "
                             f"outside components: stages, samples, ...)")
    parser.add_argument("--markdown", action="store_true",
                        help="print the whole reference as Markdown (what docs/components.md holds: every "
                             "installed component, the batch fields and the settings)")


def _components(args: argparse.Namespace) -> int:
    from .component_reference import describe, format_text, markdown
    from .errors import ConfigError
    from .plugin_manager import get_plugin_manager
    from .registry import Registry

    if args.markdown:
        if args.kind is not None:
            raise ConfigError("", f"--markdown prints the whole reference, so '{args.kind}' cannot be given with it",
                              f"run `crs components --markdown` alone, or `crs components {args.kind}`",
                              source="command line")
        sys.stdout.write(markdown(Registry.from_plugin_manager(get_plugin_manager())))
        return 0
    if args.kind in ("fields", "settings"):
        from .config.reference import settings_reference
        from .data.fields import field_table

        print(field_table() if args.kind == "fields" else settings_reference())
        return 0

    registry = Registry.from_plugin_manager(get_plugin_manager())
    kind = _kind_or_none(args.kind) if args.kind is not None else None
    if args.kind is not None and kind is None:  # not a kind: one component by name
        if args.kind not in registry:
            raise _unknown_component_or_kind(args.kind, registry.names())
        groups = {registry.get(args.kind).kind: [args.kind]}
    else:
        groups = {k: registry.names(k) for k in ([kind] if kind else KINDS)}
    broken = []
    for group, names in groups.items():
        if args.kind is None and not names:
            continue
        print(group)
        if not names:
            print("  (none registered)")
        for name in names:
            try:
                print(format_text(describe(registry, name)), flush=True)
            except CRSError as err:
                broken.append(name)
                print(f"  {name}  [{registry.get(name).plugin}]  cannot be loaded:\n    {_indent(str(err), 4)}")
    if broken:
        print(f"error: {len(broken)} component(s) cannot be loaded: {', '.join(broken)}", file=sys.stderr)
        return 2
    return 0


def _kind_or_none(text: str) -> str | None:
    try:
        return parse_kind(text)
    except UnknownComponentError:
        return None


def _unknown_component_or_kind(text: str, names: list[str]) -> CRSError:
    from .errors import ConfigError, did_you_mean

    plurals = [hook.removeprefix("crs_register_") for hook in KINDS.values()]
    candidates = [*KINDS, *plurals, "fields", "settings", *names]
    return ConfigError("", f"unknown component kind or name '{text}'.{did_you_mean(text, candidates)}",
                       f"give a kind ({', '.join(KINDS)}), `fields`, `settings` or a component name; "
                       "`crs components` lists every component")


def parse_kind(text: str) -> str:
    """A component kind from user text: `recommender`, `recommenders` or `training-strategy`."""
    plurals = {hook.removeprefix("crs_register_"): kind for kind, hook in KINDS.items()}
    key = text.strip().lower().replace("-", "_")
    if key in KINDS:
        return key
    if key in plurals:
        return plurals[key]
    raise UnknownComponentError("", "component kind", text, KINDS)


def _indent(text: str, spaces: int) -> str:
    return text.replace("\n", "\n" + " " * spaces)


# -------------------------------------------------------------------- data
def _configure_data(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    down = sub.add_parser("download", help="fetch a public corpus from its release addresses "
                                           "(checksum-verified, resumable, atomic)")
    down.add_argument("name", help="redial or inspired")
    down.add_argument("--dest", default=None, help="target folder (default: data/<name>)")
    down.add_argument("--mirror", default=None, metavar="URL", help="base URL of a mirror holding the same files")
    demo = sub.add_parser("demo", help="write the built-in demo corpus as generic JSONL (+ KG, concepts, items)")
    demo.add_argument("--out", required=True, help="target folder")
    demo.add_argument("--seed", type=int, default=0)


def _data(args: argparse.Namespace) -> int:
    from pathlib import Path

    if args.data_command == "download":
        from .data.download import run_download

        dest = Path(args.dest or Path("data") / args.name)
        paths = run_download(args.name, dest, base_url=args.mirror)
        print(f"{args.name}: {len(paths)} files in {dest}")
        return 0
    from .data.download import writable_folder
    from .errors import DataError
    from .plugins.demo.export import write_demo_corpus

    out = writable_folder(args.out, "--out")  # a path under a file or on a read-only disk: an error, not a traceback
    try:
        written = write_demo_corpus(out, seed=args.seed)
    except OSError as err:  # e.g. the disk filled up while writing
        raise DataError(str(err.filename or out), f"cannot write the demo corpus ({err.strerror or err})",
                        "free disk space, or choose another folder with --out") from None
    for kind, path in written.items():
        print(f"{kind:>10}: {path}")
    return 0


# ------------------------------------------------------------------- items
def _configure_items(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="items_command", metavar="ACTION", required=True)
    add = sub.add_parser("add", help="make new items recommendable in a trained run, without retraining "
                                     "(stored in RUN_DIR/items_extra.jsonl, used whenever the run is loaded)")
    add.add_argument("run_dir", help="the folder of a finished `crs run`")
    add.add_argument("items_file", help="JSONL, one item a line: {\"id\", \"name\", \"entity\"?, \"meta\"?}")
    add.add_argument("--no-check", action="store_true",
                     help="store the items without loading the run to check that its model can take them")


def _items(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .data.extra_items import EXTRA_ITEMS_FILE, items_to_lines, read_items_file
    from .errors import DataError
    from .io import atomic_write_text
    from .serving.load import check_run_dir, load_pipeline

    run_dir = check_run_dir(Path(args.run_dir))
    new = read_items_file(args.items_file)
    target = run_dir / EXTRA_ITEMS_FILE
    before = read_items_file(target) if target.is_file() else []
    added = {item.id for item in before}
    for number, item in enumerate(new, start=1):
        if item.id in added:
            raise DataError(args.items_file, f"item '{item.id}' was already added to {run_dir} ({target})",
                            "drop that line, or give the item another id", line=number)
    previous = target.read_text(encoding="utf-8") if target.is_file() else None
    atomic_write_text(target, items_to_lines([*before, *new]))
    if args.no_check:
        print(f"stored {len(new)} items in {target} ({len(before) + len(new)} added in all); not checked")
        return 0
    try:  # load the run as every later command will: new items that do not fit fail now, not at serving time
        pipeline = load_pipeline(run_dir)
    except BaseException:
        if previous is None:
            target.unlink(missing_ok=True)
        else:
            atomic_write_text(target, previous)
        raise
    print(f"added {len(new)} items to {run_dir}: the catalogue now has {len(pipeline.items)} items "
          f"({len(before) + len(new)} added since training, in {target})")
    nodeless = int((pipeline.items.entity_nodes[-len(new):] == 0).sum())
    if nodeless:  # a model that knows items only as graph nodes sees these as the padding node
        print(f"note: {nodeless} of them name no node of the entity graph, so a model that represents items by "
              "their graph nodes alone (KGSF, KBRD) cannot tell them apart; MESE embeds them from their metadata",
              file=sys.stderr)
    return 0


# -------------------------------------------------------------- chat, serve
def _configure_chat(parser: argparse.ArgumentParser) -> None:
    from .serving.limits import MAX_TOP_N, REPLY_TOKENS, TOP_N

    parser.add_argument("run_dir", metavar="RUN_DIR", help="a finished run's folder (holds config.yaml and "
                                                           "checkpoint.pt)")
    parser.add_argument("--recs", type=int, default=TOP_N, metavar="N",
                        help=f"recommendations shown per turn (1-{MAX_TOP_N})")
    parser.add_argument("--reply-tokens", type=int, default=REPLY_TOKENS, metavar="N",
                        help=f"longest generated reply, in tokens (default {REPLY_TOKENS})")


def _chat(args: argparse.Namespace) -> int:
    from .serving.chat import chat_main  # torch and the pipeline load only here
    from .serving.limits import MAX_REPLY_TOKENS, MAX_TOP_N

    _check_range("--recs", args.recs, 1, MAX_TOP_N)
    _check_range("--reply-tokens", args.reply_tokens, 1, MAX_REPLY_TOKENS)
    return chat_main(args.run_dir, top_n=args.recs, reply_tokens=args.reply_tokens)


def _configure_serve(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a finished run's folder (holds config.yaml and "
                                                           "checkpoint.pt)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 exposes it)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max-sessions", type=int, default=100, help="open conversations kept at most")
    parser.add_argument("--idle-timeout", type=float, default=1800.0, metavar="SECONDS",
                        help="a conversation idle this long is dropped (default 1800)")
    from .serving.limits import MAX_CHARS, REPLY_TOKENS

    parser.add_argument("--max-chars", type=int, default=MAX_CHARS, help="longest utterance accepted, in characters")
    parser.add_argument("--reply-tokens", type=int, default=REPLY_TOKENS, metavar="N", help="longest generated reply")


def _serve(args: argparse.Namespace) -> int:
    import importlib.util

    from .errors import ConfigError

    missing = [name for name in ("fastapi", "uvicorn") if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError("", f"`crs serve` needs {' and '.join(missing)}, which is not installed",
                          "install the serve extra: pip install -e '.[serve]' (or EXTRAS=serve bash scripts/setup.sh)",
                          source="command line")
    _check_range("--port", args.port, 1, 65535)
    _check_range("--max-sessions", args.max_sessions, 1, 1_000_000)
    _check_range("--max-chars", args.max_chars, 1, 100_000)
    from .serving.limits import MAX_REPLY_TOKENS

    _check_range("--reply-tokens", args.reply_tokens, 1, MAX_REPLY_TOKENS)
    if not args.idle_timeout > 0:
        raise ConfigError("--idle-timeout", f"must be a positive number of seconds, got {args.idle_timeout}",
                          "e.g. --idle-timeout 1800", source="command line")
    from .serving.server import ServeSettings, serve_main

    settings = ServeSettings(max_sessions=args.max_sessions, idle_timeout_s=args.idle_timeout,
                             max_chars=args.max_chars, reply_tokens=args.reply_tokens,
                             max_body_bytes=max(16_384, 8 * args.max_chars))
    return serve_main(args.run_dir, host=args.host, port=args.port, settings=settings)


def _check_range(flag: str, value: int, low: int, high: int) -> None:
    from .errors import ConfigError

    if not low <= value <= high:
        raise ConfigError(flag, f"must be from {low} to {high}, got {value}", f"e.g. {flag} {low}",
                          source="command line")


# ----------------------------------------------------------------- compare
def _configure_compare(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_a", help="run folder of system A (holds rankings.jsonl)")
    parser.add_argument("run_b", help="run folder of system B")
    parser.add_argument("--metric", dest="metrics", action="append", default=None, metavar="NAME@K",
                        help="recall@K, mrr@K or ndcg@K; repeatable (default: recall@1, recall@10, recall@50)")
    parser.add_argument("--protocol", dest="protocols", action="append", default=None,
                        help="protocol id; repeatable (default: every protocol both runs ranked)")
    parser.add_argument("--resamples", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)


def _compare(args: argparse.Namespace) -> int:
    from .errors import ConfigError
    from .evaluation.significance import METRICS, compare_runs, format_comparisons, format_matching

    metrics = args.metrics or ["recall@1", "recall@10", "recall@50"]
    for metric in metrics:
        name, _, k = metric.partition("@")
        if name not in METRICS or not k.isdigit() or int(k) < 1:
            raise ConfigError("--metric", f"cannot read '{metric}'",
                              f"write NAME@K with NAME one of {', '.join(METRICS)}, e.g. recall@10")
    if args.resamples < 100:
        raise ConfigError("--resamples", f"{args.resamples} resamples give no usable interval", "use 1000 or more")
    matchings: list = []
    rows = compare_runs(args.run_a, args.run_b, metrics=metrics, protocols=args.protocols,
                        resamples=args.resamples, seed=args.seed, matchings=matchings)
    print(format_comparisons(rows, args.run_a, args.run_b))
    matched, warnings = format_matching(matchings, args.run_a, args.run_b)
    print("\n".join(matched))
    print(f"paired bootstrap over the matched samples, {args.resamples} resamples; p is two-sided")
    for warning in warnings:  # unmatched samples: the two runs may not share a test set
        print(warning, file=sys.stderr)
    return 0


# -------------------------------------------------------------------- plot
def _configure_plot(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="finished runs' folders")
    parser.add_argument("--out", default="plots", metavar="DIR", help="folder for the PNG files (default: plots)")


def _plot(args: argparse.Namespace) -> int:
    from .plots import write_plots  # matplotlib loads only here

    for path in write_plots(args.run_dirs, args.out):
        print(path)
    return 0


SUBCOMMANDS: dict[str, Subcommand] = {
    "run": Subcommand("train and evaluate a pipeline from a YAML run file", _configure_run, _run),
    "eval": Subcommand("evaluate a finished run's pipeline (other splits, protocols, metrics) without training",
                       _configure_eval, _eval),
    "plugins": Subcommand("list plugins, their versions and what they register", _configure_plugins, _plugins),
    "components": Subcommand("components with their config keys (help, allowed values) and ports; one by name",
                             _configure_components, _components),
    "data": Subcommand("download public corpora or write the demo corpus to files", _configure_data, _data),
    "chat": Subcommand("talk to a finished run's pipeline in the terminal (replies, recommendations, /why)",
                       _configure_chat, _chat),
    "serve": Subcommand("serve a finished run's pipeline: JSON API and a chat page (localhost by default)",
                        _configure_serve, _serve),
    "compare": Subcommand("paired bootstrap test of two runs' per-sample recommendation ranks",
                          _configure_compare, _compare),
    "items": Subcommand("add items to a trained run (recommendable without retraining)", _configure_items, _items),
    "plot": Subcommand("draw runs: training curves, recall with bootstrap intervals, recall by item popularity",
                       _configure_plot, _plot),
}


# ---------------------------------------------------------------- entry points
def build_parser(prog: str = "crs") -> argparse.ArgumentParser:
    """The `crs` parser with one subparser per entry of :data:`SUBCOMMANDS`."""
    from . import __version__

    parser = argparse.ArgumentParser(prog=prog, description="Conversational recommender systems from "
                                                            "registered components, composed in YAML.")
    parser.add_argument("--version", action="version", version=f"crs-registry {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, command in SUBCOMMANDS.items():
        child = sub.add_parser(name, help=command.help, description=command.help)
        command.configure(child)
        child.set_defaults(_handler=command.handler, _parser=child)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `crs`; returns the exit code."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # overrides may come after options: `crs run x.yaml --resume a=1`, `crs eval RUN --split valid a=1`
        overrides_only = all(("=" in e or e.startswith("~")) and not e.startswith("-") for e in extra)
        if args.command in ("run", "eval") and overrides_only:
            args.overrides = [*args.overrides, *extra]
        else:
            args._parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return _call(args._handler, args)


def run_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `crs-run` (the same as `crs run`)."""
    return main(["run", *(sys.argv[1:] if argv is None else argv)])


def _call(handler: Callable[[argparse.Namespace], int | None], args: argparse.Namespace) -> int:
    debug = os.environ.get("CRS_DEBUG", "") not in ("", "0")
    try:
        return int(handler(args) or 0)
    except CRSError as err:
        if debug:
            traceback.print_exc()
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except BrokenPipeError:  # output piped into `head`: stop quietly, as Python's docs advise
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        print("\ninterrupted: the last saved checkpoint is kept; run the same command with --resume to "
              "continue from it", file=sys.stderr)
        return 130


if __name__ == "__main__":  # `python -m crs.cli ...` (used by benchmarks and tests)
    sys.exit(main())
