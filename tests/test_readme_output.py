"""The README's sample output is a whole demo run, written by scripts/readme_output.py, and a fresh demo run
prints the same (times and memory masked, decimals within a few percent: the conv stage's floats follow the CPU).
The fresh run takes minutes, so that test is marked slow."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("readme_output", ROOT / "scripts" / "readme_output.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_readme_block_is_a_whole_run_and_renders_back(script):
    block = script.current_block(README.read_text(encoding="utf-8"))
    output = script.output_of(block)
    assert script.render(output) == block
    lines = output.splitlines()
    assert lines[0].startswith("[crs] kgsf: demo corpus") and lines[-1].startswith("[crs] report: ")
    assert "rec.recall@10" in output and "gen.bleu-2" in output and "Traceback" not in output


def test_masking_hides_only_what_depends_on_the_machine(script):
    text = "rec 3/12  loss.rec 3.52  valid rec.recall@10 0.6900*  11.2s\n" \
           "[crs] report: runs/kgsf-demo/report.json  (train 116.0s, evaluate 3.7s, peak RSS 1,648 MB)\n" \
           "test 526 samples, 300 items, 1,423,529 parameters"
    assert script.masked(text) == (
        "rec 3/12  loss.rec 3.52  valid rec.recall@10 0.6900*  <time>s\n"
        "[crs] report: runs/kgsf-demo/report.json  (train <time>s, evaluate <time>s, peak RSS <n> MB)\n"
        "test 526 samples, 300 items, 1,423,529 parameters")


SHOWN = "rec 5/12  valid rec.recall@10 0.6900*  3.1s\n" \
        "stage 'conv': restored the best epoch (5, loss = 0.493766)\n" \
        "test 526 samples, 300 items, 1,423,529 parameters\n" \
        "gen.dist-4/sentences     2.6540\n"


@pytest.mark.parametrize("fresh", [
    SHOWN,
    SHOWN.replace("0.493766", "0.492124").replace("2.6540", "2.7034").replace("3.1s", "9.0s"),  # two CPUs, seen
])
def test_a_fresh_run_agrees_when_only_times_and_float_noise_differ(script, fresh):
    assert script.differences(SHOWN, fresh) == []


@pytest.mark.parametrize("fresh, where", [
    (SHOWN.replace("2.6540", "2.9000"), "line 4: 2.654 became 2.9"),  # 9% off: a changed model, not noise
    (SHOWN.replace("0.6900*", "0.6900 "), "line 1:"),  # another best epoch
    (SHOWN.replace("(5, loss", "(4, loss"), "line 2:"),  # counts are exact
    (SHOWN.replace("526 samples", "527 samples"), "line 3:"),
    (SHOWN.replace("dist-4/sentences", "dist-4/ngrams   "), "line 4:"),
    (SHOWN + "gen.ppl 1.6\n", "4 lines shown, a fresh run printed 5"),
])
def test_a_fresh_run_disagrees_on_text_counts_or_real_changes(script, fresh, where):
    found = script.differences(SHOWN, fresh)
    assert len(found) == 1 and found[0].startswith(where), found


def test_rewrite_replaces_only_the_block(script, tmp_path, monkeypatch):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{script.START}\n```\n$ {script.COMMAND}\nold\n```\n{script.END}\nrest\n")
    monkeypatch.setattr(script, "README", readme)
    assert script.rewrite("[crs] new line\n") is True
    assert readme.read_text() == f"intro\n{script.START}\n```\n$ {script.COMMAND}\n[crs] new line\n```\n" \
                                 f"{script.END}\nrest\n"
    assert script.rewrite("[crs] new line\n") is False


@pytest.mark.slow(minutes=5)  # alone on 2 cores; the longest tests start first (conftest.py)
def test_the_readme_shows_what_a_fresh_demo_run_prints(script, tmp_path):
    shown = script.current_block(README.read_text(encoding="utf-8"))  # before the minutes of the run
    output = script.run_demo(tmp_path, timeout=3600)
    found = script.differences(shown, script.render(output))
    assert not found, "the README's demo output is stale: run `python scripts/readme_output.py` and commit " \
                      "README.md\n" + "\n".join(found)
