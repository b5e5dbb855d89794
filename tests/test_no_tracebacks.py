"""Mistakes that once ended in a traceback (exit code 1) are one-paragraph errors with exit code 2.

Each case runs the `crs` command in-process (:func:`crs.cli.main`) the way a user would
and checks the exit code, the `error:` paragraph (no traceback) and, where the mistake is
caught before anything runs, that no output was written.  Issue 13, "Tracebacks".
"""
from __future__ import annotations

import pickle
import struct
from collections import defaultdict
from pathlib import Path

import pytest
import torch

from crs import cli

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _repository_registry(monkeypatch):
    monkeypatch.setenv("CRS_REGISTRY", str(REPO / "registry.yaml"))


def _fails(capsys, argv: list[str], *fragments: str) -> str:
    """Run `crs ARGV`; assert exit code 2, one `error:` paragraph holding every fragment, and no traceback."""
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert code == 2, f"exit code {code}, stderr:\n{err}"
    assert err.startswith("error: ") and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, f"{fragment!r} not in:\n{err}"
    return err


def _run_file(tmp_path: Path, text: str, name: str = "run.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# ------------------------------------------------------------------ config file and settings
def test_config_file_that_is_not_utf8(tmp_path, capsys):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("preset: popularity\ndata: demo\nname: café\n".encode("latin-1"))
    _fails(capsys, ["run", str(path), "--print-config"], f"{path}:3", "not UTF-8", "byte 0xe9", "fix: save the file")


@pytest.mark.parametrize("override, fragments", [
    ("seed=1e20", ["'seed'", "expected int, got 1e+20"]),
    ("seed=100000000000000000000", ["'seed'", "does not fit in a 64-bit integer"]),
    ("threads=-1", ["'threads'", "must be 0 (torch's default) or a positive number", "got -1"]),
    ("device=foo", ["'device'", "'foo' is not a device name"]),
    ("device=cuda:99", ["'device'", "'cuda:99'"]),  # no machine has GPU 99; CPU-only builds have none at all
])
def test_bad_settings_fail_before_anything_is_written(tmp_path, capsys, override, fragments):
    run_dir = tmp_path / "run"
    _fails(capsys, ["run", "preset=popularity", "data=demo", override, f"run_dir={run_dir}", "--no-progress"],
           f"override '{override}'", *fragments)
    assert not run_dir.exists()


@pytest.mark.parametrize("device", ["foo", "cuda:99"])
def test_device_is_checked_when_the_config_loads(device):
    """Before any folder, data or model: `crs run --print-config` and `crs eval` load configs the same way."""
    from crs.config.loader import load_config
    from crs.errors import ConfigError

    with pytest.raises(ConfigError, match=f"override 'device={device}': config key 'device'"):
        load_config(None, ["preset=popularity", "data=demo", f"device={device}"])


def test_huge_seed_in_a_file_names_its_line(tmp_path, capsys):
    path = _run_file(tmp_path, "preset: popularity\ndata: demo\nseed: 100000000000000000000\n")
    _fails(capsys, ["run", str(path), "--print-config"], f"{path}:3", "does not fit in a 64-bit integer")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU, so device=cuda is valid here")
def test_cuda_device_without_a_gpu(tmp_path, capsys):
    run_dir = tmp_path / "run"
    _fails(capsys, ["run", "preset=popularity", "data=demo", "device=cuda", f"run_dir={run_dir}"],
           "'device'", "'cuda' needs a CUDA GPU", "fix: set device: cpu")
    assert not run_dir.exists()


def test_config_nested_too_deeply(tmp_path, capsys):
    """OmegaConf recurses about ten frames per level: 100 nested lists used to end in RecursionError."""
    deep = "[" * 100 + "]" * 100
    path = _run_file(tmp_path, f"preset: popularity\ndata: demo\nseed: {deep}\n")
    _fails(capsys, ["run", str(path), "--print-config"], str(path), "nests lists or mappings too deeply")
    _fails(capsys, ["run", "preset=popularity", "data=demo", f"seed={deep}", "--print-config"],
           "nests lists or mappings too deeply")
    _fails(capsys, ["run", "preset=popularity", "data=demo", "model.x." + "a." * 1000 + "b=1", "--print-config"],
           "nests lists or mappings too deeply")


@pytest.mark.parametrize("registry, fragments", [
    ("presets:\n  - popularity\n  - kgsf\n", ["registry.yaml:1", "'presets'", "must be a mapping", "got a list"]),
    ("corpora: {}\npresets:\n  popularity: [1, 2]\n", ["registry.yaml:3", "'presets.popularity'", "got a list"]),
    ("corpora: [demo]\npresets: {}\n", ["registry.yaml:1", "'corpora'", "must be a mapping"]),
    ("- just\n- a list\n", ["registry file must be a mapping"]),
])
def test_malformed_registry_file(tmp_path, capsys, monkeypatch, registry, fragments):
    registry_file = tmp_path / "registry.yaml"
    registry_file.write_text(registry, encoding="utf-8")
    monkeypatch.setenv("CRS_REGISTRY", str(registry_file))
    _fails(capsys, ["run", "preset=popularity", "data=demo", "--print-config"], *fragments)


# ------------------------------------------------------------------ unwritable output folders
@pytest.fixture
def unwritable(tmp_path) -> list[Path]:
    """Folders no one can create, root included (root ignores permission bits): below a file, and in /proc."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    return [blocker / "out", *([Path("/proc/crs-test-out")] if Path("/proc/self").exists() else [])]


def test_demo_out_unwritable(capsys, unwritable):
    for folder in unwritable:
        _fails(capsys, ["data", "demo", "--out", str(folder)], "--out", str(folder))
    _fails(capsys, ["data", "demo", "--out", str(unwritable[0].parent)], "is a file, not a folder")


def test_download_dest_unwritable(capsys, unwritable):
    for folder in unwritable:  # refused before any network access
        _fails(capsys, ["data", "download", "redial", "--dest", str(folder)], "--dest", str(folder))


def test_download_mirror_that_is_no_address(tmp_path, capsys):
    _fails(capsys, ["data", "download", "redial", "--dest", str(tmp_path / "d"), "--mirror", "mirror.example.org"],
           "--mirror", "not a mirror address")


def test_run_dir_unwritable(capsys, unwritable):
    for folder in unwritable:
        _fails(capsys, ["run", "preset=popularity", "data=demo", "--run-dir", str(folder), "--no-progress"],
               "run_dir", str(folder))


# ------------------------------------------------------------------ data files
def _kgsf_files(tmp_path: Path, subkg: object, entity2id_bytes: bytes | None = None) -> Path:
    uris = [f"<http://dbpedia.org/resource/E{i}>" for i in range(4)]
    (tmp_path / "e2id.pkl").write_bytes(entity2id_bytes or pickle.dumps({u: i for i, u in enumerate(uris)}))
    (tmp_path / "subkg.pkl").write_bytes(pickle.dumps(subkg))
    return _run_file(tmp_path, f"""\
preset: popularity
data: {{type: demo}}
knowledge:
  entity_kg: {{type: kgsf_dbpedia, root: {tmp_path}, subkg: subkg.pkl, entity2id: e2id.pkl, movie_ids: null}}
run_dir: {tmp_path / 'run'}
""")


@pytest.mark.parametrize("subkg, fragments", [
    ({"0": [(1, 2)], "1": [(1, 3)]}, ["head '0' is a str, not an integer entity id"]),
    ({0: 5, 1: 7}, ["head 0: expected a list of (relation, tail) pairs, got 5 (int)"]),
    ({0: [(1, "2")]}, ["head 0: expected (relation id, tail id) pairs of integers, got (1, '2')"]),
])
def test_kgsf_pickle_with_wrong_value_types(tmp_path, capsys, subkg, fragments):
    config = _kgsf_files(tmp_path, subkg)
    _fails(capsys, ["run", str(config), "--no-progress"], str(tmp_path / "subkg.pkl"), *fragments,
           "fix: use the subkg.pkl released with KGSF")


def test_pickle_length_field_asking_for_terabytes(tmp_path, capsys):
    huge = b"\x80\x04\x95" + struct.pack("<Q", 2**40) + b"\x8d" + struct.pack("<Q", 2**40) + b"abc."
    config = _kgsf_files(tmp_path, defaultdict(list), entity2id_bytes=huge)
    _fails(capsys, ["run", str(config), "--no-progress"], str(tmp_path / "e2id.pkl"), "length field at byte 2",
           "asks for 1,099,511,627,776 bytes")


def test_knowledge_file_read_with_the_wrong_columns(tmp_path, capsys):
    """An entity TSV (head, relation, tail) read by `conceptnet_edges` (relation, word, word) makes a word graph.

    The R-GCN then built entity representations over it, which the batches index with
    entity ids: `RuntimeError: index 227 is out of bounds` inside mim.py, after training
    started.  Now the pipeline builder refuses the slot.
    """
    kg = tmp_path / "kg.tsv"
    kg.write_text("movie:A (2001)\thas_genre\tgenre:drama\nmovie:B (2002)\tdirected_by\tperson:C\n", encoding="utf-8")
    config = _run_file(tmp_path, f"""\
preset: popularity
data: {{type: demo}}
knowledge:
  entity_kg: {{type: conceptnet_edges, path: {kg}}}
model:
  entity_encoder: {{type: rgcn, graph: entity_kg, dim: 8, num_bases: 2}}
run_dir: {tmp_path / 'run'}
""")
    _fails(capsys, ["run", str(config), "--no-progress"], "'model.entity_encoder'",
           "reads knowledge graph 'entity_kg', a word graph (built by `conceptnet_edges`)", "writes 'entity_nodes'",
           "column")
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


# ------------------------------------------------------------------ secrets
@pytest.mark.parametrize("where", ["file", "override"])
def test_environment_interpolation_is_refused(tmp_path, capsys, monkeypatch, where):
    """`${oc.env:...}` would copy the variable into config.yaml, report.json and checkpoints: refused, key named."""
    monkeypatch.setenv("CRS_TEST_SECRET", "hunter2")
    run_dir = tmp_path / "run"
    interpolation = "${oc.env:CRS_TEST_SECRET}"
    if where == "file":
        config = _run_file(tmp_path, f"preset: popularity\ndata: demo\nrun_dir: {run_dir}\nname: '{interpolation}'\n")
        argv, origin = ["run", str(config)], f"{config}:4"
    else:
        argv, origin = ["run", "preset=popularity", "data=demo", f"run_dir={run_dir}", f"name={interpolation}"], \
            f"override 'name={interpolation}'"
    err = _fails(capsys, argv, origin, "config key 'name'", "reads the environment variable CRS_TEST_SECRET",
                 "fix: pass the value as an override instead (e.g. `name=$CRS_TEST_SECRET`")
    assert "hunter2" not in err
    assert not run_dir.exists()


def test_escaped_interpolation_is_kept_as_text(tmp_path):
    """A literal `\\${oc.env:X}` (escaped) reads nothing from the environment and is allowed."""
    from crs.config.loader import load_config

    config = _run_file(tmp_path, "preset: popularity\ndata: demo\nname: 'literal \\${oc.env:X}'\n")
    spec, _ = load_config(str(config))
    assert spec.name == "literal ${oc.env:X}"
