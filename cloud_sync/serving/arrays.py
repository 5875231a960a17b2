"""Bounded readers of untrusted ``.npy`` and ``.npz`` request bodies: a precise 4xx, never a big allocation.

Nothing is inflated or allocated before its size is known and checked, in this order:

1. an ``.npz`` lists no more members than the model has inputs, each named ``INPUT.npy``, stored or
   deflated (bzip2 and lzma inflate a whole chunk at once, with no bound per read), not encrypted;
2. the sizes its directory declares sum to at most the decoded limit;
3. each ``.npy`` header (read with numpy's 10 kB header bound) holds real numbers (bool, int, float:
   not complex, str, object or structured), non-negative dims, a shape the input spec accepts, a
   batch within the server's limit, and data within the decoded limit;
4. exactly the bytes that header declares are read (inflation stops there), and the member must end
   there; headers and directories can lie, so the bytes read are bounded, not the declared sizes.

Arrays come back read from the body (``.npy``: a view of it, no copy) in the header's shape and dtype.
"""

from __future__ import annotations

import io
import math
import struct
import zipfile
import zlib
from typing import IO, Any, Protocol

import numpy as np

from edgec.core.errors import brief
from edgec.core.types import TensorSpec

MB = 1024 * 1024
MAX_DIMS = 64
"""numpy's limit on dims; deeper JSON lists are refused before numpy sees them."""
_HEADER_SLACK = 16 * 1024
"""What a member may declare beyond its data: numpy reads headers of at most 10,000 bytes."""
_COMPRESSIONS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate", zipfile.ZIP_BZIP2: "bzip2",
                 zipfile.ZIP_LZMA: "lzma"}
_KINDS = {"c": "complex", "U": "str", "S": "bytes", "O": "object", "V": "structured", "M": "datetime", "m": "timedelta"}
_CHUNK = 1 << 20


class BadRequest(Exception):
    """A request the server rejects, with its HTTP status."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message


class Limits(Protocol):
    """What one request may decode to (see :class:`.validate.DecodeLimits`)."""

    @property
    def max_batch(self) -> int: ...

    @property
    def max_bytes(self) -> int: ...


def read_npy(body: bytes, spec: TensorSpec, limits: Limits) -> np.ndarray:
    """The array of a ``.npy`` body for input ``spec``, checked before anything is allocated.

    Raises:
        BadRequest: 400 unreadable or truncated, 413 over ``limits``, 422 not an array ``spec`` takes.
    """
    stream = io.BytesIO(body)
    where = f"input {spec.name!r}"
    dtype, shape, fortran = _header(stream, where, "the .npy body")
    nbytes = check_header(dtype, shape, spec, limits, where)
    data = memoryview(body)[stream.tell():]
    if len(data) != nbytes:
        raise BadRequest(400, "bad_npy", f"the .npy header of {where} declares {nbytes} bytes of data "
                         f"({list(shape)} {dtype}); the body holds {len(data)}")
    return _array(data, dtype, shape, fortran)


def read_npz(body: bytes, specs: tuple[TensorSpec, ...], limits: Limits) -> dict[str, np.ndarray]:
    """Arrays by input name from a ``.npz`` body, checked member by member before inflating.

    Raises:
        BadRequest: 400 unreadable or lying archive, 413 over ``limits``, 415 other compressions,
            422 wrong member names or arrays ``specs`` do not take.
    """
    _check_entry_count(body, specs)
    try:
        archive = zipfile.ZipFile(io.BytesIO(body))
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, struct.error):
        raise BadRequest(400, "bad_npz", "body is not a readable .npz archive of input arrays") from None
    with archive:
        members = _check_members(archive.infolist(), specs, limits)
        by_name = {spec.name: spec for spec in specs}
        return {name: _read_member(archive, info, by_name[name], limits) for name, info in members.items()}


def check_header(dtype: np.dtype[Any], shape: tuple[int, ...], spec: TensorSpec, limits: Limits, where: str) -> int:
    """Bytes of data an array of ``dtype`` and ``shape`` holds, once it is known to fit ``spec`` and ``limits``.

    Raises:
        BadRequest: 400 negative dims, 413 batch or bytes over ``limits``, 422 dtype or shape ``spec``
            does not take.
    """
    check_dtype(dtype, spec, where)
    if any(d < 0 for d in shape):
        raise BadRequest(400, "bad_npy", f"{where} declares shape {list(shape)}; dims cannot be negative")
    batch = check_shape(shape, spec)
    if batch > limits.max_batch:
        raise BadRequest(413, "batch_too_large", f"{where} declares shape {list(shape)}: a batch of {batch} "
                         f"exceeds the server's limit of {limits.max_batch}")
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > limits.max_bytes:
        raise BadRequest(413, "decoded_too_large", f"{where} declares {nbytes} bytes ({list(shape)} {dtype}), over the "
                         f"decoded limit of {limits.max_bytes / MB:g} MB (--max-decoded-mb)")
    return nbytes


def check_dtype(dtype: np.dtype[Any], spec: TensorSpec, where: str) -> None:
    """Refuse anything but real numbers (bool, int, float) for input ``spec``.

    Raises:
        BadRequest: 422 naming the kind of values and the dtype expected.
    """
    if dtype.kind not in "biuf" or dtype.fields is not None or dtype.subdtype is not None:
        kind = _KINDS.get(dtype.kind, repr(dtype.kind))
        raise BadRequest(422, "dtype", f"{where} holds {kind} values ({dtype.str}); expected real numbers ({spec.dtype})")


def check_shape(shape: tuple[int, ...], spec: TensorSpec) -> int:
    """The batch size of an array of ``shape`` for ``spec`` (1 when it lacks the batch axis).

    Raises:
        BadRequest: 422 naming the input, its shape and the shape expected.
    """
    if spec.accepts_shape(shape):
        return shape[0] if shape else 1
    if spec.accepts_shape((1, *shape)):
        return 1
    dims = ", ".join("?" if d is None else str(d) for d in spec.shape)
    raise BadRequest(422, "shape", f"input {spec.name!r} has shape {list(shape)}; expected ({dims})")


def _header(stream: IO[bytes], where: str, what: str) -> tuple[np.dtype[Any], tuple[int, ...], bool]:
    fmt = np.lib.format
    try:
        version = fmt.read_magic(stream)
        if version not in ((1, 0), (2, 0)):
            raise ValueError(f"version {version}")
        read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, fortran, dtype = read(stream)
    except (ValueError, EOFError, SyntaxError, TypeError, OverflowError) as exc:
        detail = brief(exc, 120)
        raise BadRequest(400, "bad_npy", f"{what} of {where} is not a readable .npy array ({detail})") from None
    return dtype, tuple(int(d) for d in shape), bool(fortran)


def _array(data: Any, dtype: np.dtype[Any], shape: tuple[int, ...], fortran: bool) -> np.ndarray:
    flat = np.frombuffer(data, dtype=dtype, count=math.prod(shape))
    return flat.reshape(shape, order="F" if fortran else "C")


def _check_entry_count(body: bytes, specs: tuple[TensorSpec, ...]) -> None:
    """Refuse an archive listing more members than inputs before zipfile builds an object per entry."""
    end = body.rfind(b"PK\x05\x06", max(0, len(body) - 65557))
    if end < 0 or end + 22 > len(body):
        return  # not a zip: zipfile says so
    entries = struct.unpack_from("<H", body, end + 10)[0]
    if entries > len(specs):
        raise BadRequest(422, "names", f"the archive lists {entries} members; the model has {len(specs)} "
                         f"input(s): {[s.name for s in specs]}")


def _check_members(infos: list[zipfile.ZipInfo], specs: tuple[TensorSpec, ...], limits: Limits) -> dict[str, zipfile.ZipInfo]:
    members = {_member_name(info): info for info in infos}
    expected = [s.name for s in specs]
    unknown, missing = sorted(set(members) - set(expected)), [n for n in expected if n not in members]
    if unknown or missing or len(members) != len(infos):
        raise BadRequest(422, "names", f"inputs must be exactly {expected}, one member each; missing {missing}, unknown {unknown}")
    declared = 0
    for info in infos:
        declared += info.file_size
        if declared > limits.max_bytes + _HEADER_SLACK * len(infos):
            raise BadRequest(413, "decoded_too_large", f"member {info.filename} declares {info.file_size} bytes, over the "
                             f"decoded limit of {limits.max_bytes / MB:g} MB (--max-decoded-mb)")
    return members


def _member_name(info: zipfile.ZipInfo) -> str:
    where = f"member {info.filename}"
    if not info.filename.endswith(".npy"):
        raise BadRequest(422, "names", f"{where} is not an .npy array; name members INPUT.npy (numpy.savez does)")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        method = _COMPRESSIONS.get(info.compress_type, f"method {info.compress_type}")
        raise BadRequest(415, "compression", f"{where} is compressed with {method}; send members stored or deflated "
                         "(numpy.savez or savez_compressed)")
    if info.flag_bits & 0x1:
        raise BadRequest(415, "compression", f"{where} is encrypted; send plain members")
    return info.filename[: -len(".npy")]


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, spec: TensorSpec, limits: Limits) -> np.ndarray:
    where = f"member {info.filename}"
    try:
        with archive.open(info) as member:
            dtype, shape, fortran = _header(member, f"input {spec.name!r}", where)
            nbytes = check_header(dtype, shape, spec, limits, where)
            if info.file_size != member.tell() + nbytes:
                raise BadRequest(400, "bad_npz", f"{where} declares {info.file_size} bytes; its .npy header "
                                 f"declares {member.tell()} + {nbytes}")
            return _array(_read_exactly(member, nbytes, where), dtype, shape, fortran)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as exc:
        raise BadRequest(400, "bad_npz", f"{where} is corrupt ({brief(exc, 120)})") from None


def _read_exactly(member: IO[bytes], nbytes: int, where: str) -> bytearray:
    buffer, filled = bytearray(nbytes), 0
    view = memoryview(buffer)
    while filled < nbytes:
        chunk = member.read(min(_CHUNK, nbytes - filled))
        if not chunk:
            raise BadRequest(400, "bad_npz", f"{where} ends after {filled} of the {nbytes} bytes its header declares")
        view[filled:filled + len(chunk)] = chunk
        filled += len(chunk)
    if member.read(1):
        raise BadRequest(400, "bad_npz", f"{where} holds more data than its header declares ({nbytes} bytes)")
    return buffer
