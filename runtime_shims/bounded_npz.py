"""Bounded reading of untrusted ``.npy`` files and ``.npz`` archives: sizes are checked before anything is allocated.

``np.load`` trusts its file: an ``.npy`` header may claim 10^12 samples (numpy tries to allocate them), and an
``.npz`` member of 1 MB may inflate to gigabytes. Golden files in bundles, calibration and evaluation data are
read here instead, in order:

1. an ``.npz`` must be a zip whose end record lists at most ``max_members`` members (checked before
   :mod:`zipfile` builds an object per entry), each a uniquely named ``<name>.npy``, stored or deflated;
2. the sizes the zip declares for its members (or the file size of an ``.npy``) are taken from a
   :class:`Budget` before any member is inflated;
3. each array's header (shape, dtype) is read first; the array must fit in the bytes its member declares,
   hold no Python objects, and is then read into one buffer of exactly that size, so a zip that lies about
   a member's size can never make the reader inflate more than it declared.

Standard library and numpy only: this module ships inside every bundle as ``edgec_shim/bounded_npz.py``.
"""

from __future__ import annotations

import math
import os
import struct
import zipfile
import zlib
from typing import IO, Any, NoReturn, Union

import numpy as np

MIB = 1 << 20
MAX_MEMBERS = 4096
CHUNK = 1 << 20
NPY_MAGIC = b"\x93NUMPY"
_EOCD = b"PK\x05\x06"
_EOCD64_LOCATOR = b"PK\x06\x07"
_EOCD64 = b"PK\x06\x06"
_TAIL = 22 + 0xFFFF  # the end record plus the longest zip comment

PathLike = Union[str, "os.PathLike[str]"]


class ArrayReadError(ValueError):
    """An ``.npy``/``.npz`` that is not plain array data, or that would decode past its limit; one line."""


class Budget:
    """How many bytes a read may still decode; one budget may be shared by the files of one read.

    Args:
        limit: the most bytes the read may decode in total.
        hint: appended to the message when the limit is passed (how to raise it).
    """

    def __init__(self, limit: int, hint: str = "") -> None:
        self.limit = limit
        self.hint = hint
        self.used = 0

    def take(self, nbytes: int, what: str) -> None:
        """Account for ``nbytes`` more decoded bytes.

        Raises:
            ArrayReadError: when the total would pass the limit (see :meth:`refuse`).
        """
        if self.used + nbytes > self.limit:
            self.refuse(nbytes, what)
        self.used += nbytes

    def refuse(self, nbytes: int, what: str) -> NoReturn:
        """Raise the error for ``nbytes`` that do not fit; subclasses raise their own family's error.

        Raises:
            ArrayReadError: always.
        """
        before = f" ({mb(self.used + nbytes)} with the files read before it)" if self.used else ""
        hint = f"; {self.hint}" if self.hint else ""
        raise ArrayReadError(f"{what} would decode to {mb(nbytes)}{before}, above the limit of {mb(self.limit)}{hint}")


def read_npz(path: PathLike, budget: Budget, what: str | None = None,
             max_members: int = MAX_MEMBERS) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` (name without ``.npy`` -> array), read within ``budget``.

    Args:
        path: the archive.
        budget: what the arrays may decode to, all members together.
        what: how messages name the file; default its path.
        max_members: the most members the archive may list.

    Raises:
        ArrayReadError: the file is not an ``.npz`` of plain arrays, or passes the budget.
    """
    what = what or str(path)
    try:
        _check_entry_count(path, what, max_members)
        with zipfile.ZipFile(path) as archive:
            infos = _members(archive.infolist(), what, max_members)
            budget.take(sum(info.file_size for info in infos), what)
            return {info.filename[:-4]: _read_member(archive, info, what) for info in infos}
    except ArrayReadError:
        raise
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error, NotImplementedError, struct.error) as exc:
        raise ArrayReadError(f"could not read {what}: {exc}; expected a numpy .npz") from None


def read_npy(path: PathLike, budget: Budget, what: str | None = None) -> np.ndarray:
    """One ``.npy`` file, read within ``budget``.

    Raises:
        ArrayReadError: the file is not a plain ``.npy``, or passes the budget.
    """
    what = what or str(path)
    try:
        size = os.stat(path).st_size
        budget.take(size, what)
        with open(path, "rb") as stream:
            return read_array(stream, size, what)
    except ArrayReadError:
        raise
    except (OSError, EOFError, ValueError) as exc:
        raise ArrayReadError(f"could not read {what}: {exc}; expected a numpy .npy") from None


def is_plain_npy(path: PathLike) -> bool:
    """Whether the file starts like an ``.npy`` (an ``.npy`` named ``.npz`` deserves its own message).

    Raises:
        OSError: the file cannot be read.
    """
    with open(path, "rb") as stream:
        return stream.read(len(NPY_MAGIC)) == NPY_MAGIC


def read_array(stream: IO[bytes], size: int, what: str) -> np.ndarray:
    """The array of an ``.npy`` stream holding ``size`` bytes, header first; never more than ``size`` are read.

    Raises:
        ArrayReadError: a header that is not numpy's, object dtype, or data that is not exactly what the header says.
    """
    shape, fortran, dtype = _header(stream, what)
    start = stream.tell()
    nbytes = math.prod(shape) * dtype.itemsize
    if start + nbytes > size:
        raise ArrayReadError(f"{what} claims an array of shape {shape} and dtype {dtype} ({mb(nbytes)}) but "
                             f"holds {max(size - start, 0)} bytes of data; expected a complete numpy array")
    data = _read_exact(stream, nbytes, what)
    if stream.read(1):
        raise ArrayReadError(f"{what} holds more bytes than its header describes; expected a plain numpy array")
    array = np.frombuffer(data, dtype=dtype)
    return array.reshape(shape[::-1]).transpose() if fortran else array.reshape(shape)


def mb(nbytes: int) -> str:
    """Bytes in words: ``"3,072.0 MB"`` (``"1.5 TB"`` past a terabyte)."""
    return f"{nbytes / MIB:,.1f} MB" if nbytes < 1 << 40 else f"{nbytes / (1 << 40):,.1f} TB"


def _check_entry_count(path: PathLike, what: str, max_members: int) -> None:
    """Refuse an archive whose end record lists too many members, before zipfile reads its directory."""
    with open(path, "rb") as stream:
        stream.seek(0, os.SEEK_END)
        length = stream.tell()
        stream.seek(max(0, length - _TAIL))
        tail = stream.read()
        end = tail.rfind(_EOCD)
        if end < 0 or end + 22 > len(tail):
            return  # not a zip: zipfile says so
        entries = struct.unpack_from("<H", tail, end + 10)[0]
        locator = end - 20
        if locator >= 0 and tail[locator:locator + 4] == _EOCD64_LOCATOR:
            entries = max(entries, _zip64_entries(stream, struct.unpack_from("<Q", tail, locator + 8)[0]))
    if entries > max_members:
        raise ArrayReadError(f"{what} holds {entries} members; at most {max_members} are read")


def _zip64_entries(stream: IO[bytes], offset: int) -> int:
    stream.seek(offset)
    record = stream.read(56)
    if len(record) < 56 or record[:4] != _EOCD64:
        return 0  # zipfile refuses it
    return int(struct.unpack_from("<Q", record, 32)[0])


def _members(infos: list[zipfile.ZipInfo], what: str, max_members: int) -> list[zipfile.ZipInfo]:
    if len(infos) > max_members:
        raise ArrayReadError(f"{what} holds {len(infos)} members; at most {max_members} are read")
    seen: set[str] = set()
    for info in infos:
        if not info.filename.endswith(".npy") or info.filename in seen:
            raise ArrayReadError(f"{what} holds member {info.filename!r}, which is not one uniquely named .npy "
                                 "array; expected an archive written by np.savez")
        seen.add(info.filename)
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise ArrayReadError(f"{what}: member {info.filename!r} uses zip compression method "
                                 f"{info.compress_type}; expected stored or deflated (np.savez[_compressed])")
    return infos


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, what: str) -> np.ndarray:
    with archive.open(info) as stream:
        return read_array(stream, info.file_size, f"{what}: member {info.filename!r}")


def _header(stream: IO[bytes], what: str) -> tuple[tuple[int, ...], bool, np.dtype[Any]]:
    version = np.lib.format.read_magic(stream)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
    else:
        raise ArrayReadError(f"{what} is a .npy of format version {version}; expected 1.0 or 2.0 (np.save)")
    if any(dim < 0 for dim in shape):
        raise ArrayReadError(f"{what} claims a negative dimension in shape {shape}")
    if dtype.hasobject:
        raise ArrayReadError(f"{what} holds Python objects (dtype {dtype}); edgec never unpickles array data")
    return tuple(shape), bool(fortran), dtype


def _read_exact(stream: IO[bytes], nbytes: int, what: str) -> bytearray:
    data = bytearray(nbytes)
    view = memoryview(data)
    pos = 0
    while pos < nbytes:
        chunk = stream.read(min(CHUNK, nbytes - pos))
        if not chunk:
            raise ArrayReadError(f"{what} is truncated: {pos} of {nbytes} data bytes; expected a complete numpy array")
        view[pos:pos + len(chunk)] = chunk
        pos += len(chunk)
    return data
