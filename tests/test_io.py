"""Atomic writes: the target is either the old file or the complete new one, never a partial file."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from crs.io import atomic_torch_save, atomic_write_bytes, atomic_write_json, atomic_write_text, atomic_writer


def leftovers(folder: Path) -> list[str]:
    return [name for name in os.listdir(folder) if name.endswith(".tmp")]


class Unpicklable:
    def __reduce__(self):
        raise RuntimeError("cannot pickle this")


def test_writers_round_trip_and_create_parent_folders(tmp_path: Path) -> None:
    nested = tmp_path / "a" / "b"
    assert atomic_write_bytes(nested / "x.bin", b"\x00\x01") == nested / "x.bin"
    assert (nested / "x.bin").read_bytes() == b"\x00\x01"
    atomic_write_text(nested / "x.txt", "h\u00e9llo")
    assert (nested / "x.txt").read_text(encoding="utf-8") == "h\u00e9llo"
    atomic_write_json(nested / "x.json", {"k": [1, 2.5, None], "t": "\u00e9"})
    assert json.loads((nested / "x.json").read_text(encoding="utf-8")) == {"k": [1, 2.5, None], "t": "\u00e9"}
    atomic_torch_save({"w": torch.arange(3)}, nested / "x.pt")
    assert torch.equal(torch.load(nested / "x.pt", weights_only=True)["w"], torch.arange(3))
    assert leftovers(nested) == []


def test_replacing_overwrites_the_whole_file(tmp_path: Path) -> None:
    target = tmp_path / "f.txt"
    atomic_write_text(target, "a long first version of the file")
    atomic_write_text(target, "short")
    assert target.read_text() == "short"


def test_crash_mid_write_keeps_the_old_file_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "state.bin"
    atomic_write_bytes(target, b"old complete content")
    with pytest.raises(KeyboardInterrupt):
        with atomic_writer(target, "wb") as handle:
            handle.write(b"half of the new")
            raise KeyboardInterrupt  # e.g. Ctrl-C in the middle of a write
    assert target.read_bytes() == b"old complete content"
    assert leftovers(tmp_path) == []


def test_torch_save_failure_leaves_previous_checkpoint_intact(tmp_path: Path) -> None:
    target = tmp_path / "checkpoint.pt"
    atomic_torch_save({"epoch": 1}, target)
    with pytest.raises(RuntimeError, match="cannot pickle"):
        atomic_torch_save({"epoch": 2, "bad": Unpicklable()}, target)
    assert torch.load(target, weights_only=True) == {"epoch": 1}
    assert leftovers(tmp_path) == []


def test_failed_first_write_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        atomic_torch_save({"bad": Unpicklable()}, tmp_path / "new.pt")
    with pytest.raises(TypeError):
        atomic_write_json(tmp_path / "new.json", {"bad": object()})
    assert os.listdir(tmp_path) == []


def test_json_default_and_bad_mode(tmp_path: Path) -> None:
    atomic_write_json(tmp_path / "p.json", {"path": tmp_path}, default=str, indent=None)
    assert (tmp_path / "p.json").read_text() == json.dumps({"path": str(tmp_path)}) + "\n"
    with pytest.raises(ValueError):
        with atomic_writer(tmp_path / "x", "a"):
            pass
