"""Bounded reading of ``.npy`` files and ``.npz`` archives: sizes are checked before anything is allocated.

Calibration files are untrusted. ``np.load`` trusts them: an ``.npy`` header may claim 10^12 samples (numpy
tries to allocate them), and an ``.npz`` member of 1 MB may inflate to gigabytes. Here, in order:

1. an ``.npz`` must be a zip (an ``.npy`` named ``.npz`` is named as such), with at most
   :data:`MAX_MEMBERS` members, each a ``<name>.npy`` stored or deflated;
2. the sizes the zip declares for its members (or the file sizes of ``.npy`` files) are taken from a
   :class:`Budget` (the ``--calib-max-mb`` limit) before any member is inflated;
3. each array's header (shape, dtype) is read first; the array must fit in the bytes its member
   declares, hold no Python objects, and is then read into one buffer of exactly that size, so a zip
   that lies about a member's size can never make edgec inflate more than it declared.
"""

from __future__ import annotations

import math
import zipfile
import zlib
from pathlib import Path
from typing import IO

import numpy as np

from edgec.core.errors import CalibrationError

MIB = 1 << 20
DEFAULT_MAX_MB = 2048
MAX_MEMBERS = 4096
CHUNK = 1 << 20
NPY_MAGIC = b"\x93NUMPY"
HINT = "raise the limit with --calib-max-mb N if the data is genuine"


class Budget:
    """How many bytes a calibration read may still decode; shared by all files of one read.

    Args:
        limit: the most bytes the read may decode in total.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, nbytes: int, what: str) -> None:
        """Account for ``nbytes`` more decoded bytes.

        Raises:
            CalibrationError: when the total would pass the limit.
        """
        if self.used + nbytes > self.limit:
            before = f" ({_mb(self.used + nbytes)} with the files read before it)" if self.used else ""
            raise CalibrationError(f"{what} would decode to {_mb(nbytes)}{before}, above the calibration limit "
                                   f"of {_mb(self.limit)}", hint=HINT)
        self.used += nbytes

    def fits(self, nbytes: int, what: str) -> None:
        """Check that one item decoding to ``nbytes`` could fit at all (images, decoded one at a time).

        Raises:
            CalibrationError: when ``nbytes`` alone passes the limit.
        """
        if nbytes > self.limit:
            raise CalibrationError(f"{what} would decode to {_mb(nbytes)}, above the calibration limit of "
                                   f"{_mb(self.limit)}", hint=HINT)


def read_npz(path: Path, budget: Budget) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz``, read within ``budget``.

    Raises:
        CalibrationError: when the file is not an ``.npz`` of plain arrays or passes the budget.
    """
    _refuse_plain_npy(path)
    try:
        with zipfile.ZipFile(path) as archive:
            infos = _members(path, archive.infolist())
            budget.take(sum(info.file_size for info in infos), f"calibration file {path}")
            return {info.filename[:-4]: _read_member(archive, info, path) for info in infos}
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error, NotImplementedError) as exc:
        raise CalibrationError(f"could not read calibration file {path}: {exc}; expected a numpy .npz") from None


def read_npy(path: Path, budget: Budget) -> np.ndarray:
    """One ``.npy`` file, read within ``budget``.

    Raises:
        CalibrationError: when the file is not a plain ``.npy`` or passes the budget.
    """
    try:
        size = path.stat().st_size
        budget.take(size, f"calibration file {path}")
        with path.open("rb") as stream:
            return _read_array(stream, size, f"calibration file {path}")
    except (OSError, EOFError, ValueError) as exc:
        raise CalibrationError(f"could not read calibration file {path}: {exc}; expected a numpy .npy") from None


def _refuse_plain_npy(path: Path) -> None:
    try:
        with path.open("rb") as stream:
            head = stream.read(len(NPY_MAGIC))
    except OSError as exc:
        raise CalibrationError(f"could not read calibration file {path}: {exc}") from None
    if head == NPY_MAGIC:
        raise CalibrationError(
            f"calibration file {path} is a .npy array, not a .npz archive; expected np.savez(path, <input>=array) "
            "or a folder of <input>.npy files")


def _members(path: Path, infos: list[zipfile.ZipInfo]) -> list[zipfile.ZipInfo]:
    if len(infos) > MAX_MEMBERS:
        raise CalibrationError(f"calibration file {path} holds {len(infos)} members; at most {MAX_MEMBERS} are read")
    names = [info.filename for info in infos]
    for info in infos:
        if not info.filename.endswith(".npy") or names.count(info.filename) > 1:
            raise CalibrationError(f"calibration file {path} holds member {info.filename!r}, which is not one "
                                   "uniquely named .npy array; expected an archive written by np.savez")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise CalibrationError(f"calibration file {path}: member {info.filename!r} uses zip compression "
                                   f"method {info.compress_type}; expected stored or deflated (np.savez[_compressed])")
    return infos


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path) -> np.ndarray:
    with archive.open(info) as stream:
        return _read_array(stream, info.file_size, f"calibration file {path}: member {info.filename!r}")


def _read_array(stream: IO[bytes], size: int, what: str) -> np.ndarray:
    shape, fortran, dtype = _header(stream, what)
    start = stream.tell()
    nbytes = math.prod(shape) * dtype.itemsize
    if start + nbytes > size:
        raise CalibrationError(f"{what} claims an array of shape {shape} and dtype {dtype} ({_mb(nbytes)}) but "
                               f"holds {max(size - start, 0)} bytes of data; expected a complete numpy array")
    data = _read_exact(stream, nbytes, what)
    if stream.read(1):
        raise CalibrationError(f"{what} holds more bytes than its header describes; expected a plain numpy array")
    array = np.frombuffer(data, dtype=dtype)
    return array.reshape(shape[::-1]).transpose() if fortran else array.reshape(shape)


def _header(stream: IO[bytes], what: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(stream)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
    else:
        raise CalibrationError(f"{what} is a .npy of format version {version}; expected 1.0 or 2.0 (np.save)")
    if any(dim < 0 for dim in shape):
        raise CalibrationError(f"{what} claims a negative dimension in shape {shape}")
    if dtype.hasobject:
        raise CalibrationError(f"{what} holds Python objects (dtype {dtype}); edgec never unpickles calibration data")
    return tuple(shape), bool(fortran), dtype


def _read_exact(stream: IO[bytes], nbytes: int, what: str) -> bytearray:
    data = bytearray(nbytes)
    view = memoryview(data)
    pos = 0
    while pos < nbytes:
        chunk = stream.read(min(CHUNK, nbytes - pos))
        if not chunk:
            raise CalibrationError(f"{what} is truncated: {pos} of {nbytes} data bytes; expected a complete numpy array")
        view[pos:pos + len(chunk)] = chunk
        pos += len(chunk)
    return data


def _mb(nbytes: int) -> str:
    return f"{nbytes / MIB:,.1f} MB" if nbytes < 1 << 40 else f"{nbytes / (1 << 40):,.1f} TB"
