"""Run folders: named from preset and corpus, one writer at a time, never replaced without --overwrite,
nothing written by a refused command, nothing left behind by a run that failed before training.

Runs here use the popularity preset on a small demo corpus (no training, about 2 s each)."""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from crs import cli
from crs.config.loader import load_config
from crs.errors import ConfigError
from crs.run_folder import LOCK_FILE, RunLock, clear_run

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["data.n_train=60", "data.n_valid=20", "data.n_test=20", "threads=1"]
POPULARITY = str(ROOT / "examples/popularity.yaml")
# A process holding a run folder's lock until it is killed.
HOLDER = ("import sys, time\nfrom crs.run_folder import RunLock\n"
          "RunLock(sys.argv[1], command='crs run held.yaml').acquire()\nprint('ready', flush=True)\ntime.sleep(120)")


def crs(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main([*argv, "--no-progress"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under `folder` (hidden ones too) with its bytes and modification time."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("runs") / "popularity"
    assert cli.main(["run", POPULARITY, *SMALL, "--run-dir", str(run_dir), "--no-progress"]) == 0
    return run_dir


@pytest.fixture
def run_copy(finished, tmp_path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(finished, target)
    return target


@pytest.fixture
def holder():
    """holder(folder) -> a child process holding the folder's lock (killed at the end of the test)."""
    children = []

    def start(folder: Path) -> subprocess.Popen:
        child = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE, text=True)
        children.append(child)
        assert child.stdout.readline().strip() == "ready"
        return child

    yield start
    for child in children:
        if child.poll() is None:
            child.kill()
        child.wait()
        child.stdout.close()


# ------------------------------------------------------------------ default folder
def test_the_default_run_folder_names_the_preset_and_the_corpus(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    kgsf = str(ROOT / "examples/kgsf.yaml")
    assert load_config(kgsf)[0].run_dir == "runs/kgsf-demo"
    # the README's ablation line goes to its own folder, named after the corpus bundle, not its dataset type
    assert load_config(kgsf, ["preset=kgsf-no-mim"])[0].run_dir == "runs/kgsf-no-mim-demo"
    assert load_config(kgsf, ["preset=kgsf-no-mim", "data=inspired"])[0].run_dir == "runs/kgsf-no-mim-inspired"
    assert load_config(kgsf, ["data=inspired", "data.max_conversations=5"])[0].run_dir == "runs/kgsf-inspired"
    # a data node written out in full is named by its type; an explicit run_dir wins, `${corpus}` can be used
    own = tmp_path / "own.yaml"
    own.write_text("preset: baseline\nname: mine\ndata: {type: demo, n_train: 10}\n")
    assert load_config(str(own))[0].run_dir == "runs/mine-demo"
    assert load_config(str(own), ["run_dir=out/${corpus}-x"])[0].run_dir == "out/demo-x"


# ------------------------------------------------------------------ --overwrite
def test_a_finished_run_is_not_replaced_without_overwrite(run_copy, capsys):
    before = snapshot(run_copy)
    code, _, err = crs(capsys, "run", POPULARITY, *SMALL, "--run-dir", str(run_copy))
    assert code == 2 and err.startswith("error: ") and "Traceback" not in err
    assert f"{run_copy} already holds a finished run" in err and "--overwrite" in err and "--run-dir" in err
    assert snapshot(run_copy) == before


def test_an_unfinished_run_needs_resume_or_overwrite(run_copy, capsys):
    (run_copy / "report.json").unlink()
    before = snapshot(run_copy)
    code, _, err = crs(capsys, "run", POPULARITY, *SMALL, "--run-dir", str(run_copy))
    assert code == 2 and "has not finished" in err and "--resume" in err and "--overwrite" in err
    assert snapshot(run_copy) == before


def test_overwrite_replaces_the_run_and_drops_its_stale_files(run_copy, capsys):
    (run_copy / "eval" / "test").mkdir(parents=True)
    (run_copy / "eval" / "test" / "report.json").write_text("{}")  # an evaluation of the replaced model
    (run_copy / "best.pt").write_bytes(b"stale")  # popularity writes none, so it must go
    (run_copy / "notes.txt").write_text("mine")  # not a run file: kept
    old_report = json.loads((run_copy / "report.json").read_text())
    code, out, _ = crs(capsys, "run", POPULARITY, *SMALL, "seed=3", "--run-dir", str(run_copy), "--overwrite")
    assert code == 0 and "--overwrite: removed the previous run's" in out
    assert not (run_copy / "eval").exists() and not (run_copy / "best.pt").exists()
    assert (run_copy / "notes.txt").read_text() == "mine" and not (run_copy / LOCK_FILE).exists()
    report = json.loads((run_copy / "report.json").read_text())
    assert report["config"]["seed"] == 3 and old_report["config"]["seed"] == 42


def test_resume_and_overwrite_together_are_refused(run_copy, capsys):
    code, _, err = crs(capsys, "run", POPULARITY, "--run-dir", str(run_copy), "--resume", "--overwrite")
    assert code == 2 and "pass one of them" in err


def test_clear_run_removes_only_run_files(tmp_path):
    for name in ("checkpoint.pt", "report.json", "metrics.jsonl", "data.jsonl", ".checkpoint.pt.x1.tmp"):
        (tmp_path / name).write_text("x")
    (tmp_path / "tensorboard").mkdir()
    assert sorted(clear_run(tmp_path)) == ["checkpoint.pt", "metrics.jsonl", "report.json", "tensorboard/"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.jsonl"]


# ------------------------------------------------------------- refused --resume
def test_a_resume_refused_for_another_config_writes_nothing(run_copy, capsys):
    before = snapshot(run_copy)
    code, _, err = crs(capsys, "run", POPULARITY, *SMALL, "seed=7", "--run-dir", str(run_copy), "--resume")
    assert code == 2 and "cannot resume" in err and "seed: 42 -> 7" in err and "--overwrite" in err
    assert snapshot(run_copy) == before  # config.yaml included: checked first, written after


def _flip_random_bytes(path: Path, count: int, seed: int, *, tensors_only: bool) -> None:
    data = bytearray(path.read_bytes())
    low, high = 0, len(data)
    if tensors_only:  # inside the largest tensor record: torch still loads the file
        with zipfile.ZipFile(path) as archive:
            record = max((i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
        name_len, extra_len = int.from_bytes(data[record.header_offset + 26:record.header_offset + 28], "little"), \
            int.from_bytes(data[record.header_offset + 28:record.header_offset + 30], "little")
        low = record.header_offset + 30 + name_len + extra_len
        high = low + record.file_size
    rng = random.Random(seed)
    for _ in range(count):
        data[rng.randrange(low, high)] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("tensors_only", [True, False], ids=["weights", "anywhere"])
def test_resuming_a_finished_run_with_a_damaged_checkpoint_changes_nothing(run_copy, capsys, tensors_only):
    _flip_random_bytes(run_copy / "checkpoint.pt", 200 if not tensors_only else 50, seed=1, tensors_only=tensors_only)
    before = snapshot(run_copy)
    code, out, err = crs(capsys, "run", POPULARITY, *SMALL, "--run-dir", str(run_copy), "--resume")
    assert code == 2 and err.startswith(f"error: {run_copy / 'checkpoint.pt'}: the checkpoint ") and \
        "Traceback" not in err, err
    if tensors_only:
        assert "does not match its checksum" in err
    assert snapshot(run_copy) == before  # report.json, rankings.jsonl, config.yaml: all as they were
    assert "crslab" not in out  # nothing was evaluated


# ------------------------------------------------------------------ the lock
def test_a_second_run_on_a_locked_folder_names_the_holder(run_copy, capsys, holder):
    child = holder(run_copy)
    before = snapshot(run_copy)
    code, _, err = crs(capsys, "run", POPULARITY, *SMALL, "--run-dir", str(run_copy), "--overwrite")
    assert code == 2 and f"is in use by another crs process: pid {child.pid}" in err
    assert "`crs run held.yaml`" in err and f"kill {child.pid}" in err and "--run-dir" in err
    assert snapshot(run_copy) == before
    code, _, err = crs(capsys, "eval", str(run_copy))  # crs eval takes the same lock
    assert code == 2 and f"pid {child.pid}" in err and not (run_copy / "eval").exists()


def test_the_lock_of_a_killed_process_is_taken_over(tmp_path, holder):
    child = holder(tmp_path)
    with pytest.raises(ConfigError, match=f"pid {child.pid}"):
        RunLock(tmp_path).acquire()
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == child.pid  # kill -9 left the file
    with RunLock(tmp_path, command="next") as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    assert not (tmp_path / LOCK_FILE).exists()  # released: no lock left behind


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_without_flock_a_pid_file_locks_and_a_dead_pid_is_taken_over(tmp_path, monkeypatch, holder):
    import crs.run_folder as run_folder

    monkeypatch.setattr(run_folder, "fcntl", None)  # as on Windows
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": _dead_pid()}))
    with RunLock(tmp_path) as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
        with pytest.raises(ConfigError, match=f"pid {os.getpid()}"):
            RunLock(tmp_path).acquire()
    assert not (tmp_path / LOCK_FILE).exists()


def test_eval_of_a_finished_run_takes_the_lock_and_releases_it(run_copy, capsys, monkeypatch):
    taken = []
    real_acquire = RunLock.acquire

    def acquire(self):
        taken.append(self.folder)
        return real_acquire(self)

    monkeypatch.setattr(RunLock, "acquire", acquire)
    assert not (run_copy / LOCK_FILE).exists()  # a finished run holds no lock, and eval needs none there
    code, out, _ = crs(capsys, "eval", str(run_copy))
    assert code == 0 and (run_copy / "eval" / "test" / "report.json").exists()
    assert taken == [Path(run_copy)] and not (run_copy / LOCK_FILE).exists()
    assert "rec.* ranks" in out


# -------------------------------------------------- failures leave no folder behind
def test_a_run_failing_at_load_time_leaves_no_folder(tmp_path, capsys):
    target = tmp_path / "new" / "deeper" / "run"
    code, _, err = crs(capsys, "run", POPULARITY, *SMALL, "evaluation.split=tset", "--run-dir", str(target))
    assert code == 2 and "no split 'tset'" in err
    assert not (tmp_path / "new").exists()


def test_a_run_failing_at_config_time_leaves_no_folder(tmp_path, capsys):
    target = tmp_path / "run"
    code, _, err = crs(capsys, "run", POPULARITY, "seeed=1", "--run-dir", str(target))
    assert code == 2 and not target.exists()


def test_a_failed_run_keeps_a_folder_that_existed(tmp_path, capsys):
    (tmp_path / "mine.txt").write_text("x")
    code, _, _ = crs(capsys, "run", POPULARITY, *SMALL, "evaluation.split=tset", "--run-dir", str(tmp_path))
    assert code == 2 and [p.name for p in tmp_path.iterdir()] == ["mine.txt"]


def test_an_absent_shared_data_folder_names_the_three_fixes(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CRS_SHARED_DATA", str(tmp_path / "nowhere"))
    target = tmp_path / "run"
    code, _, err = crs(capsys, "run", POPULARITY, "data=inspired", "--run-dir", str(target))
    assert code == 2 and err.startswith(f"error: {tmp_path / 'nowhere'}: the shared data folder "), err
    assert "data.root (../shared/data/inspired/unicrs_dbpedia)" in err and "knowledge.entity_kg.root" in err
    assert "CRS_SHARED_DATA" in err and "crs data download inspired" in err
    assert not target.exists()
    # the folder is there, but not the corpus
    (tmp_path / "nowhere" / "redial").mkdir(parents=True)
    code, _, err = crs(capsys, "run", POPULARITY, "data=inspired", "--run-dir", str(target))
    assert code == 2 and f"{tmp_path / 'nowhere' / 'inspired'}: no such folder" in err and "holds: redial" in err
