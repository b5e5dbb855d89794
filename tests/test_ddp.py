"""Data-parallel training (crs.training.distributed): sharding, the strategies it refuses, and real torchrun runs.

The slow test starts `torchrun --nproc-per-node 2` (gloo, CPU, standalone rendezvous on a free port) on the
demo corpus for a short KGSF run and compares it with one process at the same global batch size; then it
kills both workers inside the rec stage and checks that ``--resume`` ends where the uninterrupted run did.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from crs.errors import ConfigError
from crs.training import distributed
from crs.training.distributed import Distributed, shard_batches

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ sharding (fast)
@pytest.mark.parametrize("grouped", [False, True], ids=["random", "grouped-by-length"])
@pytest.mark.parametrize("n, batch_size, world", [(215, 16, 2), (17, 8, 3), (5, 4, 2), (3, 8, 4)])
def test_shards_of_each_rank_make_up_the_single_process_batches(n: int, batch_size: int, world: int, grouped: bool,
                                                                 monkeypatch) -> None:
    from crs.data import batching

    monkeypatch.setattr(batching, "collate", lambda samples, extra_fields=(): list(samples))  # keep the order only
    size_of = (lambda x: (x * 37) % 101) if grouped else None
    single = list(batching.batch_chunks(list(range(n)), batch_size, shuffle=True, seed=11, size_of=size_of))
    per_rank = [list(shard_batches(list(range(n)), batch_size, shuffle=True, seed=11, rank=r, world_size=world,
                                   size_of=size_of))
                for r in range(world)]
    assert {len(shards) for shards in per_rank} == {len(single)}  # every rank takes one step per global batch
    for step, expected in enumerate(single):
        shards = [per_rank[r][step] for r in range(world)]
        real = [s for s in shards if s.weight]
        assert [x for s in real for x in s.samples] == expected  # every sample once, in the one-process order
        assert all(s.global_size == len(expected) for s in shards)
        # DDP divides the summed gradients by world: the scales make that the global batch's mean
        assert sum(s.loss_scale for s in shards) == pytest.approx(world)
        assert sum(s.weight for s in shards) == len(expected)
        for s in shards:
            if not s.weight:  # fewer samples than ranks: a stand-in that adds nothing
                assert s.loss_scale == 0.0 and len(s.samples) == 1


def test_one_process_helpers_are_identities() -> None:
    assert not distributed.current().active
    assert distributed.all_reduce_weighted_means({"loss": 2.5}, 3) == {"loss": 2.5}
    assert distributed.broadcast_object({"a": 1}) == {"a": 1}
    assert distributed.gather_objects(7) == [7]
    assert distributed.rank_seed(42, 0) == 42 and distributed.rank_seed(42, 1) != 42
    assert distributed.report_entry() == {}


def test_maml_is_refused_under_torchrun_and_plain_is_not(monkeypatch) -> None:
    from crs.plugins.training.maml import MAMLStrategy
    from crs.plugins.training.plain import PlainStrategy

    maml = MAMLStrategy.__new__(MAMLStrategy)  # the check reads the class only
    distributed.check_strategy(maml, {"type": "maml"}, "stages.1.strategy")  # one process: anything goes
    monkeypatch.setattr(distributed, "_current", Distributed(rank=1, world_size=2, backend="gloo"))
    with pytest.raises(ConfigError) as err:
        distributed.check_strategy(maml, {"type": "maml"}, "stages.1.strategy")
    text = str(err.value)
    assert "stages.1.strategy" in text and "'maml'" in text and "2 processes" in text and "one process" in text
    distributed.check_strategy(PlainStrategy.__new__(PlainStrategy), {"type": "plain"}, "stages.0.strategy")


def test_cuda_pinned_to_one_gpu_is_refused_for_several_processes(monkeypatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(ConfigError) as err:
        distributed.init_from_env("cuda:0")
    assert "device" in str(err.value) and "use device: cuda" in str(err.value)
    assert not distributed.current().active


@pytest.mark.skipif(__import__("torch").version.cuda is not None, reason="checks the CPU-only torch's message")
def test_cuda_on_a_cpu_only_torch_is_the_one_process_error_under_torchrun_too(monkeypatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError) as err:
        distributed.init_from_env("cuda")
    assert "CPU-only build" in str(err.value)
    assert not distributed.current().active


# ---------------------------------------------------------------- torchrun (slow)
# KGSF without its generator: MIM pretraining, then the rec stage with early stopping on valid recall@10
# (patience 1, so a stop may happen and every rank must take it).  Global batch 9 over 215 rec samples:
# 24 steps per epoch, each split 5/4 between the two ranks (the last, of 8, 4/4), so the loss scaling that
# makes DDP's gradient average the global batch's mean matters at every step (unscaled, the curves part).
ARGS = ["preset=kgsf", "data=demo", "seed=7", "threads=1", "evaluation.generate=false", "~stages.2",
        "~model.generator", "samples.max_train_conversations=60", "stages.0.epochs=1", "stages.0.batch_size=9",
        "stages.1.epochs=3", "stages.1.batch_size=9", "stages.1.early_stopping.patience=1", "--no-progress"]
# Losses: each rank averages its shard and the all-reduce adds the shards' weighted means (float64 on the wire,
# float32 gradients summed in another order), so the curves agree with one process to float rounding only,
# about 1e-7 relative per step; 1e-5 leaves room for that to compound over the 96 steps.
LOSS_RTOL = 1e-5
# The kill-and-resume part adds dropout, so that it also checks that every rank continues its own random
# stream (rank 1 restarted from rank 0's stream would draw other masks and end elsewhere).  The comparison
# with one process runs without it: 2 ranks draw their masks from 2 streams, one process from one.
DROPOUT = ["model.word_encoder.dropout=0.3"]


def _env() -> dict[str, str]:
    # a disagreement between ranks would hang in a collective: fail in 2 minutes instead of hours
    return dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", CRS_DDP_TIMEOUT_S="120")


def _single(run_dir: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "crs.cli", "run", *ARGS, f"--run-dir={run_dir}", *extra],
                            cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _torchrun(run_dir: Path, *extra: str) -> subprocess.Popen:
    # --standalone: a c10d rendezvous on localhost with a free port, so parallel test runs do not collide
    return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                             "-m", "crs.cli", "run", *ARGS, f"--run-dir={run_dir}", *extra],
                            cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(child: subprocess.Popen) -> str:
    out, _ = child.communicate(timeout=900)
    assert child.returncode == 0, out
    return out


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def _children(pid: int) -> list[int]:
    """Process ids whose parent is `pid` (torchrun's workers run in their own sessions: killpg misses them)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _assert_curves_match(one: dict, ddp: dict) -> None:
    assert list(one) == list(ddp)
    for stage in one:
        assert [r["epoch"] for r in one[stage]] == [r["epoch"] for r in ddp[stage]], stage
        for a, b in zip(one[stage], ddp[stage]):
            assert set(a["train"]) == set(b["train"])
            for key in a["train"]:
                assert b["train"][key] == pytest.approx(a["train"][key], rel=LOSS_RTOL), (stage, key)
            for key, value in a.get("valid", {}).items():
                if key.startswith("loss"):
                    assert b["valid"][key] == pytest.approx(value, rel=LOSS_RTOL), (stage, key)
                else:  # ranks of 345 valid targets: a float-level difference may move one across a cutoff
                    assert b["valid"][key] == pytest.approx(value, abs=2 / 345), (stage, key)


@pytest.mark.slow(minutes=1.8)  # alone on 2 cores; the longest tests start first (conftest.py)
@pytest.mark.skipif(sys.platform != "linux", reason="finds torchrun's workers through /proc")
def test_two_gloo_processes_match_one_process_write_once_and_resume_after_a_kill(tmp_path: Path) -> None:
    one, ddp, killed_dir = tmp_path / "one", tmp_path / "ddp", tmp_path / "killed"
    single = _single(one)
    _finish(_torchrun(ddp))
    _finish(single)

    # the loss curve and the final metrics of one process, at the same global batch size
    _assert_curves_match(_json(one / "history.json"), _json(ddp / "history.json"))
    report_one, report_ddp = _json(one / "report.json"), _json(ddp / "report.json")
    assert report_ddp["extra"]["distributed"] == {"world_size": 2, "backend": "gloo"}
    assert "distributed" not in report_one["extra"]
    targets = report_one["sample_counts"]["crslab-v1"]["rec"]
    for key, value in report_one["metrics"]["crslab-v1"].items():
        assert report_ddp["metrics"]["crslab-v1"][key] == pytest.approx(value, abs=2 / targets), key

    # one set of outputs: the same files as one process, each written once (rank 1 wrote nothing)
    assert sorted(p.name for p in ddp.iterdir()) == sorted(p.name for p in one.iterdir())
    assert not list(ddp.glob(".*.tmp"))
    for name in ("metrics.jsonl", "rankings.jsonl"):
        lines_one = (one / name).read_text().splitlines()
        lines_ddp = (ddp / name).read_text().splitlines()
        assert len(lines_ddp) == len(lines_one), name
    epochs = [json.loads(line) for line in (ddp / "metrics.jsonl").read_text().splitlines()]
    epoch_keys = [(r["stage"], r["epoch"], r["split"]) for r in epochs if r["scope"] == "epoch"]
    assert len(epoch_keys) == len(set(epoch_keys))  # no epoch logged twice

    # kill both workers inside the rec stage, after its first epoch was checkpointed; resume with torchrun
    reference = _torchrun(tmp_path / "ddp-dropout", *DROPOUT)  # the same, uninterrupted, beside it
    run = _torchrun(killed_dir, *DROPOUT)
    metrics = killed_dir / "metrics.jsonl"
    deadline = time.time() + 600
    while time.time() < deadline and run.poll() is None:
        lines = metrics.read_text().splitlines() if metrics.exists() else []
        if any('"stage": "rec"' in line and '"scope": "epoch"' in line and '"split": "valid"' in line
               for line in lines):
            time.sleep(1.0)  # into the next epoch's batches
            break
        time.sleep(0.05)
    assert run.poll() is None, "the run finished before it could be killed; make it longer"
    workers = _children(run.pid)
    assert len(workers) == 2, workers
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    run.communicate(timeout=120)  # torchrun sees its workers die and gives up
    assert run.returncode != 0
    assert not (killed_dir / "report.json").exists()
    checkpoint_stage = _json(killed_dir / "history.json")
    assert "rec" in checkpoint_stage  # killed inside the rec stage, not before it

    _finish(reference)
    _finish(_torchrun(killed_dir, "--resume", *DROPOUT))
    whole = tmp_path / "ddp-dropout"
    assert (killed_dir / "history.json").read_text() == (whole / "history.json").read_text()
    assert _json(killed_dir / "report.json")["metrics"] == _json(whole / "report.json")["metrics"]
    assert (killed_dir / "metrics.jsonl").read_text() == (whole / "metrics.jsonl").read_text()
    assert (whole / "history.json").read_text() != (ddp / "history.json").read_text()  # the dropout did draw
