"""crs.data.safe_pickle: plain data loads, anything that names another global is refused."""
import os
import pickle
from collections import OrderedDict, defaultdict
from pathlib import Path

import pytest

from crs.data.safe_pickle import load_plain_pickle
from crs.errors import DataError

SHARED = Path(os.environ.get("CRS_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")


class _Custom:
    pass


class _RunsCommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _dump(tmp_path, value, name="x.pkl", protocol=pickle.HIGHEST_PROTOCOL):
    path = tmp_path / name
    path.write_bytes(pickle.dumps(value, protocol=protocol))
    return path


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_plain_containers_round_trip(tmp_path, protocol):
    graph = defaultdict(list)
    graph[3].append((1, 4))
    value = {"a": [1, 2.5, True, None], "b": (1, "x"), "c": {1, 2}, "d": OrderedDict(z=1), "g": graph}
    loaded = load_plain_pickle(_dump(tmp_path, value, protocol=protocol))
    assert loaded == value
    assert isinstance(loaded["g"], defaultdict) and loaded["g"].default_factory is list
    assert loaded["g"][99] == []  # default_factory works after loading
    assert isinstance(loaded["d"], OrderedDict)


def test_forbidden_global_names_file_and_global(tmp_path):
    path = _dump(tmp_path, {"x": _Custom()})
    with pytest.raises(DataError) as err:
        load_plain_pickle(path)
    assert str(path) in str(err.value)
    assert "test_safe_pickle._Custom" in str(err.value)


def test_code_in_pickle_is_never_run(tmp_path):
    marker = tmp_path / "ran"
    path = _dump(tmp_path, [_RunsCommand(marker)])
    with pytest.raises(DataError, match=r"forbidden global '(posix|os|nt)\.system'"):
        load_plain_pickle(path)
    assert not marker.exists()


def test_defaultdict_with_other_factory_is_refused(tmp_path):
    path = _dump(tmp_path, defaultdict(_Custom))
    with pytest.raises(DataError, match="_Custom"):
        load_plain_pickle(path)


def test_truncated_and_missing_files(tmp_path):
    path = tmp_path / "cut.pkl"
    path.write_bytes(pickle.dumps(list(range(1000)))[:50])
    with pytest.raises(DataError, match="cut.pkl"):
        load_plain_pickle(path)
    with pytest.raises(DataError, match="file not found"):
        load_plain_pickle(tmp_path / "absent.pkl")


@pytest.mark.shared_data
@pytest.mark.skipif(not (SHARED / "redial" / "kgsf").is_dir(), reason="shared data not available")
def test_kgsf_pickles_are_plain_data():
    subkg = load_plain_pickle(SHARED / "redial" / "kgsf" / "subkg.pkl")
    assert isinstance(subkg, defaultdict) and subkg.default_factory is list
    assert sum(len(v) for v in subkg.values()) == 165_696
    assert len(load_plain_pickle(SHARED / "redial" / "kgsf" / "movie_ids.pkl")) == 6_924
