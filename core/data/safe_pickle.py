"""Loading pickles that should hold only plain data, without running arbitrary code.

Several public CRS resources (KGSF's ``subkg.pkl``, ``entity2entityId.pkl``,
RevCore's review pickles) are distributed as pickles.  ``pickle.load`` on a
downloaded file can execute any callable the file names, so these are read with a
restricted unpickler that resolves only the globals plain containers need.
Containers built from opcodes (dict, list, tuple, str, int, float, bool, None)
never reach ``find_class``; the allow-list covers the few that are pickled by
reference to their class.

A damaged or hostile file can also ask for memory instead of code: a length field
(``BINBYTES8``, ``FRAME``, ...) claiming terabytes makes the C unpickler allocate
them before it notices the file is short, and a memo index of 2**32 makes it grow its
memo table to that size.  So the whole file is read first (its size bounds every honest
length) and its opcodes are walked once (:func:`check_lengths`) before unpickling:
a length longer than the rest of the file, or a memo index beyond the number of
opcodes before it, is a :class:`~crs.errors.DataError` naming the file and byte offset.
"""
from __future__ import annotations

import io
import pickle
import pickletools
from pathlib import Path
from typing import Any

from ..errors import DataError, clip

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

_DAMAGED_FIX = "re-download the file and verify its sha256"


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
    if that is the cause) for anything else, and for missing, corrupt or truncated
    files and length fields larger than the file (see the module doc).
    """
    source = str(path)
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise DataError(source, "file not found", "check the path in the config") from None
    except OSError as err:
        raise DataError(source, f"cannot read the file ({err.strerror or err})",
                        "check the path in the config and that it is a readable file") from None
    check_lengths(data, source)
    try:
        return _PlainDataUnpickler(io.BytesIO(data), source).load()
    except DataError:
        raise
    except Exception as err:  # noqa: BLE001 - only allow-listed constructors ran, so any failure is bad data
        problem = clip(" ".join(str(err).split()), 200)
        raise DataError(source, f"not a readable pickle ({type(err).__name__}: {problem})",
                        _DAMAGED_FIX) from None


# ------------------------------------------------------------------ opcode walk
# How each opcode's argument is laid out: ("fixed", n) n bytes; ("line", k) k newline-terminated
# lines; ("counted", width, signed) a little-endian length of `width` bytes, then that many bytes.
_COUNTED_WIDTH = {pickletools.TAKEN_FROM_ARGUMENT1: (1, False), pickletools.TAKEN_FROM_ARGUMENT4: (4, True),
                  pickletools.TAKEN_FROM_ARGUMENT4U: (4, False), pickletools.TAKEN_FROM_ARGUMENT8U: (8, False)}


def _layout(op: pickletools.OpcodeInfo) -> tuple:
    if op.arg is None:
        return ("fixed", 0)
    n = op.arg.n
    if n >= 0:
        return ("fixed", n)
    if n == pickletools.UP_TO_NEWLINE:
        return ("line", 2 if op.arg.name.endswith("_pair") else 1)
    return ("counted", *_COUNTED_WIDTH[n])


_LAYOUTS: list[tuple | None] = [None] * 256
for _op in pickletools.opcodes:
    _LAYOUTS[ord(_op.code)] = _layout(_op)
_FRAME, _STOP, _PUT, _LONG_BINPUT = ord(pickle.FRAME), ord(pickle.STOP), ord(pickle.PUT), ord(pickle.LONG_BINPUT)
# The fast path of the walk: the argument size of each fixed-size opcode that needs no further look
# (-1: known but looked at in the slow path, -2: unknown).  BINPUT's one-byte memo index cannot ask for much.
_PLAIN_FIXED = [layout[1] if layout and layout[0] == "fixed" else (-1 if layout else -2) for layout in _LAYOUTS]
for _code in (_FRAME, _STOP, _LONG_BINPUT):
    _PLAIN_FIXED[_code] = -1


def check_lengths(data: bytes, source: str) -> None:
    """Walk the opcodes of `data` up to STOP; a DataError for any length or memo index it cannot honour.

    Checks, without allocating anything: every opcode is known and its argument lies inside
    `data`; every counted length (strings, bytes, ``FRAME``) fits in the bytes that follow it;
    every memo index written by ``PUT`` or ``LONG_BINPUT`` is at most the number of opcodes
    read so far, as a pickler numbers its memo entries from 0, one per memoised object.
    """
    size, pos, ops = len(data), 0, 0
    plain_fixed = _PLAIN_FIXED
    while pos < size:
        code = data[pos]
        n = plain_fixed[code]
        ops += 1
        if n >= 0:  # most opcodes: a fixed-size argument and nothing to check
            pos += 1 + n
            continue
        if code == _LONG_BINPUT:  # a Python pickle's memo index: as frequent as its objects, so checked here
            if int.from_bytes(data[pos + 1:pos + 5], "little") > ops:
                _check_memo_index(code, data[pos + 1:pos + 5], ops, pos, source)
            pos += 5
            continue
        if n == -2:
            raise DataError(source, f"not a readable pickle (unknown opcode 0x{code:02x} at byte {pos})", _DAMAGED_FIX)
        start, pos = pos, pos + 1
        layout = _LAYOUTS[code]
        if layout[0] == "fixed":
            arg = data[pos:pos + layout[1]]
            pos += layout[1]
        elif layout[0] == "line":
            end = pos
            for _ in range(layout[1]):
                end = data.find(b"\n", end) + 1
                if end == 0:
                    raise _truncated(source, start)
            arg, pos = data[pos:end], end
        else:
            _, width, signed = layout
            length = int.from_bytes(data[pos:pos + width], "little", signed=signed)
            pos += width
            _check_length(length, size - pos, start, source)
            pos += length
            continue
        if pos > size:
            raise _truncated(source, start)
        if code == _FRAME:  # the frame's bytes are the opcodes that follow, walked next
            _check_length(int.from_bytes(arg, "little"), size - pos, start, source)
        elif code == _PUT:  # LONG_BINPUT is checked in the fast path above
            _check_memo_index(code, arg, ops, start, source)
        elif code == _STOP:
            return
    raise _truncated(source, size)


def _check_length(length: int, remaining: int, start: int, source: str) -> None:
    if not 0 <= length <= remaining:
        raise DataError(source, f"the pickle is damaged: a length field at byte {start} asks for {length:,} bytes, "
                                f"but the file holds only {max(remaining, 0):,} more", _DAMAGED_FIX)


def _check_memo_index(code: int, arg: bytes, ops: int, start: int, source: str) -> None:
    if code == _PUT:
        text = arg.strip()
        index = int(text) if text.isdigit() and len(text) <= 20 else -1
    else:
        index = int.from_bytes(arg, "little")
    if not 0 <= index <= ops:
        raise DataError(source, f"the pickle is damaged: a memo index at byte {start} ({index}) exceeds the "
                                f"{ops:,} opcodes before it", _DAMAGED_FIX)


def _truncated(source: str, offset: int) -> DataError:
    return DataError(source, f"not a readable pickle (the data ends inside the opcode at byte {offset}; "
                             "the file is truncated)", _DAMAGED_FIX)
