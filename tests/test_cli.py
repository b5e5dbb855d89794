"""The `crs` / `crs-run` commands: delegation, listings, and how errors reach the user."""
import subprocess
import sys
import types

import pytest

from crs import cli
from crs.errors import ConfigError, PluginError
from crs.plugin_manager import DEFAULT_PLUGINS
from crs.testing import write_entry_point_plugin

PLUGIN_SOURCE = '''
from dataclasses import dataclass
from crs.hookspecs import hookimpl
from crs.interfaces import Metric, Recommender

class ShoutRecommender(Recommender):
    """Recommends loudly.

    Second paragraph, not shown.
    """
    @dataclass
    class Config:
        volume: int = 11
        target: str = "x"
        needed: float = None  # type: ignore[assignment]

class Quiet(Metric):
    pass

@hookimpl
def crs_register_recommenders(register):
    register("shout", ShoutRecommender)
    register("broken_rec", "cli_fake_missing_module:Thing")

@hookimpl
def crs_register_metrics(register):
    register("quiet", Quiet)
'''


@pytest.fixture
def runner(monkeypatch):
    """A fake `crs.runner` recording its calls; `runner.effect` is raised when set."""
    calls = []
    module = types.ModuleType("crs.runner")

    def run(config_path, overrides, **options):
        calls.append((config_path, overrides, options))
        if module.effect is not None:
            raise module.effect
        return 0

    module.run, module.effect, module.calls = run, None, calls
    monkeypatch.setitem(sys.modules, "crs.runner", module)
    return module


@pytest.fixture
def fake_install(tmp_path, monkeypatch):
    """Only one plugin installed: `cliplug` (built-ins blocked so the listing is exact)."""
    write_entry_point_plugin(tmp_path, "cliplug", "cli_plug_mod", PLUGIN_SOURCE, version="3.1.4")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("CRS_DISABLE_PLUGINS", ",".join(DEFAULT_PLUGINS))
    try:
        yield
    finally:
        sys.modules.pop("cli_plug_mod", None)


def test_run_delegates_every_option(runner, tmp_path):
    config = tmp_path / "x.yaml"
    config.write_text("{}")
    code = cli.main(["run", str(config), "a=1", "--resume", "b.c=2", "--print-config", "--run-dir", "out",
                     "--no-progress"])
    assert code == 0
    assert runner.calls == [(str(config), ["a=1", "b.c=2"],
                             {"resume": True, "overwrite": False, "print_config": True, "run_dir": "out",
                              "progress": False})]
    assert cli.main(["run", str(config), "--overwrite"]) == 0 and runner.calls[1][2]["overwrite"] is True


def test_run_without_config_file_takes_overrides_only(runner):
    assert cli.main(["run", "preset=kgsf", "seed=1"]) == 0
    assert runner.calls[0][:2] == (None, ["preset=kgsf", "seed=1"])
    assert runner.calls[0][2]["resume"] is False and runner.calls[0][2]["progress"] is True


def test_crs_run_is_crs_run(runner):
    assert cli.run_main(["my.yaml", "x=1", "--resume"]) == 0
    assert runner.calls[0][:2] == ("my.yaml", ["x=1"]) and runner.calls[0][2]["resume"] is True


def test_overrides_and_deletions_may_follow_options(runner):
    assert cli.main(["run", "my.yaml", "--no-progress", "a=1", "~stages.2"]) == 0
    assert runner.calls[0][:2] == ("my.yaml", ["a=1", "~stages.2"]) and runner.calls[0][2]["progress"] is False


def test_unknown_run_option_is_a_usage_error(runner, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["run", "my.yaml", "--frobnicate"])
    assert info.value.code == 2 and "unrecognized arguments: --frobnicate" in capsys.readouterr().err
    assert runner.calls == []


@pytest.mark.parametrize("error", [
    ConfigError("model.rec.dim", "expected int, got 'x' (str)", "write a whole number", source="x.yaml:4"),
    PluginError("plugin 'p' failed to import\n  fix: reinstall"),
])
def test_crs_errors_print_one_message_and_exit_2(runner, capsys, monkeypatch, error):
    monkeypatch.delenv("CRS_DEBUG", raising=False)
    runner.effect = error
    assert cli.main(["run", "x.yaml"]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {error}\n" and "Traceback" not in err


def test_crs_debug_shows_the_traceback(runner, capsys, monkeypatch):
    monkeypatch.setenv("CRS_DEBUG", "1")
    runner.effect = ConfigError("seed", "bad seed")
    assert cli.main(["run", "x.yaml"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.rstrip().endswith("error: config key 'seed': bad seed")


def test_ctrl_c_keeps_the_checkpoint_and_exits_130(runner, capsys, monkeypatch):
    monkeypatch.delenv("CRS_DEBUG", raising=False)
    runner.effect = KeyboardInterrupt()
    assert cli.main(["run", "x.yaml"]) == 130
    err = capsys.readouterr().err
    assert "checkpoint is kept" in err and "--resume" in err and "Traceback" not in err


def test_plugins_lists_versions_and_registrations(fake_install, capsys):
    assert cli.main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "cliplug 3.1.4 (fake-cliplug, module cli_plug_mod)\n" in out
    assert "  recommender: broken_rec, shout\n  metric: quiet\n" in out
    assert "disabled: " + ", ".join(sorted(DEFAULT_PLUGINS)) in out
    assert "crs.plugins.kgsf 0.1.0" not in out


def test_components_of_one_kind_show_plugin_description_and_fields(fake_install, capsys):
    assert cli.main(["components", "metrics"]) == 0  # plural and singular both work
    out = capsys.readouterr().out
    assert out == "metric\n  quiet  [cliplug]\n"
    assert cli.main(["components", "recommender"]) == 2  # broken_rec cannot be loaded
    captured = capsys.readouterr()
    assert "  shout  [cliplug]  Recommends loudly.\n" in captured.out
    assert "      volume: int = 11\n      target: str = 'x'\n      needed: float = None\n" in captured.out
    assert "broken_rec  [cliplug]  cannot be loaded" in captured.out and "cli_fake_missing_module" in captured.out
    assert captured.err == "error: 1 component(s) cannot be loaded: broken_rec\n"


def test_components_lists_only_kinds_that_have_some(fake_install, capsys):
    cli.main(["components"])
    out = capsys.readouterr().out
    assert out.startswith("recommender\n") and "\nmetric\n" in out and "generator" not in out


def test_components_empty_kind(fake_install, capsys):
    assert cli.main(["components", "generator"]) == 0
    assert capsys.readouterr().out == "generator\n  (none registered)\n"


def test_unknown_kind_in_a_real_process_exits_2_without_traceback(fake_install):
    proc = subprocess.run([sys.executable, "-c", "import sys; from crs.cli import main; sys.exit(main())",
                           "components", "recomender"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: unknown component kind or name 'recomender'. Did you mean 'recommender'?")
    assert "fix: give a kind (dataset, " in proc.stderr and "Traceback" not in proc.stderr


def test_subcommands_are_a_table_others_can_extend(monkeypatch, capsys):
    seen = []
    extra = cli.Subcommand("say hello", lambda p: p.add_argument("who"), lambda a: seen.append(a.who) or 3)
    monkeypatch.setitem(cli.SUBCOMMANDS, "hello", extra)
    assert cli.main(["hello", "world"]) == 3 and seen == ["world"]
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert "hello" in capsys.readouterr().out
