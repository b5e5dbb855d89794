"""Fuzzing the loaders of untrusted input: whatever a file or a command line holds, what escapes is a CRSError.

Two loaders read input nobody checked: the restricted pickle loader (downloaded KG and
review pickles) and the config loader (run files, registry.yaml, `key=value` overrides).
Each test mutates a valid input at random -- byte flips, huge length fields, truncations
for the pickle; character edits, line shuffles and random overrides for the config -- and
requires every failure to be a :class:`crs.errors.CRSError` (printed as one `error:`
paragraph with exit code 2), never another exception (a traceback with exit code 1).

The cases are drawn from a fixed seed, so a failure names a case that reproduces; the
number of cases is fixed, and a time cap keeps a slow machine from stretching CI.
``CRS_FUZZ_CASES=N`` multiplies the case counts for a longer local hunt.
"""
from __future__ import annotations

import os
import pickle
import random
import struct
import time
from collections import OrderedDict, defaultdict
from pathlib import Path

import pytest

from crs.config.loader import load_config
from crs.data.safe_pickle import load_plain_pickle
from crs.errors import CRSError

SEED = 20240613
SCALE = int(os.environ.get("CRS_FUZZ_CASES", "1"))
TIME_CAP_S = 4.0 * SCALE  # per test; the case counts below take about a second on an idle laptop
REPO = Path(__file__).resolve().parents[1]


def _plain_value() -> object:
    graph = defaultdict(list)
    for head in range(12):
        graph[head] += [(head % 5, (head * 7) % 12), (3, head)]
    return {
        "graph": graph,
        "names": OrderedDict((f"<http://dbpedia.org/resource/E{i}>", i) for i in range(10)),
        "texts": {"7": ["so", "good"], "8": [["meh"], ["fine", "film"]]},
        "numbers": [1, -2, 2**40, 3.5, float("inf"), True, None],
        "tags": {"a", "b"},
        "raw": b"\x00\x01bytes",
        "nested": ((1, 2), [3, [4, {"x": "y" * 300}]]),
    }


def _mutate_bytes(rng: random.Random, data: bytes) -> tuple[str, bytes]:
    """One random damage to `data`, and a description of it."""
    buf = bytearray(data)
    kind = rng.choice(["flip", "flip", "huge", "truncate", "insert", "delete"])
    at = rng.randrange(len(buf))
    if kind == "flip":
        spots = [rng.randrange(len(buf)) for _ in range(rng.randint(1, 8))]
        for spot in spots:
            buf[spot] = rng.randrange(256)
        return f"flip bytes {spots}", bytes(buf)
    if kind == "huge":  # a length field or memo index asking for (nearly) everything
        width = rng.choice([1, 4, 8])
        value = rng.choice([2**(8 * width) - 1, 2**(8 * width - 1), 2**(8 * width - 2) + 1])
        buf[at:at + width] = value.to_bytes(width, "little")
        return f"write {value} ({width} bytes) at {at}", bytes(buf)
    if kind == "truncate":
        return f"truncate at {at}", bytes(buf[:at])
    if kind == "insert":
        junk = bytes(rng.randrange(256) for _ in range(rng.randint(1, 9)))
        return f"insert {junk!r} at {at}", bytes(buf[:at] + junk + buf[at:])
    end = min(len(buf), at + rng.randint(1, 9))
    return f"delete bytes {at}..{end}", bytes(buf[:at] + buf[end:])


def test_fuzz_restricted_pickle_loader(tmp_path):
    rng = random.Random(SEED)
    valid = {protocol: pickle.dumps(_plain_value(), protocol=protocol) for protocol in (0, 2, 4, 5)}
    path = tmp_path / "fuzzed.pkl"
    loaded = refused = 0
    started = time.perf_counter()
    for case in range(600 * SCALE):
        if time.perf_counter() - started > TIME_CAP_S:
            break
        protocol = rng.choice(list(valid))
        what, data = _mutate_bytes(rng, valid[protocol])
        path.write_bytes(data)
        try:
            load_plain_pickle(path)
            loaded += 1
        except CRSError as err:
            assert str(path) in str(err), f"case {case}: the error does not name the file: {err}"
            refused += 1
        except BaseException as err:  # noqa: BLE001 - exactly what this test hunts
            pytest.fail(f"case {case} (protocol {protocol}, {what}) escaped as {type(err).__name__}: {err}")
    print(f"pickle fuzz: {loaded} loaded, {refused} refused")  # shown with -s
    assert loaded + refused >= 50 and loaded and refused  # cases ran, and both outcomes were exercised


@pytest.mark.parametrize("data, problem", [
    (b"\x80\x04\x8e" + struct.pack("<Q", 2**40) + b"x.",  # BINBYTES8 of a terabyte
     "a length field at byte 2 asks for 1,099,511,627,776 bytes, but the file holds only 2 more"),
    (b"\x80\x04\x95" + struct.pack("<Q", 2**62) + b"N.",  # a FRAME of 2**62 bytes
     "a length field at byte 2 asks for 4,611,686,018,427,387,904 bytes, but the file holds only 2 more"),
    (b"\x80\x04Nr" + struct.pack("<I", 2**32 - 1) + b".",  # LONG_BINPUT: a memo table of 2**32 entries
     "a memo index at byte 3 (4294967295) exceeds the 3 opcodes before it"),
    (b"\x80\x02Np99999999999999\n.",  # PUT with a text index
     "a memo index at byte 3 (99999999999999) exceeds the 3 opcodes before it"),
], ids=["binbytes8", "frame", "long_binput", "put"])
def test_huge_lengths_and_memo_indices_are_refused_before_unpickling(tmp_path, data, problem):
    """Handmade: each asks for memory the C unpickler would allocate; the opcode walk names the field instead."""
    path = tmp_path / "huge.pkl"
    path.write_bytes(data)
    with pytest.raises(CRSError) as err:
        load_plain_pickle(path)
    assert str(err.value).startswith(f"{path}: the pickle is damaged: {problem}")


# ------------------------------------------------------------------ config
_VALID_CONFIG = """\
name: fuzzed
seed: 7
data:
  type: demo
model:
  recommender: {type: popularity}
stages:
  - name: rec
    task: rec
    epochs: 2
    batch_size: 16
    optimizer: {type: adam, lr: 1.0e-3}
    schedule: {type: constant, warmup_steps: 0}
samples:
  context_turns: 3
  max_context_tokens: 128
evaluation:
  split: test
  metrics: [{type: recall}, mrr]
run_dir: runs/${name}
"""

# Fragments the YAML mutations and overrides draw from: YAML syntax, tricky scalars, interpolations.
_TOKENS = [":", "- ", "{", "}", "[", "]", ",", "'", '"', "#", "&a", "*a", "<<: *a", "!!python/object:os.system",
           "!!str", "${name}", "${oc.env:HOME}", "${missing}", "${", "}", "\\", "~", "null", "true", "1e20", "-1",
           ".nan", "0x10", "99999999999999999999999", "\t", "\n", "  ", "é", "\x00", "\ufeff", "%YAML 1.1", "---",
           "...", "? ", "|", ">", "@", "`", "!!binary AAAA", "=", "stages", "model", "data", "type"]
_KEYS = ["seed", "threads", "device", "name", "run_dir", "data", "data.type", "model.recommender",
         "model.recommender.type", "stages", "stages.0", "stages.0.epochs", "stages.0.optimizer.lr", "stages.5.epochs",
         "samples.context_turns", "evaluation.metrics", "evaluation.metrics.1", "knowledge", "preset", "~data",
         "~stages.0", "~nothing", "model", "linker", "shared.x", "a..b", "0", "stages.x", "model.recommender.dim",
         "model.deep." + "a." * 800 + "b"]
_VALUES = ["1", "-1", "0", "1e20", "99999999999999999999999", "null", "true", "[]", "{}", "[1, 2", "{a: }", "x",
           "cuda", "cuda:7", "foo", "${name}", "${oc.env:HOME}", "${nope}", "'${name}'", "popularity", "demo",
           "{type: popularity}", "[{type: recall}]", ".nan", "é", "'", "\\", "=", "a=b", "!!python/name:os.system",
           "${oc.decode:'{a: 1}'}", "${oc.create:{}}", "[" * 120 + "]" * 120, "{a: " * 60 + "1" + "}" * 60]


def _mutate_config(rng: random.Random, text: str) -> tuple[str, str]:
    kind = rng.choice(["value", "value", "value", "insert", "delete", "replace", "swap_lines", "indent", "copy_line"])
    at = rng.randrange(len(text))
    if kind == "value":  # keep the YAML valid, change what a key holds
        lines = text.split("\n")
        keyed = [i for i, line in enumerate(lines) if ": " in line]
        i = rng.choice(keyed)
        key = lines[i].split(": ", 1)[0]
        value = rng.choice(_VALUES)
        lines[i] = f"{key}: {value}"
        return f"set line {i} to {lines[i]!r}", "\n".join(lines)
    if kind == "insert":
        token = rng.choice(_TOKENS)
        return f"insert {token!r} at {at}", text[:at] + token + text[at:]
    if kind == "delete":
        end = min(len(text), at + rng.randint(1, 6))
        return f"delete {text[at:end]!r} at {at}", text[:at] + text[end:]
    if kind == "replace":
        token = rng.choice(_TOKENS)
        end = min(len(text), at + rng.randint(1, 6))
        return f"replace {text[at:end]!r} at {at} by {token!r}", text[:at] + token + text[end:]
    lines = text.split("\n")
    i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
    if kind == "swap_lines":
        lines[i], lines[j] = lines[j], lines[i]
        return f"swap lines {i} and {j}", "\n".join(lines)
    if kind == "indent":
        lines[i] = " " * rng.choice([1, 2, 3, 4]) + lines[i]
        return f"indent line {i}", "\n".join(lines)
    lines.insert(j, lines[i])
    return f"copy line {i} to {j}", "\n".join(lines)


def _random_overrides(rng: random.Random) -> list[str]:
    return [f"{rng.choice(_KEYS)}={rng.choice(_VALUES)}" if rng.random() < 0.9 else rng.choice(_KEYS)
            for _ in range(rng.randint(0, 3))]


@pytest.fixture(scope="module")
def registry():
    from crs.plugin_manager import get_plugin_manager
    from crs.registry import Registry

    return Registry.from_plugin_manager(get_plugin_manager())


def test_fuzz_config_loader(tmp_path, registry):
    rng = random.Random(SEED)
    path = tmp_path / "fuzzed.yaml"
    registry_file = REPO / "registry.yaml"
    accepted = refused = 0
    started = time.perf_counter()
    for case in range(200 * SCALE):
        if time.perf_counter() - started > TIME_CAP_S:
            break
        text, what = _VALID_CONFIG, "valid"
        for _ in range(rng.randint(0, 3)):
            what, text = _mutate_config(rng, text)
        encoded = text.encode("utf-8", "surrogatepass")
        if rng.random() < 0.05:  # a file that is not UTF-8 at all
            encoded = encoded.replace(b"fuzzed", b"fuzz\xe9d")
        path.write_bytes(encoded)
        overrides = _random_overrides(rng)
        try:
            load_config(str(path), overrides, registry_path=registry_file, registry=registry)
            accepted += 1
        except CRSError:
            refused += 1
        except BaseException as err:  # noqa: BLE001
            pytest.fail(f"case {case} ({what}; overrides {overrides}) escaped as {type(err).__name__}: {err}\n"
                        f"--- config ---\n{text}")
    print(f"config fuzz: {accepted} accepted, {refused} refused")  # shown with -s
    assert accepted + refused >= 20 and accepted and refused  # cases ran, and both outcomes were exercised
