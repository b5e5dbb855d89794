"""Checkpoint checksums: a checkpoint.pt or best.pt whose bytes changed after crs wrote them is a
DataError on load, never weights silently used (issue 13: 200 flipped bytes turned R@10 0.172 into
0.045 without a word)."""
from __future__ import annotations

import random
import struct
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from crs.config.spec import EarlyStoppingSpec
from crs.errors import DataError
from crs.training import Trainer
from crs.training.checkpoint import (
    check_resumable,
    comparable_config,
    load_best,
    load_checkpoint,
    with_checksum,
)
from crs.training.checksum import state_checksum

TESTS_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS_DIR))  # the shared fake pipeline, whatever pytest's import mode
from test_training import ToyPipeline, make_stage  # noqa: E402


def flip_tensor_bytes(path: Path, count: int = 200, seed: int = 0) -> None:
    """Flip `count` bytes inside the largest tensor record of a torch zip file: the file still loads,
    only weights change (what a bad disk or copy does, and what torch.load cannot notice)."""
    with zipfile.ZipFile(path) as archive:
        record = max((i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    data = bytearray(path.read_bytes())
    name_len, extra_len = struct.unpack("<HH", data[record.header_offset + 26:record.header_offset + 30])
    start = record.header_offset + 30 + name_len + extra_len
    rng = random.Random(seed)
    for _ in range(count):
        data[start + rng.randrange(record.file_size)] ^= 0xFF
    path.write_bytes(bytes(data))


def stopped_early_run(run_dir: Path) -> ToyPipeline:
    pipeline = ToyPipeline([make_stage(epochs=2, early_stopping=EarlyStoppingSpec(patience=5))])
    Trainer(pipeline, run_dir, progress=False, tensorboard=False).fit()
    return pipeline


def test_checksum_covers_every_value_and_ignores_nothing() -> None:
    state = {"model": {"w": torch.arange(6.0).reshape(2, 3)}, "epoch": 1, "rng": [1, 2.5, None, True], "x": "a"}
    same = {"model": {"w": torch.arange(6.0).reshape(2, 3).clone()}, "epoch": 1, "rng": [1, 2.5, None, True],
            "x": "a"}
    assert state_checksum(state) == state_checksum(same)
    changed = [
        {**state, "model": {"w": torch.arange(6.0).reshape(3, 2)}},  # same bytes, another shape
        {**state, "model": {"w": torch.arange(6).reshape(2, 3)}},  # another dtype
        {**state, "epoch": 2}, {**state, "epoch": True}, {**state, "epoch": 1.0},
        {**state, "rng": (1, 2.5, None, True)}, {**state, "x": "b"},
    ]
    weights = state["model"]["w"].clone()
    weights[1, 2] = float("nan")
    changed.append({**state, "model": {"w": weights}})
    digests = {state_checksum(s) for s in changed}
    assert len(digests) == len(changed) and state_checksum(state) not in digests


def test_a_checkpoint_with_flipped_weight_bytes_is_refused(tmp_path: Path) -> None:
    stopped_early_run(tmp_path)
    assert load_checkpoint(tmp_path)["done"] is True  # loads while intact
    flip_tensor_bytes(tmp_path / "checkpoint.pt")
    # torch itself reads the damaged file without complaint: only the checksum tells
    assert "model" in torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    with pytest.raises(DataError) as caught:
        load_checkpoint(tmp_path)
    message = str(caught.value)
    assert "checkpoint.pt" in message and "does not match its checksum" in message and "--overwrite" in message
    with pytest.raises(DataError, match="does not match its checksum"):
        Trainer(ToyPipeline([make_stage(epochs=2, early_stopping=EarlyStoppingSpec(patience=5))]), tmp_path,
                resume=True, progress=False).fit()


def test_a_damaged_best_pt_is_refused_before_resuming(tmp_path: Path) -> None:
    pipeline = ToyPipeline([make_stage(epochs=3, early_stopping=EarlyStoppingSpec(patience=5))])

    class Kill(Exception):
        pass

    def die_in_epoch_two(count: int) -> None:
        if count == 7:  # 6 batches per epoch: after epoch 1's checkpoint and best.pt
            raise Kill()

    pipeline.on_train_batch = die_in_epoch_two
    with pytest.raises(Kill):
        Trainer(pipeline, tmp_path, progress=False).fit()
    config = comparable_config(pipeline.resolved)
    assert check_resumable(tmp_path, config)["epoch"] == 0
    flip_tensor_bytes(tmp_path / "best.pt")
    with pytest.raises(DataError) as caught:
        check_resumable(tmp_path, config)
    assert "best.pt" in str(caught.value) and "does not match its checksum" in str(caught.value)
    with pytest.raises(DataError, match="best.pt"):
        load_best(tmp_path, stage="rec", stage_index=0, epoch=1)


def test_a_checkpoint_whose_checksum_was_removed_is_refused(tmp_path: Path) -> None:
    stopped_early_run(tmp_path)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    del state["checksum"]
    torch.save(state, tmp_path / "checkpoint.pt")
    with pytest.raises(DataError, match="has no checksum"):
        load_checkpoint(tmp_path)


def test_edited_on_purpose_and_sealed_again_loads(tmp_path: Path) -> None:
    stopped_early_run(tmp_path)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    state["history"]["note"] = []
    torch.save(with_checksum(state), tmp_path / "checkpoint.pt")
    loaded = load_checkpoint(tmp_path)
    assert loaded["history"]["note"] == [] and "checksum" not in loaded


def test_format_2_checkpoints_load_unverified_with_a_warning(tmp_path: Path, caplog) -> None:
    stopped_early_run(tmp_path)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    del state["checksum"]
    torch.save({**state, "format": 2}, tmp_path / "checkpoint.pt")
    with caplog.at_level("WARNING", logger="crs.training"):
        assert load_checkpoint(tmp_path)["done"] is True
    assert "unverified" in caplog.text
