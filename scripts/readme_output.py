"""Regenerate the README's sample output of the demo run from a fresh run, so that it never goes stale.

usage: .venv/bin/python scripts/readme_output.py               # run the demo (a few minutes), rewrite the block
       .venv/bin/python scripts/readme_output.py --from FILE   # rewrite it from a saved console output
       .venv/bin/python scripts/readme_output.py --check       # run the demo; exit 1 when the README differs

The block sits between the two markers below.  It is `crs-run examples/kgsf.yaml --no-progress` run in an
empty folder (a copy of the example only, so paths read as they do for a user and no existing run is touched),
everything it prints on stdout and stderr, in order.  Times and memory depend on the machine, so comparisons
(`--check`, tests/test_readme_output.py) mask them.  Every other character must match, with one allowance:
decimal figures (losses, metrics) may drift by a few percent.  The same seed gives the same rec stage everywhere,
but the conv stage's floats follow the CPU's kernels: on an AVX-512/AMX Xeon the best valid loss was 0.492124
where the README's machine printed 0.493766, and Dist-4/sentences moved by 1.9%.  Counts (samples, items,
parameters, epochs) carry no such noise and must match exactly.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
EXAMPLE = "examples/kgsf.yaml"
COMMAND = f"crs-run {EXAMPLE}"
START = "<!-- demo-output: written by scripts/readme_output.py from a fresh run; do not edit -->"
END = "<!-- /demo-output -->"
# Values that differ between machines and runs: seconds ("11.2s", "(train 116.0s, ...") and megabytes.
_VOLATILE = [(re.compile(r"\b\d+(?:\.\d+)?s\b"), "<time>s"), (re.compile(r"\b\d[\d,]*(?:\.\d+)? MB\b"), "<n> MB")]


def run_demo(folder: Path, timeout: float | None = None) -> str:
    """Run the demo in `folder` as a user would; return what it printed (stdout and stderr interleaved).

    :param timeout: seconds before giving up (None: wait; the demo takes minutes, many more on a busy machine).
    """
    folder = Path(folder)
    (folder / "examples").mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / EXAMPLE, folder / EXAMPLE)
    # OpenMP threads that wait passively: beside another busy process (the suite's second xdist worker), the
    # default spin-waiting kept the demo running past 19 CPU-minutes. How threads wait changes no figure.
    env = {"OMP_WAIT_POLICY": "PASSIVE", **os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "120"}
    env.pop("CRS_DEBUG", None)
    proc = subprocess.run([sys.executable, "-m", "crs.cli", "run", EXAMPLE, "--no-progress"], cwd=folder, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise RuntimeError(f"the demo run failed with exit code {proc.returncode}:\n{proc.stdout}")
    return proc.stdout


def render(output: str) -> str:
    """The README block for a demo run's console `output` (markers included)."""
    return "\n".join([START, "```", f"$ {COMMAND}", output.rstrip("\n"), "```", END])


def current_block(readme: str) -> str:
    """The block in `readme`, markers included; ValueError when the markers are missing."""
    start, end = readme.find(START), readme.find(END)
    if start < 0 or end < start:
        raise ValueError(f"README.md has no demo-output block: add the lines {START!r} and {END!r}")
    return readme[start:end + len(END)]


def output_of(block: str) -> str:
    """The console output a block shows (the inverse of :func:`render`)."""
    lines = block.splitlines()
    assert lines[:3] == [START, "```", f"$ {COMMAND}"] and lines[-2:] == ["```", END], "not a demo-output block"
    return "\n".join(lines[3:-2]) + "\n"


def masked(text: str) -> str:
    """`text` with machine-dependent values (times, memory) replaced by placeholders."""
    for pattern, placeholder in _VOLATILE:
        text = pattern.sub(placeholder, text)
    return text


# Decimal figures agree within this relative drift (or this absolute one, for figures near 0).  The largest drift
# seen between two CPUs was 1.9% (module docstring); 5% leaves room and still catches a changed model or metric.
REL_TOL, ABS_TOL = 0.05, 0.002
_DECIMAL = re.compile(r"-?\d+\.\d+")


def differences(shown: str, fresh: str) -> list[str]:
    """Where the `fresh` output departs from the `shown` one, one line each; empty when they agree.

    Both are masked first.  Lines must pair up, their text around decimal figures must be identical, and each pair
    of decimals must agree within REL_TOL (or ABS_TOL).
    """
    shown_lines, fresh_lines = masked(shown).splitlines(), masked(fresh).splitlines()
    found = []
    if len(shown_lines) != len(fresh_lines):
        found.append(f"{len(shown_lines)} lines shown, a fresh run printed {len(fresh_lines)}")
    for number, (was, now) in enumerate(zip(shown_lines, fresh_lines), start=1):
        if _DECIMAL.split(was) != _DECIMAL.split(now):
            found.append(f"line {number}: {was!r} became {now!r}")
            continue
        for a, b in zip(map(float, _DECIMAL.findall(was)), map(float, _DECIMAL.findall(now))):
            if abs(a - b) > max(ABS_TOL, REL_TOL * max(abs(a), abs(b))):
                found.append(f"line {number}: {a} became {b} (more than {REL_TOL:.0%} apart): {now!r}")
    return found


def rewrite(output: str) -> bool:
    """Put the block for `output` into README.md (atomically); True when the README changed."""
    from crs.io import atomic_write_text

    readme = README.read_text(encoding="utf-8")
    updated = readme.replace(current_block(readme), render(output))
    if updated != readme:
        atomic_write_text(README, updated)
    return updated != readme


def main(argv: list[str]) -> int:
    if "--from" in argv:
        output = Path(argv[argv.index("--from") + 1]).read_text(encoding="utf-8")
    else:
        with tempfile.TemporaryDirectory(prefix="crs-readme-demo-") as folder:
            output = run_demo(Path(folder))
    if "--check" in argv:
        found = differences(current_block(README.read_text(encoding="utf-8")), render(output))
        print("README demo output is current" if not found else
              "README demo output differs from a fresh run: run `python scripts/readme_output.py`\n  "
              + "\n  ".join(found), file=sys.stderr if found else sys.stdout)
        return 1 if found else 0
    print("README.md updated" if rewrite(output) else "README.md already current")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
