"""Loading pickles that should hold only plain data, without running arbitrary code.

Several public CRS resources (KGSF's ``subkg.pkl``, ``entity2entityId.pkl``,
RevCore's review pickles) are distributed as pickles.  ``pickle.load`` on a
downloaded file can execute any callable the file names, so these are read with a
restricted unpickler that resolves only the globals plain containers need.
Containers built from opcodes (dict, list, tuple, str, int, float, bool, None)
never reach ``find_class``; the allow-list covers the few that are pickled by
reference to their class.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from ..errors import DataError

#: (module, name) pairs a plain-data pickle may reference.
ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset({
    ("builtins", "dict"),
    ("builtins", "list"),  # also the default_factory of defaultdict(list), pickled by reference
    ("builtins", "tuple"),
    ("builtins", "set"),
    ("builtins", "str"),
    ("builtins", "int"),
    ("builtins", "float"),
    ("builtins", "bool"),
    ("collections", "defaultdict"),
    ("collections", "OrderedDict"),
})

# Protocol <= 2 pickles (and Python 2's) name the builtins module ``__builtin__``.
_PY2_MODULES = {"__builtin__": "builtins"}


class _PlainDataUnpickler(pickle.Unpickler):
    def __init__(self, handle: Any, source: str):
        super().__init__(handle, fix_imports=True, encoding="utf-8")
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        module = _PY2_MODULES.get(module, module)
        if (module, name) in ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise DataError(self._source, f"the pickle references the forbidden global '{module}.{name}'",
                        "only plain containers and scalars are loaded from pickles; convert the file "
                        "to JSON, or obtain it from the source named in PROVENANCE.md and compare its sha256")

    def persistent_load(self, pid: Any) -> Any:  # pragma: no cover - no plain-data pickle uses it
        raise DataError(self._source, "the pickle uses persistent ids", "only plain-data pickles are supported")


def load_plain_pickle(path: Path | str) -> Any:
    """Unpickle `path` allowing only plain containers and scalars (see :data:`ALLOWED_GLOBALS`).

    Raises :class:`crs.errors.DataError` naming the file (and the forbidden global,
    if that is the cause) for anything else, and for missing or corrupt files.
    """
    source = str(path)
    try:
        with open(path, "rb") as handle:
            return _PlainDataUnpickler(handle, source).load()
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(source, "file not found", "check the path in the config") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as err:
        raise DataError(source, f"not a readable pickle ({type(err).__name__}: {err})",
                        "re-download the file and verify its sha256") from None
